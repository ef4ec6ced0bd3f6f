"""Delivery: every document the RunEngine emits is made durable in a local spool before anything else
can lose it, and a forwarder drains the spool to Tiled, resuming after outages and restarts; plus
writing sfn-stream's derived stream into a run that Tiled already stores."""

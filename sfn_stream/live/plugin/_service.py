"""The plugin in its own process: bluesky's 0MQ proxy -> RemoteDispatcher -> plugin -> TiledWriter.

    bluesky-0MQ-proxy 5577 5578                      # once per beamline
    python callbacks/sfn_service.py --zmq localhost:5578 --tiled http://host:8000/api/v1

and in the RunEngine's process: ``RE.subscribe(Publisher("localhost:5577"))``. Acquisition
then never waits for analysis or for Tiled. ``consumers`` (objects or registered names, e.g. ``["next_edge"]``
with ``--agent``) run after each run's stop here, beside the plugin: the next-edge agent's decision runs go
to the same Tiled server as the runs they follow.
"""

from __future__ import annotations

import logging
import signal

logger = logging.getLogger(__name__)


def run_service(zmq_address: str, tiled_uri: str, api_key: str | None = None, *, prefix: bytes = b"",
                ready=None, consumers=()) -> None:
    """Serve until SIGINT/SIGTERM; ``ready`` (a callable) is called once subscribed; ``consumers``: after-stop
    consumers of the plugin (see the module docstring)."""
    from bluesky.callbacks.zmq import RemoteDispatcher

    from ._plugin import SfnPlugin
    from ._writer import TiledTarget

    # Connects on first delivery: with Tiled down the service still listens, and spools what it hears.
    plugin = SfnPlugin(TiledTarget.connecting(tiled_uri, api_key), consumers=consumers)
    dispatcher = RemoteDispatcher(zmq_address, prefix=prefix)
    dispatcher.subscribe(plugin)

    def _stop(signum, frame):
        # Raised in the main thread, it unwinds the dispatcher's event loop; start() then closes it.
        raise _Shutdown(signum)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    logger.info("sfn-stream service: listening on %s, writing to %s", zmq_address, tiled_uri)
    if ready is not None:
        dispatcher.loop.call_soon(ready)
    try:
        dispatcher.start()
    except _Shutdown as signum:
        logger.info("sfn-stream service: signal %s, stopping", signum)
    finally:
        plugin.flush(timeout=60)
        plugin.close()


class _Shutdown(Exception):
    pass

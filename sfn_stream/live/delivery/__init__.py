"""Delivery: every document the RunEngine emits is made durable in a local spool before anything else
can lose it, and a forwarder drains the spool to Tiled, resuming after outages and restarts; plus
writing sfn-stream's derived stream into a run that Tiled already stores."""

from ._forwarder import DeliveryState, Forwarder
from ._spool import RecordReader, Spool, SpooledRun, default_spool_root
from ._status import spool_status
from ._targets import CallbackTarget, TiledTarget, destination_of, make_tiled_writer, target_for

__all__ = ["CallbackTarget", "DeliveryState", "Forwarder", "RecordReader", "Spool", "SpooledRun", "TiledTarget",
           "default_spool_root", "destination_of", "make_tiled_writer", "spool_status", "target_for"]

# writing sfn-stream's derived stream into a run Tiled already stores (backfill; analyses that end after delivery)
from ._stored_runs import StoredRunError, write_derived_into_run, write_derived_into_stored_run  # noqa: E402

__all__ += ["StoredRunError", "write_derived_into_run", "write_derived_into_stored_run"]

"""Backfill: run the analyses over runs already stored in Tiled and add the derived stream and the
``stop['sfn']`` summary to each stored run in place."""

from ._backfill import NOT_RECOGNISED, Backfill, BackfillReport, RunOutcome, backfill
from ._read import documents_from_streams, stored_documents
from ._replay import ReplayedRun, is_derived_descriptor, replay_run
from ._select import BackfillError, as_timestamp, metadata_path, select_runs

__all__ = [
    "NOT_RECOGNISED",
    "Backfill",
    "BackfillError",
    "BackfillReport",
    "ReplayedRun",
    "RunOutcome",
    "as_timestamp",
    "backfill",
    "documents_from_streams",
    "is_derived_descriptor",
    "metadata_path",
    "replay_run",
    "select_runs",
    "stored_documents",
]

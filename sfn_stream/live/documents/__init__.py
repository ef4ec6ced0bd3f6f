"""Event-model documents sfn-stream adds to runs: derived streams and the stop summary's schema.

Light on purpose (numpy and event-model only): the Tiled queries import the summary's schema.
"""

from .streams import SOURCE, DerivedStreams, data_keys_for
from .summary import (
    DECISION_KINDS,
    LIST_FIELDS,
    METADATA_KEY,
    NEXT_EDGE_KIND,
    STRUCTURE_KIND,
    exit_flag,
    failed_summary,
    run_summary,
    stop_with_summary,
    summary_field,
    summary_of,
)

__all__ = [
    "DECISION_KINDS",
    "LIST_FIELDS",
    "METADATA_KEY",
    "NEXT_EDGE_KIND",
    "STRUCTURE_KIND",
    "SOURCE",
    "DerivedStreams",
    "data_keys_for",
    "exit_flag",
    "failed_summary",
    "run_summary",
    "stop_with_summary",
    "summary_field",
    "summary_of",
]

"""The stop summary: what sfn-stream says about a run, in ``stop[metadata_key]`` (``stop['sfn']``).

Every summary has ``kind`` (the analysis: ``xanes``, ``xrd``, ``structure_inference`` ...), ``sample``
(from the start metadata), ``status`` (``ok``, ``flagged``, ``insufficient_data``, ``error``, or for
structure inference ``empty``) and ``reason`` (None when all went well). A run's analysis adds
``derived_stream`` (the stream it wrote), ``bundle_id``, ``quality_flags`` (``run_abort`` and the like
when the run did not succeed) and its predictions as flat fields (``oxidation_state``,
``oxidation_state_confidence``, ``species``, ``crystal_system`` ... see
``sfn_stream.core.predict.summary_fields``; a PXRD run whose bundle indexes also ``lattice``, ``lattice_merit``
and ``lattice_cell_A``); ``errors`` lists documents whose analysis failed.

A XANES run of a multi-metal sample adds the sample-level result (``sample_species``, ``sample_edges``,
``sample_runs``, ``sample_per_metal`` ...: ``sfn_stream.live.analyses.xanes.sample_summary``); the list
fields among them (``LIST_FIELDS``) are matched by containment.

Summaries are queried in Tiled under their full key, ``summary_field("species")`` ->
``stop.sfn.species`` (Bluesky's catalog client would otherwise prefix ``start.``).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from sfn_stream.core.serialize import json_safe

METADATA_KEY = "sfn"
LIST_FIELDS = frozenset({"sample_species", "sample_edges", "sample_runs", "sample_metals"})


# Runs the after-stop consumers write about other runs (decisions, inferred structures): their summaries repeat
# the sample's predictions (species, crystal system), so a query for predictions leaves them out unless it
# names their kind.
NEXT_EDGE_KIND = "next_edge"
STRUCTURE_KIND = "structure_inference"
DECISION_KINDS = (NEXT_EDGE_KIND, STRUCTURE_KIND)


def summary_field(field: str, metadata_key: str = METADATA_KEY) -> str:
    """The Tiled metadata key of one summary field: ``stop.<metadata_key>.<field>``."""
    return f"stop.{metadata_key}.{field}"


def summary_of(stop: Mapping[str, Any], metadata_key: str = METADATA_KEY) -> dict | None:
    """The summary a stop document carries (None if none)."""
    summary = stop.get(metadata_key)
    return dict(summary) if isinstance(summary, Mapping) else None


def run_summary(kind: str, sample: Any, **fields) -> dict[str, Any]:
    """A summary's common head (kind, sample) followed by the analysis's own fields (``derived_stream``
    first among them for a run with a derived stream)."""
    return {"kind": kind, "sample": sample, **fields}


def failed_summary(kind: str | None, error: BaseException) -> dict[str, Any]:
    """The summary of a run whose analysis could not finish."""
    return {"kind": kind, "status": "error", "reason": f"{type(error).__name__}: {error}"}


def exit_flag(stop: Mapping[str, Any]) -> str | None:
    """``run_<exit_status>`` for a run that did not succeed (a quality flag), else None."""
    status = stop.get("exit_status", "success")
    return None if status == "success" else f"run_{status}"


def stop_with_summary(stop: dict, summary: Mapping[str, Any] | None, metadata_key: str = METADATA_KEY,
                      derived_events: Mapping[str, int] | None = None) -> dict:
    """A copy of ``stop`` carrying the summary (JSON-safe) and the derived streams' event counts; ``stop``
    itself when there is no summary (the RunEngine's document is shared with other subscribers)."""
    if summary is None:
        return stop
    stop = copy.deepcopy(stop)
    stop[metadata_key] = json_safe(dict(summary))
    stop["num_events"] = {**(stop.get("num_events") or {}), **(derived_events or {})}
    return stop

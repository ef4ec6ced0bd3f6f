"""Queries over sfn-stream's stop summaries (``stop.sfn.*``) in a Tiled catalog of Bluesky runs.

    runs_where(client, crystal_system="cubic")           # PXRD runs predicted cubic
    runs_where(client, species="Fe3+")                   # XANES runs predicted Fe3+
    samples_where(client, crystal_system="cubic", species="Fe3+")   # samples with both
    runs_where(client, sample_species="Mn2+")            # XANES runs whose fused sample result has Mn2+
    runs_where(client, kind="next_edge", done=True)      # the agent's decisions (named by kind)

A beamline whose ``RunConvention`` names another metadata key passes it: ``runs_where(client,
metadata_key="sfn_bl7", species="Fe3+")``. The summary's fields are listed in
``sfn_stream.live.documents.summary``.
"""

from __future__ import annotations

from typing import Any

from sfn_stream.live.documents import DECISION_KINDS, LIST_FIELDS, METADATA_KEY, summary_field


def runs_where(client, *, metadata_key: str = METADATA_KEY, **criteria: Any) -> dict[str, dict]:
    """Run uid -> stop summary for runs whose summary matches every ``field=value`` given.

    The runs of the agent's decisions and of structure inference (``DECISION_KINDS``) repeat the sample's
    predictions; they are found only when ``kind`` is among the criteria."""
    from tiled.queries import Contains, Key

    results = client
    for field, value in criteria.items():
        key = summary_field(field, metadata_key)
        results = results.search(Contains(key, value) if field in LIST_FIELDS else Key(key) == value)
    found = {uid: dict(run.metadata["stop"][metadata_key]) for uid, run in results.items()}
    if "kind" in criteria:
        return found
    return {uid: summary for uid, summary in found.items() if summary.get("kind") not in DECISION_KINDS}


def samples_where(client, *, metadata_key: str = METADATA_KEY, **criteria: Any) -> dict[str, list[str]]:
    """Sample id -> run uids, for samples whose runs together match every criterion.

    Each criterion may be met by a different run of the same sample (the crystal system
    comes from its PXRD run, the oxidation state from its XANES run), which is how
    "all samples predicted cubic with Fe3+" is asked.
    """
    matched: dict[str, list[str]] | None = None
    for field, value in criteria.items():
        by_sample: dict[str, list[str]] = {}
        for uid, summary in runs_where(client, metadata_key=metadata_key, **{field: value}).items():
            sample = summary.get("sample")
            if sample:
                by_sample.setdefault(sample, []).append(uid)
        if matched is None:
            matched = by_sample
        else:
            matched = {s: matched[s] + by_sample[s] for s in matched.keys() & by_sample.keys()}
    return matched or {}

"""Queries over sfn-stream's stop summaries (``stop.sfn.*``) in a Tiled catalog of Bluesky runs.

    runs_where(client, crystal_system="cubic")           # PXRD runs predicted cubic
    runs_where(client, species="Fe3+")                   # XANES runs predicted Fe3+
    samples_where(client, crystal_system="cubic", species="Fe3+")   # samples with both

Keys are given in full (``stop.sfn...``): Bluesky's catalog client would otherwise prefix
them with ``start.``.
"""

from __future__ import annotations

from typing import Any

PREFIX = "stop.sfn."


def runs_where(client, **criteria: Any) -> dict[str, dict]:
    """Run uid -> stop summary for runs whose summary matches every ``field=value`` given."""
    from tiled.queries import Key

    results = client
    for field, value in criteria.items():
        results = results.search(Key(PREFIX + field) == value)
    return {uid: dict(run.metadata["stop"]["sfn"]) for uid, run in results.items()}


def samples_where(client, **criteria: Any) -> dict[str, list[str]]:
    """Sample id -> run uids, for samples whose runs together match every criterion.

    Each criterion may be met by a different run of the same sample (the crystal system
    comes from its PXRD run, the oxidation state from its XANES run), which is how
    "all samples predicted cubic with Fe3+" is asked.
    """
    matched: dict[str, list[str]] | None = None
    for field, value in criteria.items():
        by_sample: dict[str, list[str]] = {}
        for uid, summary in runs_where(client, **{field: value}).items():
            sample = summary.get("sample")
            if sample:
                by_sample.setdefault(sample, []).append(uid)
        if matched is None:
            matched = by_sample
        else:
            matched = {s: matched[s] + by_sample[s] for s in matched.keys() & by_sample.keys()}
    return matched or {}

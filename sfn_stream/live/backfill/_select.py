"""Which stored runs a backfill visits: by uid, by start metadata (``key=value``), by start time."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping


class BackfillError(RuntimeError):
    """The runs asked for cannot be selected (an unknown uid, a bad criterion)."""


def metadata_path(key: str) -> str:
    """The Tiled metadata key of a criterion: ``start.<key>`` unless it names ``start.``/``stop.`` itself
    (``sfn.sample`` -> ``start.sfn.sample``, ``stop.exit_status`` as given)."""
    return key if key.split(".", 1)[0] in ("start", "stop") else f"start.{key}"


def as_timestamp(moment: datetime | float | int | None) -> float | None:
    """Seconds since the epoch (what ``start.time`` holds); a naive datetime is local time."""
    if moment is None or isinstance(moment, (int, float)):
        return moment
    return moment.timestamp()


def select_runs(client, *, uids: Iterable[str] = (), where: Mapping[str, Any] | None = None,
                since: datetime | float | None = None, until: datetime | float | None = None) -> list[str]:
    """Uids of the runs matching every criterion given: ``uids`` (each must exist), ``where`` (start
    metadata equal to the value), ``since <= start.time < until``. No criterion selects every run."""
    from tiled.queries import Key

    results = client
    for key, value in (where or {}).items():
        results = results.search(Key(metadata_path(key)) == value)
    since, until = as_timestamp(since), as_timestamp(until)
    if since is not None and until is not None and until <= since:
        raise BackfillError("the time range is empty: --until must be after --since")
    if since is not None:
        results = results.search(Key("start.time") >= since)
    if until is not None:
        results = results.search(Key("start.time") < until)
    uids = list(dict.fromkeys(uids))
    if not uids:
        return list(results)
    missing = [uid for uid in uids if uid not in client]
    if missing:
        raise BackfillError(f"no run {', '.join(missing)} in Tiled")
    if results is client:
        return uids
    return [uid for uid in uids if uid in results]

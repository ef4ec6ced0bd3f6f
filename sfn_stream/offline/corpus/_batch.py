"""Offline FEFF batches: grow a campaign on machines that reach no Dask scheduler and have no pymatgen.

``export_batch`` takes pending FEFF items of a campaign in its own order and renders here, where
pymatgen is, the feff.inp of each for the campaign's settings and for each fallback, in the order
:func:`compute_feff_site` tries them. ``run_batch`` runs such a file anywhere numpy and feff10 are
installed (``python -m sfn_stream.offline.corpus.batch_run``), each item in a killable sandbox process, and
writes each record, as :func:`execute` makes it for the campaign, the moment it finishes.
``import_results`` appends those records to the campaign's store after checking they belong there.

This module and what it imports at module level need numpy only: the runner's import path must
stay free of pymatgen, scipy, dask, tqdm and torch.
"""

from __future__ import annotations

import datetime
import gzip
import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ._campaign import ResultStore, pending_items, plan_items
from ._items import Item, execute
from ._sandbox import Sandbox

BATCH_FORMAT = "sfn-stream-feff-batch/1"


class BatchError(ValueError):
    """A batch or results file that cannot be used as asked (nothing was written)."""


# --- export (here: pymatgen, the campaign's prepared structures) ----------------------------------


def export_batch(materials, references, config, sites: int, skip: int = 0) -> dict[str, Any]:
    """The batch of the ``sites`` pending FEFF items that follow the first ``skip`` pending ones.

    Pending items come in the order ``dataset build`` runs them (:func:`plan_items`,
    :func:`pending_items`), so ``skip`` leaves the items the local campaign does next to it. Nothing
    is written to the campaign's folder.
    """
    from sfn_stream import __version__
    from sfn_stream.core.simulation import feff_input

    plan = plan_items(materials, references, config)
    pending, _, _ = pending_items(plan, config.store, config.retry_failed)
    feff = [item for item in pending if item.kind == "feff"]
    chosen = feff[skip: skip + sites]
    by_id = {m.material_id: m for m in [*references, *materials]}
    chain = [config.settings, *config.fallbacks]
    timeout = config.timeouts.get("feff")
    items = []
    for item in chosen:
        structure = by_id[item.material_id].structure
        items.append({
            "item": item.to_dict(),
            "inputs": [{"settings": s.to_dict(), "settings_key": s.key(), "inp": feff_input(structure, item.site, s)}
                       for s in chain],
            "timeout": timeout,
        })
    return {
        "format": BATCH_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sfn_stream_version": __version__,
        "workdir": str(config.workdir),
        "settings_key": config.settings.key(),
        "settings": config.settings.to_dict(),
        "fallbacks": [f.to_dict() for f in config.fallbacks],
        "timeout": timeout,
        "pending_feff": len(feff),
        "skip": skip,
        "items": items,
    }


def write_batch(batch: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        json.dump(batch, fh, separators=(",", ":"))


def read_batch(path: str | Path) -> dict[str, Any]:
    with gzip.open(path, "rt") as fh:
        batch = json.load(fh)
    if batch.get("format") != BATCH_FORMAT:
        raise BatchError(f"{path} is not an offline FEFF batch ({BATCH_FORMAT})")
    return batch


# --- run (anywhere: numpy + feff10) ----------------------------------------------------------------


def _item(record: dict[str, Any]) -> Item:
    item = Item(record["kind"], record["material_id"], record["version"], record.get("element"), record.get("site"))
    if item.key != record.get("key"):
        raise BatchError(f"item fields do not make its key {record.get('key')!r}")
    return item


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results file (a line cut short by a kill is left out)."""
    return list(ResultStore(path).records())


def run_batch(
    batch_path: str | Path,
    out: str | Path,
    workers: int,
    time_limit: float | None = None,
    scratch: str | Path | None = None,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> dict[str, Any]:
    """Run a batch's items on ``workers`` sandbox processes, appending each record to ``out``.

    Items whose key ``out`` already holds are not run again (a second run continues the first).
    ``time_limit`` (s from the start): no item starts after it, and items still running then are
    stopped and not written, so the call returns within it (plus the time to kill the processes).
    """
    started = time.monotonic()
    stop_at = None if time_limit is None else started + time_limit
    batch = read_batch(batch_path)
    results = ResultStore(out)  # the campaign's own format: a line cut by a kill is repaired on the next append
    results.path.touch()  # exists after any run, empty when nothing finished
    have = {r.get("key") for r in results.records()}
    todo = [(_item(entry["item"]), [(i["settings"], i["inp"]) for i in entry["inputs"]], entry["timeout"])
            for entry in batch["items"] if entry["item"]["key"] not in have]
    host = socket.gethostname()
    lock = threading.Lock()
    queue = iter(todo)
    counts = {"ok": 0, "failed": 0, "stopped": 0}
    sandboxes: list[Sandbox] = []
    total = len(todo)

    if scratch is not None:  # a node's fresh scratch path need not exist yet
        Path(scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sfn-feff-batch-", dir=scratch) as tmp:

        def worker() -> None:
            sandbox = Sandbox()
            with lock:
                sandboxes.append(sandbox)
            try:
                while stop_at is None or time.monotonic() < stop_at:
                    with lock:
                        entry = next(queue, None)
                    if entry is None:
                        return
                    item, inputs, timeout = entry
                    record = execute(item, {"inputs": inputs}, sandbox, timeout, tmp, stop_at=stop_at)
                    with lock:
                        if not record["ok"] and stop_at is not None and time.monotonic() >= stop_at:
                            counts["stopped"] += 1  # cut short by the time limit: left for another run
                            continue
                        record["host"] = host
                        results.append(record)
                        counts["ok" if record["ok"] else "failed"] += 1
                        done = counts["ok"] + counts["failed"]
                        log(f"{item.key} ok={record['ok']} {record['seconds']:.1f} s {done}/{total}")
            finally:
                sandbox.close()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(workers, total)))]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:  # an interrupt: kill what still runs (each sandbox's FEFF stages with it)
            for sandbox in list(sandboxes):
                sandbox.close()
    feff_seconds = sorted(r["value"]["feff_seconds"] for r in results.records()
                          if r.get("ok") and r.get("key") in {item.key for item, _, _ in todo})
    return {
        "items": len(batch["items"]), "already_in_out": len(batch["items"]) - total, "ok": counts["ok"],
        "failed": counts["failed"], "stopped_at_time_limit": counts["stopped"],
        "not_started": total - sum(counts.values()), "seconds": round(time.monotonic() - started, 1),
        "feff_seconds_median": feff_seconds[len(feff_seconds) // 2] if feff_seconds else None,
        "host": host, "out": str(results.path),
    }


# --- import (here: into the campaign's store) ------------------------------------------------------


def import_results(records: Iterable[dict[str, Any]], plan: Sequence[Item], config) -> dict[str, int]:
    """Append batch records to the campaign's store; keys already done there are skipped.

    Every record is checked first: a record made with other settings than the campaign's, or whose
    key is not in the campaign's plan, refuses the whole import (:class:`BatchError`, nothing written).
    """
    records = list(records)
    wanted = config.settings.key()
    allowed = {s.key() for s in [config.settings, *config.fallbacks]}
    planned = {item.key for item in plan}
    problems = []
    for n, record in enumerate(records, start=1):
        key = record.get("key")
        try:
            _item(record)
        except (BatchError, KeyError, TypeError) as err:
            problems.append(f"record {n} ({key}): not an item record ({err})")
            continue
        if record["version"] != wanted:
            problems.append(f"record {n} ({key}): settings key {record['version']}, the campaign's is {wanted}")
        elif key not in planned:
            problems.append(f"record {n} ({key}): not in the campaign's plan")
        elif not isinstance(record.get("ok"), bool) or (record["ok"] and not isinstance(record.get("value"), dict)):
            problems.append(f"record {n} ({key}): no ok flag or no value")
        elif record["ok"] and record["value"].get("settings_key") not in allowed:
            problems.append(f"record {n} ({key}): made with settings {record['value'].get('settings_key')}, "
                            f"not the campaign's or a fallback's ({', '.join(sorted(allowed))})")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BatchError(f"{len(problems)} of {len(records)} records refused, nothing imported: "
                         + "; ".join(problems[:5]) + more)
    store = config.store
    latest = store.latest()
    counts = {"imported": 0, "ok": 0, "failed": 0, "skipped": 0}
    for record in records:
        if latest.get(record["key"], {}).get("ok"):
            counts["skipped"] += 1
            continue
        store.append(record)
        latest[record["key"]] = record
        counts["imported"] += 1
        counts["ok" if record["ok"] else "failed"] += 1
    return counts

"""The corpus campaign: plan items round-robin across metals, run them (Dask or serially), keep results.

Results go to ``<workdir>/results.jsonl``, one JSON line per finished item, written by the driver as
each item completes: an interrupted campaign loses at most the items in flight, and the next run
skips every key already there. Failed items are recorded with their reason and not retried unless
asked (``retry_failed``), so a structure that times out does not cost its timeout on every resume.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sfn_stream.core.simulation import FeffSettings
from ._items import ITEM_KINDS, ITEM_VERSIONS, Item, execute
from ._sandbox import Sandbox
from ._seed import seeded_sites
from ._structures import CORPUS_METALS, SOURCE_PRIORITY, CorpusMaterial

log = logging.getLogger(__name__)

DEFAULT_TIMEOUTS = {"feff": 1200.0, "labels": 300.0, "sticks": 300.0, "teacher": 300.0}


class ResultStore:
    """Append-only JSON-lines record of finished items (the last record of a key wins)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        with self.path.open() as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: that item runs again
                    continue

    def latest(self) -> dict[str, dict[str, Any]]:
        return {record["key"]: record for record in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self.path.open("ab+") as fh:
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # the previous run was killed mid-line: end that line first
                    line = b"\n" + line
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


@dataclass
class CampaignConfig:
    workdir: Path
    settings: FeffSettings
    # tried in turn where FEFF fails with ``settings`` (not on timeouts); the item key stays that of
    # ``settings``, the result records the settings that made it
    fallbacks: tuple[FeffSettings, ...] = ()
    kinds: tuple[str, ...] = ITEM_KINDS
    metals: tuple[str, ...] = CORPUS_METALS
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    max_materials_per_metal: int | None = None
    retry_failed: bool = False
    nice: int = 0  # niceness of the sandbox processes that do the work

    @property
    def store(self) -> ResultStore:
        return ResultStore(Path(self.workdir) / "results.jsonl")


def _cost(material: CorpusMaterial, metal: str, metals: Sequence[str]) -> tuple:
    # materials with several of the campaign's metals first (each of them gives a multi-edge sample), then
    # cheap first within a metal: fewer inequivalent sites of it, then smaller cells
    single_metal = sum(m in material.site_groups for m in metals) < 2
    return (single_metal, SOURCE_PRIORITY.get(material.source, 9), len(material.site_groups[metal]),
            len(material.structure), material.material_id)


def needs_feff(material: CorpusMaterial, metal: str) -> bool:
    """OmniXAS materials bring their Cu spectra (FEFF 9.9.1 at the OMNIXAS settings) from ../shared."""
    return not (material.source == "omnixas" and metal == "Cu")


def plan_items(
    materials: Sequence[CorpusMaterial],
    references: Sequence[CorpusMaterial],
    config: CampaignConfig,
) -> list[Item]:
    """Every item in campaign order: reference solids first, then the labels of materials that need no
    FEFF, then round-robin over the metals.

    Each round takes the next material of every metal, so a campaign stopped at any point has about
    as many finished materials per metal as the rarest metal allows. Within a metal, materials holding
    two or more of the campaign's metals come first (multi-edge samples), then the cheapest. A material
    brings its labels, stick pattern, teacher labels and the FEFF sites of all its metals the first time
    it comes up, so that its edges are finished together.
    """
    key = config.settings.key()
    order: list[Item] = []
    seen: set[str] = set()

    def feff_items(material: CorpusMaterial, metal: str) -> list[Item]:
        if "feff" not in config.kinds or not needs_feff(material, metal):
            return []
        return [Item("feff", material.material_id, key, metal, group[0]) for group in material.site_groups[metal]]

    def material_items(material: CorpusMaterial) -> list[Item]:
        if material.material_id in seen:
            return []
        seen.add(material.material_id)
        return [Item(kind, material.material_id, ITEM_VERSIONS[kind])
                for kind in ("labels", "sticks", "teacher") if kind in config.kinds]

    for reference in references:
        for metal in reference.metals:
            order += feff_items(reference, metal)
    # materials whose spectrum needs no FEFF (OmniXAS Cu) enter the corpus with their labels: a tenth of
    # a second each (measured), so all of them come before the FEFF sites
    for material in materials:
        if any(metal in config.metals and not needs_feff(material, metal) for metal in material.metals):
            order += material_items(material)
    queues: dict[str, deque] = {}
    for metal in config.metals:
        chosen = sorted((m for m in materials if metal in m.site_groups),
                        key=lambda m: _cost(m, metal, config.metals))
        queues[metal] = deque(chosen[: config.max_materials_per_metal])
    planned: set[tuple[str, str]] = set()  # (material, metal) whose FEFF sites are in the order already
    while any(queues.values()):
        for metal in config.metals:
            if queues[metal]:
                material = queues[metal].popleft()
                order += material_items(material)
                for edge in [metal] + [m for m in material.metals if m in config.metals and m != metal]:
                    if (material.material_id, edge) not in planned:
                        planned.add((material.material_id, edge))
                        order += feff_items(material, edge)
    return order


def item_payload(item: Item, material: CorpusMaterial, settings: FeffSettings,
                 fallbacks: Sequence[FeffSettings] = ()) -> dict[str, Any]:
    payload: dict[str, Any] = {"structure": material.structure.as_dict()}
    if item.kind == "feff":
        payload["settings"] = settings.to_dict()
        payload["fallbacks"] = [f.to_dict() for f in fallbacks]
    if item.kind == "labels":
        payload["metals"] = material.metals
    return payload


# --- execution ------------------------------------------------------------------------------------

_WORKER_SANDBOX: Sandbox | None = None


def run_item(item: Item, payload: dict, timeout: float | None, scratch: str, nice: int = 0) -> dict:
    """Dask task: run ``item`` in this worker process's sandbox (created on first use)."""
    global _WORKER_SANDBOX
    if _WORKER_SANDBOX is None:
        import atexit

        _WORKER_SANDBOX = Sandbox(nice=nice)
        atexit.register(_WORKER_SANDBOX.close)
    return execute(item, payload, _WORKER_SANDBOX, timeout, scratch)


@dataclass
class CampaignSummary:
    planned: int
    already_done: int
    skipped_failed: int
    ran: int
    succeeded: int
    failed: int
    seconds: float
    failures: dict[str, int]  # error type -> count (this run)
    workers: int | str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _covered_by_seed(item: Item, seeded: dict[tuple[str, str], set[int]]) -> bool:
    return item.kind == "feff" and item.site in seeded.get((item.material_id, item.element), ())


def pending_items(plan: Sequence[Item], store: ResultStore, retry_failed: bool) -> tuple[list[Item], int, int]:
    """Items without a record; done counts FEFF sites covered by a seeded material spectrum too."""
    latest = store.latest()
    seeded = {key: seeded_sites(latest, key) for key in {i.version for i in plan if i.kind == "feff"}}
    pending, done, failed = [], 0, 0
    for item in plan:
        record = latest.get(item.key)
        if record is None and _covered_by_seed(item, seeded.get(item.version, {})):
            done += 1
        elif record is None:
            pending.append(item)
        elif record.get("ok"):
            done += 1
        elif retry_failed:
            pending.append(item)
        else:
            failed += 1
    return pending, done, failed


def run_campaign(
    materials: Sequence[CorpusMaterial],
    references: Sequence[CorpusMaterial],
    config: CampaignConfig,
    *,
    scheduler: str | None = None,
    n_workers: int = 1,
    progress: bool = True,
    max_items: int | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> CampaignSummary:
    """Run every planned item that is not finished yet.

    ``scheduler``: None runs a Dask ``LocalCluster`` with ``n_workers`` single-threaded worker
    processes; an address ("tcp://host:8786") runs on that cluster's scheduler; "serial" runs in
    this process (one sandbox), without Dask.
    """
    by_id = {m.material_id: m for m in [*references, *materials]}
    plan = plan_items(materials, references, config)
    store = config.store
    pending, done, skipped = pending_items(plan, store, config.retry_failed)
    if max_items is not None:
        pending = pending[:max_items]
    scratch = Path(config.workdir) / "feff_tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts: Counter = Counter()
    failures: Counter = Counter()

    def record_done(record: dict) -> None:
        store.append(record)
        counts["ok" if record["ok"] else "failed"] += 1
        if not record["ok"]:
            failures[record["error"].split(":")[0]] += 1
        if on_record:
            on_record(record)

    bar = _progress_bar(len(pending), progress)
    jobs = ((item, item_payload(item, by_id[item.material_id], config.settings, config.fallbacks),
             config.timeouts.get(item.kind)) for item in pending)
    try:
        if not pending:
            workers: int | str = 0
        elif scheduler == "serial":
            workers = 1
            with Sandbox(nice=config.nice) as sandbox:
                for item, payload, timeout in jobs:
                    record_done(execute(item, payload, sandbox, timeout, str(scratch)))
                    _tick(bar, counts)
        else:
            workers = _run_dask(jobs, record_done, bar, counts, scheduler, n_workers, str(scratch), config.nice)
    finally:
        bar.close()
    return CampaignSummary(
        planned=len(plan), already_done=done, skipped_failed=skipped, ran=sum(counts.values()),
        succeeded=counts["ok"], failed=counts["failed"], seconds=round(time.perf_counter() - started, 1),
        failures=dict(failures), workers=workers,
    )


def _run_dask(jobs, record_done, bar, counts, scheduler, n_workers, scratch, nice) -> int | str:
    """Keep a few items per worker in flight, in plan order (so the round-robin order holds)."""
    import dask
    from distributed import Client, LocalCluster, as_completed

    if not log.isEnabledFor(logging.INFO):  # distributed logs every start and stop at INFO by itself
        for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core",
                     "distributed.http.proxy", "distributed.worker"):
            logging.getLogger(name).setLevel(logging.WARNING)
    cluster = None
    if scheduler is None:
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, memory_limit=0)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        workers = len(client.scheduler_info()["workers"]) or n_workers
        window = max(2, 2 * workers)
        queue = as_completed()
        jobs = iter(jobs)
        items = {}

        def submit_next() -> bool:
            job = next(jobs, None)
            if job is None:
                return False
            item, payload, timeout = job
            future = client.submit(run_item, item, payload, timeout, scratch, nice, pure=False,
                                   key=f"item-{item.key}-{time.time_ns()}")
            items[future.key] = item
            queue.add(future)
            return True

        for _ in range(window):
            if not submit_next():
                break
        for future in queue:
            item = items.pop(future.key)
            try:
                record = future.result()
            except Exception as err:  # the worker itself died (KilledWorker, lost connection)
                record = {**item.to_dict(), "ok": False, "error": f"{type(err).__name__}: {err}"[:500],
                          "seconds": None}
            record_done(record)
            future.release()
            _tick(bar, counts)
            submit_next()
        return workers if scheduler is None else f"{workers} ({scheduler})"
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, disable=not enabled, unit="item", dynamic_ncols=True, smoothing=0.05,
                mininterval=0.5 if interactive else 30.0, desc="corpus")


def _tick(bar, counts: Counter) -> None:
    bar.update(1)
    if counts["failed"]:
        bar.set_postfix(failed=counts["failed"], refresh=False)


def campaign_status(materials: Sequence[CorpusMaterial], references: Sequence[CorpusMaterial],
                    config: CampaignConfig) -> dict[str, Any]:
    """Where a campaign stands: items done/failed/pending per kind, complete materials per metal,
    and the pace of the last hour of FEFF sites (from the store's file times and record seconds)."""
    plan = plan_items(materials, references, config)
    latest = config.store.latest()
    seeded = seeded_sites(latest, config.settings.key())
    by_kind: dict[str, Counter] = {}
    for item in plan:
        record = latest.get(item.key)
        if record is None:
            state = "seeded" if _covered_by_seed(item, seeded) else "pending"
        else:
            state = "done" if record.get("ok") else "failed"
        by_kind.setdefault(item.kind, Counter())[state] += 1
    done_sites = {(i.material_id, i.element, i.site) for i in plan if i.kind == "feff"
                  and (latest.get(i.key, {}).get("ok") or _covered_by_seed(i, seeded))}
    complete: Counter = Counter()
    for material in materials:
        for metal in material.metals:
            if metal in config.metals and needs_feff(material, metal) and all(
                    (material.material_id, metal, g[0]) in done_sites for g in material.site_groups[metal]):
                complete[metal] += 1
    feff_seconds = [r["value"]["feff_seconds"] for r in latest.values()
                    if r.get("kind") == "feff" and r.get("ok") and r.get("version") == config.settings.key()]
    modified = config.store.path.stat().st_mtime if config.store.path.is_file() else None
    return {
        "workdir": str(config.workdir), "settings": config.settings.describe(),
        "settings_key": config.settings.key(),
        "items": {kind: dict(counts) for kind, counts in by_kind.items()},
        "materials_with_feff_spectra": {metal: complete.get(metal, 0) for metal in config.metals},
        "feff_sites_done": len(feff_seconds),
        "feff_spectra_seeded": len(seeded),
        "feff_seconds_per_site_median": sorted(feff_seconds)[len(feff_seconds) // 2] if feff_seconds else None,
        "last_result_age_s": None if modified is None else round(time.time() - modified),
    }

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sfn_stream.core.simulation import FeffSettings

from ._items import ITEM_KINDS, ITEM_VERSIONS, SEED_KIND, Item, execute
from ._sandbox import Sandbox
from ._seed import seeded_sites
from ._structures import CORPUS_METALS, SOURCE_PRIORITY, CorpusMaterial

log = logging.getLogger(__name__)

# The issue-11 targets the order works towards first: materials with FEFF10 spectra per metal, and
# materials with two or more 3d metals that have every edge.
TARGET_PER_METAL = 150
TARGET_MULTI_EDGE = 400
# A metal's pick looks this far down its cheapest-first queue for a rarer (oxidation state, CN) class
CLASS_WINDOW = 8


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
    target_per_metal: int = TARGET_PER_METAL  # the order's tiers (campaign_tiers)
    target_multi_edge: int = TARGET_MULTI_EDGE
    # (material, metal) -> "oxidation state/CN" class of the labels finished so far (label_classes): the
    # order prefers a metal's rarer classes; None: by cost alone
    classes: Mapping[tuple[str, str], str] | None = None
    # materials whose spectra were seeded from the committed corpus (seeded_materials): their labels, sticks
    # and teacher labels are recomputed, not seeded, and a snapshot needs them, so they come first
    seeded: frozenset[str] = frozenset()
    # materials of the shared evaluation splits (val, test): after the target tiers they come first (the
    # ``held_out`` tier), because the held-out sets, ~25 materials per metal each, now limit what the
    # figures can show (a 0.85 target, an ECE of 0.05) more than training data does (docs/corpus.md)
    held_out: frozenset[str] = frozenset()
    retry_failed: bool | frozenset[str] = False  # True: every failed item; a set: the failed items with these keys
    nice: int = 0  # niceness of the sandbox processes that do the work

    @property
    def store(self) -> ResultStore:
        return ResultStore(Path(self.workdir) / "results.jsonl")


def needs_feff(material: CorpusMaterial, metal: str) -> bool:
    """OmniXAS materials bring their Cu spectra (FEFF 9.9.1 at the OMNIXAS settings) from ../shared; one
    with another 3d metal gets its Cu edge at the corpus settings too, so that its edges share one
    calculation (the OmniXAS spectrum stays a second fidelity)."""
    return not (material.source == "omnixas" and metal == "Cu" and len(material.metals) < 2)


def feff_edges(material: CorpusMaterial, metals: Sequence[str]) -> list[str]:
    """The material's edges among ``metals`` that the campaign computes."""
    return [m for m in material.metals if m in metals and needs_feff(material, m)]


def _cost(material: CorpusMaterial, metals: Sequence[str]) -> tuple:
    # cheapest first: fewest inequivalent sites over all the edges it brings, then smaller cells
    sites = sum(len(material.site_groups[m]) for m in feff_edges(material, metals))
    return (sites, len(material.structure), SOURCE_PRIORITY.get(material.source, 9), material.material_id)


def seeded_materials(records: Iterable[dict]) -> frozenset[str]:
    """Ids of the materials with a spectrum seeded from a corpus snapshot."""
    return frozenset(r["material_id"] for r in records if r.get("kind") == SEED_KIND and r.get("ok"))


def label_classes(records: Iterable[dict]) -> dict[tuple[str, str], str]:
    """(material, metal) -> "oxidation state/CN" class from the campaign's finished labels items."""
    classes = {}
    for record in records:
        if record.get("kind") == "labels" and record.get("ok") and record.get("version") == ITEM_VERSIONS["labels"]:
            for metal, site in (record["value"].get("absorbers") or {}).items():
                classes[(record["material_id"], metal)] = f"{site.get('oxidation_state_class')}/{site.get('cn_class')}"
    return classes


ORDER_CLASSES = "order_classes.json"


def save_order_classes(workdir: str | Path, classes: Mapping[tuple[str, str], str]) -> None:
    """Freeze the classes a build's order was made with, so that status and batch-export (which plan too)
    see that order while labels keep arriving."""
    path = Path(workdir) / ORDER_CLASSES
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({f"{mid}|{metal}": value for (mid, metal), value in sorted(classes.items())}))
    tmp.replace(path)


def load_order_classes(workdir: str | Path) -> dict[tuple[str, str], str] | None:
    """The classes of the last build's order (None before a build made one: the order by cost alone)."""
    path = Path(workdir) / ORDER_CLASSES
    if not path.is_file():
        return None
    return {tuple(key.split("|", 1)): value for key, value in json.loads(path.read_text()).items()}


def _next_pick(queue: deque, metal: str, classes: Mapping | None, class_counts: Counter) -> CorpusMaterial:
    """The cheapest material of ``queue``, or, knowing classes, the one of the next few whose (metal, class)
    has the fewest materials so far (an unlabelled material counts as its own class, "unknown")."""
    if not classes:
        return queue.popleft()
    window = list(islice(queue, CLASS_WINDOW))
    best = min(range(len(window)), key=lambda n: (
        class_counts[(metal, classes.get((window[n].material_id, metal), "unknown"))], n))
    material = window[best]
    del queue[best]
    return material


def _scarcest_first(pool: Sequence[CorpusMaterial], metals: Sequence[str], counts: Counter, taken: set[str],
                    *, limit: int | None = None, metal_target: int | None = None, metal_cap: int | None = None,
                    classes: Mapping | None = None, class_counts: Counter | None = None
                    ) -> list[tuple[str, CorpusMaterial]]:
    """(metal it was picked for, material) from ``pool`` (sorted cheapest first): each pick takes the
    metal with the fewest materials so far (``counts``, updated) and its cheapest material not ``taken``
    (or a rarer class among the next few, :func:`_next_pick`). Stops after ``limit`` picks, or when
    every metal has ``metal_target``; a metal at ``metal_cap`` is not picked for again (a multi-metal
    material picked for another metal still brings it)."""
    class_counts = Counter() if class_counts is None else class_counts
    queues = {metal: deque(m for m in pool if metal in feff_edges(m, metals)) for metal in metals}
    picked: list[tuple[str, CorpusMaterial]] = []
    while limit is None or len(picked) < limit:
        for queue in queues.values():
            while queue and queue[0].material_id in taken:
                queue.popleft()
        open_metals = [m for m in metals if queues[m]
                       and (metal_target is None or counts[m] < metal_target)
                       and (metal_cap is None or counts[m] < metal_cap)]
        if not open_metals:
            break
        metal = min(open_metals, key=lambda m: counts[m])  # ties: the campaign's metal order
        queue = queues[metal]
        n = 0
        while classes and n < min(CLASS_WINDOW, len(queue)):  # no taken ones in the class window
            if queue[n].material_id in taken:
                del queue[n]
            else:
                n += 1
        material = _next_pick(queue, metal, classes, class_counts)
        taken.add(material.material_id)
        edges = feff_edges(material, metals)
        counts.update(edges)
        class_counts.update((m, (classes or {}).get((material.material_id, m), "unknown")) for m in edges)
        picked.append((metal, material))
    return picked


def campaign_tiers(materials: Sequence[CorpusMaterial], config: CampaignConfig
                   ) -> dict[str, list[tuple[str, CorpusMaterial]]]:
    """The campaign's FEFF materials in order, in tiers: ``multi_edge`` (materials with two or more of the
    campaign's metals, up to :data:`TARGET_MULTI_EDGE`), ``scarce_metals`` (then each metal up to
    :data:`TARGET_PER_METAL` materials), ``held_out`` (the remaining materials of ``config.held_out``, the
    evaluation splits: multi-metal ones, then the others), ``rest`` (the remaining multi-metal materials, then
    the others). Within a tier the metal with the fewest materials so far picks next, its cheapest material first.
    Each entry: (the metal it was picked for, the material)."""
    metals = config.metals
    candidates = sorted((m for m in materials if feff_edges(m, metals)), key=lambda m: _cost(m, metals))
    multi = [m for m in candidates if len([e for e in m.metals if e in metals]) >= 2]
    counts: Counter = Counter()
    taken: set[str] = set()
    shared = {"metal_cap": config.max_materials_per_metal, "classes": config.classes, "class_counts": Counter()}
    tiers = {"multi_edge": _scarcest_first(multi, metals, counts, taken, limit=config.target_multi_edge, **shared)}
    tiers["scarce_metals"] = _scarcest_first(candidates, metals, counts, taken,
                                             metal_target=config.target_per_metal, **shared)
    held_out = [m for m in candidates if m.material_id in config.held_out]
    tiers["held_out"] = (_scarcest_first([m for m in multi if m.material_id in config.held_out], metals, counts,
                                         taken, **shared)
                         + _scarcest_first(held_out, metals, counts, taken, **shared))
    tiers["rest"] = (_scarcest_first(multi, metals, counts, taken, **shared)
                     + _scarcest_first(candidates, metals, counts, taken, **shared))
    return tiers


def plan_items(
    materials: Sequence[CorpusMaterial],
    references: Sequence[CorpusMaterial],
    config: CampaignConfig,
) -> list[Item]:
    """Every item in campaign order: reference solids first, then the labels of the OmniXAS materials
    (their Cu spectra need no FEFF), then the FEFF materials tier by tier (:func:`campaign_tiers`):
    multi-edge materials, then the scarcest metals up to the per-metal target, then the rest.

    A material brings its labels, stick pattern, teacher labels and the FEFF sites of all its metals
    when it comes up, so that its edges are finished together. A campaign stopped at any point has
    about as many materials per metal as the rarest metal allows.
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
    # the OmniXAS materials enter the corpus with their labels and ../shared's Cu spectra: a tenth of a
    # second each (measured), so all of them come before the FEFF sites
    for material in materials:
        if material.source == "omnixas" and "Cu" in config.metals and "Cu" in material.metals:
            order += material_items(material)
    # seconds each, and without them a snapshot would lose the committed corpus's labels (LabelsPending)
    for material in materials:
        if material.material_id in config.seeded:
            order += material_items(material)
    for tier in campaign_tiers(materials, config).values():
        for metal, material in tier:
            order += material_items(material)
            for edge in [metal] + [m for m in feff_edges(material, config.metals) if m != metal]:
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


def pending_items(plan: Sequence[Item], store: ResultStore | None, retry_failed: bool | frozenset[str],
                  latest: dict[str, dict] | None = None) -> tuple[list[Item], int, int]:
    """Items without a record, and failed ones that ``retry_failed`` names (True: all of them; a set: those with
    these keys); done counts FEFF sites covered by a seeded material spectrum too.
    ``latest``: the records to go by instead of the store's (a plan-only preview with a seed in memory)."""
    latest = store.latest() if latest is None else latest
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
        elif retry_failed is True or (retry_failed and item.key in retry_failed):
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
        record.setdefault("finished_at", round(time.time(), 1))  # the pace `dataset status` measures
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
            except Exception as err:  # noqa: BLE001 the worker itself died (KilledWorker, lost connection)
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


def _tier_of(materials: Sequence[CorpusMaterial], config: CampaignConfig) -> dict[str, str]:
    return {material.material_id: tier for tier, picks in campaign_tiers(materials, config).items()
            for _, material in picks}


def pending_breakdown(pending: Sequence[Item], materials: Sequence[CorpusMaterial],
                      references: Sequence[CorpusMaterial], config: CampaignConfig) -> dict[str, Any]:
    """Pending items per kind; pending FEFF sites per source, metal and order tier."""
    source = {m.material_id: m.source for m in [*references, *materials]}
    tier = {m.material_id: "references" for m in references} | _tier_of(materials, config)
    feff = [item for item in pending if item.kind == "feff"]
    return {
        "pending_per_kind": dict(Counter(item.kind for item in pending)),
        "pending_feff_per_source": dict(Counter(source[i.material_id] for i in feff).most_common()),
        "pending_feff_per_metal": {metal: n for metal in config.metals
                                   if (n := sum(i.element == metal for i in feff))},
        "pending_feff_per_tier": dict(Counter(tier.get(i.material_id, "rest") for i in feff)),
    }


def plan_summary(materials: Sequence[CorpusMaterial], references: Sequence[CorpusMaterial], config: CampaignConfig,
                 latest: dict[str, dict] | None = None, first: int = 10) -> dict[str, Any]:
    """What `dataset build` would queue, without running anything: counts per kind, source, metal and
    tier, materials per tier and source, and the first ``first`` pending items."""
    plan = plan_items(materials, references, config)
    pending, done, failed = pending_items(plan, config.store, config.retry_failed, latest)
    tiers = campaign_tiers(materials, config)
    return {
        "planned": len(plan), "done": done, "failed_not_retried": failed, "pending": len(pending),
        "materials_per_source": dict(Counter(m.source for m in materials).most_common()),
        "tier_materials": {tier: dict(Counter(m.source for _, m in picks).most_common())
                           for tier, picks in tiers.items()},
        **pending_breakdown(pending, materials, references, config),
        "first_pending": [item.key for item in pending[:first]],
    }


def feff_pace(latest: dict[str, dict], settings_key: str, window: int = 200) -> float | None:
    """FEFF sites per hour over the finish times of the last ``window`` sites (None before 5 are timed)."""
    stamps = sorted(r["finished_at"] for r in latest.values() if r.get("kind") == "feff"
                    and r.get("version") == settings_key and r.get("finished_at"))[-window:]
    if len(stamps) < 5 or stamps[-1] <= stamps[0]:
        return None
    return (len(stamps) - 1) * 3600.0 / (stamps[-1] - stamps[0])


def campaign_status(materials: Sequence[CorpusMaterial], references: Sequence[CorpusMaterial],
                    config: CampaignConfig, workers: int = 1) -> dict[str, Any]:
    """Where a campaign stands: items done/failed/pending per kind, pending FEFF sites per source and
    tier, complete materials per metal and multi-metal materials with every edge, and an ETA at the
    measured pace (finish times of recent sites; before there are any, the median seconds per site on
    ``workers`` workers)."""
    plan = plan_items(materials, references, config)
    latest = config.store.latest()
    seeded = seeded_sites(latest, config.settings.key())
    by_kind: dict[str, Counter] = {}
    pending: list[Item] = []
    for item in plan:
        record = latest.get(item.key)
        if record is None:
            state = "seeded" if _covered_by_seed(item, seeded) else "pending"
        else:
            state = "done" if record.get("ok") else "failed"
        if state == "pending":
            pending.append(item)
        by_kind.setdefault(item.kind, Counter())[state] += 1
    done_sites = {(i.material_id, i.element, i.site) for i in plan if i.kind == "feff"
                  and (latest.get(i.key, {}).get("ok") or _covered_by_seed(i, seeded))}

    def edge_done(material: CorpusMaterial, metal: str) -> bool:
        return all((material.material_id, metal, g[0]) in done_sites for g in material.site_groups[metal])

    complete: Counter = Counter()
    multi_complete = 0
    for material in materials:
        edges = [m for m in material.metals if m in config.metals]
        finished = {m for m in edges if needs_feff(material, m) and edge_done(material, m)}
        complete.update(finished)
        if len(edges) >= 2 and all(m in finished or not needs_feff(material, m) for m in edges):
            multi_complete += 1
    feff_seconds = [r["value"]["feff_seconds"] for r in latest.values()
                    if r.get("kind") == "feff" and r.get("ok") and r.get("version") == config.settings.key()]
    median = sorted(feff_seconds)[len(feff_seconds) // 2] if feff_seconds else None
    modified = config.store.path.stat().st_mtime if config.store.path.is_file() else None
    breakdown = pending_breakdown(pending, materials, references, config)
    pace = feff_pace(latest, config.settings.key())
    pace_from = "finish times of the last FEFF sites"
    if pace is None and median:
        pace, pace_from = 3600.0 * workers / median, f"median s/site on {workers} worker(s), no finish times yet"
    per_tier = breakdown["pending_feff_per_tier"]
    to_targets = sum(per_tier.get(t, 0) for t in ("references", "multi_edge", "scarce_metals"))
    return {
        "workdir": str(config.workdir), "settings": config.settings.describe(),
        "settings_key": config.settings.key(),
        "items": {kind: dict(counts) for kind, counts in by_kind.items()},
        **breakdown,
        "materials_with_feff_spectra": {metal: complete.get(metal, 0) for metal in config.metals},
        "multi_metal_with_all_edges": multi_complete,
        "targets": {"per_metal": config.target_per_metal, "multi_edge": config.target_multi_edge},
        "feff_sites_done": len(feff_seconds),
        "feff_spectra_seeded": len(seeded),
        "feff_seconds_per_site_median": median,
        "feff_sites_per_hour": None if pace is None else round(pace, 1), "pace_from": pace_from if pace else None,
        "eta_hours_targets": None if not pace else round(to_targets / pace, 1),
        "eta_hours_all": None if not pace else round(len([i for i in pending if i.kind == "feff"]) / pace, 1),
        "last_result_age_s": None if modified is None else round(time.time() - modified),
    }

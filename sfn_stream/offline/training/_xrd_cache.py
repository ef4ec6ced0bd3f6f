"""Resumable stick cache for PXRD training: AMCSD, Materials Project and pyxtal-generated crystals.

    python -m sfn_stream.offline.training._xrd_cache build [--out DIR] [--workers N] [--limit N]
        [--sources amcsd,mp,pyxtal] [--generated-per-class N] [--calculator pymatgen|rust]
    python -m sfn_stream.offline.training._xrd_cache merge [--out DIR]   # -> DIR/xrd_sticks_cache.npz

Sources (a structure needs two or more elements):
- ``amcsd``: every CIF of the AMCSD shipped in larixite, disordered ones included (pymatgen's
  XRDCalculator weights scattering factors by site occupancy);
- ``mp``: the Materials Project structures of ../shared/data/omnixas_cu and ../shared/data/matminer_mp;
- ``pyxtal``: random crystals from space-group symmetry (Wyckoff multiplicities chosen so the
  composition fits), space groups drawn uniformly within a crystal system, as many per class as
  bring it to ``generated_per_class`` beyond the real structures already cached (class balance;
  Schopmans et al. 2023 show generated crystals generalise to unseen structure types).

The cache lives outside the repository by default (``~/.cache/sfn-stream/xrd_sticks``): the full one
is ~40k structures x ~300 reflections, tens of MB that no commit needs. Each worker (niced) computes
one structure under a time limit; results are appended to shards of ``SHARD_SIZE`` records and every
key done (kept or rejected, with its reason) to ``done.jsonl``, so a build that stops resumes where
it was. ``merge`` writes one :class:`StickTable` that ``_xrd_peak_training`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.simulation import StickTable

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sfn-stream" / "xrd_sticks"
SHARD_SIZE = 500
MERGED_FILE = "xrd_sticks_cache.npz"
SOURCES = ("amcsd", "mp", "pyxtal")
# Elements for generated crystals: common cations and anions of inorganic solids (no noble gases, no H).
GENERATED_CATIONS = ["Li", "Na", "K", "Rb", "Cs", "Be", "Mg", "Ca", "Sr", "Ba", "Sc", "Y", "La", "Ce", "Ti", "Zr", "Hf", "V", "Nb", "Ta", "Cr", "Mo", "W", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Cd", "Al", "Ga", "In", "Si", "Ge", "Sn", "Pb", "Bi", "Sb", "Ag", "Pd", "Pt", "Au"]
GENERATED_ANIONS = ["O", "S", "Se", "Te", "F", "Cl", "Br", "I", "N", "P", "C", "B", "As"]
SPACE_GROUPS_OF = {
    "triclinic": range(1, 3), "monoclinic": range(3, 16), "orthorhombic": range(16, 75),
    "tetragonal": range(75, 143), "trigonal": range(143, 168), "hexagonal": range(168, 195), "cubic": range(195, 231),
}


# --- jobs: (key, source, payload); payloads are small so that workers parse and compute ----------


def amcsd_jobs() -> Iterator[tuple[str, str, int]]:
    from sfn_stream.core.structure import amcsd_ids

    for amcsd_id in amcsd_ids():
        yield f"amcsd:{amcsd_id}", "amcsd", amcsd_id


def mp_jobs() -> Iterator[tuple[str, str, str]]:
    from sfn_stream.offline.shared import (
        SharedDataMissing,
        matminer_mp_materials,
        omnixas_poscars,
    )

    seen = set()
    for loader in (omnixas_poscars, lambda: {k: v["poscar"] for k, v in matminer_mp_materials().items()}):
        try:
            poscars = loader()
        except (SharedDataMissing, FileNotFoundError):
            continue
        for mp_id, poscar in sorted(poscars.items()):
            if mp_id not in seen:
                seen.add(mp_id)
                yield mp_id, "mp", poscar


def pyxtal_jobs(deficit: dict[str, int], seed: int = 0) -> Iterator[tuple[str, str, tuple[int, int]]]:
    """``deficit[crystal_system]`` generated crystals per class, space groups uniform within the class."""
    rng = np.random.default_rng(seed)
    for system, n in deficit.items():
        groups = list(SPACE_GROUPS_OF[system])
        for k in range(n):
            sg = int(groups[rng.integers(len(groups))])
            yield f"pyxtal:{system}:{k}", "pyxtal", (sg, seed * 7919 + hash_int(system) + k)


def hash_int(text: str) -> int:
    return int.from_bytes(text.encode()[:6].ljust(6, b"\0"), "little") % 1_000_003


# --- worker side -----------------------------------------------------------------------------------


_CALCULATOR = "pymatgen"


def _init_worker(niceness: int, calculator: str) -> None:
    global _CALCULATOR
    if niceness:
        os.nice(niceness)
    _CALCULATOR = calculator


def structure_of(source: str, payload) -> tuple[object | None, str | None]:
    if source == "amcsd":
        from sfn_stream.core.structure import iter_amcsd_structures

        entry = next(iter(iter_amcsd_structures([payload], ordered_only=False)))
        return entry.structure, entry.reject_reason
    if source == "mp":
        from pymatgen.core import Structure

        return Structure.from_str(payload, fmt="poscar"), None
    return generated_crystal(*payload)


def generated_crystal(space_group: int, seed: int, attempts: int = 8) -> tuple[object | None, str | None]:
    """A random crystal of ``space_group`` with 2-3 elements (pyxtal), or (None, reason)."""
    from pyxtal import pyxtal
    from pyxtal.symmetry import Group

    rng = np.random.default_rng(seed)
    multiplicities = np.array(sorted({w.multiplicity for w in Group(space_group).Wyckoff_positions}))
    weights = 1.0 / multiplicities  # small cells: most real structures have few atoms per cell
    for _ in range(attempts):
        n_cations = int(rng.integers(1, 3))
        species = [str(e) for e in rng.choice(GENERATED_CATIONS, n_cations, replace=False)] + [str(rng.choice(GENERATED_ANIONS))]
        counts = [int(rng.choice(multiplicities, p=weights / weights.sum())) for _ in species]
        if sum(counts) > 60:
            continue
        crystal = pyxtal()
        try:
            crystal.from_random(3, space_group, species, counts, random_state=int(rng.integers(1 << 30)))
        except Exception:  # noqa: BLE001, S112 - pyxtal raises many kinds on compositions it cannot place; another draw usually fits
            continue
        if crystal.valid:
            return crystal.to_pymatgen(), None
    return None, "generation_failed"


def compute(job: tuple[str, str, object], timeout_s: float = 30.0) -> tuple[str, dict | None, str | None]:
    """(key, record, reject reason) of one job; runs in a worker."""
    from ._omnixas import TimeLimitExceeded, time_limit
    from ._xrd import structure_record

    key, source, payload = job
    try:
        with time_limit(timeout_s):
            structure, reason = structure_of(source, payload)
    except TimeLimitExceeded:
        return key, None, "timeout"
    except Exception as err:  # noqa: BLE001 - one bad CIF or POSCAR must not stop a build of thousands
        return key, None, f"unreadable: {type(err).__name__}"
    if structure is None:
        return key, None, reason
    if len(structure.composition.elements) < 2:
        return key, None, "single_element"
    record, reason = structure_record(key, structure, timeout_s=timeout_s, calculator=_CALCULATOR)
    if record is not None:
        record["source"] = source
    return key, record, reason


# --- the cache -------------------------------------------------------------------------------------


class StickCache:
    """A folder of shards + ``done.jsonl``; appends only, so an interrupted build loses at most one shard."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = self.folder / "done.jsonl"
        self.pending: list[dict] = []

    def done(self) -> dict[str, dict]:
        if not self.log.is_file():
            return {}
        out = {}
        for line in self.log.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["key"]] = row
        return out

    def class_counts(self) -> Counter:
        return Counter(row["crystal_system"] for row in self.done().values()
                       if row.get("crystal_system") and not row["key"].startswith("pyxtal:"))

    def add(self, key: str, record: dict | None, reason: str | None) -> None:
        if record is not None:
            self.pending.append(record)
        if len(self.pending) >= SHARD_SIZE:
            self.flush()
        if record is None:  # rejections are final at once; kept records once their shard is written
            self._log([{"key": key, "reason": reason}])

    def flush(self) -> None:
        if not self.pending:
            return
        shard = self.folder / f"shard_{time.time_ns()}.npz"
        StickTable.from_records(self.pending, {"sources": sorted({r["source"] for r in self.pending})}).save(shard)
        self._log([{"key": r["id"], "crystal_system": r["crystal_system"], "spacegroup": r["spacegroup"],
                    "shard": shard.name} for r in self.pending])
        self.pending = []

    def _log(self, rows: list[dict]) -> None:
        with self.log.open("a") as fh:
            fh.write("".join(json.dumps(row) + "\n" for row in rows))

    def merge(self, out: Path | None = None) -> StickTable:
        """All shards as one table (keys that appear twice, after an interrupted flush, kept once)."""
        tables = [StickTable.load(p) for p in sorted(self.folder.glob("shard_*.npz"))]
        records, seen = [], set()
        for table in tables:
            for i, key in enumerate(table.ids):
                if key not in seen:
                    seen.add(key)
                    records.append({"id": key, "formula": table.formulas[i], "spacegroup": int(table.spacegroups[i]),
                                    "crystal_system": table.crystal_systems[i], "sticks": table.sticks(i)})
        info = {"sources": sorted({k.split(":")[0] if ":" in k else "mp" for k in seen}), "n_structures": len(records),
                "crystal_systems": dict(Counter(r["crystal_system"] for r in records)), "complete": True}
        merged = StickTable.from_records(records, info)
        merged.save(out or self.folder / MERGED_FILE)
        return merged


def build_cache(
    folder: str | Path = DEFAULT_CACHE,
    *,
    sources: tuple[str, ...] = SOURCES,
    workers: int = 2,
    niceness: int = 10,
    limit: int | None = None,
    generated_per_class: int = 6000,
    calculator: str = "pymatgen",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Compute every job not yet in the cache; returns counts and the rate (structures per second).

    ``limit``: at most this many new jobs per source, drawn evenly across it (a subsample for trials).
    """
    import multiprocessing as mp

    from tqdm import tqdm

    cache = StickCache(folder)
    done = cache.done()
    started, n_new, outcome = time.time(), 0, Counter()
    with mp.get_context("spawn").Pool(workers, _init_worker, (niceness, calculator)) as pool:
        for source in sources:
            jobs = _jobs_of(source, cache, generated_per_class, seed)
            todo = [job for job in jobs if job[0] not in done]
            if limit and len(todo) > limit:
                todo = [todo[int(k)] for k in np.linspace(0, len(todo) - 1, limit)]
            bar = tqdm(total=len(todo), desc=f"xrd sticks {source}", disable=not progress, mininterval=10)
            for key, record, reason in pool.imap_unordered(compute, todo, chunksize=4):
                cache.add(key, record, reason)
                outcome["kept" if record is not None else (reason or "?").split(":")[0]] += 1
                n_new += 1
                bar.update(1)
            bar.close()
            cache.flush()
    elapsed = time.time() - started
    return {"folder": str(cache.folder), "new": n_new, "outcome": dict(outcome), "elapsed_s": round(elapsed, 1),
            "structures_per_s": round(n_new / elapsed, 3) if elapsed > 0 else None, "workers": workers}


def _jobs_of(source: str, cache: StickCache, generated_per_class: int, seed: int) -> list:
    if source == "amcsd":
        return list(amcsd_jobs())
    if source == "mp":
        return list(mp_jobs())
    if source == "pyxtal":
        real = cache.class_counts()
        return list(pyxtal_jobs({c: max(0, generated_per_class - real.get(c, 0)) for c in CRYSTAL_SYSTEMS}, seed))
    raise ValueError(f"unknown source {source!r} (expected one of {', '.join(SOURCES)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "merge"))
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--limit", type=int, help="at most this many new structures per source (a subsample)")
    parser.add_argument("--generated-per-class", type=int, default=6000,
                        help="pyxtal crystals bring each class to this many structures (default 6000)")
    parser.add_argument("--calculator", choices=("pymatgen", "rust"), default="pymatgen")
    args = parser.parse_args(argv)
    if args.command == "merge":
        table = StickCache(args.out).merge()
        print(json.dumps(table.info))
        return 0
    sources = tuple(s for s in args.sources.split(",") if s)
    unknown = set(sources) - set(SOURCES)
    if unknown:
        parser.error(f"unknown sources {sorted(unknown)}")
    print(json.dumps(build_cache(args.out, sources=sources, workers=args.workers, limit=args.limit,
                                 generated_per_class=args.generated_per_class, calculator=args.calculator)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

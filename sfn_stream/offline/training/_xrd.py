"""Crystal-system classifier from powder XRD: stick table, splits, training, evaluation."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.serialize import json_safe
from sfn_stream.core.simulation import StickTable, stick_pattern
from sfn_stream.offline.metrics import fit_temperature, probability_metrics
from sfn_stream.offline.splits import SPLITS, hashed_splits

from ._omnixas import TimeLimitExceeded, time_limit

SYMPREC = 0.1
DEFAULT_STICK_TABLE = paths.XRD_STICK_TABLE


def structure_record(key: str, structure, *, timeout_s: float = 30.0, calculator: str = "pymatgen",
                     duplicate_of: Callable[[str, int], str | None] | None = None) -> tuple[dict | None, str | None]:
    """Stick pattern + crystal-system label of one structure, or (None, reason).

    ``duplicate_of(reduced formula, space group)``: the id of an entry the structure duplicates, or None;
    asked before the (slow) stick pattern, a duplicate is rejected as ``duplicate: <id>``.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        with time_limit(timeout_s):
            sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
            crystal_system = sga.get_crystal_system()
            spacegroup = sga.get_space_group_number()
            existing = duplicate_of(structure.composition.reduced_formula, int(spacegroup)) if duplicate_of else None
            if existing is not None:
                return None, f"duplicate: {existing}"
            sticks = stick_pattern(structure, calculator=calculator)
    except TimeLimitExceeded:
        return None, "timeout"
    except Exception as err:  # noqa: BLE001 - one structure pymatgen cannot handle must not stop a build
        return None, f"calculation_failed: {type(err).__name__}"
    if len(sticks) == 0:
        return None, "no_reflections"
    if crystal_system not in CRYSTAL_SYSTEMS:
        return None, f"unknown_crystal_system: {crystal_system}"
    record = {
        "id": key,
        "formula": structure.composition.reduced_formula,
        "spacegroup": int(spacegroup),
        "crystal_system": crystal_system,
        "sticks": sticks,
    }
    return record, None


def _iter_all_structures(sources: tuple[str, ...], limit: int | None):
    if "amcsd" in sources:
        from ._amcsd import amcsd_ids, iter_amcsd_structures

        ids = amcsd_ids()[:limit] if limit else None
        for entry in iter_amcsd_structures(ids):
            yield f"amcsd:{entry.amcsd_id}", entry.structure, entry.reject_reason
    if "mp" in sources:
        from pymatgen.core import Structure

        from sfn_stream.offline.shared import omnixas_poscars

        items = sorted(omnixas_poscars().items())
        for mp_id, poscar in items[:limit] if limit else items:
            try:
                yield mp_id, Structure.from_str(poscar, fmt="poscar"), None
            except Exception as err:  # noqa: BLE001 - recorded as a rejection, the build goes on
                yield mp_id, None, f"poscar_unreadable: {type(err).__name__}"


def build_stick_table(
    out_path: str | Path = DEFAULT_STICK_TABLE,
    *,
    sources: tuple[str, ...] = ("amcsd", "mp"),
    timeout_s: float = 30.0,
    limit: int | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
) -> StickTable:
    """Compute the stick patterns of the AMCSD (larixite) and omnixas_cu (Materials Project) structures.

    One process; slow structures are skipped after ``timeout_s`` and counted. Writes ``out_path``
    (compressed .npz) every ``checkpoint_every`` structures and at the end, and a JSON log of the
    rejections next to it.
    """
    out_path = Path(out_path)
    records: list[dict] = []
    rejected: dict[str, str] = {}
    started = time.time()
    iterator = _iter_all_structures(sources, limit)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="xrd sticks", mininterval=30)
    for n, (key, structure, reason) in enumerate(iterator, start=1):
        if structure is not None:
            record, reason = structure_record(key, structure, timeout_s=timeout_s)
            if record is not None:
                records.append(record)
        if reason is not None:
            rejected[key] = reason
        if n % checkpoint_every == 0:
            _write_table(out_path, records, rejected, sources, timeout_s, started, final=False)
    return _write_table(out_path, records, rejected, sources, timeout_s, started, final=True)


def _write_table(out_path, records, rejected, sources, timeout_s, started, *, final) -> StickTable:
    counts = Counter(reason.split(":")[0] for reason in rejected.values())
    info = {
        "sources": list(sources),
        "n_structures": len(records),
        "n_rejected": len(rejected),
        "rejected_by_reason": dict(sorted(counts.items())),
        "timeout_s": timeout_s,
        "symprec": SYMPREC,
        "complete": final,
        "elapsed_s": round(time.time() - started, 1),
        "crystal_systems": dict(Counter(r["crystal_system"] for r in records)),
    }
    table = StickTable.from_records(records, info)
    tmp = out_path.with_suffix(".tmp.npz")
    table.save(tmp)
    tmp.replace(out_path)
    out_path.with_suffix(".rejected.json").write_text(json.dumps({"info": info, "rejected": rejected}, indent=1))
    return table


# --- extension of a built table with further sources -----------------------------------------

# Sources an existing table can be extended with (``extend_stick_table``), and what each one is.
EXTENSION_SOURCES = {
    "matminer_mp": ("Materials Project structures of ../shared/data/matminer_mp (matminer 0.3.3 datasets "
                    "flla_2015, dielectric_constant, elastic_tensor; DFT-relaxed POSCARs)"),
    "amcsd_disordered": ("AMCSD CIFs of larixite with partial occupancy (rejected as 'disordered' by the base "
                         "build; pymatgen's XRDCalculator weights scattering factors by site occupancy)"),
}
DEDUPLICATION = ("a structure with the reduced formula and space group of an entry already in the table (or added "
                 "before it) is rejected as 'duplicate: <id>'; the existing entry is kept")


def source_of(key: str) -> str:
    """The base build's source of a table id: ``amcsd`` or ``mp``."""
    return "amcsd" if key.startswith("amcsd:") else "mp"


def _iter_extension_structures(sources: tuple[str, ...], known: set[str], limit: int | None):
    """(key, source, Structure | None, reject reason) of the new structures of ``sources``.

    ``known`` ids (the base table and its rejections other than 'disordered') are not read again;
    a matminer_mp id already in the table (the omnixas_cu structures) is a duplicate by id.
    Raises SharedDataMissing (before yielding anything) when matminer_mp is asked for without ../shared.
    """
    if "matminer_mp" in sources:
        from pymatgen.core import Structure

        from sfn_stream.offline.shared import matminer_mp_materials

        items = sorted(matminer_mp_materials().items())
        for mp_id, record in items[:limit] if limit else items:
            if mp_id in known:
                yield mp_id, "matminer_mp", None, f"duplicate: {mp_id}"
                continue
            try:
                yield mp_id, "matminer_mp", Structure.from_str(record["poscar"], fmt="poscar"), None
            except Exception as err:  # noqa: BLE001 - recorded as a rejection, the build goes on
                yield mp_id, "matminer_mp", None, f"poscar_unreadable: {type(err).__name__}"
    if "amcsd_disordered" in sources:
        from ._amcsd import amcsd_ids, iter_amcsd_structures

        ids = [i for i in amcsd_ids() if f"amcsd:{i}" not in known]
        n = 0
        for entry in iter_amcsd_structures(ids, ordered_only=False):
            # the base build's screening, but for the occupancy: only disordered structures belong to this source
            if entry.structure is None or entry.structure.is_ordered:
                continue
            yield f"amcsd:{entry.amcsd_id}", "amcsd_disordered", entry.structure, None
            n += 1
            if limit and n >= limit:
                break


def extend_stick_table(
    out_path: str | Path,
    *,
    base: str | Path = DEFAULT_STICK_TABLE,
    sources: tuple[str, ...] = tuple(EXTENSION_SOURCES),
    timeout_s: float | None = None,
    limit: int | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
) -> StickTable:
    """``base`` plus the structures of the extension ``sources``, deduplicated, written to ``out_path``.

    The base entries come first and unchanged (same ids, order and sticks), so indices and split files
    of the base stay valid. A new structure is screened as the base build did (readable, space group,
    at least one reflection, ``timeout_s`` per structure: the base's own by default) and rejected as
    ``duplicate: <id>`` when its reduced formula and space group are already in the table. The table
    is written every ``checkpoint_every`` structures with ``complete: false``; a later call with the
    same base resumes from it. ``<out>.rejected.json`` holds the base's rejections (those of the new
    sources replaced by their outcome here) and the ids added per source.
    """
    from sfn_stream.core.files import file_sha256

    unknown = set(sources) - set(EXTENSION_SOURCES)
    if unknown:
        raise ValueError(f"unknown extension sources {sorted(unknown)} (expected {', '.join(EXTENSION_SOURCES)})")
    base, out_path = Path(base), Path(out_path)
    if base.resolve() == out_path.resolve():
        raise ValueError("write the extended table to another path than its base")
    table = StickTable.load(base)
    base_sha = file_sha256(base)
    timeout_s = float(timeout_s if timeout_s is not None else table.info.get("timeout_s", 30.0))
    base_rejected_path = base.with_suffix(".rejected.json")
    base_rejected = json.loads(base_rejected_path.read_text())["rejected"] if base_rejected_path.is_file() else {}
    records = [_record_of(table, i) for i in range(len(table))]
    group_ids = {}
    for r in records:
        group_ids.setdefault((r["formula"], r["spacegroup"]), r["id"])
    added: dict[str, list[str]] = {s: [] for s in sources}
    rejected_new: dict[str, str] = {}
    done: set[str] = set()
    previous = _resumable(out_path, base_sha, sources)
    if previous is not None:
        part, sidecar = previous
        for i in range(len(table), len(part)):
            r = _record_of(part, i)
            records.append(r)
            group_ids.setdefault((r["formula"], r["spacegroup"]), r["id"])
        added.update({s: list(ids) for s, ids in sidecar["added_by_source"].items() if s in added})
        rejected_new = dict(sidecar["rejected_by_extension"])
        done = {r["id"] for r in records[len(table):]} | set(rejected_new)
    known = set(table.ids) | {k for k, reason in base_rejected.items() if reason != "disordered"}
    state = {"base": base, "base_sha": base_sha, "base_info": table.info, "base_rejected": base_rejected,
             "sources": sources, "timeout_s": timeout_s, "started": time.time()}
    iterator = _iter_extension_structures(sources, known, limit)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="xrd sticks (extension)", mininterval=30)
    n_new = 0
    for key, source, structure, reason in iterator:
        if key in done:
            continue
        done.add(key)
        if structure is not None:
            record, reason = structure_record(key, structure, timeout_s=timeout_s,
                                              duplicate_of=lambda f, sg: group_ids.get((f, sg)))
            if record is not None:
                records.append(record)
                group_ids[(record["formula"], record["spacegroup"])] = key
                added[source].append(key)
        if reason is not None:
            rejected_new[key] = f"{source}: {reason}"
        n_new += 1
        if n_new % checkpoint_every == 0:
            _write_extended(out_path, records, added, rejected_new, state, final=False)
    return _write_extended(out_path, records, added, rejected_new, state, final=True)


def _reason_kind(reason: str) -> str:
    """'calculation_failed' of 'calculation_failed: TypeError' or 'amcsd_disordered: calculation_failed: TypeError'."""
    head, _, rest = reason.partition(": ")
    return (rest if head in EXTENSION_SOURCES else reason).split(":")[0]


def _record_of(table: StickTable, i: int) -> dict:
    return {"id": str(table.ids[i]), "formula": str(table.formulas[i]), "spacegroup": int(table.spacegroups[i]),
            "crystal_system": str(table.crystal_systems[i]), "sticks": table.sticks(i)}


def _resumable(out_path: Path, base_sha: str, sources) -> tuple[StickTable, dict] | None:
    """The partial table at ``out_path`` (and its sidecar) when it extends the same base with the same sources."""
    sidecar = out_path.with_suffix(".rejected.json")
    if not (out_path.is_file() and sidecar.is_file()):
        return None
    part = StickTable.load(out_path)
    extension = part.info.get("extension") or {}
    if part.info.get("complete") or extension.get("base_sha256") != base_sha or extension.get("sources") != list(sources):
        return None
    return part, json.loads(sidecar.read_text())


def _write_extended(out_path: Path, records, added, rejected_new, state, *, final: bool) -> StickTable:
    base_info = state["base_info"]
    rejected = {k: v for k, v in state["base_rejected"].items() if k not in rejected_new}
    for key in (k for ids in added.values() for k in ids):
        rejected.pop(key, None)
    rejected.update(rejected_new)
    by_source: dict[str, Counter] = {s: Counter() for s in state["sources"]}
    for reason in rejected_new.values():
        source, _, why = reason.partition(": ")
        by_source[source][why.split(":")[0]] += 1
    counts = Counter(source_of(r["id"]) for r in records[: base_info.get("n_structures", 0)])
    counts.update({s: len(ids) for s, ids in added.items()})
    info = {
        "sources": list(base_info.get("sources", [])) + [s for s in state["sources"] if s not in base_info.get("sources", [])],
        "n_structures": len(records),
        "n_by_source": dict(counts),
        "n_rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(_reason_kind(v) for v in rejected.values()).items())),
        "timeout_s": state["timeout_s"],
        "symprec": SYMPREC,
        "complete": final,
        "elapsed_s": round(base_info.get("elapsed_s", 0.0) + time.time() - state["started"], 1),
        "crystal_systems": dict(Counter(r["crystal_system"] for r in records)),
        "extension": {
            "base": state["base"].name, "base_sha256": state["base_sha"], "base_n_structures": base_info.get("n_structures"),
            "sources": list(state["sources"]), "descriptions": {s: EXTENSION_SOURCES[s] for s in state["sources"]},
            "n_added": {s: len(ids) for s, ids in added.items()},
            "rejected_by_source": {s: dict(sorted(c.items())) for s, c in by_source.items()},
            "deduplication": DEDUPLICATION,
            "build": "python -m sfn_stream.offline.training._xrd extend",
            "elapsed_s": round(time.time() - state["started"], 1),
        },
    }
    table = StickTable.from_records(records, info)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.npz")
    table.save(tmp)
    tmp.replace(out_path)
    sidecar = {"info": info, "rejected": rejected, "rejected_by_extension": rejected_new, "added_by_source": added}
    out_path.with_suffix(".rejected.json").write_text(json.dumps(sidecar, indent=1))
    return table


# --- splits ----------------------------------------------------------------------------------


def split_group(formula: str, spacegroup: int) -> str:
    """Structures of one composition and space group (duplicates, P/T series) share a split."""
    return f"{formula}|{int(spacegroup)}"


def assign_splits(table: StickTable, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of each split: a seeded hash of the group key, so a group never straddles splits."""
    return hashed_splits([split_group(f, sg) for f, sg in zip(table.formulas, table.spacegroups)], seed)


def write_split_files(table: StickTable, splits: dict[str, np.ndarray], folder: str | Path) -> dict[str, str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, idx in splits.items():
        path = folder / f"xrd_{name}.txt"
        path.write_text("".join(f"{table.ids[i]}\n" for i in sorted(idx, key=lambda i: table.ids[i])))
        paths[name] = str(path)
    return paths


def extend_split_files(table: StickTable, committed_dir: str | Path, out_dir: str | Path | None = None,
                       seed: int = 0, shared: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Splits of a table extended beyond the one the committed files in ``committed_dir`` were made for.

    A committed structure keeps its split. A new structure whose reduced formula the committed splits
    hold goes to a split that holds it: train when train does, else test when test does, else val (so
    no formula of the test or val split alone reaches train, and the committed formula-disjoint test
    structures stay formula-disjoint). The new formulas are assigned as :func:`assign_splits` assigns
    groups (:func:`hashed_splits`, the same ``seed`` and fractions), one group per formula, so every new
    formula lies in one split. ``shared`` (corpus material id -> split, the one assignment the corpus and the
    XANES models share) wins for a new structure that is a corpus material, and takes every new structure of
    its formula with it (test before val before train): the committed files cannot know corpus materials the
    base table lacked, and without it 53 corpus test materials of the matminer_mp source reached the extended
    training split (found 3 December). Writes the files to ``out_dir`` when given; returns indices per split.
    """
    committed: dict[str, str] = {}
    for name in SPLITS:
        path = Path(committed_dir) / f"xrd_{name}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the committed splits of the base table are needed")
        committed.update(dict.fromkeys(path.read_text().split(), name))
    formula_splits: dict[str, set[str]] = {}
    for key, formula in zip(table.ids, table.formulas):
        if key in committed:
            formula_splits.setdefault(str(formula), set()).add(committed[key])
    new_formulas = sorted({str(f) for key, f in zip(table.ids, table.formulas)
                           if key not in committed and str(f) not in formula_splits})
    hashed = hashed_splits(new_formulas, seed)
    formula_split = {new_formulas[i]: name for name, idx in hashed.items() for i in idx}
    for formula, held in formula_splits.items():
        formula_split[formula] = next(name for name in ("train", "test", "val") if name in held)
    corpus_held: dict[str, set[str]] = {}
    for key, formula in zip(table.ids, table.formulas):
        split = (shared or {}).get(corpus_id(str(key)))
        if split is not None and key not in committed:
            corpus_held.setdefault(str(formula), set()).add(split)
    for formula, held in corpus_held.items():
        formula_split[formula] = next(name for name in ("test", "val", "train") if name in held)
    which = np.array([committed.get(key) or formula_split[str(f)] for key, f in zip(table.ids, table.formulas)])
    splits = {name: np.flatnonzero(which == name) for name in SPLITS}
    if out_dir is not None:
        write_split_files(table, splits, out_dir)
    return splits


# Crystals generated from space-group symmetry (``_xrd_cache``'s pyxtal source) carry ids with this prefix.
GENERATED_PREFIX = "pyxtal:"


def with_generated(table: StickTable, generated: StickTable,
                   splits: Mapping[str, np.ndarray]) -> tuple[StickTable, dict[str, np.ndarray]]:
    """``table`` with the ``generated`` crystals appended to its training split, and the splits of the result.

    Generated crystals only ever train: the formula-disjoint validation and test sets stay real structures.
    One whose reduced formula a validation or test structure has is left out (a random crystal of a test
    formula is not the test structure, but dropping it removes the doubt; 290 of 8,383 on 4 December).
    """
    if not all(str(key).startswith(GENERATED_PREFIX) for key in generated.ids):
        raise ValueError(f"generated crystals must have ids starting with {GENERATED_PREFIX!r}")
    held = set(table.formulas[np.concatenate([splits["val"], splits["test"]])].tolist())
    keep = [i for i in range(len(generated)) if str(generated.formulas[i]) not in held]
    kept_systems = Counter(str(generated.crystal_systems[i]) for i in keep)
    info = {**table.info, "generated": {
        "source": "pyxtal crystals of python -m sfn_stream.offline.training._xrd_cache (2-3 elements, space groups "
                  "uniform within each crystal system); training split only",
        "n": len(keep), "dropped_formula_in_val_or_test": len(generated) - len(keep),
        "crystal_systems": dict(sorted(kept_systems.items()))}}
    combined = StickTable.from_records([_record_of(table, i) for i in range(len(table))]
                                       + [_record_of(generated, i) for i in keep], info)
    out = {name: np.asarray(idx, dtype=int) for name, idx in splits.items()}
    out["train"] = np.concatenate([out["train"], np.arange(len(table), len(combined))])
    return combined, out


def corpus_id(key: str) -> str:
    """The corpus material id of a stick-table id (``amcsd:123`` -> ``amcsd-00123``; mp-ids as they are)."""
    return f"amcsd-{int(key[6:]):05d}" if key.startswith("amcsd:") else key


def shared_split_files(table: StickTable, shared: Mapping[str, str], committed_dir: str | Path,
                       out_dir: str | Path | None = None, *,
                       shared_formulas: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """The stick table's splits from the one assignment the corpus and the XANES models share.

    A structure that is a corpus material takes the corpus's split; every other structure of a formula the
    corpus holds follows that formula (test before val before train, so a corpus test formula never reaches
    the library; ``shared_formulas``, formula -> split of the corpus's materials, covers the corpus materials
    that the table lacks); the remaining formulas keep the split the committed files give their structures, test
    before val before train within a formula, so each formula lies in one split. Writes the files to
    ``out_dir`` when given; returns indices per split.
    """
    committed = read_split_files(table, committed_dir)
    if committed is None:
        raise FileNotFoundError(f"xrd_{{train,val,test}}.txt are missing in {committed_dir}")
    before = np.empty(len(table), dtype=object)
    for name, idx in committed.items():
        before[idx] = name
    from pymatgen.core import Composition

    reduced = {f: Composition(f).reduced_formula for f in {str(f) for f in table.formulas}}
    formulas = [reduced[str(f)] for f in table.formulas]
    corpus_formula: dict[str, set[str]] = {}
    for formula, split in (shared_formulas or {}).items():
        corpus_formula.setdefault(Composition(formula).reduced_formula, set()).add(split)
    other_formula: dict[str, set[str]] = {}
    for key, formula, old in zip(table.ids, formulas, before):
        split = shared.get(corpus_id(str(key)))
        if split is not None:
            corpus_formula.setdefault(formula, set()).add(split)
        elif old is not None:
            other_formula.setdefault(formula, set()).add(old)

    def first(held: set[str]) -> str:
        return next(name for name in ("test", "val", "train") if name in held)

    which = [first(corpus_formula[f]) if f in corpus_formula else first(other_formula.get(f, {"train"}))
             for f in formulas]
    which = np.array(which)
    splits = {name: np.flatnonzero(which == name) for name in SPLITS}
    if out_dir is not None:
        write_split_files(table, splits, out_dir)
    return splits


def sync_xrd_splits(materials, unified: Mapping[str, list[str]], table_path: str | Path | None = None,
                    splits_dir: str | Path | None = None) -> dict[str, object]:
    """Rewrite ``xrd_{train,val,test}.txt`` from the shared assignment (:func:`shared_split_files`);
    ``materials``: the corpus's (their formulas), ``unified``: split -> material ids. Returns the counts
    per split and how many structures changed split."""
    splits_dir = Path(splits_dir or paths.SPLITS_DIR)
    table = StickTable.load(table_path or DEFAULT_STICK_TABLE)
    shared = {mid: name for name in SPLITS for mid in unified.get(name, ())}
    formulas = {m.formula: shared[m.material_id] for m in materials if m.material_id in shared}
    before = read_split_files(table, splits_dir) or {}
    old = {int(i): name for name, idx in before.items() for i in idx}
    splits = shared_split_files(table, shared, splits_dir, splits_dir, shared_formulas=formulas)
    moved = Counter(f"{old.get(int(i))}->{name}" for name, idx in splits.items() for i in idx
                    if old.get(int(i)) != name)
    return {"counts": {name: int(len(idx)) for name, idx in splits.items()}, "moved": dict(moved)}


def read_split_files(table: StickTable, folder: str | Path) -> dict[str, np.ndarray] | None:
    """Splits from committed id lists; None when the files are absent. Unknown ids are ignored."""
    folder = Path(folder)
    if not all((folder / f"xrd_{name}.txt").is_file() for name in SPLITS):
        return None
    position = {key: i for i, key in enumerate(table.ids)}
    out = {}
    for name in SPLITS:
        ids = (folder / f"xrd_{name}.txt").read_text().split()
        out[name] = np.array(sorted(position[k] for k in ids if k in position), dtype=int)
    return out


# --- data --------------------------------------------------------------------------------------


def labels_of(table: StickTable) -> np.ndarray:
    index = {name: k for k, name in enumerate(CRYSTAL_SYSTEMS)}
    return np.array([index[c] for c in table.crystal_systems], dtype=np.int64)


def synthesize_set(table: StickTable, indices, rng: np.random.Generator, augmentation=None) -> np.ndarray:
    """Augmented, preprocessed patterns of the structures ``indices`` (in order), float32."""
    from sfn_stream.core.simulation import synthesize_pattern
    from sfn_stream.core.spectra import XRD_Q_GRID

    out = np.empty((len(indices), len(XRD_Q_GRID)), dtype=np.float32)
    for row, i in enumerate(indices):
        out[row] = synthesize_pattern(table.sticks(i), XRD_Q_GRID, rng, augmentation=augmentation)
    return out


# --- measured development set ------------------------------------------------------------------


def measured_dev_set(folder: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """Single-phase measured patterns with a crystal-system label: ``../shared``'s development set, or
    ``folder`` laid out the same way (``labels.csv`` with columns ``file`` and ``crystal_system``, and
    optionally ``formula`` or ``elements``, ``phases``, ``wavelength_A``; any file ``predict xrd`` reads).

    Returns (usable items, skipped items with reasons). Wavelength: the labels' column, else the file's own
    (pdCIF, pyFAI header, XRDML, RAS), else INDEX.csv for the IUCr pdCIFs, else Cu K-alpha1.
    """

    from sfn_stream.core.spectra import (
        CU_K_ALPHA1,
        PdCifError,
        SpectrumFileError,
        preprocess_xrd,
        read_pdcif,
        read_powder_file,
    )
    from sfn_stream.offline.shared import shared_path

    root = Path(folder) if folder is not None else shared_path("data", "pxrd_experimental_dev")
    if not (root / "labels.csv").is_file():
        raise FileNotFoundError(f"{root}: no labels.csv (columns file, crystal_system[, formula, phases, wavelength_A])")
    items, skipped = [], []
    for row in _csv_rows(root / "labels.csv"):
        name = row["file"]
        if (row.get("phases") or "1").strip() != "1" or row.get("crystal_system") not in CRYSTAL_SYSTEMS:
            skipped.append({"file": name, "reason": "multi-phase or no crystal-system label"})
            continue
        try:
            pattern = read_powder_file(root / name)
        except SpectrumFileError as err:
            skipped.append({"file": name, "reason": str(err)})
            continue
        stated = (row.get("wavelength_A") or "").strip()
        wavelength = float(stated) if stated else pattern.wavelength or CU_K_ALPHA1
        axis = pattern.axis or "2theta"
        processed = preprocess_xrd(pattern.x, pattern.intensity, axis=axis, wavelength=wavelength)
        items.append(_item(name, row.get("formula") or row.get("elements") or "", row["crystal_system"], processed,
                           "labels.csv"))
    if not (root / "iucr_rietveld" / "INDEX.csv").is_file():
        return items, skipped
    for row in _csv_rows(root / "iucr_rietveld" / "INDEX.csv"):
        name = f"iucr_rietveld/{row['file']}"
        if row["nphases"].strip() != "1" or row["has_powder_profile"] != "True" or row["crystal_system"] not in CRYSTAL_SYSTEMS:
            skipped.append({"file": name, "reason": f"nphases {row['nphases']} / profile {row['has_powder_profile']}"})
            continue
        try:
            profile = read_pdcif(root / name)
        except PdCifError as err:
            skipped.append({"file": name, "reason": str(err)})
            continue
        wavelength, source = profile.wavelength, "cif"
        if wavelength is None and row["wavelength_A"].strip():
            wavelength, source = float(row["wavelength_A"]), "INDEX.csv"
        if wavelength is None:
            skipped.append({"file": name, "reason": "no wavelength in the CIF or INDEX.csv"})
            continue
        pattern = preprocess_xrd(profile.two_theta, profile.intensity, wavelength=wavelength)
        items.append(_item(name, row["formula"], row["crystal_system"], pattern, f"wavelength from {source}"))
    return items, skipped


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _read_xy(path: Path):
    try:
        from sfn_stream.core.spectra import (
            read_xy,  # the shared two-column reader, when present
        )
    except ImportError:
        data = np.loadtxt(path, comments="#")
        return data[:, 0], data[:, 1]
    return read_xy(path)


def _item(name, formula, crystal_system, pattern, note) -> dict:
    return {"file": name, "formula": formula, "crystal_system": crystal_system, "pattern": pattern, "note": note}


def evaluate_measured(classifier, items: list[dict]) -> dict:
    usable = [it for it in items if it["pattern"].usable]
    out = {"n_usable": len(usable), "n_unusable": len(items) - len(usable), "rows": []}
    if usable:
        probs = classifier.probabilities(np.stack([it["pattern"].intensity for it in usable]))
        labels = np.array([CRYSTAL_SYSTEMS.index(it["crystal_system"]) for it in usable])
        out.update(probability_metrics(labels, probs, CRYSTAL_SYSTEMS))
        for it, p in zip(usable, probs):
            out["rows"].append({
                "file": it["file"], "formula": it["formula"], "true": it["crystal_system"],
                "predicted": CRYSTAL_SYSTEMS[int(p.argmax())], "probability": round(float(p.max()), 3),
                "p_true": round(float(p[CRYSTAL_SYSTEMS.index(it["crystal_system"])]), 3),
                "coverage": round(it["pattern"].coverage_fraction, 2), "flags": it["pattern"].flags,
            })
    for it in items:
        if not it["pattern"].usable:
            out["rows"].append({"file": it["file"], "true": it["crystal_system"], "unusable": it["pattern"].reason})
    return out


# --- training ----------------------------------------------------------------------------------


def train_xrd_bundle(
    out_dir: str | Path,
    *,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    stick_table: str | Path | StickTable = DEFAULT_STICK_TABLE,
    splits_dir: str | Path | None = None,
    test_patterns_per_structure: int = 3,
    val_patterns_per_structure: int = 2,
    max_train_structures: int | None = None,
    architecture: dict | None = None,
    evaluate_measured_set: bool = True,
    threads: int = 2,
    time_budget_s: float | None = None,
    augmentation: dict | None = None,
    progress: bool = True,
):
    """Train the crystal-system classifier on augmented simulated patterns; write and return the bundle.

    Splits: the committed ``data/splits/xrd_*.txt`` when ``splits_dir`` holds them, else assigned by
    :func:`assign_splits` (seeded, grouped by formula + space group) and written there.
    ``time_budget_s`` (for a shared CPU): the learning-rate schedule runs on the larger of the step
    fraction and the elapsed-time fraction, and training stops when either reaches 1; the card
    records the steps taken. ``augmentation``: overrides of ``AUGMENTATION`` for the training batches
    only (validation and test renderings keep the defaults, so runs stay comparable), e.g.
    ``{"p_noise_free": 0.1}``.
    """
    import datetime

    import torch
    from tqdm import tqdm

    from sfn_stream.core.files import file_sha256
    from sfn_stream.core.networks import (
        XrdClassifier,
        XrdCnnTransformer,
        architecture_of,
        save_bundle,
    )
    from sfn_stream.core.simulation import AUGMENTATION
    from sfn_stream.core.spectra import BACKGROUND, XRD_Q_MIN, XRD_Q_POINTS, XRD_Q_STEP

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    table_path = None
    if not isinstance(stick_table, StickTable):
        table_path = Path(stick_table)
        stick_table = StickTable.load(table_path)
    table = stick_table
    labels = labels_of(table)
    splits_dir = Path(splits_dir) if splits_dir is not None else paths.SPLITS_DIR
    splits = read_split_files(table, splits_dir)
    if splits is None:
        splits = assign_splits(table, seed)
        write_split_files(table, splits, splits_dir)
    train_idx = splits["train"][:max_train_structures] if max_train_structures else splits["train"]

    rng_val, rng_test = np.random.default_rng(seed + 101), np.random.default_rng(seed + 202)
    val_idx = np.repeat(splits["val"], val_patterns_per_structure)
    x_val = synthesize_set(table, val_idx, rng_val)

    kwargs = dict(architecture or {})
    model = XrdCnnTransformer(**kwargs)
    counts = np.bincount(labels[train_idx], minlength=len(CRYSTAL_SYSTEMS)).astype(float)
    weights = np.where(counts > 0, (counts.clip(1) / counts.sum()) ** -0.5, 0.0)
    weights = weights / weights[counts > 0].mean()
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps_per_epoch = max(1, int(np.ceil(len(train_idx) / batch_size)))
    total_steps = epochs * steps_per_epoch
    started = time.time()

    def progress_fraction(step: int) -> float:
        elapsed = (time.time() - started) / time_budget_s if time_budget_s else 0.0
        return max(step / total_steps, elapsed)

    def lr_factor(step: int) -> float:  # linear warm-up over 5 %, cosine decay to 2 %
        f = progress_fraction(step)
        return min(1.0, max(f, 1e-3) / 0.05) * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(f, 1.0))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng = np.random.default_rng(seed)
    step = 0
    history, best = [], (-1.0, None, -1)
    bar = tqdm(total=total_steps, desc="xrd train", disable=not progress, mininterval=10)
    for epoch in range(epochs):
        if progress_fraction(step) >= 1:
            break
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        for b in range(steps_per_epoch):
            if progress_fraction(step) >= 1:
                break
            batch = order[b * batch_size : (b + 1) * batch_size]
            x = torch.from_numpy(synthesize_set(table, batch, rng, augmentation))
            y = torch.from_numpy(labels[batch])
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        val_logits = _logits(model, x_val)
        val_acc = float((val_logits.argmax(1) == labels[val_idx]).mean()) if len(val_idx) else 0.0
        history.append({"epoch": epoch, "steps": step, "minutes": round((time.time() - started) / 60, 1),
                        "train_loss": round(float(np.mean(losses)), 4), "val_accuracy": round(val_acc, 4)})
        if val_acc > best[0]:
            best = (val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
    bar.close()
    model.load_state_dict(best[1])

    val_logits = _logits(model, x_val)
    temperature = fit_temperature(labels[val_idx], logits=val_logits) if len(val_idx) else 1.0
    classifier = XrdClassifier(model, temperature, CRYSTAL_SYSTEMS)
    test_idx = np.repeat(splits["test"], test_patterns_per_structure)
    x_test = synthesize_set(table, test_idx, rng_test)
    metrics = {
        "simulated_test": {
            "description": (
                f"held-out test split of simulated patterns ({len(splits['test'])} structures x "
                f"{test_patterns_per_structure} augmented patterns, augmentation seed {seed + 202}); "
                "temperature-scaled probabilities"
            ),
            **(probability_metrics(labels[test_idx], classifier.probabilities(x_test), CRYSTAL_SYSTEMS)
               if len(test_idx) else {"n": 0}),
        },
        "simulated_val": {
            "description": "validation split (used for model selection and temperature fitting)",
            **(probability_metrics(labels[val_idx], classifier.probabilities(x_val), CRYSTAL_SYSTEMS)
               if len(val_idx) else {"n": 0}),
        },
    }
    if evaluate_measured_set:
        items, skipped = measured_dev_set()
        metrics["measured_dev"] = {
            "description": (
                "measured single-phase patterns of ../shared/data/pxrd_experimental_dev (XRD-AutoAnalyzer "
                "examples + IUCr Rietveld CIF profiles); never used for training or model selection"
            ),
            **evaluate_measured(classifier, items),
            "skipped": skipped,
        }

    sha = file_sha256(table_path) if table_path else None
    card = {
        "name": "xrd-crystal-system",
        "version": "0.1.0",
        "kind": "xrd",
        "created": datetime.date.today().isoformat(),
        "training_data": {
            "description": (
                "pymatgen XRDCalculator stick patterns (LP factor removed) of the stick table's sources "
                f"({', '.join(table.info.get('sources', ['amcsd', 'mp']))}: ordered AMCSD structures shipped in "
                "larixite, the omnixas_cu Materials Project structures, and any extension in "
                "table_info.extension); profiles synthesised with augmentation at training time"
            ),
            "stick_table": table_path.name if table_path else None,
            "sha256": sha,
            "build": "python -m sfn_stream.offline.training._xrd build",
            "table_info": table.info,
            "n_structures": {name: len(idx) for name, idx in splits.items()},
            "n_train_used": len(train_idx),
            "train_class_counts": {c: int(n) for c, n in zip(CRYSTAL_SYSTEMS, counts)},
            "splits": "data/splits/xrd_{train,val,test}.txt (grouped by reduced formula + space group, seeded hash)",
            "augmentation": json_safe({**AUGMENTATION, **(augmentation or {})}),
            "seed": seed,
        },
        "label_sources": {"crystal_system": f"pymatgen SpacegroupAnalyzer(symprec={SYMPREC}).get_crystal_system()"},
        "preprocessing": {
            "function": "sfn_stream.core.spectra.preprocess_xrd",
            "q_grid": {"start": XRD_Q_MIN, "step": XRD_Q_STEP, "points": XRD_Q_POINTS, "unit": "1/A"},
            "rebinning": "area-conserving bin means (cumulative trapezoid)",
            "background": BACKGROUND,
            "normalisation": "background subtracted, clipped at 0, max = 1; zeros outside the measured range",
        },
        "architecture": architecture_of(model, **kwargs),
        "tasks": {"crystal_system": {"type": "classification", "classes": list(CRYSTAL_SYSTEMS)}},
        "metrics": metrics,
        "calibration": {"method": "temperature scaling on the validation split", "temperature": temperature},
        "training": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "AdamW wd 1e-2, 5 % warm-up + cosine",
            "steps": step, "time_budget_s": time_budget_s, "minutes": round((time.time() - started) / 60, 1),
            "loss": "cross-entropy, class weights freq^-0.5", "best_epoch": best[2], "history": history,
            "threads": threads,
        },
    }
    weights_out = {"model": model.state_dict(), "temperature": torch.tensor(temperature)}
    return save_bundle(out_dir, card, weights_out)


def _logits(model, x: np.ndarray, batch: int = 512) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        out = [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(CRYSTAL_SYSTEMS)))


def _extend_main(argv) -> int:
    """python -m sfn_stream.offline.training._xrd extend OUT.npz [--base FILE] [--sources a,b] [--splits-dir DIR]"""
    import argparse
    import sys

    from sfn_stream.offline.shared import SharedDataMissing

    parser = argparse.ArgumentParser(prog="python -m sfn_stream.offline.training._xrd extend",
                                     description="extend a stick table with further sources (deduplicated)")
    parser.add_argument("out", type=Path, help="extended table (.npz); resumes a partial one with the same base")
    parser.add_argument("--base", type=Path, default=DEFAULT_STICK_TABLE)
    parser.add_argument("--sources", default=",".join(EXTENSION_SOURCES), help="of: " + ", ".join(EXTENSION_SOURCES))
    parser.add_argument("--timeout", type=float, help="seconds per structure (default: the base build's)")
    parser.add_argument("--limit", type=int, help="at most this many structures per source (a trial)")
    parser.add_argument("--splits-dir", type=Path,
                        help="also write xrd_{train,val,test}.txt for the extended table here (extend_split_files)")
    parser.add_argument("--committed-splits", type=Path, default=paths.SPLITS_DIR,
                        help="split files of the base table (default: data/splits)")
    args = parser.parse_args(argv)
    sources = tuple(s for s in args.sources.split(",") if s)
    try:
        table = extend_stick_table(args.out, base=args.base, sources=sources, timeout_s=args.timeout, limit=args.limit)
    except SharedDataMissing as err:
        sys.exit(f"the extension needs the shared development data: {err}")
    print(json.dumps(table.info["extension"], indent=1))
    if args.splits_dir:
        from ._xanes_splits import UNIFIED_SPLITS_FILE, read_unified_splits, split_of

        shared = split_of(read_unified_splits()) if UNIFIED_SPLITS_FILE.is_file() else {}
        splits = extend_split_files(table, args.committed_splits, args.splits_dir, shared=shared)
        print(json.dumps({name: len(idx) for name, idx in splits.items()}))
    return 0


def _add_generated_main(argv) -> int:
    """python -m sfn_stream.offline.training._xrd add-generated OUT.npz --table T --generated G --splits-dir D
    --out-splits D2"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sfn_stream.offline.training._xrd add-generated",
                                     description="append generated crystals (training split only) to a stick table")
    parser.add_argument("out", type=Path, help="the combined table (.npz)")
    parser.add_argument("--table", type=Path, required=True, help="the real structures' table (e.g. the extension)")
    parser.add_argument("--generated", type=Path, required=True,
                        help="generated crystals: _xrd_cache merge of a pyxtal cache")
    parser.add_argument("--splits-dir", type=Path, required=True, help="xrd_{train,val,test}.txt of --table")
    parser.add_argument("--out-splits", type=Path, required=True, help="where the combined table's split files go")
    args = parser.parse_args(argv)
    table = StickTable.load(args.table)
    splits = read_split_files(table, args.splits_dir)
    if splits is None:
        raise SystemExit(f"no xrd_{{train,val,test}}.txt in {args.splits_dir}")
    combined, out = with_generated(table, StickTable.load(args.generated), splits)
    combined.save(args.out)
    write_split_files(combined, out, args.out_splits)
    print(json.dumps({"generated": combined.info["generated"], **{name: len(idx) for name, idx in out.items()}}))
    return 0


if __name__ == "__main__":  # python -m sfn_stream.offline.training._xrd build|train|extend|add-generated ...
    import sys

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "build":
        build_stick_table(sys.argv[2] if len(sys.argv) > 2 else DEFAULT_STICK_TABLE)
    elif command == "extend":
        sys.exit(_extend_main(sys.argv[2:]))
    elif command == "add-generated":
        sys.exit(_add_generated_main(sys.argv[2:]))
    elif command == "train":
        bundle = train_xrd_bundle(sys.argv[2] if len(sys.argv) > 2 else paths.models_dir() / "xrd-crystal-system")
        print(bundle.id)
    else:
        sys.exit("usage: python -m sfn_stream.offline.training._xrd build [sticks.npz] | train [bundle_dir] | "
                 "extend OUT.npz [--base ...] [--sources ...] [--splits-dir ...] | "
                 "add-generated OUT.npz --table T --generated G --splits-dir D --out-splits D2")

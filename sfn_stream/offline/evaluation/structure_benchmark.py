"""Benchmark of structure inference: held-out materials, simulated measurements, true and perturbed inputs.

Materials: AMCSD structures (larixite) and Materials Project structures of the OmniXAS Cu set
(``../shared``), stratified by number of elements (2-5), ionic (both charge signs), at most one
material per (formula, space group). Each query leaves out the material itself and every
template that StructureMatcher (pymatgen defaults: ltol 0.2, stol 0.3, angle_tol 5, volume
scaled) finds equal to it, so the answer has to come from a different compound of the same type.

Measurement: the project's PXRD simulator (``sfn_stream.core.simulation.synthesize_pattern``) with
lab Cu K-alpha conditions: random instrument and size/strain broadening, K-alpha2, zero shift and
sample displacement, +-1 % lattice strain, texture, per-peak intensity noise, background and
Poisson noise; handed over as counts vs 2theta, like a file.

Inputs: ``true`` = each element's oxidation-state class, each transition metal's CN class and the
crystal system, all with probability 1. ``perturbed`` = what predictors give: transition-metal
states wrong with probability ``P_WRONG_STATE`` (probability mass on a neighbouring state), other
elements from ICSD statistics (as the product does), CN wrong with ``P_WRONG_CN``, crystal
system wrong with ``P_WRONG_SYSTEM`` (1 - the paper's 0.81 accuracy).

Space-group prior (``space_group_prior``): ``none`` (no space-group term), ``predicted`` (the top 5 of
the PXRD search-match bundle applied to the query's simulated pattern, with every reference of the
material's reduced formula left out of its library: most benchmark materials are references of the
bundle themselves, and formula-disjoint patterns are what its probabilities were calibrated on) or
``oracle`` (the true space group with probability 1: an upper bound, not a result).

A hit is formula (reduced) and crystal system both right.
"""

from __future__ import annotations

import json
import statistics
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from sfn_stream.core import paths
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS

BENCHMARK_DIR = paths.DATA_DIR / "structure_benchmark"
BENCHMARK_FILE = BENCHMARK_DIR / "benchmark.json"
RESULTS_FILE = BENCHMARK_DIR / "results.json"
TEMPLATE_SOURCES = ("amcsd", "aflow", "robocrys")
P_WRONG_STATE = 0.2
P_WRONG_CN = 0.2
P_WRONG_SYSTEM = 0.19
SPACE_GROUP_PRIORS = ("none", "predicted", "oracle")
SEARCH_MATCH_BUNDLE = "xrd-search-match"  # named, not the registry's default: only search-match names space groups
STICK_TABLE = paths.XRD_STICK_TABLE  # the bundle's reference ids -> formulas
MEASUREMENT = {
    "p_synchrotron": 0.0,
    "lab_anode_probabilities": {"Cu": 1.0, "Co": 0.0, "Mo": 0.0},
    "p_short_range": 0.0,
}


# ------------------------------------------------------------------ benchmark definition
def _labels(entry) -> dict[str, Any]:
    from sfn_stream.core.chemistry import is_transition_metal, nearest_class

    oxidation = {el: nearest_class(ox) for el, ox in zip(entry.elements, entry.oxidation)}
    cn = {}
    for el, pairs in zip(entry.elements, entry.cn):
        if pairs and is_transition_metal(el):
            total = sum(m for _, m in pairs)
            value = nearest_class(sum(c * m for c, m in pairs) / total)
            if value >= 1:  # CrystalNN finds no neighbour in a few odd cells: no CN input then
                cn[el] = value
    return {"oxidation": oxidation, "cn": cn}


def _usable(entry) -> bool:
    """Ionic, and charge balanced with the integer state classes the inputs will give."""
    from sfn_stream.core.structure import formula_prior

    from pymatgen.core import Element

    if any(ox is None for ox in entry.oxidation) or any(Element(el).Z > 94 for el in entry.elements):
        return False  # requests are limited to H..Pu, as the element descriptors
    if not (any(ox > 0 for ox in entry.oxidation) and any(ox < 0 for ox in entry.oxidation)):
        return False
    states = {el: {state: 1.0} for el, state in _labels(entry)["oxidation"].items()}
    if any(0 in table for table in states.values()):
        return False
    return formula_prior(list(zip(entry.elements, entry.counts)), states) is not None


def _omnixas_pool(n_elements: int, exclude_formulas: set[str], rng, limit: int) -> list[tuple[Any, Any]]:
    import csv

    from pymatgen.core import Structure

    from sfn_stream.core.structure import describe_template
    from sfn_stream.offline.shared import omnixas_poscars, shared_path

    rows = list(csv.DictReader(open(shared_path("data", "omnixas_cu", "cu_structures_index.csv"))))
    rows = [r for r in rows if int(r["n_elements"]) == n_elements and r["reduced_formula"] not in exclude_formulas]
    order = rng.permutation(len(rows))
    poscars = omnixas_poscars()
    out, seen = [], set()
    for k in order:
        row = rows[k]
        key = (row["reduced_formula"], row["spacegroup_number"])
        if key in seen:
            continue
        entry, conventional, _ = describe_template(
            Structure.from_str(poscars[row["material_id"]], fmt="poscar"), f"omnixas:{row['material_id']}", "omnixas_cu"
        )
        if entry is None or not _usable(entry):
            continue
        seen.add(key)
        out.append((entry, conventional))
        if len(out) >= limit:
            break
    return out


def duplicate_templates(structure, formula: str, index) -> list[str]:
    """Template ids of ``index`` that StructureMatcher finds equal to ``structure`` (same species)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()  # ltol 0.2, stol 0.3, angle_tol 5, primitive cells, volume scaled
    out = []
    for i, entry in enumerate(index.entries):
        if entry.formula != formula:
            continue
        try:
            if matcher.fit(structure, index.structure(i)):
                out.append(entry.template_id)
        except Exception:  # matcher failures count as "not a duplicate"
            continue
    return out


def _benchmark_item(entry, structure, origin: str, split: str, index) -> dict[str, Any]:
    """One benchmark material: its labels and the template ids equal to it (left out of its query)."""
    duplicates = set(duplicate_templates(structure, entry.formula, index)) - {entry.template_id}
    return {
        "id": entry.template_id, "origin": origin, "split": split, "n_elements": len(entry.counts),
        "formula": entry.formula, "crystal_system": entry.crystal_system,
        "spacegroup_number": entry.spacegroup_number, "anonymous": entry.anonymous, **_labels(entry),
        "duplicates": sorted(duplicates),
    }


def make_benchmark(
    per_stratum: int = 30, dev_per_stratum: int = 8, seed: int = 0, *, progress: bool = False, index=None
) -> dict[str, Any]:
    """Draw the fixed benchmark (test + dev materials) and their duplicate templates."""
    from sfn_stream.core.structure import template_index

    if index is None:
        index, _ = template_index(TEMPLATE_SOURCES, progress=progress)
    rng = np.random.default_rng(seed)
    items = []
    for n in (2, 3, 4, 5):
        amcsd = [(i, e) for i, e in enumerate(index.entries) if e.source == "amcsd" and len(e.counts) == n and _usable(e)]
        chosen, seen = [], set()
        for k in rng.permutation(len(amcsd)):
            i, entry = amcsd[k]
            key = (entry.formula, entry.spacegroup_number)
            if key in seen:
                continue
            seen.add(key)
            chosen.append((entry, index.structure(i)))
            if len(chosen) >= per_stratum + dev_per_stratum:
                break
        formulas = {e.formula for e, _ in chosen}
        chosen_mp = _omnixas_pool(n, formulas, rng, per_stratum + dev_per_stratum)
        for origin, pool in (("amcsd", chosen), ("omnixas_cu", chosen_mp)):
            for j, (entry, structure) in enumerate(pool):
                split = "dev" if j < dev_per_stratum else "test"
                items.append(_benchmark_item(entry, structure, origin, split, index))
    return {
        "description": "structure-inference benchmark: materials, true labels, template ids left out per query",
        "seed": seed, "per_stratum": per_stratum, "dev_per_stratum": dev_per_stratum,
        "template_sources": list(TEMPLATE_SOURCES),
        "index": index.stats(),
        "items": items,
    }


def extend_dev(benchmark: dict[str, Any], per_stratum: int, seed: int = 1, *, index=None) -> dict[str, Any]:
    """Add dev materials (AMCSD only) until each (AMCSD, number of elements) stratum has ``per_stratum``.

    The test items are left as they are; a new dev material never shares a reduced formula with
    any test material, nor a (formula, space group) with any benchmark material. Eight dev
    materials per stratum were too few to choose the scoring constants on.
    """
    from sfn_stream.core.structure import template_index

    if index is None:
        index, _ = template_index(benchmark.get("template_sources", TEMPLATE_SOURCES))
    rng = np.random.default_rng(seed)
    items = list(benchmark["items"])
    test_formulas = {it["formula"] for it in items if it["split"] == "test"}
    taken = {(it["formula"], it["spacegroup_number"]) for it in items}
    for n in (2, 3, 4, 5):
        have = sum(1 for it in items if it["split"] == "dev" and it["origin"] == "amcsd" and it["n_elements"] == n)
        pool = [(i, e) for i, e in enumerate(index.entries) if e.source == "amcsd" and len(e.counts) == n
                and e.formula not in test_formulas and _usable(e)]
        for k in rng.permutation(len(pool)):
            if have >= per_stratum:
                break
            i, entry = pool[k]
            key = (entry.formula, entry.spacegroup_number)
            if key in taken:
                continue
            taken.add(key)
            have += 1
            items.append(_benchmark_item(entry, index.structure(i), "amcsd", "dev", index))
    return {**benchmark, "items": items, "dev_extension": {"amcsd_per_stratum": per_stratum, "seed": seed}}


def save_benchmark(benchmark: dict[str, Any], path: Path = BENCHMARK_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(benchmark, indent=1))
    return path


def load_benchmark(path: Path = BENCHMARK_FILE) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# ------------------------------------------------------------------ one query
def simulated_measurement(structure, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """(2theta, counts, wavelength, conditions) of a simulated lab measurement of ``structure``."""
    from sfn_stream.core.simulation import q_to_two_theta, stick_pattern, synthesize_pattern
    from sfn_stream.core.spectra import XRD_Q_GRID

    sticks = stick_pattern(structure)
    details = synthesize_pattern(sticks, XRD_Q_GRID, rng, augmentation=MEASUREMENT, return_details=True)
    cond = details["conditions"]
    covered = details["covered"]
    two_theta = q_to_two_theta(XRD_Q_GRID[covered], cond["wavelength"])
    ok = np.isfinite(two_theta)
    return two_theta[ok], details["raw"][covered][ok], float(cond["wavelength"]), cond


def _neighbour(value: int, rng, allowed: Sequence[int] | None = None) -> int:
    options = [v for v in (value - 1, value + 1) if (allowed is None or v in allowed) and v != 0]
    return int(rng.choice(options)) if options else value + 1


def perturbed_inputs(item: dict, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """Oxidation states, CN and crystal-system tables as imperfect predictors would give them."""
    from sfn_stream.core.chemistry import is_transition_metal

    oxidation = {}
    for el, state in item["oxidation"].items():
        if not is_transition_metal(el):
            continue  # non-TM elements: ICSD statistics, as the product fills them
        wrong = _neighbour(state, rng)
        oxidation[el] = {wrong: 0.6, state: 0.4} if rng.random() < P_WRONG_STATE else {state: 0.8, wrong: 0.2}
    cn = {}
    for el, value in item["cn"].items():
        if value < 1:
            continue
        wrong = int(rng.choice([c for c in (value - 2, value - 1, value + 1, value + 2) if c >= 2]))
        cn[el] = {wrong: 0.6, value: 0.4} if rng.random() < P_WRONG_CN else {value: 0.8, wrong: 0.2}
    true_system = item["crystal_system"]
    others = [cs for cs in CRYSTAL_SYSTEMS if cs != true_system]
    a, b = rng.choice(others, 2, replace=False)
    if rng.random() < P_WRONG_SYSTEM:
        systems = {str(a): 0.55, true_system: 0.30, str(b): 0.15}
    else:
        systems = {true_system: 0.7, str(a): 0.15, str(b): 0.15}
    return oxidation, cn, systems


def true_inputs(item: dict) -> tuple[dict, dict, dict]:
    oxidation = {el: {state: 1.0} for el, state in item["oxidation"].items()}
    cn = {el: {value: 1.0} for el, value in item["cn"].items() if value >= 1}
    return oxidation, cn, {item["crystal_system"]: 1.0}


def _structure_of(item: dict, index):
    """The material's conventional cell: AMCSD from the template index, OmniXAS from ../shared (never stored here)."""
    if item["origin"] == "omnixas_cu":
        from pymatgen.core import Structure
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        from sfn_stream.offline.shared import omnixas_poscars

        structure = Structure.from_str(omnixas_poscars()[item["id"].split(":", 1)[1]], fmt="poscar")
        return SpacegroupAnalyzer(structure, symprec=0.1).get_conventional_standard_structure()
    position = {e.template_id: i for i, e in enumerate(index.entries)}
    return index.structure(position[item["id"]])


class FormulaDisjointSpaceGroups:
    """The search-match bundle's top-5 space groups for a measured pattern, with the library's references of
    the query's reduced formula left out (see the module docstring); loaded once per process."""

    def __init__(self, bundle_path: str | Path | None = None, sticks: str | Path = STICK_TABLE):
        from pymatgen.core import Composition

        from sfn_stream.core.networks import load_bundle, models_dir, xrd_model_from_bundle

        self.searcher = xrd_model_from_bundle(load_bundle(bundle_path or models_dir() / SEARCH_MATCH_BUNDLE))
        table = np.load(sticks)
        formula_of = dict(zip(table["ids"].tolist(), table["formulas"].tolist()))
        self.reference_formulas = np.array([Composition(formula_of[i]).reduced_formula
                                            for i in self.searcher.reference_ids])

    def top(self, two_theta, counts, wavelength: float, formula: str, n: int = 5) -> dict[int, float]:
        """Space group number -> probability of the ``n`` most probable (empty if the pattern is unusable)."""
        from pymatgen.core import Composition

        from sfn_stream.core.spectra import preprocess_xrd

        pattern = preprocess_xrd(two_theta, counts, axis="2theta", wavelength=wavelength)
        if not pattern.usable:
            return {}
        similarities = self.searcher.similarities(np.asarray(pattern.intensity, dtype=np.float32)[None, :])
        similarities[:, self.reference_formulas == Composition(formula).reduced_formula] = -np.inf
        nearest = np.argsort(-similarities[0], kind="stable")[None, :self.searcher.k]
        groups = self.searcher.votes(nearest, np.take_along_axis(similarities, nearest, 1))[1][0]
        best = np.argsort(-groups, kind="stable")[:n]
        return {int(i) + 1: float(groups[i]) for i in best}


_SPACE_GROUPS: FormulaDisjointSpaceGroups | None = None


def _space_group_table(prior: str, item: dict, two_theta, counts, wavelength: float) -> dict[int, float] | None:
    """The request's space-group probabilities under ``prior`` (None for 'none')."""
    global _SPACE_GROUPS
    if prior == "none":
        return None
    if prior == "oracle":
        return {int(item["spacegroup_number"]): 1.0}
    if prior != "predicted":
        raise ValueError(f"space_group_prior must be one of {', '.join(SPACE_GROUP_PRIORS)}, not {prior!r}")
    if _SPACE_GROUPS is None:
        _SPACE_GROUPS = FormulaDisjointSpaceGroups()
    return _SPACE_GROUPS.top(two_theta, counts, wavelength, item["formula"])


def run_item(item: dict, setting: str, index, seed: int = 0, top: int = 5,
             space_group_prior: str = "none") -> dict[str, Any]:
    from sfn_stream.core.structure import InferenceRequest, XrdInput, infer_structures

    rng = np.random.default_rng([seed, zlib.crc32(item["id"].encode())])
    structure = _structure_of(item, index)
    two_theta, counts, wavelength, cond = simulated_measurement(structure, rng)
    if setting == "true":
        oxidation, cn, systems = true_inputs(item)
    elif setting == "perturbed":
        oxidation, cn, systems = perturbed_inputs(item, rng)
    else:
        raise ValueError(f"setting must be 'true' or 'perturbed', not {setting!r}")
    space_groups = _space_group_table(space_group_prior, item, two_theta, counts, wavelength)
    request = InferenceRequest(
        elements=tuple(item["oxidation"]), xrd=XrdInput(two_theta, counts, "2theta", wavelength, item["id"]),
        oxidation_states=oxidation, coordination=cn, crystal_systems=systems,
        space_group_probabilities=space_groups,
    )
    exclude = {item["id"], *item["duplicates"]}
    started = time.perf_counter()
    result = infer_structures(request, index=index, top=top, exclude=exclude)
    seconds = time.perf_counter() - started
    hits = [c.formula == item["formula"] and c.crystal_system == item["crystal_system"] for c in result.candidates]
    # stricter, for the space-group prior: the formula and the space group itself right
    sg_hits = [c.formula == item["formula"] and c.spacegroup_number == item["spacegroup_number"]
               for c in result.candidates]
    available = any(
        e.anonymous == item["anonymous"] and e.crystal_system == item["crystal_system"] and e.template_id not in exclude
        for e in index.entries
    )
    record = {
        "id": item["id"], "origin": item["origin"], "n_elements": item["n_elements"], "setting": setting,
        "formula": item["formula"], "crystal_system": item["crystal_system"],
        "top1": bool(hits[:1] and hits[0]), "top5": any(hits[:5]),
        "rank": hits.index(True) + 1 if any(hits) else None,
        "top1_space_group": bool(sg_hits[:1] and sg_hits[0]), "top5_space_group": any(sg_hits[:5]),
        "template_type_available": available,
        "predicted": [[c.formula, c.crystal_system, c.spacegroup_symbol, round(c.components["xrd_similarity"], 3),
                       c.template_id] for c in result.candidates],
        "reason": result.reason, "seconds": round(seconds, 2),
        "conditions": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in cond.items()
                       if k in ("wavelength2", "zero_shift_deg", "lattice_strain", "crystallite_size_A", "instrument_fwhm_deg")},
    }
    if space_group_prior != "none":  # records without the prior carry no prior fields, as before it existed
        record.update(space_group_prior=space_group_prior, space_group_table=space_groups,
                      true_space_group_in_table=int(item["spacegroup_number"]) in (space_groups or {}))
    return record


def summary_key(setting: str, space_group_prior: str = "none") -> str:
    """'true', 'true+sg_predicted', ...: without the prior the key is the setting, as before the prior existed."""
    return setting if space_group_prior == "none" else f"{setting}+sg_{space_group_prior}"


def summarize(records: Sequence[dict]) -> dict[str, Any]:
    """Top-1 / top-5 per setting (and space-group prior) and number of elements (and per origin), seconds
    per query; with a space-group table, how often it named the true space group."""
    out: dict[str, Any] = {}
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        setting = summary_key(r["setting"], r.get("space_group_prior", "none"))
        groups[(setting, str(r["n_elements"]))].append(r)
        groups[(setting, "all")].append(r)
        groups[(setting, f"{r['origin']}:{r['n_elements']}")].append(r)
    for (setting, key), rows in sorted(groups.items()):
        secs = [r["seconds"] for r in rows]
        out.setdefault(setting, {})[key] = {
            "n": len(rows),
            "top1": round(sum(r["top1"] for r in rows) / len(rows), 3),
            "top5": round(sum(r["top5"] for r in rows) / len(rows), 3),
            "template_type_available": round(sum(bool(r["template_type_available"]) for r in rows) / len(rows), 3),
            "seconds_mean": round(statistics.fmean(secs), 2),
            "seconds_median": round(statistics.median(secs), 2),
            "seconds_max": round(max(secs), 2),
        }
        for name in ("top1_space_group", "top5_space_group"):
            flags = [r[name] for r in rows if name in r]  # absent from records of before these fields
            if flags:
                out[setting][key][name] = round(sum(flags) / len(flags), 3)
        named = [r["true_space_group_in_table"] for r in rows if "true_space_group_in_table" in r]
        if named:
            out[setting][key]["true_space_group_in_table"] = round(sum(named) / len(named), 3)
    return out


def run_benchmark(
    benchmark: dict[str, Any], *, settings: Iterable[str] = ("true", "perturbed"), split: str = "test",
    limit: int | None = None, index=None, progress: bool = False, log_path: str | Path | None = None,
    workers: int = 1, space_group_priors: Iterable[str] = ("none",),
) -> dict[str, Any]:
    """Run every benchmark item of ``split`` under each setting and space-group prior; records and summary.

    ``workers`` > 1 runs queries in that many processes (the index is sent to each once);
    records keep the order of the queries whatever order they finish in.
    """
    from sfn_stream.core.structure import template_index

    if index is None:
        index, _ = template_index(benchmark.get("template_sources", TEMPLATE_SOURCES), progress=progress)
    items = [it for it in benchmark["items"] if it["split"] == split]
    if limit:
        per = defaultdict(int)
        kept = []
        for it in items:
            key = (it["origin"], it["n_elements"])
            if per[key] < limit:
                per[key] += 1
                kept.append(it)
        items = kept
    todo = [(s, prior, it) for s in settings for prior in space_group_priors for it in items]
    records: list[dict] = [{}] * len(todo)
    log = open(log_path, "a") if log_path else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="structure benchmark", unit="query")
    try:
        for k, record in _run_queries(todo, index, workers):
            records[k] = record
            if log:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if bar is not None:
                bar.update()
    finally:
        if log:
            log.close()
        if bar is not None:
            bar.close()
    return {"split": split, "summary": summarize(records), "records": records, "index": index.stats()}


def _safe_query(item: dict, setting: str, prior: str, index) -> dict[str, Any]:
    try:
        return run_item(item, setting, index, space_group_prior=prior)
    except Exception as err:  # a failing query is a miss, recorded with its error
        record = {"id": item["id"], "origin": item["origin"], "n_elements": item["n_elements"], "setting": setting,
                  "formula": item["formula"], "crystal_system": item["crystal_system"], "top1": False, "top5": False,
                  "top1_space_group": False, "top5_space_group": False, "rank": None, "template_type_available": None, "predicted": [], "seconds": 0.0,
                  "reason": f"error: {type(err).__name__}: {err}"}
        return record if prior == "none" else {**record, "space_group_prior": prior}


_WORKER_INDEX = None


def _init_worker(index) -> None:
    global _WORKER_INDEX
    _WORKER_INDEX = index


def _worker_query(args) -> tuple[int, dict]:
    k, setting, prior, item = args
    return k, _safe_query(item, setting, prior, _WORKER_INDEX)


def _run_queries(todo, index, workers: int):
    """(position, record) of each (setting, space-group prior, item) of ``todo``, as they finish."""
    if workers <= 1:
        for k, (setting, prior, item) in enumerate(todo):
            yield k, _safe_query(item, setting, prior, index)
        return
    import multiprocessing

    jobs = [(k, setting, prior, item) for k, (setting, prior, item) in enumerate(todo)]
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with context.Pool(workers, initializer=_init_worker, initargs=(index,)) as pool:
        yield from pool.imap_unordered(_worker_query, jobs)


# ------------------------------------------------------------------ measured patterns
def measured_queries() -> list[dict[str, Any]]:
    """Single-phase measured patterns of ../shared/data/pxrd_experimental_dev with their formulas."""
    import csv

    from sfn_stream.core.spectra import read_pdcif
    from sfn_stream.offline.shared import shared_path

    root = shared_path("data", "pxrd_experimental_dev")
    out = []
    for row in csv.DictReader(open(root / "labels.csv")):
        if row["phases"].strip() != "1":
            continue
        x, y = _read_two_columns(root / row["file"])
        out.append({"file": row["file"], "formula": row["formula"], "crystal_system": row["crystal_system"] or None,
                    "two_theta": x, "intensity": y, "wavelength": float(row["wavelength_A"]), "note": row["note"]})
    for row in csv.DictReader(open(root / "iucr_rietveld" / "INDEX.csv")):
        if row["nphases"].strip() != "1" or row["has_powder_profile"] != "True":
            continue
        profile = read_pdcif(root / "iucr_rietveld" / row["file"])
        wavelength = profile.wavelength or (float(row["wavelength_A"]) if row["wavelength_A"].strip() else None)
        if wavelength is None:
            continue
        out.append({"file": f"iucr_rietveld/{row['file']}", "formula": row["formula"], "crystal_system": row["crystal_system"],
                    "two_theta": profile.two_theta, "intensity": profile.intensity, "wavelength": wavelength,
                    "note": f"{row['spacegroup']} ({row['sg_number']})"})
    return out


def _read_two_columns(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, usecols=(0, 1))
    return data[:, 0], data[:, 1]


def _expected_states(formula: str) -> dict[str, dict[int, float]] | None:
    """The most likely charge-balanced states of ``formula`` (pymatgen's ICSD-weighted guesses)."""
    from pymatgen.core import Composition

    guesses = Composition(formula).oxi_state_guesses(max_sites=-50)
    if not guesses:
        return None
    best = guesses[0]
    return {el: {int(round(v)): 1.0} for el, v in best.items() if abs(v - round(v)) < 1e-6} or None


def run_measured(index=None, *, top: int = 5) -> list[dict[str, Any]]:
    """Inference on each single-phase measured pattern, crystal system unknown and known."""
    from pymatgen.core import Composition

    from sfn_stream.core.structure import InferenceRequest, XrdInput, infer_structures, template_index

    if index is None:
        index, _ = template_index(TEMPLATE_SOURCES)
    out = []
    for q in measured_queries():
        composition = Composition(q["formula"])
        elements = tuple(el.symbol for el in composition.elements)
        states = _expected_states(q["formula"])
        reduced = composition.reduced_formula
        for known_system in (False, True):
            if known_system and not q["crystal_system"]:
                continue
            request = InferenceRequest(
                elements=elements, xrd=XrdInput(q["two_theta"], q["intensity"], "2theta", q["wavelength"], q["file"]),
                oxidation_states=states or {}, crystal_systems={q["crystal_system"]: 1.0} if known_system else None,
            )
            started = time.perf_counter()
            try:
                result = infer_structures(request, index=index, top=top)
            except ValueError as err:
                out.append({"file": q["file"], "formula": reduced, "error": str(err)})
                continue
            hits = [c.formula == reduced and (q["crystal_system"] is None or c.crystal_system == q["crystal_system"])
                    for c in result.candidates]
            out.append({
                "file": q["file"], "formula": reduced, "crystal_system": q["crystal_system"], "note": q["note"],
                "crystal_system_given": known_system, "oxidation_states": states,
                "rank_of_right_answer": hits.index(True) + 1 if any(hits) else None,
                "candidates": [[c.formula, c.crystal_system, c.spacegroup_symbol, round(c.components["xrd_similarity"], 3),
                                c.template_id, c.template_label] for c in result.candidates],
                "reason": result.reason, "notes": result.notes, "seconds": round(time.perf_counter() - started, 2),
            })
    return out


def evaluate_structure_inference(
    settings: Sequence[str] = ("true", "perturbed"), *, split: str = "test", limit: int | None = None,
    workers: int = 1, synthetic: bool = True, measured: bool = True, log_path: str | Path | None = None,
    save_path: str | Path | None = None, progress: bool = False,
    space_group_priors: Sequence[str] = ("none", "predicted"),
) -> dict[str, Any]:
    """``sfn-stream evaluate structure``: the benchmark's simulated queries (``synthetic``) under each
    space-group prior, and the measured single-phase patterns (``measured``); ``save_path`` receives the
    full results."""
    from sfn_stream.offline.shared import SharedDataMissing, have_shared

    if not have_shared():
        raise SharedDataMissing("the structure benchmark needs ../shared (set SFN_SHARED)")
    if not BENCHMARK_FILE.is_file():
        raise FileNotFoundError(f"{BENCHMARK_FILE} is missing: the benchmark definition is part of the repository")
    payload: dict[str, Any] = {}
    if synthetic:
        payload = run_benchmark(load_benchmark(), settings=settings, split=split, limit=limit, progress=progress,
                                log_path=log_path, workers=workers, space_group_priors=space_group_priors)
    if measured:
        payload["measured"] = run_measured()
    if save_path:
        save_path = Path(save_path)
        save_path.parent.mkdir(parents=True, exist_ok=True)
        save_path.write_text(json.dumps(payload, indent=1, default=str))
    return payload


def main(argv=None) -> int:
    """``python -m sfn_stream.offline.evaluation.structure_benchmark make|extend-dev``: draw and save the benchmark definition
    (``extend-dev --dev-per-stratum 40 --seed 1`` adds AMCSD dev materials, test items unchanged)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=("make", "extend-dev"))
    parser.add_argument("--per-stratum", type=int, default=30)
    parser.add_argument("--dev-per-stratum", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.action == "extend-dev":
        benchmark = extend_dev(load_benchmark(), args.dev_per_stratum, args.seed)
    else:
        benchmark = make_benchmark(args.per_stratum, args.dev_per_stratum, args.seed, progress=True)
    path = save_benchmark(benchmark)
    counts = defaultdict(int)
    for item in benchmark["items"]:
        counts[(item["split"], item["origin"], item["n_elements"])] += 1
    print(path, dict(sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

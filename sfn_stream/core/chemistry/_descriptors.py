"""Element descriptors for the SpecFusionNet element encoder.

Per the paper: Z, Pauling electronegativity, atomic radius, first three ionisation energies and the
element type (one-hot). Raw values come from pymatgen's periodic table; the continuous ones are
standardised with the mean and standard deviation over the supported elements (H..Pu), and those
statistics are exposed so that a model card can record exactly what a network saw.

Missing values are explicit: a value that does not exist (IE2/IE3 of H, IE3 of He) or is not tabulated
(Pauling electronegativity of He and Ne, empirical radius of several noble gases) is replaced by the
mean (0 after standardisation) and flagged in a ``*_missing`` column.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np

MAX_Z = 94  # H..Pu: every element of Materials Project's inorganic structures

CONTINUOUS_NAMES = (
    "Z",
    "electronegativity",
    "atomic_radius",
    "ionization_energy_1",
    "ionization_energy_2",
    "ionization_energy_3",
)
MISSING_NAMES = (
    "electronegativity_missing",
    "atomic_radius_missing",
    "ionization_energy_2_missing",
    "ionization_energy_3_missing",
)
ELEMENT_TYPES = (
    "alkali",
    "alkaline_earth",
    "transition_metal",
    "post_transition_metal",
    "metalloid",
    "nonmetal",
    "halogen",
    "noble_gas",
    "lanthanide",
    "actinide",
)
DESCRIPTOR_NAMES = CONTINUOUS_NAMES + MISSING_NAMES + tuple(f"type_{name}" for name in ELEMENT_TYPES)

# d-block groups 3-12 (La and Ac are counted with the f-block). Only these carry K-edge spectra in the model.
TRANSITION_METAL_Z = frozenset([*range(21, 31), *range(39, 49), *range(72, 81)])


class UnknownElementError(ValueError):
    """A symbol that is not a chemical element between H and Pu."""


def _element(symbol: str):
    from pymatgen.core.periodic_table import Element

    try:
        element = Element(str(symbol).strip())
    except (ValueError, KeyError) as err:
        raise UnknownElementError(
            f"{symbol!r} is not an element symbol; use symbols such as 'Cu', 'O', 'Fe'"
        ) from err
    if not 1 <= element.Z <= MAX_Z:
        raise UnknownElementError(f"element {symbol!r} (Z={element.Z}) is outside the supported range H..Pu")
    return element


def element_z(symbol: str) -> int:
    """Atomic number of ``symbol``; raises :class:`UnknownElementError` for anything else."""
    return int(_element(symbol).Z)


def is_transition_metal(symbol: str) -> bool:
    return element_z(symbol) in TRANSITION_METAL_Z


def element_type(symbol: str) -> str:
    """One of :data:`ELEMENT_TYPES` (exclusive; f-block first, so La/Ac are lanthanide/actinide)."""
    element = _element(symbol)
    z = element.Z
    if 57 <= z <= 71:
        return "lanthanide"
    if 89 <= z <= 103:
        return "actinide"
    if z in TRANSITION_METAL_Z:
        return "transition_metal"
    if element.is_noble_gas:
        return "noble_gas"
    if element.is_halogen:
        return "halogen"
    if element.is_alkali:
        return "alkali"
    if element.is_alkaline:
        return "alkaline_earth"
    if element.is_metalloid:
        return "metalloid"
    if element.is_metal:  # Al, Ga, In, Sn, Tl, Pb, Bi, Po...
        return "post_transition_metal"
    return "nonmetal"


def _float_or_nan(value) -> float:
    if value is None:
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def raw_descriptors(symbol: str) -> dict[str, float]:
    """Unstandardised continuous descriptors (NaN where missing) of one element."""
    element = _element(symbol)
    with warnings.catch_warnings():  # pymatgen warns on missing data
        warnings.simplefilter("ignore")
        electronegativity = _float_or_nan(element.X)
        # Empirical radius (Slater); the calculated one (Clementi) where no empirical value is tabulated.
        radius = element.atomic_radius if element.atomic_radius is not None else element.atomic_radius_calculated
    energies = list(element.ionization_energies) + [None, None, None]
    return {
        "Z": float(element.Z),
        "electronegativity": electronegativity,
        "atomic_radius": _float_or_nan(radius),
        "ionization_energy_1": _float_or_nan(energies[0]),
        "ionization_energy_2": _float_or_nan(energies[1]),
        "ionization_energy_3": _float_or_nan(energies[2]),
    }


@lru_cache(maxsize=1)
def descriptor_stats() -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each continuous descriptor over H..Pu (missing values skipped)."""
    from pymatgen.core.periodic_table import Element

    table = [raw_descriptors(Element.from_Z(z).symbol) for z in range(1, MAX_Z + 1)]
    stats = {}
    for name in CONTINUOUS_NAMES:
        values = np.array([row[name] for row in table], dtype=float)
        values = values[np.isfinite(values)]
        stats[name] = {"mean": float(values.mean()), "std": float(values.std())}
    return stats


def element_descriptors(symbol: str, stats: dict[str, dict[str, float]] | None = None) -> np.ndarray:
    """Standardised descriptor vector of ``symbol`` in the order of :data:`DESCRIPTOR_NAMES`.

    ``stats`` defaults to :func:`descriptor_stats`; pass a model card's recorded statistics to
    reproduce the exact inputs a network was trained on.
    """
    stats = stats or descriptor_stats()
    raw = raw_descriptors(symbol)
    continuous = []
    for name in CONTINUOUS_NAMES:
        value = raw[name]
        continuous.append(0.0 if math.isnan(value) else (value - stats[name]["mean"]) / stats[name]["std"])
    missing = [float(math.isnan(raw[name.removesuffix("_missing")])) for name in MISSING_NAMES]
    kind = element_type(symbol)
    one_hot = [float(kind == name) for name in ELEMENT_TYPES]
    return np.array(continuous + missing + one_hot, dtype=np.float32)


def descriptor_table(stats: dict[str, dict[str, float]] | None = None) -> np.ndarray:
    """``(MAX_Z + 1, len(DESCRIPTOR_NAMES))`` array; row Z holds element Z, row 0 is zeros (padding)."""
    from pymatgen.core.periodic_table import Element

    table = np.zeros((MAX_Z + 1, len(DESCRIPTOR_NAMES)), dtype=np.float32)
    for z in range(1, MAX_Z + 1):
        table[z] = element_descriptors(Element.from_Z(z).symbol, stats)
    return table

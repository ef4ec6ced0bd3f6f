"""Tabulated K-edge energies of the elements Ca..Mo (Z 20-42).

Values in eV are those of the Elam, Ravel & Sieber tables as distributed by xraydb
(W. T. Elam, B. D. Ravel, J. R. Sieber, Radiat. Phys. Chem. 63 (2002) 121-128;
https://github.com/xraypy/XrayDB), which Athena and Larch use to name edges and to
calibrate against reference foils. They were checked against ``xraydb.xray_edge(el, "K")``
(see docs/preprocessing-check.md).
"""

from __future__ import annotations

__all__ = [
    "K_EDGE_ENERGIES",
    "TRANSITION_METALS_3D",
    "UnknownEdgeError",
    "edge_energy",
    "element_symbol",
    "k_edge_energy",
]


class UnknownEdgeError(ValueError):
    """The element symbol or absorption edge is not in the table."""


# Symbol -> K-edge energy (eV), Z = 20..42.
K_EDGE_ENERGIES: dict[str, float] = {
    "Ca": 4038.5,
    "Sc": 4492.0,
    "Ti": 4966.0,
    "V": 5465.0,
    "Cr": 5989.0,
    "Mn": 6539.0,
    "Fe": 7112.0,
    "Co": 7709.0,
    "Ni": 8333.0,
    "Cu": 8979.0,
    "Zn": 9659.0,
    "Ga": 10367.0,
    "Ge": 11103.0,
    "As": 11867.0,
    "Se": 12658.0,
    "Br": 13474.0,
    "Kr": 14326.0,
    "Rb": 15200.0,
    "Sr": 16105.0,
    "Y": 17038.0,
    "Zr": 17998.0,
    "Nb": 18986.0,
    "Mo": 20000.0,
}

TRANSITION_METALS_3D: tuple[str, ...] = ("Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn")


def element_symbol(element: str) -> str:
    """A chemical symbol as the periodic table writes it, from any case ('fe', 'FE' -> 'Fe'): headers, options and
    start documents write them all ways."""
    if not isinstance(element, str) or not element.strip():
        raise UnknownEdgeError(f"element must be a chemical symbol such as 'Cu', got {element!r}")
    text = element.strip()
    return text[0].upper() + text[1:].lower()


def k_edge_energy(element: str) -> float:
    """Tabulated K-edge energy (eV) of ``element`` (symbol, case-insensitive)."""
    symbol = element_symbol(element)
    try:
        return K_EDGE_ENERGIES[symbol]
    except KeyError:
        known = ", ".join(K_EDGE_ENERGIES)
        raise UnknownEdgeError(
            f"no tabulated K edge for element {element!r}; known elements (Z 20-42): {known}"
        ) from None


def edge_energy(element: str, edge: str = "K") -> float:
    """Tabulated absorption-edge energy (eV); only K edges are tabulated so far."""
    if not isinstance(edge, str) or edge.strip().upper() != "K":
        raise UnknownEdgeError(
            f"only K edges are tabulated, got edge={edge!r} for {element!r}; "
            "L edges need a table of their own"
        )
    return k_edge_energy(element)

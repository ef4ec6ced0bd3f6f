"""What a structure-inference query takes: elements, per-element constraints and the measured pattern.

Oxidation states and coordination numbers are probability tables, as the XANES predictors give
them (class = the element's multiplicity-weighted mean state rounded half up, see
``sfn_stream.core.chemistry.nearest_class``). Elements without a table get the occurrence statistics
of pymatgen's ICSD table (``icsd_bv.yaml``, Composition.oxi_state_guesses' prior), so a query for
"Ca, Mn, Al, O" with Mn=3 only needs the manganese state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS

MIN_ELEMENTS, MAX_ELEMENTS = 2, 5
MIN_STATE_PROBABILITY = 0.03  # ICSD states rarer than this are left out of the default table
MAX_DEFAULT_STATES = 3
MIN_ANION_PROBABILITY = 0.05  # p-block elements always keep their commonest negative state


class StructureInputError(ValueError):
    """A structure-inference request that cannot be answered as given (says what to change)."""


@dataclass
class XrdInput:
    """A measured powder pattern: ``x`` in degrees 2theta (with ``wavelength`` in A) or Q in 1/A."""

    x: np.ndarray
    intensity: np.ndarray
    axis: str = "2theta"
    wavelength: float | None = None
    label: str = ""

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        out = {"axis": self.axis, "wavelength": self.wavelength, "label": self.label, "n_points": int(len(self.x))}
        if arrays:
            out["x"], out["intensity"] = np.asarray(self.x).tolist(), np.asarray(self.intensity).tolist()
        return out


@dataclass
class InferenceRequest:
    """One structure-inference query.

    ``oxidation_states``: element -> {state: probability}; missing elements get ICSD statistics.
    ``coordination``: element -> {CN: probability} (usually the transition metals); others unconstrained.
    ``crystal_systems``: system -> probability; None means all seven equally likely.
    ``space_group_probabilities``: space group number -> probability, e.g. a PXRD model's top 5 (they need not
    sum to 1); None: no space-group prior (see ``_space_group.py``).
    ``xanes``: element -> measured ``XanesWindow`` (only used by the optional FEFF check).
    """

    elements: tuple[str, ...]
    xrd: XrdInput
    oxidation_states: dict[str, dict[int, float]] = field(default_factory=dict)
    coordination: dict[str, dict[int, float]] = field(default_factory=dict)
    crystal_systems: dict[str, float] | None = None
    space_group_probabilities: dict[int, float] | None = None
    xanes: dict[str, Any] = field(default_factory=dict)
    raw_run_uids: tuple[str, ...] = ()  # provenance for callers that record where the inputs came from

    def to_dict(self) -> dict[str, Any]:
        return {
            "elements": list(self.elements),
            "oxidation_states": {el: {str(k): v for k, v in t.items()} for el, t in self.oxidation_states.items()},
            "coordination": {el: {str(k): v for k, v in t.items()} for el, t in self.coordination.items()},
            "crystal_systems": dict(self.crystal_systems) if self.crystal_systems else None,
            "space_group_probabilities": ({str(k): v for k, v in self.space_group_probabilities.items()}
                                          if self.space_group_probabilities else None),
            "xrd": self.xrd.to_dict(),
            "xanes_elements": sorted(self.xanes),
            "raw_run_uids": list(self.raw_run_uids),
        }


@dataclass(frozen=True)
class ResolvedRequest:
    """A validated request: every element has a normalised oxidation-state table."""

    elements: tuple[str, ...]
    oxidation_states: dict[str, dict[int, float]]
    coordination: dict[str, dict[int, float]]
    crystal_systems: dict[str, float]
    defaulted: tuple[str, ...]  # elements whose states came from ICSD statistics
    space_groups: dict[int, float] | None = None  # None: no space-group prior


def _element_symbol(symbol: Any) -> str:
    from sfn_stream.core.chemistry import UnknownElementError, element_z
    from pymatgen.core import Element

    text = str(symbol).strip()
    try:
        element_z(text)
    except UnknownElementError as err:
        raise StructureInputError(str(err)) from err
    return Element(text).symbol


def _probability_table(name: str, element: str, table: Mapping, *, integer_range: tuple[int, int],
                       normalise: bool = True) -> dict[int, float]:
    if not isinstance(table, Mapping) or not table:
        raise StructureInputError(f"{name} of {element} must be a non-empty mapping value -> probability, got {table!r}")
    out: dict[int, float] = {}
    lo, hi = integer_range
    for key, p in table.items():
        try:
            value = int(key)
            prob = float(p)
        except (TypeError, ValueError) as err:
            raise StructureInputError(f"{name} of {element}: {key!r}: {p!r} is not integer -> number") from err
        if value != float(key) or not lo <= value <= hi:
            raise StructureInputError(f"{name} of {element}: {key!r} is not an integer between {lo} and {hi}")
        if not math.isfinite(prob) or prob < 0:
            raise StructureInputError(f"{name} of {element}: probability {p!r} must be a finite number >= 0")
        out[value] = out.get(value, 0.0) + prob
    total = sum(out.values())
    if total <= 0:
        raise StructureInputError(f"{name} of {element}: probabilities sum to zero")
    scale = total if normalise else 1.0
    return {k: v / scale for k, v in sorted(out.items()) if v > 0}


_SPECIES = re.compile(r"^\s+([A-Z][a-z]?)(\d*)([+-]):\s*(\d+)\s*$")


@lru_cache(maxsize=1)
def _icsd_occurrence() -> dict[str, dict[int, int]]:
    """Element -> {state: count} from the ``occurrence`` block of pymatgen's icsd_bv.yaml.

    Read line by line: the YAML loader takes seconds on this file, the block is a flat list.
    """
    import os

    import pymatgen.core.composition as composition_module

    path = os.path.join(os.path.dirname(composition_module.__file__), "icsd_bv.yaml")
    table: dict[str, dict[int, int]] = {}
    inside = False
    with open(path) as fh:
        for line in fh:
            if not line.startswith(" "):
                inside = line.startswith("occurrence:")
                continue
            match = _SPECIES.match(line) if inside else None
            if match:
                el, magnitude, sign, count = match.groups()
                state = int(magnitude or 1) * (1 if sign == "+" else -1)
                table.setdefault(el, {})[state] = int(count)
    return table


def default_oxidation_states(element: str) -> dict[int, float]:
    """ICSD occurrence frequencies of the element's non-zero states (>= 3 %, at most 3 states).

    Elements absent from the table get pymatgen's common oxidation states, equally weighted; an element
    with no known state at all gets 0 (metallic).
    """
    from pymatgen.core import Element

    counts = {s: c for s, c in _icsd_occurrence().get(element, {}).items() if s != 0}
    if counts:
        total = sum(counts.values())
        kept = sorted(((c / total, s) for s, c in counts.items() if c / total >= MIN_STATE_PROBABILITY), reverse=True)
        kept = kept[:MAX_DEFAULT_STATES]
        anions = [(c / total, s) for s, c in counts.items() if s < 0]
        if _p_block(element) and anions and not any(s < 0 for _, s in kept):
            # Si, Ge, Sb, ... are anions in silicides, germanides, antimonides: keep that possibility open
            p, s = max(anions)
            kept.append((max(p, MIN_ANION_PROBABILITY), s))
        norm = sum(p for p, _ in kept)
        return {s: p / norm for p, s in sorted(kept, key=lambda t: t[1])}
    common = [int(s) for s in Element(element).common_oxidation_states]
    if not common:
        return {0: 1.0}
    return {s: 1.0 / len(common) for s in common}


def _p_block(element: str) -> bool:
    from pymatgen.core import Element

    el = Element(element)
    return el.block == "p" and not el.is_noble_gas


def resolve_request(request: InferenceRequest) -> ResolvedRequest:
    """Validate ``request``; raises :class:`StructureInputError` with what is wrong and what to do."""
    raw = list(request.elements) if not isinstance(request.elements, str) else request.elements.split(",")
    elements = tuple(_element_symbol(el) for el in raw)
    if len(set(elements)) != len(elements):
        raise StructureInputError(f"elements must be distinct, got {', '.join(elements)}")
    if not MIN_ELEMENTS <= len(elements) <= MAX_ELEMENTS:
        raise StructureInputError(
            f"structure inference handles {MIN_ELEMENTS} to {MAX_ELEMENTS} elements, got {len(elements)} "
            f"({', '.join(elements)})"
        )
    states, defaulted = {}, []
    given = {_element_symbol(k): v for k, v in (request.oxidation_states or {}).items()}
    for el in given:
        if el not in elements:
            raise StructureInputError(f"oxidation states given for {el}, which is not among the elements {elements}")
    for el in elements:
        if el in given:
            states[el] = _probability_table("oxidation states", el, given[el], integer_range=(-4, 8))
        else:
            states[el] = default_oxidation_states(el)
            defaulted.append(el)
    coordination = {}
    for key, table in (request.coordination or {}).items():
        el = _element_symbol(key)
        if el not in elements:
            raise StructureInputError(f"coordination numbers given for {el}, which is not among the elements {elements}")
        coordination[el] = _probability_table("coordination numbers", el, table, integer_range=(1, 16))
    systems = _crystal_systems(request.crystal_systems)
    _check_charge_signs(elements, states)
    space_groups = _space_groups(request.space_group_probabilities)
    return ResolvedRequest(elements, states, coordination, systems, tuple(defaulted), space_groups)


def _crystal_systems(table: Mapping[str, float] | None) -> dict[str, float]:
    if not table:
        return {cs: 1.0 / len(CRYSTAL_SYSTEMS) for cs in CRYSTAL_SYSTEMS}
    out = {}
    for name, p in table.items():
        key = str(name).strip().lower()
        if key not in CRYSTAL_SYSTEMS:
            raise StructureInputError(f"unknown crystal system {name!r}; use one of {', '.join(CRYSTAL_SYSTEMS)}")
        try:
            prob = float(p)
        except (TypeError, ValueError) as err:
            raise StructureInputError(f"crystal system {name}: probability {p!r} is not a number") from err
        if not math.isfinite(prob) or prob < 0:
            raise StructureInputError(f"crystal system {name}: probability {p!r} must be >= 0")
        out[key] = out.get(key, 0.0) + prob
    total = sum(out.values())
    if total <= 0:
        raise StructureInputError("crystal-system probabilities sum to zero")
    return {k: v / total for k, v in out.items() if v > 0}


def _space_groups(table: Mapping | None) -> dict[int, float] | None:
    """Validated space-group probabilities; a table summing to more than 1 is normalised (a top 5 sums to less)."""
    if not table:
        return None
    out = _probability_table("space-group probabilities", "the sample", table, integer_range=(1, 230),
                             normalise=False)
    total = sum(out.values())
    return {k: v / total for k, v in out.items()} if total > 1 else out


def _check_charge_signs(elements: tuple[str, ...], states: dict[str, dict[int, float]]) -> None:
    """A compound needs both signs (or all zero): catch e.g. 'Ca=2, Mn=3, O=+2' before searching."""
    has_pos = any(any(s > 0 for s in states[el]) for el in elements)
    has_neg = any(any(s < 0 for s in states[el]) for el in elements)
    all_zero_possible = all(0 in states[el] for el in elements)
    if not (has_pos and has_neg) and not all_zero_possible:
        listing = "; ".join(f"{el}: {sorted(states[el])}" for el in elements)
        raise StructureInputError(
            f"no charge-balanced compound is possible with these oxidation states ({listing}): "
            "need at least one positive and one negative state (or all zero for an intermetallic)"
        )


def parse_assignments(text: str, what: str = "oxidation") -> dict[str, dict[int, float]]:
    """'Mn=3,Fe=2:0.7/3:0.3' -> {'Mn': {3: 1.0}, 'Fe': {2: 0.7, 3: 0.3}} (CLI syntax)."""
    out: dict[str, dict[int, float]] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        if "=" not in part:
            raise StructureInputError(f"--{what} expects ELEMENT=VALUE (e.g. Mn=3 or Fe=2:0.7/3:0.3), got {part!r}")
        el, spec = (s.strip() for s in part.split("=", 1))
        table: dict[int, float] = {}
        for item in spec.split("/"):
            value, _, prob = item.partition(":")
            try:
                table[int(value.replace("+", ""))] = float(prob) if prob else 1.0
            except ValueError as err:
                raise StructureInputError(f"--{what}: cannot read {item!r} in {part!r}") from err
        out[el] = table
    return out

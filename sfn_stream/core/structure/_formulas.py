"""Charge-balanced stoichiometries for 2-5 elements, each with a prior from the oxidation-state tables.

An element's oxidation-state table gives P(class), class = its mean state rounded half up (the
label the XANES models are trained on). A formula is charge balanced when every element's total
charge Q_e = n_e * mean_e sums to zero; its prior is the product over elements of P(class of
mean_e). Mean states between two integers (mixed valence, e.g. Fe in Fe3O4) are allowed for
transition metals and f-block elements when both neighbouring integers are known states of the
element, with an extra factor ``MIXED_VALENCE_PRIOR`` (mixed valence is the exception in ICSD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import Mapping, Sequence

MIXED_VALENCE_PRIOR = 0.3
DEFAULT_MAX_COUNT = 8  # per element in the reduced formula, for open enumeration
DEFAULT_MAX_ATOMS = 24  # atoms per reduced formula unit, for open enumeration


@dataclass(frozen=True)
class Formula:
    """A charge-balanced stoichiometry with its prior and the mean oxidation state of each element."""

    counts: tuple[tuple[str, int], ...]  # (element, count) in the request's element order
    prior: float
    mean_states: tuple[tuple[str, float], ...]

    @property
    def reduced_formula(self) -> str:
        from pymatgen.core import Composition

        return Composition(dict(self.counts)).reduced_formula

    @property
    def mixed_valence(self) -> bool:
        return any(abs(m - round(m)) > 1e-9 for _, m in self.mean_states)

    def to_dict(self) -> dict:
        return {
            "formula": self.reduced_formula,
            "counts": dict(self.counts),
            "prior": self.prior,
            "mean_oxidation_states": dict(self.mean_states),
        }


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5 + 1e-9))


@lru_cache(maxsize=256)
def _known_states(element: str) -> frozenset[int]:
    from pymatgen.core import Element

    from ._request import _icsd_occurrence

    states = set(_icsd_occurrence().get(element, {})) | {int(s) for s in Element(element).oxidation_states}
    return frozenset(states)


@lru_cache(maxsize=256)
def _mixed_valence_allowed(element: str) -> bool:
    from pymatgen.core import Element

    el = Element(element)
    return bool(el.is_transition_metal or el.is_lanthanoid or el.is_actinoid)


def charge_options(element: str, count: int, table: Mapping[int, float]) -> dict[int, tuple[float, float]]:
    """Total charge Q of ``count`` atoms -> (log prior, mean state); best prior per Q."""
    return dict(_charge_options(element, count, tuple(sorted(table.items()))))


@lru_cache(maxsize=65536)
def _charge_options(element: str, count: int, table: tuple[tuple[int, float], ...]) -> tuple:
    probs = dict(table)
    options: dict[int, tuple[float, float]] = {}
    for state, p in probs.items():
        if p > 0:
            options[state * count] = (math.log(p), float(state))
    if count > 1 and _mixed_valence_allowed(element):
        known = _known_states(element) | set(probs)
        lo, hi = min(probs), max(probs)
        for total in range((lo - 1) * count + 1, (hi + 1) * count):
            if total in options or total % count == 0:
                continue
            mean = total / count
            low, high = math.floor(mean), math.ceil(mean)
            p = probs.get(_round_half_up(mean), 0.0)
            if p > 0 and low >= 1 and low in known and high in known:
                options[total] = (math.log(p * MIXED_VALENCE_PRIOR), mean)
    return tuple(sorted(options.items()))


def formula_prior(counts: Sequence[tuple[str, int]], states: Mapping[str, Mapping[int, float]]) -> Formula | None:
    """The best charge-balanced assignment of ``counts`` (element, n); None when none balances."""
    # DP over elements: total charge so far -> (log prior, mean states)
    frontier: dict[int, tuple[float, tuple]] = {0: (0.0, ())}
    for element, n in counts:
        options = _charge_options(element, int(n), tuple(sorted(states[element].items())))
        nxt: dict[int, tuple[float, tuple]] = {}
        for total, (logp, means) in frontier.items():
            for q, (lp, mean) in options:
                key, value = total + q, logp + lp
                if key not in nxt or value > nxt[key][0]:
                    nxt[key] = (value, means + ((element, mean),))
        frontier = nxt
        if not frontier:
            return None
    if 0 not in frontier:
        return None
    logp, means = frontier[0]
    return Formula(tuple((el, int(n)) for el, n in counts), math.exp(logp), means)


def enumerate_formulas(
    elements: Sequence[str],
    states: Mapping[str, Mapping[int, float]],
    *,
    max_count: int = DEFAULT_MAX_COUNT,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    min_prior: float = 0.0,
) -> list[Formula]:
    """All charge-balanced reduced formulas with every element present, most probable first.

    Counts run from 1 to ``max_count`` per element with at most ``max_atoms`` atoms per reduced
    formula unit (template retrieval has no such limit: there the templates supply the counts).
    """
    found = []
    for counts in product(range(1, max_count + 1), repeat=len(elements)):
        if sum(counts) > max_atoms or math.gcd(*counts) != 1:
            continue
        formula = formula_prior(list(zip(elements, counts)), states)
        if formula is not None and formula.prior > min_prior:
            found.append(formula)
    found.sort(key=lambda f: (-f.prior, sum(n for _, n in f.counts), f.reduced_formula))
    return found

"""The space-group prior: what a PXRD model says about the space group, as a term of a template's log prior.

The PXRD search-match bundle reports its five most probable space groups (probabilities that do not
sum to 1). Two things it already knows must not be counted again:

- the crystal system: the score has ln P(crystal system) already, so the term is about the space group
  *within* its system;
- how common each space group is: the templates are a sample of known structures, so P2_1/c or Pnma
  templates are already many among the candidates; a model's probabilities, which lean towards common
  space groups as its library does, would favour them a second time. The term is therefore the
  evidence of the pattern, the model's probability over the space group's base rate among the
  templates (a Bayes factor):

    space_group_log_prior = ln [ P(space group | pattern, system) / P_base(space group | system) ]

with P(space group | pattern) raised to ``SPACE_GROUP_FLOOR`` x base rate for every space group (those
outside the top 5 included, whose probability is unknown), so that a top 5 that misses the truth lowers
the right template by a bounded amount instead of excluding it. A crystal system holding none of the
top 5 above that floor gets 0 for all its space groups: the table says nothing about it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

# Floor on P(space group | pattern) / base rate: a space group the model does not name, or names below
# its base rate, counts as this fraction of its base rate. 1: only evidence *for* a space group moves a
# template. Chosen on the structure benchmark's dev split (true inputs, 184 materials): 0.1 and 0.3 lost
# 3-4 top-1 hits of 184 (monoclinic Cu compounds whose right formula sits in another space group than
# the model's first), 1 none; docs/structure-inference.md. Above 1 would favour the space groups the
# model argues against.
SPACE_GROUP_FLOOR = 1.0

# First space-group number of each crystal system (International Tables), in order.
_SYSTEM_STARTS = (
    (1, "triclinic"), (3, "monoclinic"), (16, "orthorhombic"), (75, "tetragonal"),
    (143, "trigonal"), (168, "hexagonal"), (195, "cubic"),
)
N_SPACE_GROUPS = 230


def crystal_system_of(number: int) -> str:
    """The crystal system of space group ``number`` (1-230)."""
    if not 1 <= int(number) <= N_SPACE_GROUPS:
        raise ValueError(f"space group number {number} is not between 1 and {N_SPACE_GROUPS}")
    return next(system for start, system in reversed(_SYSTEM_STARTS) if number >= start)


def space_group_base_rates(numbers: Iterable[int]) -> dict[int, float]:
    """P(space group | its crystal system) among ``numbers`` (the templates' space groups), each count + 1 so
    that a space group no template has keeps a small rate."""
    counts = Counter(int(n) for n in numbers if 1 <= int(n) <= N_SPACE_GROUPS)
    smoothed = {n: counts.get(n, 0) + 1.0 for n in range(1, N_SPACE_GROUPS + 1)}
    totals = Counter()
    for n, count in smoothed.items():
        totals[crystal_system_of(n)] += count
    return {n: count / totals[crystal_system_of(n)] for n, count in smoothed.items()}


def space_group_log_priors(probabilities: Mapping[int, float], base_rates: Mapping[int, float] | None = None,
                           floor: float | None = None) -> dict[int, float]:
    """Space group number -> ln [P(space group | pattern, system) / base rate] (see the module docstring).

    ``base_rates``: P(space group | system) among the templates (``space_group_base_rates``; default:
    every space group of a system equally common). Space groups of a system the table does not name get 0.
    """
    floor = SPACE_GROUP_FLOOR if floor is None else floor
    base = base_rates or space_group_base_rates(())
    raised = {n: max(float(probabilities.get(n, 0.0)), floor * base[n]) for n in range(1, N_SPACE_GROUPS + 1)}
    per_system = Counter()
    for n, p in raised.items():
        per_system[crystal_system_of(n)] += p
    return {n: math.log(p / (base[n] * per_system[crystal_system_of(n)])) for n, p in raised.items()}

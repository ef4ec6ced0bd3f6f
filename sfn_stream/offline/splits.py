"""A fixed train/validation/test split by material, grouped by reduced formula, stratified.

- Group: all materials with one reduced formula go to one split (polymorphs and duplicates-by-
  formula never straddle splits; the model cannot meet a test compound's composition in training).
- Fixed: a material keeps the split it was given; a formula seen before goes where it went before.
  So a growing campaign only adds ids and the committed split files only grow.
- Stratified: new formula groups, in an order fixed by a hash of the formula, go to the split whose
  share of the group's strata (absorber x crystal system) is furthest below its target.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _order(formula: str) -> str:
    return hashlib.sha256(formula.encode()).hexdigest()


def assign_splits(
    materials: Iterable[tuple[str, str, Sequence[str]]],
    previous: Mapping[str, str] | None = None,
    fractions: Mapping[str, float] = FRACTIONS,
) -> dict[str, str]:
    """material id -> split, for ``(material_id, formula, strata)`` triples.

    ``strata`` are the material's (absorber, crystal system) labels, e.g. ``["Fe|trigonal"]``.
    ``previous`` assignments are kept as they are.
    """
    previous = dict(previous or {})
    rows = list(materials)
    formula_split: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for material_id, formula, strata in rows:
        split = previous.get(material_id)
        if split is not None:
            formula_split.setdefault(formula, split)
            for stratum in strata:
                counts[stratum][split] += 1
    groups: dict[str, list[tuple[str, Sequence[str]]]] = defaultdict(list)
    for material_id, formula, strata in rows:
        if material_id not in previous:
            groups[formula].append((material_id, strata))
    out = {mid: split for mid, split in previous.items()}
    for formula in sorted(groups, key=_order):
        members = groups[formula]
        split = formula_split.get(formula) or _neediest(members, counts, fractions)
        formula_split[formula] = split
        for material_id, strata in members:
            out[material_id] = split
            for stratum in strata:
                counts[stratum][split] += 1
    return {mid: out[mid] for mid, _, _ in rows}


def _neediest(members, counts, fractions) -> str:
    """The split with the largest shortfall against its target, summed over the group's strata."""
    strata = {stratum for _, group_strata in members for stratum in group_strata} or {"none"}

    def shortfall(split: str) -> float:
        total = 0.0
        for stratum in strata:
            n = sum(counts[stratum].values()) + 1
            total += fractions[split] * n - counts[stratum][split]
        return total

    # ties go to train, then val: small strata fill the training split first
    return max(SPLITS, key=lambda split: (shortfall(split), -SPLITS.index(split)))

"""Train/validation/test splits that never split a group of related materials (one reduced formula, or
one formula and space group), so that a test compound's composition is never seen in training.

Four assignments; each reproduces the split files committed for it:

- :func:`hashed_splits` (PXRD stick table, grouped by formula + space group): each group's split is
  drawn from a seeded hash of its key, independently of every other group.
- :func:`balanced_splits` (XANES OmniXAS Cu, grouped by formula): groups shuffled with a seed, each to
  the split furthest below its share of *materials*.
- :func:`stratified_splits` (the corpus, grouped by formula): fixed, a material keeps the split it was
  given and a formula seen before goes where it went before, so a growing campaign only adds ids;
  new groups, in an order fixed by a hash of the formula, go to the split whose share of the group's
  strata (absorber x crystal system) is furthest below its target.
- :func:`unified_splits` (the one assignment of the corpus and every XANES model,
  ``data/splits/xanes_3d_splits.json``): :func:`stratified_splits` with a shipped model's splits
  pinned, after whole chemical systems (element sets) are held out for a second, chemical-system-
  disjoint test.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

import numpy as np

from sfn_stream.core import paths

# The one assignment the corpus and every XANES model share (written by `sfn-stream train xanes-3d --splits-only`)
UNIFIED_SPLITS_FILE = paths.SPLITS_DIR / "xanes_3d_splits.json"

SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items per key, each list in the order of ``items``."""
    groups: dict[K, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)


def hash_order(key: str) -> str:
    """A sort key fixed by ``key`` alone (sha256 hex), independent of the order groups arrive in."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_fraction(key: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``key`` (the first 48 bits of their sha256)."""
    return int(hash_order(f"{seed}:{key}")[:12], 16) / 16**12


def neediest_split(shortfall: Callable[[str], float]) -> str:
    """The split with the largest shortfall against its target; ties go to train, then val."""
    return max(SPLITS, key=lambda split: (shortfall(split), -SPLITS.index(split)))


def hashed_splits(keys: Sequence[str], seed: int = 0,
                  fractions: Mapping[str, float] = FRACTIONS) -> dict[str, np.ndarray]:
    """Indices into ``keys`` per split; equal keys always share a split."""
    u = np.array([hash_fraction(key, seed) for key in keys])
    edges = np.cumsum([fractions[name] for name in SPLITS])
    which = np.searchsorted(edges, u, side="right")
    return {name: np.flatnonzero(which == k) for k, name in enumerate(SPLITS)}


def balanced_splits(groups: Mapping[str, str], *, seed: int = 0,
                    fractions: Mapping[str, float] = FRACTIONS) -> dict[str, list[str]]:
    """id -> group key (a reduced formula)  =>  sorted ids per split; one group never spans two splits.

    Groups are shuffled with ``seed`` and assigned in turn to the split furthest below its target
    share of ids, so the splits reach their fractions of materials (not of formulas).
    """
    members = group_by(sorted(groups.items()), key=lambda pair: pair[1])
    order = sorted(members)
    np.random.default_rng(seed).shuffle(order)
    total = len(groups)
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for key in order:
        split = neediest_split(lambda name: fractions[name] * total - len(out[name]))
        out[split].extend(material_id for material_id, _ in members[key])
    return {name: sorted(ids) for name, ids in out.items()}


def stratified_splits(
    materials: Iterable[tuple[str, str, Sequence[str]]],
    previous: Mapping[str, str] | None = None,
    fractions: Mapping[str, float] = FRACTIONS,
    formula_hints: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """material id -> split, for ``(material_id, formula, strata)`` triples.

    ``strata`` are the material's (absorber, crystal system) labels, e.g. ``["Fe|trigonal"]``.
    ``previous`` assignments are kept as they are. ``formula_hints`` (formula -> split) place a new
    formula group that no previous material fixes, before the strata balance does: the split another
    assignment already gave that formula (:func:`pxrd_formula_splits`), so that taking the material
    into the shared assignment moves nothing there.
    """
    formula_hints = {f: s for f, s in (formula_hints or {}).items() if s in SPLITS}
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
    new = group_by((row for row in rows if row[0] not in previous), key=lambda row: row[1])
    out = dict(previous)
    for formula in sorted(new, key=hash_order):
        members = [(material_id, strata) for material_id, _, strata in new[formula]]
        split = (formula_split.get(formula) or formula_hints.get(formula)
                 or _neediest_for_strata(members, counts, fractions))
        formula_split[formula] = split
        for material_id, strata in members:
            out[material_id] = split
            for stratum in strata:
                counts[stratum][split] += 1
    return {mid: out[mid] for mid, _, _ in rows}


def _neediest_for_strata(members, counts, fractions) -> str:
    """The neediest split summed over the group's strata: small strata fill the training split first."""
    strata = {stratum for _, group_strata in members for stratum in group_strata} or {"none"}

    def shortfall(split: str) -> float:
        total = 0.0
        for stratum in strata:
            n = sum(counts[stratum].values()) + 1
            total += fractions[split] * n - counts[stratum][split]
        return total

    return neediest_split(shortfall)


def unified_splits(
    materials: Iterable[tuple[str, str, str, Sequence[str]]],
    pinned: Mapping[str, str],
    *,
    chemical_system_fraction: float = 0.06,
    seed: int = 0,
    fractions: Mapping[str, float] = FRACTIONS,
) -> tuple[dict[str, str], list[str]]:
    """One assignment for the corpus and every model: ``(material id -> split, chemical-system test ids)``.

    ``materials`` are ``(material_id, formula, chemical_system, strata)``; ``pinned`` material id ->
    split is kept as it is (a shipped model's splits, or this function's earlier output, so that a
    growing corpus only adds ids). Then whole chemical systems (element sets) none of whose materials
    is pinned go to test when a seeded hash of the system falls below ``chemical_system_fraction``:
    the chemical-system test, whose element sets no training or validation material has. Everything
    else goes through :func:`stratified_splits` (formula groups, strata-balanced), so every test
    material's formula is absent from train and validation. Chemical-system test materials are in
    ``test`` too; the second return value lists them (and, on a later call, pinned test materials
    whose whole system is still test-only, so the list survives growth).
    """
    rows = list(materials)
    pinned = {mid: split for mid, split in pinned.items() if split in SPLITS}
    systems = group_by(rows, key=lambda row: row[2])
    held_out = {
        system for system, members in systems.items()
        if all(mid not in pinned for mid, *_ in members) and hash_fraction(f"chemsys:{system}", seed) < chemical_system_fraction
    }
    previous = dict(pinned)
    for system in held_out:
        for material_id, *_ in systems[system]:
            previous[material_id] = "test"
    assignment = stratified_splits(((mid, formula, strata) for mid, formula, _, strata in rows), previous, fractions)
    test_only = sorted(mid for system, members in systems.items()
                       if all(assignment[m] == "test" for m, *_ in members)
                       for mid, *_ in members)
    return assignment, test_only


def pinned_splits(path=UNIFIED_SPLITS_FILE) -> dict[str, str]:
    """material id -> split in the shared assignment (empty when the file is absent): the corpus pins its
    materials to it, so that no model's test material is another's training material."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {mid: split for split in SPLITS for mid in data.get(split, ())}


def pxrd_formula_splits(splits_dir=paths.SPLITS_DIR, table_path=None) -> dict[str, str]:
    """Reduced formula -> split in the committed PXRD split files (``xrd_{train,val,test}.txt`` over the stick
    table; test before val before train where a formula's structures differ, as the split sync orders them).
    Empty when the files or the table are absent."""
    from pathlib import Path

    from pymatgen.core import Composition

    from sfn_stream.core.simulation import StickTable

    splits_dir = Path(splits_dir)
    table_path = Path(table_path or paths.XRD_STICK_TABLE)
    files = {name: splits_dir / f"xrd_{name}.txt" for name in SPLITS}
    if not table_path.is_file() or not all(f.is_file() for f in files.values()):
        return {}
    table = StickTable.load(table_path)
    formula_of = dict(zip((str(k) for k in table.ids), (str(f) for f in table.formulas)))
    reduced: dict[str, str] = {}
    out: dict[str, str] = {}
    for name in ("train", "val", "test"):  # later (stricter) splits overwrite earlier ones
        for key in files[name].read_text().split():
            formula = formula_of.get(key)
            if formula is not None:
                if formula not in reduced:
                    reduced[formula] = Composition(formula).reduced_formula
                out[reduced[formula]] = name
    return out

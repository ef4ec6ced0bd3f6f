"""``sfn-stream evaluate indexing``: does the powder indexing find the cell a structure really has?

For each formula-disjoint validation (or test) structure of a crystal system that indexing tries (cubic,
tetragonal, trigonal and hexagonal as hexagonal, orthorhombic), its own cell is fitted to the Miller indices of its
stick pattern (least squares on 1/d^2; structures whose sticks are not in the conventional setting are counted
apart). On the pattern rendered by the noisy and the clean protocol of ``evaluate xrd``:

- ``own cell indexes``: the share of structures whose own cell (no centring, the indices the search scores) puts a
  line within the tolerance of >= 95 % of the peaks found: what a perfect search could reach;
- ``search finds``: the share whose search (``core.spectra.index_pattern``) returns a cell of that family
  indexing >= 95 % of them;
- the mean merit of the true family and of the best other family.

Monoclinic and triclinic structures are reported by their best family's merit only (no family of theirs is
tried). A diagnostic of the indexing, not of the bundle: accuracies come from ``evaluate xrd``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS

FULLY_INDEXED = 0.95
FAMILY_OF = {"cubic": "cubic", "tetragonal": "tetragonal", "trigonal": "hexagonal", "hexagonal": "hexagonal",
             "orthorhombic": "orthorhombic"}


def own_cell(family: str, hkl: np.ndarray, q: np.ndarray) -> np.ndarray | None:
    """The family's metric parameters fitted to a stick pattern's indices (None when the sticks are not in the
    family's conventional setting: a relative misfit above 1e-3)."""
    from sfn_stream.core.spectra import metric_forms

    forms = metric_forms(family, np.asarray(hkl, dtype=float))
    s = (np.asarray(q, dtype=float) / (2 * np.pi)) ** 2
    params, *_ = np.linalg.lstsq(forms, s, rcond=None)
    if np.any(params <= 0) or np.max(np.abs(forms @ params - s) / s) > 1e-3:
        return None
    return params


def evaluate_indexing(sticks: Path, splits_dir: Path, *, split: str = "val", max_structures: int | None = None,
                      seed: int = 0, progress: bool = True) -> dict[str, Any]:
    from sfn_stream.core.simulation import StickTable
    from sfn_stream.offline.training import read_split_files

    from .xrd_eval import CLEAN, NOISY, protocol_patterns, test_subsets

    table = StickTable.load(sticks)
    splits = read_split_files(table, splits_dir)
    if splits is None:
        raise FileNotFoundError(f"no xrd_{{train,val,test}}.txt split files in {splits_dir}")
    if split == "test":
        indices = test_subsets(table, splits)["formula_disjoint"]
    else:
        train_formulas = set(table.formulas[splits["train"]])
        indices = np.array([i for i in splits["val"] if table.formulas[i] not in train_formulas], dtype=int)
    if max_structures and len(indices) > max_structures:
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_structures, replace=False))
    report = {"split": split, "n_structures": int(len(indices)), "fully_indexed": FULLY_INDEXED, "protocols": {}}
    for name, protocol in (("noisy", NOISY), ("clean", CLEAN)):
        patterns = protocol_patterns(table, indices, protocol, seed + 7, progress)
        report["protocols"][name] = _per_class(table, indices, patterns, progress)
    return report


def _per_class(table, indices, patterns, progress: bool) -> dict[str, dict[str, Any]]:
    from sfn_stream.core.spectra import TOLERANCE_Q, cell_edges, index_pattern, lattice_lines, peak_positions

    rows: dict[str, list[dict]] = {c: [] for c in CRYSTAL_SYSTEMS}
    iterator = zip(indices, patterns)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(indices), desc="indexing", mininterval=5, leave=False)
    for i, pattern in iterator:
        system = str(table.crystal_systems[i])
        evidence, peaks = index_pattern(pattern), peak_positions(pattern)
        family = FAMILY_OF.get(system)
        others = [m for f, m in evidence.merit.items() if f != family]
        row = {"lines": evidence.n_lines >= 6, "other_merit": max(others)}
        if family and row["lines"]:
            sticks = table.sticks(i)
            params = own_cell(family, sticks.hkl, sticks.q)
            row.update(merit=evidence.merit[family], conventional=params is not None,
                       found=evidence.indexed[family] >= FULLY_INDEXED)
            if params is not None:
                lines = lattice_lines(family, "P", cell_edges(family, params), peaks[-1] + TOLERANCE_Q)
                near = np.abs(peaks[:, None] - lines[None, :]).min(axis=1) if len(lines) else np.full(len(peaks), 1.0)
                row["own_cell_indexes"] = float(np.mean(near <= TOLERANCE_Q)) >= FULLY_INDEXED
        rows[system].append(row)
    return {system: _summary(found) for system, found in rows.items() if found}


def _summary(rows: list[dict]) -> dict[str, Any]:
    with_lines = [r for r in rows if r["lines"]]
    scored = [r for r in with_lines if "merit" in r]
    own = [r for r in scored if r.get("conventional")]
    indexable = [r for r in own if r.get("own_cell_indexes")]
    mean = (lambda values: float(np.mean(values)) if values else None)
    return {
        "n": len(rows), "with_6_lines": len(with_lines), "conventional_sticks": len(own),
        "own_cell_indexes": mean([r["own_cell_indexes"] for r in own]),
        "search_finds": mean([r["found"] for r in indexable]),
        "search_finds_all": mean([r["found"] for r in scored]),
        "true_family_merit": mean([r["merit"] for r in scored]),
        "best_other_merit": mean([r["other_merit"] for r in with_lines]),
    }


def format_indexing_report(report: dict[str, Any]) -> list[str]:
    lines = [f"indexing on {report['n_structures']} formula-disjoint {report['split']} structures; a cell 'indexes' "
             f">= {report['fully_indexed']:.0%} of the peaks found"]
    for protocol, by_class in report["protocols"].items():
        lines.append(f"\n{protocol} protocol")
        lines.append(f"  {'true system':<13} {'n':>5} {'>=6 lines':>9} {'own cell indexes':>16} "
                     f"{'search finds it':>15} {'true-family merit':>17} {'best other merit':>16}")
        for system, m in by_class.items():
            cells = [_pct(m["own_cell_indexes"]), _pct(m["search_finds"]), _num(m["true_family_merit"])]
            lines.append(f"  {system:<13} {m['n']:>5} {m['with_6_lines']:>9} {cells[0]:>16} {cells[1]:>15} "
                         f"{cells[2]:>17} {_num(m['best_other_merit']):>16}")
    lines.append("\n'search finds it': among the structures whose own cell indexes their peaks; monoclinic and "
                 "triclinic cells are not tried (their row shows the best family's merit only)")
    return lines


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"

"""Agreement and speed of ``xrd-rust`` (XRDCalculatorRust) against pymatgen's XRDCalculator.

    python -m sfn_stream.offline.evaluation.xrd_rust_check [--n 20] [--json]

Structures: AMCSD CIFs (ordered and partially occupied) and Materials Project POSCARs of
../shared/data/omnixas_cu, spread evenly over each source. Per structure, both calculators give
the Cu K-alpha1 pattern over 10-120 deg 2theta (unscaled); reflections closer than 0.01 deg are merged in
each (the calculators split near-degenerate ones differently), then matched by 2theta (within
0.01 deg) and intensities compared after scaling each pattern to its strongest reflection.
Times are medians of one call each on one thread, after a warm-up call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from sfn_stream.core.simulation import diffraction_calculator

TWO_THETA_RANGE = (10.0, 120.0)
MATCH_TOLERANCE_DEG = 0.01
RELEVANT = 0.01  # reflections above 1 % of the strongest are compared


def sample_structures(n: int) -> list[tuple[str, object]]:
    from pymatgen.core import Structure

    from sfn_stream.core.structure import amcsd_ids, iter_amcsd_structures
    from sfn_stream.offline.shared import SharedDataMissing, omnixas_poscars

    ids = amcsd_ids()
    picked = [ids[int(k)] for k in np.linspace(0, len(ids) - 1, 4 * n)]
    out, n_amcsd = [], n - n // 3
    for entry in iter_amcsd_structures(picked, ordered_only=False):
        if entry.structure is not None and len(entry.structure) <= 200:
            out.append((f"amcsd:{entry.amcsd_id}{'' if entry.structure.is_ordered else ' (disordered)'}", entry.structure))
        if len(out) == n_amcsd:
            break
    try:
        poscars = sorted(omnixas_poscars().items())
        for k in np.linspace(0, len(poscars) - 1, n - len(out)):
            mp_id, text = poscars[int(k)]
            out.append((mp_id, Structure.from_str(text, fmt="poscar")))
    except SharedDataMissing:
        pass
    return out


def merged(pattern) -> tuple[np.ndarray, np.ndarray]:
    """Reflections closer than MATCH_TOLERANCE_DEG summed (intensity-weighted position), max 1.

    The two calculators split near-degenerate reflections (a few 1e-5 deg apart in a pseudo-cubic
    cell) differently; on any measured profile they are one peak.
    """
    x, y = np.asarray(pattern.x, dtype=float), np.asarray(pattern.y, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    group = np.concatenate([[0], np.cumsum(np.diff(x) > MATCH_TOLERANCE_DEG)])
    total = np.bincount(group, weights=y)
    centre = np.bincount(group, weights=x * y) / np.maximum(total, 1e-300)
    return centre, total / total.max()


def compare_one(structure) -> dict:
    times, patterns = {}, {}
    for name in ("pymatgen", "rust"):
        calc = diffraction_calculator(name)
        calc.get_pattern(structure, scaled=False, two_theta_range=TWO_THETA_RANGE)  # warm-up (caches)
        t0 = time.perf_counter()
        patterns[name] = calc.get_pattern(structure, scaled=False, two_theta_range=TWO_THETA_RANGE)
        times[name] = time.perf_counter() - t0
    ref_x, ref_y = merged(patterns["pymatgen"])
    fast_x, fast_y = merged(patterns["rust"])
    keep = ref_y > RELEVANT
    nearest = np.abs(ref_x[keep, None] - fast_x[None, :]).argmin(1) if len(fast_x) else np.zeros(0, int)
    shift = np.abs(ref_x[keep] - fast_x[nearest])
    matched = shift <= MATCH_TOLERANCE_DEG
    d_intensity = np.abs(ref_y[keep][matched] - fast_y[nearest][matched])
    return {
        "n_reflections": {"pymatgen": len(patterns["pymatgen"].x), "rust": len(patterns["rust"].x)},
        "n_merged": {"pymatgen": len(ref_x), "rust": len(fast_x)},
        "n_relevant": int(keep.sum()), "matched_fraction": float(matched.mean()) if keep.any() else 1.0,
        "max_two_theta_diff_deg": float(shift[matched].max()) if matched.any() else None,
        "max_intensity_diff": float(d_intensity.max()) if len(d_intensity) else None,
        "seconds": times,
    }


def run(n: int) -> dict:
    import torch

    torch.set_num_threads(1)
    rows = []
    for name, structure in sample_structures(n):
        try:
            rows.append({"structure": name, "n_sites": len(structure), **compare_one(structure)})
        except Exception as err:  # noqa: BLE001 - report, not hide: a calculator that fails on a structure disagrees
            rows.append({"structure": name, "error": f"{type(err).__name__}: {err}"})
    ok = [r for r in rows if "error" not in r]
    t_ref = np.array([r["seconds"]["pymatgen"] for r in ok])
    t_fast = np.array([r["seconds"]["rust"] for r in ok])
    summary = {
        "n_structures": len(rows), "n_failed": len(rows) - len(ok),
        "all_relevant_matched": all(r["matched_fraction"] == 1.0 for r in ok),
        "min_matched_fraction": min((r["matched_fraction"] for r in ok), default=None),
        "max_two_theta_diff_deg": max((r["max_two_theta_diff_deg"] or 0 for r in ok), default=None),
        "max_intensity_diff": max((r["max_intensity_diff"] or 0 for r in ok), default=None),
        "median_seconds": {"pymatgen": float(np.median(t_ref)), "rust": float(np.median(t_fast))} if ok else None,
        "total_seconds": {"pymatgen": float(t_ref.sum()), "rust": float(t_fast.sum())} if ok else None,
        "speedup_total": float(t_ref.sum() / t_fast.sum()) if ok and t_fast.sum() > 0 else None,
    }
    return {"summary": summary, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.n)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for r in report["rows"]:
        if "error" in r:
            print(f"{r['structure']:>28}: error {r['error']}")
            continue
        print(f"{r['structure']:>28} sites {r['n_sites']:4d} refl {r['n_reflections']['pymatgen']:4d}/"
              f"{r['n_reflections']['rust']:4d} merged {r['n_merged']['pymatgen']:4d}/{r['n_merged']['rust']:4d} matched {r['matched_fraction']:.3f} "
              f"d2theta {r['max_two_theta_diff_deg'] or 0:.1e} dI {r['max_intensity_diff'] or 0:.1e} "
              f"t {1e3 * r['seconds']['pymatgen']:7.1f} / {1e3 * r['seconds']['rust']:7.1f} ms")
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

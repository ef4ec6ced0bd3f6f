"""Run XANES preprocessing on every OmniXAS Cu FEFF site spectrum (../shared/data/omnixas_cu).

The energy offset of the calculation is E0 of FEFF's own Cu-metal spectrum minus the tabulated
Cu K edge; give it directly (--offset) or as the metal's xmu.dat (--metal), whose E0 is found
with the same E0 finder.

    sfn-stream bench feff-xanes --metal /work/scratch/feff_cu_metal/xmu.dat
    sfn-stream bench feff-xanes --offset 8.0 [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import numpy as np

from sfn_stream.core.spectra import find_e0, k_edge_energy, preprocess_xanes
from sfn_stream.offline.shared import SharedDataMissing, omnixas_site_spectra


def metal_offset(path: str) -> tuple[float, float]:
    """(E0 of a FEFF xmu.dat, E0 - tabulated Cu K edge); columns omega e k mu mu0 chi."""
    table = np.loadtxt(path, comments="#")
    energy, mu = table[:, 0], table[:, 3]
    e0 = find_e0(energy, mu)
    return e0, e0 - k_edge_energy("Cu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--offset", type=float, help="E0(FEFF Cu metal) - 8979.0 eV")
    group.add_argument("--metal", help="FEFF xmu.dat of Cu metal, to derive the offset")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    summary: dict = {}
    if args.metal:
        e0_metal, offset = metal_offset(args.metal)
        summary.update(metal_xmu=args.metal, metal_e0=e0_metal)
    else:
        offset = args.offset
    summary["energy_offset"] = offset
    try:
        spectra = omnixas_site_spectra()
    except SharedDataMissing as exc:
        print(f"shared data not available: {exc}", file=sys.stderr)
        return 2
    keys = sorted(spectra)
    arrays = {k: (np.asarray(spectra[k]["energy"]), np.asarray(spectra[k]["mu"])) for k in keys}
    preprocess_xanes(*arrays[keys[0]], absorber="Cu", energy_offset=offset)  # warm-up
    results, times = {}, []
    for key in keys:
        start = time.perf_counter()
        results[key] = preprocess_xanes(*arrays[key], absorber="Cu", energy_offset=offset)
        times.append(time.perf_counter() - start)
    usable = [r for r in results.values() if r.usable]
    flags = collections.Counter(f for r in results.values() for f in r.flags)
    reasons = collections.Counter(r.flags[-1] for r in results.values() if not r.usable)
    e0_shift = np.array([r.e0_shift for r in usable])
    coverage = np.array([r.window_coverage for r in usable])
    start_gap = np.array([r.energy_min - r.energy[0] for r in usable])
    summary.update(
        n_spectra=len(results),
        n_usable=len(usable),
        flag_counts=dict(flags),
        reject_flags=dict(reasons),
        ms_per_spectrum_median=1000 * float(np.median(times)),
        ms_per_spectrum_mean=1000 * float(np.mean(times)),
        e0_shift_percentiles={p: float(np.percentile(e0_shift, p)) for p in (0, 5, 50, 95, 100)},
        window_coverage_percentiles={p: float(np.percentile(coverage, p)) for p in (0, 5, 50, 95, 100)},
        data_start_above_window_start_eV={p: float(np.percentile(start_gap, p)) for p in (0, 50, 100)},
        edge_step_percentiles={p: float(np.percentile([r.edge_step for r in usable], p)) for p in (0, 50, 100)},
    )
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    if args.metal:
        print(f"FEFF Cu metal {args.metal}: E0 {summary['metal_e0']:.2f} eV")
    print(f"energy offset (E0 metal - 8979.0): {offset:+.2f} eV")
    print(f"spectra: {len(results)}, usable: {len(usable)}, rejected: {len(results) - len(usable)} {dict(reasons)}")
    print(f"flags: {dict(flags)}")
    print(f"time per spectrum: median {summary['ms_per_spectrum_median']:.2f} ms, mean {summary['ms_per_spectrum_mean']:.2f} ms")
    print("E0 - E_tab (usable), percentiles 0/5/50/95/100: "
          + " ".join(f"{v:+.1f}" for v in summary["e0_shift_percentiles"].values()))
    print("window coverage, percentiles 0/5/50/95/100: "
          + " ".join(f"{v:.2f}" for v in summary["window_coverage_percentiles"].values()))
    print("data start above window start (eV), min/median/max: "
          + " ".join(f"{v:.1f}" for v in summary["data_start_above_window_start_eV"].values()))
    print("edge step min/median/max: " + " ".join(f"{v:.3f}" for v in summary["edge_step_percentiles"].values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

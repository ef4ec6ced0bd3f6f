"""Reproduce OmniXAS raw_example_mp-361_Cu2O from its own feff.inp with the project's FEFF runner.

Prints Pearson r and the largest |d mu| against the reference xmu.dat, and the wall time (about
20 minutes on an idle core; SCF 7 A, FMS 9 A). Needs ../shared.

    sfn-stream bench feff-cu2o [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import numpy as np

from sfn_stream.core.simulation import read_xmu, run_feff
from sfn_stream.offline.shared import SharedDataMissing, shared_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="FEFF folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        folder = shared_path("data", "omnixas_cu", "raw_example_mp-361_Cu2O")
    except SharedDataMissing as err:
        print(f"needs ../shared: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        spectrum = run_feff((folder / "feff.inp").read_text(), args.workdir or tmp)
    energy, mu, _ = read_xmu(folder / "xmu.dat")
    ours = np.interp(energy, spectrum.energy, spectrum.mu)
    result = {
        "pearson_r": float(np.corrcoef(ours, mu)[0, 1]),
        "max_abs_diff": float(np.max(np.abs(ours - mu))),
        "same_grid": bool(len(energy) == len(spectrum.energy) and np.allclose(energy, spectrum.energy, atol=1e-3)),
        "seconds": spectrum.seconds,
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"Cu2O (mp-361): r = {result['pearson_r']:.10f}, max |d mu| = {result['max_abs_diff']:.1e}, "
              f"same grid: {result['same_grid']}, {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

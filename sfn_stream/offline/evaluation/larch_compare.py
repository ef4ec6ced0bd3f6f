"""Compare sfn_stream's XANES normalisation with xraylarch's ``find_e0`` / ``pre_edge``.

Run with a Python that has xraylarch installed (it is NOT a project dependency), e.g.

    python3 -m venv venv-larch && venv-larch/bin/pip install xraylarch
    venv-larch/bin/python -m sfn_stream.offline.evaluation.larch_compare [--shared PATH] [--json]   # from the repo root

For every usable measured file of ../shared/data/xanes_experimental_dev it feeds Larch the
same cleaned, calibrated mu(E) and reports
- dE0: Larch ``find_e0`` minus ours;
- same-parameter normalisation: Larch ``pre_edge`` with our E0, pre1, pre2, norm1, norm2 and
  nnorm; max |norm difference| and max |flat difference| over the model window (Larch selects
  fit points with index_of/index_nearest and half-open slices, so boundary points can differ);
- same fit points: the range bounds nudged so that Larch fits exactly our points (checks the
  algebra of the normalisation itself);
- Larch with its own defaults (its E0 and ranges): max |flat difference| over the window,
  to show what our fixed ranges change.
Spectra whose pre-edge used the constant fallback have no Larch equivalent and are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo, for a Python that has larch

from larch import Group  # noqa: E402
from larch.xafs import find_e0, pre_edge  # noqa: E402

from sfn_stream.offline.evaluation.measured_xanes import NOT_SPECTRA, dev_folder, load_labels  # noqa: E402
from sfn_stream.core.spectra import absorber_from_filename, preprocess_xanes, read_spectrum, xanes_channels  # noqa: E402


def window_diff(result, energy: np.ndarray, values: np.ndarray, ours: np.ndarray) -> float:
    grid = result.energy
    inside = (grid >= energy[0]) & (grid <= energy[-1])
    theirs = np.interp(grid[inside], energy, values)
    return float(np.max(np.abs(theirs - ours[inside])))


def larch_bounds(energy: np.ndarray, result) -> dict | None:
    """pre1..norm2 that make Larch's index_of/index_nearest slices [p1:p2) select exactly our points."""
    rel = energy - result.e0
    pre = np.flatnonzero((rel >= result.pre1) & (rel <= result.pre2))
    post = np.flatnonzero((rel >= result.norm1) & (rel <= result.norm2))
    if pre[-1] + 1 >= len(rel) or post[-1] + 1 >= len(rel):
        return None  # Larch's half-open slice cannot include the last point of the scan
    tiny = 1e-6
    return {"pre1": rel[pre[0]] + tiny, "pre2": rel[pre[-1] + 1], "norm1": rel[post[0]] + tiny, "norm2": rel[post[-1] + 1]}


def compare(path: Path, absorber: str) -> dict | None:
    arguments = xanes_channels(read_spectrum(path))
    arguments.pop("absorber", None)
    arguments.pop("edge", None)
    energy = arguments.pop("energy")
    flat = preprocess_xanes(energy, absorber=absorber, normalization="flat", **arguments)
    if not flat.usable or flat.pre_edge_method != "line":
        return None
    norm = preprocess_xanes(energy, absorber=absorber, normalization="norm", **arguments)
    en = flat.energy_full
    mu = flat.pre_intercept + flat.pre_slope * (en - flat.e0) + flat.norm_full * flat.edge_step
    larch_e0 = float(find_e0(en, mu))
    same = Group(energy=en, mu=mu)
    pre_edge(same, e0=flat.e0, pre1=flat.pre1, pre2=flat.pre2, norm1=flat.norm1, norm2=flat.norm2, nnorm=flat.nnorm)
    points = Group(energy=en, mu=mu)
    bounds = larch_bounds(en, flat)
    if bounds is not None:
        pre_edge(points, e0=flat.e0, nnorm=flat.nnorm, **bounds)
    auto = Group(energy=en, mu=mu)
    pre_edge(auto)
    details = auto.pre_edge_details
    return {
        "file": str(path),
        "absorber": absorber,
        "e0": flat.e0,
        "larch_e0": larch_e0,
        "d_e0": larch_e0 - flat.e0,
        "step": flat.edge_step,
        "larch_step_same": float(same.edge_step),
        "max_norm_diff_same": window_diff(norm, en, same.norm, norm.mu),
        "max_flat_diff_same": window_diff(flat, en, same.flat, flat.mu),
        "max_norm_diff_points": window_diff(norm, en, points.norm, norm.mu) if bounds else None,
        "max_flat_diff_points": window_diff(flat, en, points.flat, flat.mu) if bounds else None,
        "larch_auto_e0": float(auto.e0),
        "larch_auto_ranges": [details.pre1, details.pre2, details.norm1, details.norm2, details.nnorm],
        "max_flat_diff_auto": window_diff(flat, en, auto.flat, flat.mu),
        "max_norm_diff_auto": window_diff(norm, en, auto.norm, norm.mu),
    }


def compare_feff(every: int) -> None:
    """E0 of OmniXAS FEFF site spectra (no offset applied): ours vs Larch find_e0.

    (Larch's find_e0_calc is not compared: in xraylarch 2026.3.1 with numpy 2 it raises
    TypeError, float() of a 1-element array.)
    """
    from sfn_stream.core.spectra import find_e0 as our_find_e0
    from sfn_stream.offline.shared import omnixas_site_spectra

    spectra = omnixas_site_spectra()
    keys = sorted(spectra)[::every]
    diffs = []
    for key in keys:
        energy, mu = np.asarray(spectra[key]["energy"]), np.asarray(spectra[key]["mu"])
        diffs.append(float(find_e0(energy, mu)) - our_find_e0(energy, mu))
    diffs = np.abs(np.array(diffs))
    print(f"FEFF site spectra (every {every}th, n={len(keys)}): |Larch find_e0 - ours| exact in "
          f"{(diffs < 1e-6).sum()}, within 0.5 eV in {(diffs <= 0.5).sum()}, 95th percentile {np.percentile(diffs, 95):.2f} eV, "
          f"max {diffs.max():.2f} eV")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compare with xraylarch pre_edge")
    parser.add_argument("--shared")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--feff-every", type=int, default=0, help="also compare E0 on every Nth FEFF site spectrum")
    args = parser.parse_args(argv)
    folder = dev_folder(args.shared)
    labels = load_labels(folder)
    rows, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not NOT_SPECTRA.match(p.name)):
        relative = str(path.relative_to(folder))
        label = labels.get(relative)
        header = read_spectrum(path).meta("Element.symbol")
        absorber = (label or {}).get("absorber") or header or absorber_from_filename(path)
        row = compare(path, absorber) if absorber else None
        if row is None:
            skipped.append(relative)
            continue
        row["file"] = relative
        rows.append(row)
    if args.json:
        print(json.dumps({"rows": rows, "skipped": skipped}, indent=1, default=float))
        return 0
    print(f"{'file':58s} {'E0':>9s} {'dE0':>6s} {'|dnorm|':>8s} {'|dflat|':>8s} {'pts|dnorm|':>10s} "
          f"{'auto dE0':>8s} {'auto|dflat|':>11s}")
    for r in rows:
        pts = "-" if r["max_norm_diff_points"] is None else f"{r['max_norm_diff_points']:.1e}"
        print(f"{r['file']:58s} {r['e0']:9.1f} {r['d_e0']:+6.2f} {r['max_norm_diff_same']:8.4f} "
              f"{r['max_flat_diff_same']:8.4f} {pts:>10s} {r['larch_auto_e0'] - r['e0']:+8.2f} "
              f"{r['max_flat_diff_auto']:11.4f}")
    d_e0 = np.array([r["d_e0"] for r in rows])
    same_norm = np.array([r["max_norm_diff_same"] for r in rows])
    same_flat = np.array([r["max_flat_diff_same"] for r in rows])
    auto_flat = np.array([r["max_flat_diff_auto"] for r in rows])
    print(f"\ncompared {len(rows)} files (skipped {len(skipped)}: rejected, or constant pre-edge fallback)")
    print(f"E0 (Larch find_e0 - ours): exact in {(np.abs(d_e0) < 1e-6).sum()}/{len(rows)}, "
          f"|dE0| median {np.median(np.abs(d_e0)):.2f} eV, max {np.abs(d_e0).max():.2f} eV")
    print(f"same parameters, max |norm diff| over the window: median {np.median(same_norm):.2e}, max {same_norm.max():.2e}")
    print(f"same parameters, max |flat diff| over the window: median {np.median(same_flat):.2e}, max {same_flat.max():.2e}")
    pts = [r for r in rows if r["max_norm_diff_points"] is not None]
    pts_norm = np.array([r["max_norm_diff_points"] for r in pts])
    pts_flat = np.array([r["max_flat_diff_points"] for r in pts])
    print(f"same fit points ({len(pts)} files), max |norm diff|: median {np.median(pts_norm):.1e}, max {pts_norm.max():.1e}; "
          f"max |flat diff|: median {np.median(pts_flat):.1e}, max {pts_flat.max():.1e}")
    print(f"Larch's own defaults vs ours, max |flat diff| over the window: median {np.median(auto_flat):.3f}, "
          f"max {auto_flat.max():.3f}")
    if args.feff_every:
        compare_feff(args.feff_every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

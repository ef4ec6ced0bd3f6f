"""Run XANES preprocessing on every measured file of ../shared/data/xanes_experimental_dev.

Prints one row per file: absorber (and where it came from), status or reject reason, E0,
E0 - E_tab, edge step, calibration and flags; then a summary with the metal-foil E0 errors
and the time per spectrum.

    sfn-stream bench measured-xanes [--shared PATH] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from sfn_stream.core.spectra import (
    K_EDGE_ENERGIES,
    SpectrumFileError,
    find_absorber,
    find_e0,
    preprocess_xanes,
    read_spectrum,
    xanes_channels,
)
from sfn_stream.offline.shared import SharedDataMissing, shared_dir

NOT_SPECTRA = re.compile(r"^(LICENSE.*|labels\.csv|README.*)$", re.IGNORECASE)
FOIL_NAME = re.compile(r"foil|metal", re.IGNORECASE)
REPEATS = 5


def dev_folder(shared: str | None) -> Path:
    base = Path(shared) if shared else shared_dir()
    return base / "data" / "xanes_experimental_dev"


def load_labels(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / "labels.csv"
    if not path.exists():
        return {}
    with path.open() as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def is_foil(relative: str, label: dict[str, str] | None, absorber: str | None) -> bool:
    if label is not None:
        return label.get("formula", "") == label.get("absorber")
    return bool(FOIL_NAME.search(Path(relative).name)) and absorber is not None


def edge_hint(arguments: dict) -> str:
    """Where the data's steepest rise is and which tabulated K edge is nearest (not used to process)."""
    energy = np.asarray(arguments["energy"], dtype=float)
    if "mu" in arguments:
        mu = np.asarray(arguments["mu"], dtype=float)
    elif "ifluor" in arguments:
        mu = arguments["ifluor"] / arguments["i0"]
    else:
        mu = np.log(arguments["i0"] / arguments["it"])
    order = np.argsort(energy)
    e0 = find_e0(energy[order], mu[order])
    symbol = min(K_EDGE_ENERGIES, key=lambda s: abs(K_EDGE_ENERGIES[s] - e0))
    return f"steepest rise at {e0:.1f} eV, nearest tabulated edge {symbol} K {K_EDGE_ENERGIES[symbol]:.1f} eV"


def process_file(folder: Path, path: Path, labels: dict[str, dict[str, str]]) -> dict:
    relative = str(path.relative_to(folder))
    label = labels.get(relative)
    row: dict = {"file": relative, "labelled": label is not None}
    try:
        spectrum = read_spectrum(path)
        arguments = xanes_channels(spectrum)
    except SpectrumFileError as exc:
        row.update(status="rejected", reason=f"unreadable: {exc}", absorber=None, absorber_source=None)
        return row
    header_absorber = arguments.pop("absorber", None)
    arguments.pop("edge", None)
    if label is not None:
        absorber, source = label["absorber"], "labels.csv"
        if header_absorber and header_absorber.lower() != absorber.lower():
            row["absorber_conflict"] = f"labels.csv says {absorber}, header says {header_absorber}"
    else:
        absorber, source = find_absorber({**arguments, "absorber": header_absorber}, path)
        source = {"header": "xdi_header"}.get(source, source)
    row.update(absorber=absorber, absorber_source=source if absorber else None, format=spectrum.format)
    row["foil"] = is_foil(relative, label, absorber)
    if not absorber:
        row.update(status="rejected", reason="no absorber: not in labels.csv, no XDI Element.symbol, no single 3d-metal "
                   f"K edge in the energies, none in file name (for information: {edge_hint(arguments)})")
        return row
    energy = arguments.pop("energy")
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = preprocess_xanes(energy, absorber=absorber, **arguments)
        times.append(time.perf_counter() - start)
    row["ms"] = 1000 * min(times)  # best of REPEATS: other jobs share the CPU
    row["mode"] = result.mode
    row.update(
        status="ok" if result.usable else "rejected",
        reason=result.reason,
        **{k: result.to_dict()[k] for k in (
            "e_ref", "e0", "e0_shift", "edge_step", "edge_snr", "calibration", "energy_shift",
            "pre_edge_method", "pre1", "pre2", "norm1", "norm2", "nnorm", "window_coverage",
            "n_points", "energy_min", "energy_max", "flags",
        )},
    )
    return row


def run(folder: Path) -> tuple[list[dict], list[str]]:
    labels = load_labels(folder)
    warm = np.linspace(8800.0, 9300.0, 400)  # first call pays one-off import/allocation costs
    preprocess_xanes(warm, np.arctan(warm - 8980.0), absorber="Cu")
    rows, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if NOT_SPECTRA.match(path.name):
            skipped.append(str(path.relative_to(folder)))
            continue
        rows.append(process_file(folder, path, labels))
    return rows, skipped


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], skipped: list[str]) -> None:
    print(f"{'file':58s} {'abs':3s} {'src':5s} {'status':8s} {'E0':>9s} {'E0-Etab':>7s} {'step':>9s} "
          f"{'cal':5s} flags / reason")
    for r in rows:
        flags = ",".join(f for f in r.get("flags", []) if f)
        tail = flags if r["status"] == "ok" else f"REJECT: {r['reason']}"
        print(f"{r['file']:58s} {r.get('absorber') or '-':3s} {(r.get('absorber_source') or '-')[:5]:5s} "
              f"{r['status']:8s} {_fmt(r.get('e0'), '9.1f')} {_fmt(r.get('e0_shift'), '+7.1f')} "
              f"{_fmt(r.get('edge_step'), '9.3g')} {(r.get('calibration') or '-')[:5]:5s} {tail}")
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"\nfiles: {len(rows)} spectra ({len(skipped)} non-spectrum files skipped: {', '.join(skipped)})")
    print(f"processed: {len(ok)}, rejected: {len(rows) - len(ok)}")
    foils = [r for r in rows if r.get("foil") and r.get("e0_shift") is not None]
    if foils:
        errors = np.array([abs(r["e0_shift"]) for r in foils])
        worst = max(foils, key=lambda r: abs(r["e0_shift"]))
        print(f"metal foils: {len(foils)}, |E0 - E_tab| median {np.median(errors):.2f} eV, "
              f"max {errors.max():.2f} eV ({worst['file']}), within 3 eV: {(errors <= 3).sum()}/{len(foils)}")
    times = np.array([r["ms"] for r in rows if "ms" in r])
    if len(times):
        print(f"preprocess_xanes time per file (best of {REPEATS}): median {np.median(times):.2f} ms, max {times.max():.2f} ms "
              f"(n={len(times)}, points per file {min(r['n_points'] for r in rows if 'ms' in r)}-"
              f"{max(r['n_points'] for r in rows if 'ms' in r)})")
    for r in rows:
        if r.get("absorber_conflict"):
            print(f"absorber conflict: {r['file']}: {r['absorber_conflict']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", help="path of the shared folder (default: ../shared or $SFN_SHARED)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    args = parser.parse_args(argv)
    try:
        folder = dev_folder(args.shared)
    except SharedDataMissing as exc:
        print(f"shared data not available: {exc}", file=sys.stderr)
        return 2
    if not folder.is_dir():
        print(f"{folder} does not exist", file=sys.stderr)
        return 2
    rows, skipped = run(folder)
    if args.json:
        print(json.dumps({"rows": rows, "skipped": skipped}, indent=1))
    else:
        print_table(rows, skipped)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

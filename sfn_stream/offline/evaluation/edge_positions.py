"""Edge positions of corpus FEFF10 spectra and of measured dev spectra, per metal and oxidation state.

Both go through :func:`preprocess_xanes` (FEFF: ``energy_offset`` of the corpus row, i.e. the FEFF
metal's first inflection put on the tabulated edge; measured: the scan as calibrated, foils within
+-1.5 eV), and each edge is located on the same normalised spectrum with four definitions, all
given as E - E_tab (the metal's reference):

- ``max_derivative``: the preprocessing's E0 (Larch ``find_e0``);
- ``first_inflection``: lowest derivative peak reaching 30 % of the largest (how foils are aligned);
- ``first_peak_50``: the same with a 50 % threshold (skips pre-edge peaks and weak shoulders);
- ``half_height``: first energy where the normalised spectrum reaches 0.5.

    sfn-stream bench edge-positions [--json] [--plot docs/img/feff-edge-positions.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core.spectra import (
    TRANSITION_METALS_3D,
    find_e0,
    find_first_inflection,
    preprocess_xanes,
)

DEFINITIONS = ("max_derivative", "first_inflection", "first_peak_50", "half_height")
PLOT_METALS = ("V", "Mn", "Fe", "Cu")


def half_height(energy: np.ndarray, norm: np.ndarray, start: float) -> float:
    """First energy at or above ``start`` where the normalised spectrum crosses 0.5 (NaN if never)."""
    keep = energy >= start
    energy, norm = energy[keep], norm[keep]
    above = np.flatnonzero(norm >= 0.5)
    if not len(above):
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(energy[0])
    return float(np.interp(0.5, [norm[i - 1], norm[i]], [energy[i - 1], energy[i]]))


def edge_definitions(energy: np.ndarray, norm: np.ndarray, e_ref: float) -> dict[str, float]:
    """Every edge definition of one normalised, calibrated spectrum, as E - e_ref (eV)."""
    energy, norm = np.asarray(energy, float), np.asarray(norm, float)
    # half height searched from 15 eV below the first inflection: a 1s->3d pre-edge peak never reaches 0.5
    first = find_first_inflection(energy, norm)
    values = {
        "max_derivative": find_e0(energy, norm),
        "first_inflection": first,
        "first_peak_50": find_first_inflection(energy, norm, min_peak=0.5),
        "half_height": half_height(energy, norm, first - 15.0),
    }
    return {name: float(value - e_ref) for name, value in values.items()}


def spectrum_edges(energy, mu, absorber: str, energy_offset: float = 0.0, **channels) -> dict[str, float] | None:
    """Edge definitions of a spectrum after the shared preprocessing; None when it is unusable."""
    window = preprocess_xanes(energy, mu, absorber=absorber, energy_offset=energy_offset, **channels)
    if not window.usable:
        return None
    return edge_definitions(window.energy_full, window.norm_full, window.e_ref)


# --- the two populations ------------------------------------------------------------------------------


def corpus_rows(corpus_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per FEFF10 corpus spectrum with a labelled oxidation state."""
    import pandas as pd

    from sfn_stream.core import paths

    absorbers = pd.read_parquet(Path(corpus_dir or paths.CORPUS_DIR) / "absorbers.parquet")
    rows = []
    for row in absorbers.itertuples(index=False):
        if row.spectrum_source != "feff10" or row.energy is None or not len(row.energy):
            continue
        if row.oxidation_state_class is None or not np.isfinite(row.oxidation_state_class):
            continue
        edges = spectrum_edges(np.asarray(row.energy, float), np.asarray(row.mu, float), row.element,
                               float(row.energy_offset))
        if edges is not None:
            rows.append({"kind": "feff10", "metal": row.element, "valence": int(row.oxidation_state_class),
                         "id": row.material_id, **edges})
    return rows


def measured_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per labelled measured file with an oxidation state (foils count as 0)."""
    from sfn_stream.core.spectra import read_spectrum, xanes_channels
    from sfn_stream.offline.evaluation.measured_xanes import load_labels

    rows = []
    for name, label in sorted(load_labels(folder).items()):
        if not label.get("oxidation_state"):
            continue
        channels = xanes_channels(read_spectrum(folder / name))
        channels.pop("absorber", None)
        channels.pop("edge", None)
        energy, mu = channels.pop("energy"), channels.pop("mu", None)
        edges = spectrum_edges(energy, mu, label["absorber"], **channels)
        if edges is not None:
            rows.append({"kind": "measured", "metal": label["absorber"], "valence": int(label["oxidation_state"]),
                         "id": name, "formula": label["formula"], **edges})
    return rows


# --- summaries ----------------------------------------------------------------------------------------


def summarise(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median (and quartiles, n) of each definition per (kind, metal, valence)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["kind"], row["metal"], row["valence"])].append(row)
    out = []
    for (kind, metal, valence), members in sorted(groups.items(), key=lambda kv: (_metal_order(kv[0][1]), kv[0])):
        entry: dict[str, Any] = {"kind": kind, "metal": metal, "valence": valence, "n": len(members)}
        for name in DEFINITIONS:
            values = np.array([m[name] for m in members], float)
            values = values[np.isfinite(values)]
            entry[name] = [float(np.percentile(values, q)) for q in (25, 50, 75)] if len(values) else None
        out.append(entry)
    return out


def valence_slopes(summary: Iterable[dict[str, Any]], definition: str = "half_height") -> dict[str, dict]:
    """Per metal and kind: median edge shift per unit oxidation state among compounds (valence >= 1)."""
    points: dict[tuple, list] = defaultdict(list)
    for entry in summary:
        if entry["valence"] >= 1 and entry[definition] is not None:
            points[(entry["metal"], entry["kind"])].append((entry["valence"], entry[definition][1], entry["n"]))
    out: dict[str, dict] = defaultdict(dict)
    for (metal, kind), values in points.items():
        if len({v for v, _, _ in values}) >= 2:
            x, y, w = (np.array(a, float) for a in zip(*values))
            out[metal][kind] = float(np.polyfit(x, y, 1, w=np.sqrt(w))[0])
    return dict(out)


def measured_minus_feff(summary: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (metal, valence) present on both sides: median measured minus median FEFF10, per definition."""
    medians = {(e["kind"], e["metal"], e["valence"]): e for e in summary}
    out = []
    for (kind, metal, valence), measured in medians.items():
        feff = medians.get(("feff10", metal, valence))
        if kind != "measured" or feff is None:
            continue
        out.append({"metal": metal, "valence": valence, "n_measured": measured["n"], "n_feff10": feff["n"],
                    **{name: measured[name][1] - feff[name][1] if measured[name] and feff[name] else None
                       for name in DEFINITIONS}})
    return sorted(out, key=lambda e: (_metal_order(e["metal"]), e["valence"]))


def pre_edge_capture(rows: Iterable[dict[str, Any]], gap: float = 5.0) -> dict[str, dict[str, float]]:
    """Per metal and kind: share of compound spectra whose first inflection (30 %) lies more than ``gap``
    eV below their half height, i.e. sits on a pre-edge peak or shoulder rather than the main rise."""
    counts: dict[tuple, list[bool]] = defaultdict(list)
    for row in rows:
        if row["valence"] >= 1 and np.isfinite(row["half_height"]):
            counts[(row["metal"], row["kind"])].append(row["first_inflection"] < row["half_height"] - gap)
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (metal, kind), flags in counts.items():
        out[metal][kind] = float(np.mean(flags))
    return dict(out)


def _metal_order(metal: str) -> int:
    return TRANSITION_METALS_3D.index(metal) if metal in TRANSITION_METALS_3D else 99


def _cell(quartiles) -> str:
    return "-" if quartiles is None else f"{quartiles[1]:+6.1f} ({quartiles[0]:+.1f}..{quartiles[2]:+.1f})"


def format_table(summary: list[dict[str, Any]]) -> list[str]:
    lines = ["| metal | valence | source | n | " + " | ".join(DEFINITIONS) + " |",
             "|---|---:|---|---:|" + "---|" * len(DEFINITIONS)]
    for e in summary:
        lines.append(f"| {e['metal']} | {e['valence']} | {e['kind']} | {e['n']} | "
                     + " | ".join(_cell(e[name]) for name in DEFINITIONS) + " |")
    return lines


def plot(rows: list[dict[str, Any]], path: Path, definition: str = "half_height") -> None:
    """Strip plot per metal: E - E_tab of each spectrum by valence, FEFF10 beside measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOT_METALS), figsize=(4 * len(PLOT_METALS), 4), sharey=False)
    rng = np.random.default_rng(0)
    for ax, metal in zip(axes, PLOT_METALS):
        for kind, colour, dx in (("feff10", "tab:blue", -0.15), ("measured", "tab:red", 0.15)):
            mine = [r for r in rows if r["metal"] == metal and r["kind"] == kind and np.isfinite(r[definition])]
            x = np.array([r["valence"] for r in mine], float) + dx + rng.uniform(-0.06, 0.06, len(mine))
            ax.scatter(x, [r[definition] for r in mine], s=10 if kind == "feff10" else 30, alpha=0.5 if
                       kind == "feff10" else 0.9, color=colour, label=f"{kind} ({len(mine)})")
            for valence in sorted({r["valence"] for r in mine}):
                values = [r[definition] for r in mine if r["valence"] == valence]
                ax.hlines(np.median(values), valence + dx - 0.12, valence + dx + 0.12, color=colour, lw=2)
        ax.set_title(f"{metal} K edge")
        ax.set_xlabel("oxidation state")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"{definition.replace('_', ' ')} E - E_tab (eV)")
    fig.suptitle("Half height of the normalised edge on the calibrated scale: corpus FEFF10 (metal offset; "
                 "valence 0 = intermetallics) vs measured dev set (valence 0 = foils); bars: medians")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", help="path of the shared folder (default: ../shared or $SFN_SHARED)")
    parser.add_argument("--corpus", help="corpus folder (default data/corpus)")
    parser.add_argument("--plot", help="write the FEFF-vs-measured strip plot (PNG) here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    rows = corpus_rows(args.corpus)
    try:
        from sfn_stream.offline.evaluation.measured_xanes import dev_folder
        from sfn_stream.offline.shared import SharedDataMissing

        folder = dev_folder(args.shared)
        if folder.is_dir():
            rows += measured_rows(folder)
        else:
            print(f"{folder} does not exist: FEFF10 rows only", file=sys.stderr)
    except SharedDataMissing as exc:
        print(f"measured dev set not available ({exc}): FEFF10 rows only", file=sys.stderr)
    summary = summarise(rows)
    slopes = {name: valence_slopes(summary, name) for name in DEFINITIONS}
    mismatch, capture = measured_minus_feff(summary), pre_edge_capture(rows)
    if args.plot:
        plot(rows, Path(args.plot))
    if args.json:
        print(json.dumps({"summary": summary, "slopes_eV_per_valence": slopes, "measured_minus_feff10": mismatch,
                          "first_inflection_on_pre_edge": capture,
                          "measured": [r for r in rows if r["kind"] == "measured"]}, indent=1))
        return 0
    print("E - E_tab (eV): median (quartiles) per metal, oxidation state and source")
    print("\n".join(format_table(summary)))
    print("\nshift per unit oxidation state among compounds (weighted fit of the medians), eV:")
    for name in DEFINITIONS:
        cells = ", ".join(f"{m} FEFF {v.get('feff10', float('nan')):+.2f} / measured {v.get('measured', float('nan')):+.2f}"
                          for m, v in sorted(slopes[name].items(), key=lambda kv: _metal_order(kv[0])))
        print(f"  {name}: {cells}")
    print("\nmeasured minus FEFF10 (medians), eV, where both have the valence:")
    for e in mismatch:
        print(f"  {e['metal']}{e['valence']}+ (n {e['n_measured']}/{e['n_feff10']}): "
              + ", ".join(f"{name} {e[name]:+.1f}" for name in DEFINITIONS if e[name] is not None))
    print("\nshare of compound spectra whose first inflection lies > 5 eV below their half height (pre-edge picked):")
    print("  " + ", ".join(f"{m} FEFF {v.get('feff10', float('nan')):.2f} / measured {v.get('measured', float('nan')):.2f}"
                           for m, v in sorted(capture.items(), key=lambda kv: _metal_order(kv[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

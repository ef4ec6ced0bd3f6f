"""The demo figure, drawn from what Tiled holds (raw streams and derived streams)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _column(table, suffix: str):
    for name in table.columns if hasattr(table, "columns") else table.data_vars:
        if name == suffix or name.endswith("_" + suffix):
            return np.asarray(table[name])
    raise KeyError(f"no column ending in {suffix!r}")


def demo_figure(path: Path, xanes_run, xrd_run, sample) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sfn_stream.core.spectra import preprocess_xanes
    from sfn_stream.live.plugin import XANES_STREAM, XRD_STREAM, window_energies

    primary = xanes_run["primary"].read()
    window = preprocess_xanes(_column(primary, "energy"), i0=_column(primary, "i0"), it=_column(primary, "it"),
                              iref=_column(primary, "iref"), absorber=sample.absorber)
    xanes = xanes_run[XANES_STREAM].read()
    xrd_primary = xrd_run["primary"]
    pattern = np.asarray(xrd_primary.read()["powder_pattern"])[0]
    tth = np.asarray(xrd_primary.metadata["configuration"]["powder"]["data"]["powder_tth"])
    xrd = xrd_run[XRD_STREAM].read()
    stop_x, stop_d = xanes_run.metadata["stop"].get("sfn", {}), xrd_run.metadata["stop"].get("sfn", {})

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0, 0]
    ax.plot(window.energy_full, window.norm_full, color="k", lw=1.2, label="normalised $\\mu(E)$")
    ax.axvspan(window.energy[0], window.energy[-1], color="tab:blue", alpha=0.12, label="model window (56 eV)")
    ax.axvline(window.e0, color="tab:red", ls="--", lw=1, label=f"E0 = {window.e0:.1f} eV")
    ax.axvline(window.e_ref, color="tab:gray", ls=":", lw=1, label=f"{sample.absorber} K edge {window.e_ref:.0f} eV")
    ax.set(xlabel="energy (eV, calibrated to the reference foil)", ylabel="normalised absorption",
           title=f"{sample.absorber} K-edge XANES from Tiled (calibration: {window.calibration}, "
                 f"shift {window.energy_shift:+.2f} eV)")
    ax.set_xlim(window.e_ref - 40, window.e_ref + 110)
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[0, 1]
    ax.plot(window_energies(xanes) - window.e_ref, np.asarray(xanes["norm_window"])[-1], color="tab:blue")
    ax.axvline(float(np.asarray(xanes["e0_shift"])[0]), color="tab:red", ls="--", lw=1, label="E0 - E_ref")
    ax.set(xlabel="E - E_ref (eV)", ylabel="model input", title="the 200-point window the model sees")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    ax.plot(tth, pattern, color="k", lw=0.8)
    _lattice_ticks(ax, tth, pattern, stop_d, sample.wavelength)
    ax.set(xlabel="2$\\theta$ (deg, $\\lambda$ = %.4f $\\AA$)" % sample.wavelength, ylabel="counts",
           title=f"PXRD frame: predicted {stop_d.get('crystal_system')} "
                 f"({(stop_d.get('crystal_system_confidence') or 0):.0%})")

    ax = axes[1, 1]
    _probability_bars(ax, xanes, xrd, stop_x, sample)
    fig.suptitle(f"sfn-stream demo: {sample.name}", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lattice_ticks(ax, tth, pattern, summary: dict, wavelength: float) -> None:
    """Tick marks under the pattern where the run's best-indexing cell puts its lines (when it has one)."""
    from sfn_stream.core.spectra import family_edges, lattice_lines

    lattice, edges = summary.get("lattice"), summary.get("lattice_cell_A")
    if not lattice or not edges:
        return
    family, _, centring = lattice.partition(" ")
    unique_edges = family_edges(family, edges)
    q_max = 4 * np.pi * np.sin(np.radians(float(np.max(tth))) / 2) / wavelength
    lines = 2 * np.degrees(np.arcsin(lattice_lines(family, centring or "P", unique_edges, q_max) * wavelength
                                     / (4 * np.pi)))
    low = -0.06 * float(np.max(pattern))
    cell = ", ".join(f"{e:.3f}" for e in unique_edges)
    ax.plot(lines, np.full(len(lines), low), "|", color="tab:green", ms=9,
            label=f"lines of the best-indexing cell\n{lattice}, {cell} $\\AA$ (merit {summary.get('lattice_merit', 0):.2f})")
    ax.set_ylim(top=1.3 * float(np.max(pattern)))  # room for the legend above the peaks
    ax.legend(fontsize=7, loc="upper right")


def _probability_bars(ax, xanes, xrd, stop_x, sample) -> None:
    """Horizontal bars of every class with probability >= 2 %, grouped by task."""
    from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
    from sfn_stream.live.plugin import class_probabilities

    groups = [(f"{sample.absorber} oxidation state", xanes, "oxidation_state", list(range(8))),
              (f"{sample.absorber} CN", xanes, "coordination_number", list(range(1, 13))),
              ("crystal system", xrd, "crystal_system", list(CRYSTAL_SYSTEMS))]
    bars = []
    for colour, (title, table, task, names) in enumerate(groups):
        probabilities = np.nan_to_num(class_probabilities(table, task, names))
        for name, p in zip(names, probabilities):
            if p >= 0.02:
                bars.append((f"{title}: {name}", float(p), f"C{colour}"))
    positions = np.arange(len(bars))[::-1]
    ax.barh(positions, [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_yticks(positions, [b[0] for b in bars], fontsize=8)
    for y, (_, p, _) in zip(positions, bars):
        ax.text(min(p + 0.01, 0.9), y, f"{p:.0%}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("calibrated probability")
    density = stop_x.get("density")
    title = "predictions with confidence"
    if density is not None:
        title += f"; density {density:.2f} ± {stop_x.get('density_std') or 0:.2f} g/cm$^3$"
    ax.set_title(title)


def agent_figure(path: Path, client, result, sample, target: float | None = None) -> None:
    """The demo's multi-metal sample: each measured edge as Tiled holds it (normalised, on its own E - E0), and
    every metal's calibrated confidence after each of the agent's decisions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sfn_stream.core.spectra import preprocess_xanes

    colours = dict(zip(sample.metals, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for step in result.steps:
        if step.trigger in colours and step.trigger_run:
            primary = client[step.trigger_run]["primary"].read()
            window = preprocess_xanes(_column(primary, "energy"), i0=_column(primary, "i0"), it=_column(primary, "it"),
                                      iref=_column(primary, "iref"), absorber=step.trigger)
            left.plot(np.asarray(window.energy_full) - window.e0, window.norm_full, color=colours[step.trigger],
                      lw=1.2, label=f"{step.trigger} K edge (E0 {window.e0:.1f} eV)")
    left.set(xlabel="E - E0 (eV)", ylabel="normalised $\\mu(E)$", xlim=(-30, 80),
             title=f"{sample.formula}: the edges the agent chose")
    left.legend(fontsize=8)
    labels = [f"after {step.trigger}" for step in result.steps]
    x = np.arange(len(result.steps))
    for metal in sample.metals:
        for task, style, name in (("oxidation_state", "-", "ox"), ("coordination_number", "--", "CN")):
            y = [step.metal_confidence.get(metal, {}).get(task, np.nan) for step in result.steps]
            right.plot(x, y, style, marker="o", color=colours[metal], label=f"{metal} {name}")
    if target is not None:
        right.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:g}")
    final = result.steps[-1] if result.steps else None
    right.set(xticks=x, xticklabels=labels, ylim=(0, 1.05), ylabel="calibrated confidence",
              xlabel=f"done: {final.reason}" if final is not None and final.done else "",
              title="each metal's confidence after each decision")
    right.legend(fontsize=8, ncol=len(sample.metals), loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""The figure of ``sfn-stream explain xanes``: per explained output, the window with its four regions shaded
and labelled with their share, and the attribution of every point as bars under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REGION_COLOURS = {"pre_edge": "tab:purple", "edge": "tab:orange", "white_line": "tab:green", "post_edge": "tab:gray"}


def explanation_figure(path: Path, explanation, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, windows = explanation.tasks, explanation.windows
    fig = plt.figure(figsize=(6.4 * len(windows), 3.6 * len(tasks) + 0.9))
    outer = fig.add_gridspec(len(tasks), len(windows), hspace=0.42, wspace=0.22)
    for row, task in enumerate(tasks):
        for column, window in enumerate(windows):
            inner = outer[row, column].subgridspec(2, 1, height_ratios=[2.2, 1.0], hspace=0.06)
            top = fig.add_subplot(inner[0])
            bottom = fig.add_subplot(inner[1], sharex=top)
            _panel(top, bottom, task, window, explanation.baselines[window.absorber])
            top.set_title(f"{window.absorber} K edge (E0 = {window.e0:.1f} eV) - {_describe(task)}", fontsize=8,
                          loc="left")
    fig.suptitle(f"{title}\nintegrated gradients from an edge-step baseline: red raises the output, blue lowers it",
                 fontsize=9)
    fig.text(0.99, 0.005, f"model bundle {explanation.bundle_id}", ha="right", va="bottom", fontsize=7, color="0.4")
    height = fig.get_figheight()
    fig.subplots_adjust(top=1 - 0.95 / height, bottom=0.5 / height, left=0.1 / len(windows), right=0.98)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _panel(top, bottom, task, window, baseline) -> None:
    from sfn_stream.core.predict.explain import REGION_LABELS, region_masks

    relative = np.asarray(window.energy) - window.e0
    values = task.attributions[window.absorber]
    shares = task.region_shares[window.absorber]
    step = float(relative[1] - relative[0])
    for name, mask in region_masks(window).items():
        if not mask.any():
            continue
        low, high = relative[mask][0] - step / 2, relative[mask][-1] + step / 2
        for axis in (top, bottom):
            axis.axvspan(low, high, color=REGION_COLOURS[name], alpha=0.12, lw=0)
        top.text((low + high) / 2, 0.97, f"{REGION_LABELS[name]}\n{shares[name]:.0%}", transform=top.get_xaxis_transform(),
                 ha="center", va="top", fontsize=7.5, color=REGION_COLOURS[name], fontweight="bold")
    top.plot(relative, window.mu, color="k", lw=1.3, label="normalised window")
    top.plot(relative, baseline, color="k", lw=0.8, ls="--", alpha=0.6, label="baseline (edge step)")
    top.set_ylabel("norm. $\\mu$", fontsize=8)
    top.set_ylim(top=max(float(np.max(window.mu)), 1.0) * 1.3)  # room for the region labels
    top.tick_params(labelbottom=False, labelsize=7)
    top.legend(fontsize=6.5, loc="lower right", frameon=False)
    colours = np.where(values >= 0, "tab:red", "tab:blue")
    bottom.bar(relative, values, width=step, color=colours)
    bottom.axhline(0.0, color="k", lw=0.5)
    bottom.set_ylabel("attribution", fontsize=8)
    bottom.set_xlabel("E - E0 (eV)", fontsize=8)
    bottom.tick_params(labelsize=7)


def _describe(task) -> str:
    gap = f", gap {task.relative_gap:.1%}" if np.isfinite(task.relative_gap) else ""
    if task.task == "density":
        return f"density {task.f_input:.2f} g/cm$^3$ (baseline {task.f_baseline:.2f}{gap})"
    name = task.task.replace("_", " ")
    return f"{task.element} {name} {task.top_class} (p = {task.probability:.2f}; explained: log p{gap})"

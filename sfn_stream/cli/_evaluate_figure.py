"""The figure of ``sfn-stream evaluate xanes --plot``: what a user checks before trusting the model.

Per metal, oxidation-state and CN accuracy beside the two no-spectrum baselines (elements only, one edge,
formula-disjoint test); the reliability diagram of every classification head on the pooled FEFF10 test
units; and the measured development files, model beside the registry and the composition rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.offline.evaluation.xanes_3d_eval import POOLED

BLOCK = "test/elements"
WHO = (("model", "model", "tab:blue"), ("composition_rule", "composition rule", "tab:orange"),
       ("majority_class", "majority class", "tab:gray"))
HEADS = (("oxidation_state", "oxidation state"), ("coordination_number", "CN"), ("is_metal", "is metal"),
         ("is_magnetic", "is magnetic"))


def evaluation_figure(path: Path, report: Mapping[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report["results"][BLOCK]["per_absorber"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (task, label) in zip(axes[0], HEADS[:2]):
        _accuracy_bars(ax, table, task, label)
    _reliability(axes[1, 0], table.get(POOLED, {}))
    _measured(axes[1, 1], report.get("measured_dev"))
    fig.suptitle(f"{report['bundle']}: elements only, one edge per example (formula-disjoint test)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _accuracy_bars(ax, table: Mapping[str, Any], task: str, label: str) -> None:
    groups = [g for g, row in table.items() if g != POOLED and row.get(task)]
    x = np.arange(len(groups))
    width = 0.27
    for k, (who, name, colour) in enumerate(WHO):
        values = [table[g][task][who]["accuracy"] for g in groups]
        ax.bar(x + (k - 1) * width, values, width, label=name, color=colour)
    for i, g in enumerate(groups):  # how few units each bar rests on
        ax.text(i, 0.02, f"n={table[g][task]['n']}", ha="center", va="bottom", fontsize=7, rotation=90, color="white")
    ax.set_xticks(x, groups, rotation=30, fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="accuracy", title=f"{label}: model vs no-spectrum baselines")
    ax.legend(fontsize=7, loc="lower right")


def _reliability(ax, pooled: Mapping[str, Any]) -> None:
    ax.plot([0, 1], [0, 1], ":", color="k", lw=1, label="perfectly calibrated")
    for head, label in HEADS:
        model = (pooled.get(head) or {}).get("model") or {}
        rows = model.get("reliability")
        if not rows:
            continue
        reliability_curve(ax, rows,
                          f"{label} (ECE {model['ece']:.3f}; calibrated at this n: {model['ece_if_calibrated']:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top-class probability)", ylabel="accuracy",
           title="reliability, every FEFF10 test unit (marker size: units per bin)")
    ax.legend(fontsize=7, loc="upper left")


def reliability_curve(ax, rows, label: str) -> None:
    """One reliability line from ``reliability_table`` rows ``[n, confidence, accuracy]``, markers sized by n."""
    n, confidence, accuracy = (np.array(c) for c in zip(*rows))
    line, = ax.plot(confidence, accuracy, "o-", ms=3, lw=1, label=label)
    ax.scatter(confidence, accuracy, s=4 + 60 * n / n.max(), alpha=0.3, color=line.get_color())


def _measured(ax, dev: Mapping[str, Any] | None) -> None:
    if not dev:
        ax.text(0.5, 0.5, "measured development set not evaluated\n(--no-dev, or ../shared absent)",
                ha="center", va="center")
        ax.set_axis_off()
        return
    who = [("model", "model", "tab:blue"), ("registry", "registry", "tab:green"),
           ("composition_rule", "composition rule", "tab:orange")]
    tasks = [(t, label) for t, label in HEADS[:2] if dev["model"].get(t)]
    x = np.arange(len(tasks))
    width = 0.27
    for k, (key, name, colour) in enumerate(who):
        scores = [dev[key][t] for t, _ in tasks]
        values = [s["correct"] / s["n_labelled"] if s["n_labelled"] else np.nan for s in scores]
        bars = ax.bar(x + (k - 1) * width, values, width, label=name, color=colour)
        for bar, s in zip(bars, scores):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{s['correct']}/{s['n_labelled']}",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [label for _, label in tasks])
    ax.set(ylim=(0, 1.1), ylabel="share of labelled files right",
           title="measured reference files (elements only)")
    ax.legend(fontsize=7, loc="lower right")

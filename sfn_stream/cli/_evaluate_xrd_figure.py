"""The figure of ``sfn-stream evaluate xrd --plot``: the PXRD classifiers at a glance.

Accuracy of every bundle and baseline on each test set with its 95 % interval, beside issue 13's targets;
the reliability diagram of each bundle on the noisy formula-disjoint test; the confusion matrix of the first
bundle there (rows: the true crystal system, normalised); and the learning curve of any bundle that was trained
by epochs (its card's ``training.history``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS

from ._evaluate_figure import reliability_curve

NOISY = "noisy_formula_disjoint"
SETS = ((NOISY, "noisy\nformula-disjoint"), ("clean", "clean"), ("structure_type_disjoint", "structure-type-\ndisjoint"),
        ("measured", "measured\npatterns"))
# Issue 13's targets (evaluate xrd): the paper's noisy figure, Park et al.'s clean one, 12 of the 17 measured patterns.
TARGETS = {NOISY: 0.85, "clean": 0.93, "measured": 12 / 17}


def xrd_evaluation_figure(path: Path, report: Mapping[str, Any], bundles: Sequence[Path] = ()) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _accuracy_by_set(axes[0, 0], report)
    _reliability(axes[0, 1], report)
    _confusion(axes[1, 0], report)
    _learning_curves(axes[1, 1], bundles)
    fig.suptitle(f"PXRD crystal system, {report['n_reference_structures']} training structures as 1-NN reference",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy_by_set(ax, report: Mapping[str, Any]) -> None:
    sets = [(key, label) for key, label in SETS if key in report["sets"] and "skipped" not in report["sets"][key]]
    names = report["models"]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(sets))
    for k, name in enumerate(names):
        scores = [report["sets"][key].get(name, {}) for key, _ in sets]
        values = np.array([s.get("accuracy") if s.get("accuracy") is not None else np.nan for s in scores])
        low = [v - s["accuracy_ci95"][0] if s.get("accuracy_ci95") else 0 for v, s in zip(values, scores)]
        high = [s["accuracy_ci95"][1] - v if s.get("accuracy_ci95") else 0 for v, s in zip(values, scores)]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, yerr=[low, high], capsize=2,
               label=_short(name), error_kw={"lw": 0.8})
    for i, (key, _) in enumerate(sets):
        if key in TARGETS:
            ax.hlines(TARGETS[key], i - 0.45, i + 0.45, colors="k", linestyles="--", lw=1)
    ax.plot([], [], "k--", lw=1, label="target (issue 13)")
    ax.set_xticks(x, [label for _, label in sets], fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="crystal-system accuracy", title="accuracy per test set (95 % interval)")
    # the legend below the axes: bars and targets stay visible
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)


def _reliability(ax, report: Mapping[str, Any]) -> None:
    ax.plot([0, 1], [0, 1], ":", color="k", lw=1, label="perfectly calibrated")
    for name in report["models"]:
        entry = report["sets"].get(NOISY, {}).get(name, {})
        rows = entry.get("reliability")
        if not rows or "@" not in name:  # bundles only: the baselines' one-hot answers say nothing here
            continue
        reliability_curve(ax, rows, f"{_short(name)} (ECE {entry['ece_15_bins']:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top-class probability)", ylabel="accuracy",
           title="reliability, noisy formula-disjoint test (marker size: patterns per bin)")
    ax.legend(fontsize=7, loc="upper left")


def _confusion(ax, report: Mapping[str, Any]) -> None:
    name = report["models"][0]
    counts = np.array(report["sets"].get(NOISY, {}).get(name, {}).get("confusion_matrix", {}).get("counts", []))
    if counts.size == 0:
        _nothing(ax, "no confusion matrix in the report")
        return
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(rows.shape):
        if counts[i, j]:
            ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    short = [c[:5] for c in CRYSTAL_SYSTEMS]
    ax.set_xticks(range(len(short)), short, fontsize=8)
    ax.set_yticks(range(len(short)), [f"{s} ({n})" for s, n in zip(short, counts.sum(1))], fontsize=8)
    ax.set(xlabel="predicted", ylabel="true (test structures x renderings)",
           title=f"{_short(name)}: confusion, noisy test (rows sum to 1)")


def _learning_curves(ax, bundles: Sequence[Path]) -> None:
    curves = [(name, history) for name, history in (_history(b) for b in bundles) if history]
    if not curves:
        _nothing(ax, "no bundle trained by epochs among --bundle\n(the network's card holds training.history)")
        return
    loss_ax = ax.twinx()
    for name, history in curves:
        epochs = [row["epoch"] + 1 for row in history]
        line, = ax.plot(epochs, [row["val_accuracy"] for row in history], "-", label=f"{name}: validation accuracy")
        loss_ax.plot(epochs, [row["train_loss"] for row in history], "--", color=line.get_color(), alpha=0.6,
                     label=f"{name}: training loss")
    ax.set(xlabel="epoch", ylabel="validation accuracy (augmented renderings)", title="learning curve")
    loss_ax.set_ylabel("training loss (dashed)")
    ax.legend(fontsize=7, loc="lower right")


def _history(bundle: Path) -> tuple[str, list[dict]]:
    card_path = Path(bundle) / "card.json"
    if not card_path.is_file():
        return "", []
    card = json.loads(card_path.read_text())
    return card.get("name", Path(bundle).name), (card.get("training") or {}).get("history") or []


def _short(name: str) -> str:
    """``xrd-ensemble@0.1.0+9aad79611b42 + elements`` -> ``xrd-ensemble + elements`` (the legend stays legible)."""
    return name.split("@")[0] + (" + elements" if name.endswith(" + elements") else "")


def _nothing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    ax.set_axis_off()

"""``sfn-stream evaluate xanes-ablation``: how much each energy region of the window matters to the 3d-metal
XANES model, measured by removing it.

Test units: the formula-disjoint test split of data/splits/xanes_3d_splits.json, FEFF10 spectra only, one edge
per example (the absorber's own), elements only (no stoichiometry), as ``sfn-stream evaluate xanes``.

Variants, each scored beside the intact window and the composition-only rule (no spectrum):

* one per region of :data:`sfn_stream.core.predict.explain.REGIONS` (pre-edge, edge, white line, post-edge,
  bounds relative to each window's E0): the window there is replaced by the straight line between the
  region's first and last points (a neutral fill: it keeps the level and slope across the region, removes
  its peaks and shoulders);
* ``whole_spectrum``: the window replaced everywhere by the attribution baseline, a smoothed unit step at
  E0 (:func:`~sfn_stream.core.predict.explain.edge_step_baseline`); E0 - E_ref stays as measured.

Figures only: nothing here passes or fails.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .xanes_3d_eval import ELEMENT_TASKS, CompositionBaselines, Unit, test_units

INTACT = "intact"
WHOLE = "whole_spectrum"
OVERALL = "all FEFF10"


def region_line_fill(mu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mu`` with the points under ``mask`` (one contiguous region) replaced by the straight line between
    the region's first and last points."""
    out = np.array(mu, dtype=np.float32, copy=True)
    index = np.flatnonzero(mask)
    if len(index) < 2:
        return out
    first, last = index[0], index[-1]
    out[first:last + 1] = np.linspace(out[first], out[last], last - first + 1)
    return out


def ablated_windows(window) -> dict[str, Any]:
    """Variant name -> window: the intact one, one per region with that region filled, the whole-spectrum one."""
    from sfn_stream.core.predict.explain import edge_step_baseline, region_masks

    variants = {INTACT: window}
    for name, mask in region_masks(window).items():
        variants[name] = replace(window, mu=region_line_fill(window.mu, mask))
    variants[WHOLE] = replace(window, mu=edge_step_baseline(window))
    return variants


def ablation_test_units(limit: int | None = None, progress: bool = False) -> tuple[list[Unit], CompositionBaselines]:
    """The FEFF10 test units (the first ``limit`` of them) and the composition baselines of the training split."""
    from sfn_stream.offline.training import load_training_materials, split_of

    materials, splits = load_training_materials(progress=progress)
    assignment = split_of(splits)
    baselines = CompositionBaselines([m for m in materials if assignment.get(m.material_id) == "train"])
    units = [u for u in test_units(materials, splits) if u.source == "feff10"]
    return (units[:limit] if limit else units), baselines


def evaluate_ablation(bundle_path: str | Path | None = None, *, units: Sequence[Unit] | None = None,
                      baselines: CompositionBaselines | None = None, limit: int | None = None,
                      attributions: bool = False, progress: bool = False) -> dict[str, Any]:
    """Accuracy of oxidation state and CN per metal and over all units, per variant; JSON-able. With
    ``attributions``, also the integrated-gradient region shares averaged over the same units."""
    from sfn_stream.core.networks import XanesEnsemble, load_bundle, models_dir
    from sfn_stream.core.predict.explain import REGIONS
    from sfn_stream.offline.training import XANES_3D_BUNDLE

    bundle = load_bundle(bundle_path or models_dir() / XANES_3D_BUNDLE)
    ensemble = XanesEnsemble.from_bundle(bundle)
    if units is None or baselines is None:
        units, baselines = ablation_test_units(limit, progress)
    variants = [INTACT, *REGIONS, WHOLE]
    windows = [ablated_windows(u.window) for u in units]
    predicted: dict[str, list[dict[str, Any]]] = {}
    for variant in _progress(variants, progress, "ablation variants"):
        compounds = [(list(u.material.elements), {u.absorber: (w[variant].mu, w[variant].e0_shift)}, None)
                     for u, w in zip(units, windows)]
        predicted[variant] = [_top_classes(p, u.absorber) for u, p in zip(units, _predict(ensemble, compounds))]
    rule = [{task: baselines.rule(u, task, "elements") for task in ELEMENT_TASKS} for u in units]
    groups = defaultdict(list)
    for i, unit in enumerate(units):
        groups[unit.absorber].append(i)
    groups = {**dict(sorted(groups.items(), key=lambda item: _metal_order(item[0]))), OVERALL: list(range(len(units)))}
    table = {group: _score_group(units, rows, predicted, rule) for group, rows in groups.items()}
    report = {
        "bundle": bundle.id,
        "splits": "data/splits/xanes_3d_splits.json (test: formula-disjoint from train and val)",
        "units": "FEFF10 test units, one edge each (the absorber's own), elements only (no stoichiometry)",
        "n_units": len(units),
        "regions": {name: {"from_ev": low, "to_ev": high, "relative_to": "E0"} for name, (low, high) in REGIONS.items()},
        "fill": "region: straight line between the region's first and last window points; whole_spectrum: the "
                "attribution baseline (Gaussian-smoothed unit step at E0, sigma 1 eV) everywhere; E0 - E_ref kept",
        "baseline": "composition_rule: most frequent training label of the (absorber, element set), else of the "
                    "absorber (no spectrum)",
        "variants": variants,
        "table": table,
    }
    if attributions:
        report["attribution_shares"] = mean_region_shares(bundle.path, units, progress=progress)
    return report


def mean_region_shares(bundle_path, units: Sequence[Unit], *, steps: int = 32, progress: bool = False) -> dict[str, Any]:
    """Integrated-gradient region shares of the absorber's own oxidation state, CN and the density, averaged
    over ``units`` (elements only), with the completeness gaps seen (the relative gap only where the output
    moves by at least 0.1 from the baseline: below that it divides by almost nothing)."""
    from sfn_stream.core.predict import XanesPredictor
    from sfn_stream.core.predict.explain import REGIONS, explain_windows

    predictor = XanesPredictor(bundle_path)
    shares: dict[str, list[list[float]]] = defaultdict(list)
    gaps, relative = [], []
    for unit in _progress(units, progress, "attributions"):
        explanation = explain_windows(predictor, [unit.window], list(unit.material.elements), steps=steps)
        for task in explanation.tasks:
            if task.element not in (None, unit.absorber):
                continue
            shares[task.task].append([task.region_shares[unit.absorber][name] for name in REGIONS])
            gaps.append(abs(task.completeness_gap))
            if abs(task.f_input - task.f_baseline) >= 0.1:
                relative.append(task.relative_gap)
    return {"n_units": len(units), "steps": steps, "max_abs_completeness_gap": max(gaps, default=math.nan),
            "max_relative_completeness_gap": max(relative, default=math.nan),
            "mean_share": {task: dict(zip(REGIONS, np.mean(values, axis=0).tolist())) for task, values in shares.items()}}


def _predict(ensemble, compounds, batch: int = 256) -> list[dict[str, Any]]:
    out = []
    for start in range(0, len(compounds), batch):
        out.extend(ensemble.predict_batch(compounds[start:start + batch]))
    return out


def _top_classes(prediction: Mapping[str, Any], absorber: str) -> dict[str, Any]:
    per = prediction["per_element"][absorber]
    return {task: per[task]["classes"][int(np.argmax(per[task]["probabilities"]))] for task in ELEMENT_TASKS}


def _score_group(units, rows, predicted, rule) -> dict[str, Any]:
    out: dict[str, Any] = {"n_units": len(rows)}
    for task in ELEMENT_TASKS:
        labelled = [i for i in rows if units[i].label(task) is not None]
        if not labelled:
            out[task] = None
            continue
        truth = [units[i].label(task) for i in labelled]
        intact = [predicted[INTACT][i][task] for i in labelled]
        entry: dict[str, Any] = {"n": len(labelled), "composition_rule": _accuracy(truth, [rule[i][task] for i in labelled])}
        for variant, values in predicted.items():
            guesses = [values[i][task] for i in labelled]
            entry[variant] = {"accuracy": _accuracy(truth, guesses)}
            if variant != INTACT:
                entry[variant]["change"] = entry[variant]["accuracy"] - entry[INTACT]["accuracy"]
                entry[variant]["changed_predictions"] = float(np.mean([a != b for a, b in zip(guesses, intact)]))
        out[task] = entry
    return out


def _accuracy(truth, guesses) -> float:
    return float(np.mean([t == g for t, g in zip(truth, guesses)])) if truth else math.nan


def _metal_order(absorber: str):
    from sfn_stream.offline.training import METALS_3D

    return METALS_3D.index(absorber) if absorber in METALS_3D else 99


def _progress(items, enabled: bool, what: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what)


# --- printing and the card ------------------------------------------------------------------------


SHORT = {INTACT: "intact", "pre_edge": "-pre", "edge": "-edge", "white_line": "-WL", "post_edge": "-post",
         WHOLE: "-all"}


def format_ablation(report: Mapping[str, Any]) -> list[str]:
    variants = report["variants"]
    lines = [f"model {report['bundle']}   {report['n_units']} units: {report['units']}",
             f"splits {report['splits']}",
             ("accuracy with each region replaced (-pre, -edge, -WL white line, -post: straight line across the region; "
              "-all: edge-step baseline everywhere); rule = composition only, no spectrum"),
             "regions (eV from E0): pre < -5, edge -5..5, WL 5..20, post > 20"]
    for task in ELEMENT_TASKS:
        lines.append("")
        lines.append(f"== {task} ==")
        lines.append(f"{'absorber':12s} {'n':>4s} {'rule':>6s} " + " ".join(f"{SHORT[v]:>7s}" for v in variants))
        for group, row in report["table"].items():
            entry = row.get(task)
            if not entry:
                continue
            cells = [f"{entry[INTACT]['accuracy']:7.3f}"]
            cells += [f"{entry[v]['change']:+7.3f}" for v in variants[1:]]
            lines.append(f"{group:12s} {entry['n']:4d} {entry['composition_rule']:6.3f} " + " ".join(cells))
        pooled = report["table"][OVERALL].get(task)
        if pooled:
            lines.append(f"{'changed':12s} {'':4s} {'':6s} {'':7s} "
                         + " ".join(f"{pooled[v]['changed_predictions']:7.1%}" for v in variants[1:]))
        lines.append("(intact: accuracy; the other columns: accuracy change from intact; changed: share of the pooled units "
                     "whose predicted class changes)")
    shares = report.get("attribution_shares")
    if shares:
        lines.append("")
        lines.append(f"== integrated-gradient share of |attribution| per region, mean over {shares['n_units']} units "
                     f"(own edge) ==")
        lines.append(f"completeness gap: largest {shares['max_abs_completeness_gap']:.4f} (in the output's units), "
                     f"largest relative {shares['max_relative_completeness_gap']:.2%} where |f(x) - f(b)| >= 0.1")
        for task, values in shares["mean_share"].items():
            lines.append(f"{task:22s} " + " ".join(f"{SHORT[name][1:]} {value:5.1%}" for name, value in values.items()))
    return lines


def card_interpretability(report: Mapping[str, Any]) -> dict[str, Any]:
    """The card's ``interpretability`` block: the region-ablation table, rounded."""
    table = {}
    for group, row in report["table"].items():
        entry: dict[str, Any] = {"n_units": row["n_units"]}
        for task in ELEMENT_TASKS:
            values = row.get(task)
            if not values:
                continue
            entry[task] = {"n": values["n"], "composition_rule_accuracy": _r(values["composition_rule"]),
                           **{f"{variant}_accuracy": _r(values[variant]["accuracy"]) for variant in report["variants"]}}
        table[group] = entry
    return {
        "source": "sfn-stream evaluate xanes-ablation (sfn_stream.offline.evaluation.xanes_ablation)",
        "explain_command": "sfn-stream explain xanes FILE --elements ...: integrated-gradient region shares per "
                           "prediction (sfn_stream.core.predict.explain)",
        "region_ablation": {key: report[key] for key in ("splits", "units", "n_units", "regions", "fill", "baseline")},
        "region_ablation_accuracy": table,
        **({"attribution_shares": report["attribution_shares"]} if report.get("attribution_shares") else {}),
        "note": "about 10 test units per metal: per-metal changes of one or two units are noise",
    }


def write_card_interpretability(bundle_path: str | Path, report: Mapping[str, Any]) -> None:
    """Put :func:`card_interpretability` into the bundle's card.json (weights, and so the bundle id, unchanged)."""
    card_path = Path(bundle_path) / "card.json"
    card = json.loads(card_path.read_text())
    card["interpretability"] = card_interpretability(report)
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def _r(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)

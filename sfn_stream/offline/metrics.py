"""Metrics and calibration of the classifiers, shared by training (model cards) and evaluation.

Two card formats, both kept as they are: :func:`label_metrics` (XANES: class values, macro-F1 over the
classes present in the ground truth) and :func:`probability_metrics` (PXRD: a fixed class list with
per-class accuracy, support and ECE). Their F1 formulas are algebraically equal but round differently
in the last bit, so each keeps its own to reproduce the committed cards.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

TEMPERATURE_RANGE = (0.05, 20.0)


def confusion_matrix(true_index: np.ndarray, pred_index: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows the true class and columns the predicted one."""
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (np.asarray(true_index, dtype=int), np.asarray(pred_index, dtype=int)), 1)
    return confusion


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean NLL of the true classes (probabilities clipped at 1e-12), weighted when ``weights`` are given."""
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    return float(np.average(nll, weights=weights))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, *,
                               closed: str = "right") -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017).

    ``closed="right"``: bins (lo, hi], as Guo et al. (the XANES cards). ``closed="left"``: bins
    [lo, hi) with 1.0 in the last bin (the PXRD card's ``ece_15_bins``). The two differ only for
    confidences on a bin edge.
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    bins = _confidence_bins(confidence, n_bins, closed)
    ece = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def calibrated_ece_floor(probs: np.ndarray, n_bins: int = 15, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would show on this many examples: labels drawn from the
    model's own probabilities, ECE averaged over ``draws``. On a few dozen examples it is far above zero
    (finite-sample bias of binned ECE), so a measured ECE is read against it, not against 0."""
    probs = np.asarray(probs, dtype=float)
    if len(probs) == 0:
        return math.nan
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
    values = []
    for _ in range(draws):
        labels = (rng.random((len(probs), 1)) > cumulative).sum(1).clip(max=probs.shape[1] - 1)
        values.append(expected_calibration_error(probs, labels, n_bins))
    return float(np.mean(values))


def reliability_table(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> list[list[float]]:
    """The reliability diagram behind :func:`expected_calibration_error`: one row ``[n, mean confidence,
    accuracy]`` per non-empty confidence bin (right-closed, as the XANES cards), small enough for a report."""
    probs = np.asarray(probs, dtype=float)
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels)
    bins = _confidence_bins(confidence, n_bins, "right")
    return [[int((bins == b).sum()), round(float(confidence[bins == b].mean()), 4),
             round(float(correct[bins == b].mean()), 4)] for b in range(n_bins) if (bins == b).any()]


def _confidence_bins(confidence: np.ndarray, n_bins: int, closed: str) -> np.ndarray:
    """Bin of each confidence; -1 for none (a confidence of 0 with right-closed bins)."""
    if closed == "left":
        return np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    if closed != "right":
        raise ValueError(f"closed must be 'right' or 'left', not {closed!r}")
    bins = np.full(len(confidence), -1)
    edges = np.linspace(0, 1, n_bins + 1)
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        bins[(confidence > lo) & (confidence <= hi)] = b
    return bins


def fit_temperature(labels: np.ndarray, *, logits: np.ndarray | None = None,
                    probabilities_at: Callable[[float], np.ndarray] | None = None,
                    weights: np.ndarray | None = None) -> float:
    """Temperature T in :data:`TEMPERATURE_RANGE` minimising the validation NLL (Guo et al. 2017).

    Give one of:
    - ``logits`` (n, classes) of one network: softmax(logits / T), fitted by L-BFGS on log T (torch);
    - ``probabilities_at``: T -> (n, classes) probabilities, e.g. an ensemble's mean of
      softmax(member logits / T), fitted by a bounded scalar search on log T (scipy); ``weights`` (per
      example) weight its NLL, e.g. so that every group of a pooled validation set counts alike.
    """
    if (logits is None) == (probabilities_at is None):
        raise ValueError("give either logits or probabilities_at")
    if logits is not None:
        if weights is not None:
            raise ValueError("weights are supported with probabilities_at only")
        return _fit_logit_temperature(logits, labels)
    return _fit_probability_temperature(probabilities_at, labels, weights)


def _fit_logit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    import torch

    logits_t, labels_t = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(*TEMPERATURE_RANGE))


def _fit_probability_temperature(probabilities_at: Callable[[float], np.ndarray], labels: np.ndarray,
                                 weights: np.ndarray | None = None) -> float:
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        return negative_log_likelihood(probabilities_at(math.exp(log_t)), labels, weights)

    low, high = TEMPERATURE_RANGE
    result = minimize_scalar(nll, bounds=(math.log(low), math.log(high)), method="bounded")
    return float(math.exp(result.x))


def label_metrics(true: Sequence[int], pred: Sequence[int]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes present in ``true`` and the confusion matrix over the
    classes seen in either (class values, not indices)."""
    true, pred = np.asarray(true), np.asarray(pred)
    classes = sorted(set(true.tolist()) | set(pred.tolist()))
    position = {c: i for i, c in enumerate(classes)}
    confusion = confusion_matrix([position[c] for c in true.tolist()], [position[c] for c in pred.tolist()],
                                 len(classes))
    f1s = []
    for c in sorted(set(true.tolist())):
        i = position[c]
        tp = confusion[i, i]
        fp, fn = confusion[:, i].sum() - tp, confusion[i, :].sum() - tp
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {
        "n": int(len(true)),
        "accuracy": float(np.mean(true == pred)) if len(true) else math.nan,
        "macro_f1": float(np.mean(f1s)) if f1s else math.nan,
        "confusion": {"labels": classes, "rows_true_cols_pred": confusion.tolist()},
    }


def probability_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                        n_bins: int = 15) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class accuracy (recall), confusion matrix (rows true), ECE of the
    argmax predictions of ``probs`` over the fixed ``class_names``."""
    labels = np.asarray(labels)
    pred = probs.argmax(axis=1)
    k = len(class_names)
    confusion = confusion_matrix(labels, pred, k)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    tp = np.diag(confusion)
    recall = np.divide(tp, support, out=np.full(k, np.nan), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    confidence = probs.max(axis=1)
    correct = pred == labels
    return {
        "n": int(len(labels)),
        "accuracy": float(correct.mean()) if len(labels) else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "per_class_accuracy": {c: (None if np.isnan(r) else round(float(r), 4)) for c, r in zip(class_names, recall)},
        "support": {c: int(n) for c, n in zip(class_names, support)},
        "confusion_matrix": {"rows_true_cols_pred": list(class_names), "counts": confusion.tolist()},
        f"ece_{n_bins}_bins": expected_calibration_error(probs, labels, n_bins, closed="left"),
        "mean_confidence": float(confidence.mean()) if len(labels) else None,
    }


def regression_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R2 (NaN when ``true`` is constant)."""
    err = pred - true
    ss_res, ss_tot = float(np.sum(err**2)), float(np.sum((true - true.mean()) ** 2))
    return {"n": int(len(true)), "mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan}


# --- intervals: how far a figure on a small test set can be trusted --------------------------------
INTERVAL_LEVEL = 0.95
INTERVAL_DRAWS = 4000


def mean_accuracy_interval(groups: Sequence[tuple[int, int]], level: float = INTERVAL_LEVEL,
                           draws: int = INTERVAL_DRAWS, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the unweighted mean of per-group accuracies, resampling each group's test units
    with replacement (a stratified bootstrap: a group of ``n`` units with ``k`` right redraws as Binomial(n, k/n)).
    ``groups``: (right, n) per group; groups with n = 0 are left out. Efron & Tibshirani 1993, ch. 13."""
    groups = [(int(k), int(n)) for k, n in groups if n > 0]
    if not groups:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    n = np.array([n for _, n in groups])
    p = np.array([k / n_ for k, n_ in groups])
    means = (rng.binomial(n[None, :], p[None, :], size=(draws, len(groups))) / n[None, :]).mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def bootstrap_interval(values: Sequence[float], level: float = INTERVAL_LEVEL, draws: int = INTERVAL_DRAWS,
                       seed: int = 0, groups: Sequence | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-sample ``values`` (NaNs left out). With ``groups`` (one
    label per value), whole groups are redrawn (a cluster bootstrap, Davison & Hinkley 1997, sec. 3.8): samples of
    one group are not independent (polymorphs and pressure series of one formula), so an interval drawn sample by
    sample would be too narrow."""
    keep = [i for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    values = np.asarray([values[i] for i in keep], dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if groups is None:
        means = values[rng.integers(0, values.size, size=(draws, values.size))].mean(axis=1)
    else:
        which = np.unique(np.asarray([groups[i] for i in keep]), return_inverse=True)[1]
        sums, counts = np.bincount(which, values), np.bincount(which)
        drawn = rng.integers(0, len(sums), size=(draws, len(sums)))
        means = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def group_mean(values: Sequence[float], groups: Sequence) -> float:
    """The mean over groups of each group's mean: every group counted once, however many samples it has."""
    which = np.unique(np.asarray(groups), return_inverse=True)[1]
    values = np.asarray(values, dtype=float)
    return float(np.mean(np.bincount(which, values) / np.bincount(which)))

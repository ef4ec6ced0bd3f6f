"""``sfn-stream train xrd-indexed``: search-match with metric-indexing evidence as one calibrated PXRD bundle.

The member ``models/xrd-search-match`` must exist. A multinomial logistic regression on its
log-probabilities and the indexing features (``core.spectra.index_pattern``) is fitted by L2-regularised
maximum likelihood on the formula-disjoint validation structures, rendered as the search-match calibration
renders them (the paper's noisy protocol and the training augmentation), without and with the sample's
element set. The card reports 5-fold cross-validated figures on those structures beside search-match alone;
test figures come from ``sfn-stream evaluate xrd``. The test split is not read.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.offline.metrics import probability_metrics

from ._xrd import DEFAULT_STICK_TABLE
from ._xrd_search_match import validation_set

BUNDLE_NAME = "xrd-indexed"
VERSION = "0.3.0"
SEARCH_MATCH_MEMBER = "xrd-search-match"
L2 = 1.0  # ridge on the standardised coefficients (per example: L2 / n); chosen a priori, not tuned
FOLDS = 5


def fit_combiner(inputs: np.ndarray, labels: np.ndarray, n_classes: int = len(CRYSTAL_SYSTEMS), l2: float = L2):
    """Multinomial logistic regression (L-BFGS) on standardised ``inputs``: a ``LogisticCombiner``."""
    from scipy.optimize import minimize

    from sfn_stream.core.networks import LogisticCombiner

    mean, scale = inputs.mean(axis=0), inputs.std(axis=0) + 1e-6
    z, onehot = (inputs - mean) / scale, np.eye(n_classes)[labels]
    n, d = z.shape

    def loss(w):
        coef, intercept = w[:d * n_classes].reshape(d, n_classes), w[d * n_classes:]
        logits = z @ coef + intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        value = -np.sum(onehot * np.log(p + 1e-12)) / n + 0.5 * l2 * np.sum(coef ** 2) / n
        grad = (p - onehot) / n
        return value, np.concatenate([(z.T @ grad + l2 * coef / n).ravel(), grad.sum(axis=0)])

    result = minimize(loss, np.zeros(d * n_classes + n_classes), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000})
    return LogisticCombiner(result.x[:d * n_classes].reshape(d, n_classes), result.x[d * n_classes:], mean, scale)


def cross_validated(inputs: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities, folds drawn by structure (``groups``: both renderings of one structure stay
    in one fold) and stratified by class."""
    rng = np.random.default_rng(seed)
    structures, first = np.unique(groups, return_index=True)
    label_of = dict(zip(structures, labels[first]))
    fold_of = {}
    for c in range(len(CRYSTAL_SYSTEMS)):
        members = [g for g in structures if label_of[g] == c]
        rng.shuffle(members)
        fold_of.update({g: k % FOLDS for k, g in enumerate(members)})
    fold = np.array([fold_of[g] for g in groups])
    out = np.zeros((len(labels), len(CRYSTAL_SYSTEMS)))
    for k in range(FOLDS):
        out[fold == k] = fit_combiner(inputs[fold != k], labels[fold != k]).probabilities(inputs[fold == k])
    return out


def build_xrd_indexed_bundle(out: str | Path | None = None, *, models: str | Path | None = None,
                             sticks: Path = DEFAULT_STICK_TABLE, splits_dir: Path = paths.SPLITS_DIR,
                             max_val: int | None = None, seed: int = 0, progress: bool = True):
    """Fit the combination on validation and write the bundle beside its member (``models``: their folder)."""
    from sfn_stream.core.networks import (
        XrdIndexed,
        combiner_inputs,
        indexing_features,
        load_bundle,
        models_dir,
        save_bundle,
        xrd_model_from_bundle,
    )

    folder = Path(models or models_dir())
    member = load_bundle(folder / SEARCH_MATCH_MEMBER)
    search = xrd_model_from_bundle(member)
    data = validation_set(sticks, splits_dir, max_val=max_val, seed=seed, progress=progress)
    patterns, y, val = data.patterns, data.labels, data.val
    features = indexing_features(patterns)
    searches = {"": search.probabilities(patterns)}
    if getattr(search, "has_chemistry", False):
        searches["_with_elements"] = search.probabilities(patterns, elements=data.elements)
    combiners, metrics = {}, {}
    for suffix, p_search in searches.items():
        inputs = combiner_inputs(p_search, features)
        combiners[suffix] = fit_combiner(inputs, y)
        held_out = cross_validated(inputs, y, data.structures, seed)
        for k, name in enumerate(data.renderings):
            rows = slice(k * len(val), (k + 1) * len(val))
            metrics[f"val_{name}{suffix}"] = {
                "description": f"formula-disjoint val structures, {name} rendering"
                               f"{', each given its element set' if suffix else ''}: the combination "
                               f"{FOLDS}-fold cross-validated by structure, beside search-match alone",
                "combined_cross_validated": _scores(held_out[rows], y[rows]),
                "search_match": _scores(p_search[rows], y[rows])}
    model = XrdIndexed(search, combiners[""], combiners.get("_with_elements"))
    card = _card(member, metrics, len(val))
    return save_bundle(out or folder / BUNDLE_NAME, card, model.weights())


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    m = probability_metrics(labels, probs, CRYSTAL_SYSTEMS)
    nll = float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))))
    return {**{key: m[key] for key in ("n", "accuracy", "macro_f1", "ece_15_bins")}, "nll": nll}


def _card(member, metrics, n_val) -> dict[str, Any]:
    search = member.card
    return {
        "name": BUNDLE_NAME, "version": VERSION, "kind": "xrd", "created": datetime.date.today().isoformat(),
        "description": "Search-match with metric-indexing evidence: a multinomial logistic regression on the "
                       "search-match log-probabilities and how well cubic, tetragonal, hexagonal and orthorhombic "
                       "cells, lattice centring included, index the first 20 lines and how well their best cells "
                       "fit after refinement (core.spectra.index_pattern), "
                       "fitted on validation (again "
                       "for the ranking with the sample's elements). Space groups: search-match's, rescaled to the "
                       "combined crystal-system probabilities. See docs/xrd-search-match.md.",
        "training_data": {
            "description": "no training of its own beyond the regression: the search-match member with its "
                           "training data; the regression fitted on the formula-disjoint validation structures, "
                           "two renderings each",
            "n_val_formula_disjoint": n_val,
            "member": search.get("training_data", {}).get("splits"),
            "build": "sfn-stream train xrd-indexed",
        },
        "label_sources": search["label_sources"],
        "preprocessing": search["preprocessing"],
        "architecture": {"class": "XrdIndexed",
                         "members": {"search_match": {"bundle": member.path.name, "id": member.id,
                                                      "weights_sha256": member.weights_sha256}},
                         "inputs": "log search-match probabilities (7) + indexing features (25: indexed share, "
                                   "merit (share minus chance) and merit >= 0.8 per lattice family; lines found / 20; "
                                   "per family the best cell's fit after least-squares refinement: share indexed, "
                                   "mean deviation in tolerances, log10 de Wolff M). Lines: local maxima above 4 % "
                                   "of the tallest and 3.5 noise sigmas (core.spectra.noise_sigma)",
                         "l2": L2},
        "tasks": search["tasks"],
        "calibration": {"method": "the regression's own maximum likelihood on validation (it is its calibration)"},
        "metrics": metrics,
        "references": [
            "D. R. Cox, J. R. Stat. Soc. B 20, 215 (1958): the regression analysis of binary sequences",
            "P. M. de Wolff, J. Appl. Cryst. 1, 108 (1968): a simplified criterion for the reliability of a powder "
            "pattern indexing (indexed lines against the lines a cell calculates)",
            "P.-E. Werner, L. Eriksson, M. Westdahl, J. Appl. Cryst. 18, 367 (1985): TREOR, trial cells from "
            "low-index lines",
            *search.get("references", [])[:2],
        ],
        "documentation": "docs/xrd-search-match.md (test figures: sfn-stream evaluate xrd)",
        "limits": [*search.get("limits", []),
                   "indexing tries cubic, tetragonal, hexagonal and orthorhombic cells only (with their Bravais "
                   "centrings), trial cells from the first seven lines taken as reflections of low index; "
                   "trigonal and hexagonal cells index alike (a rhombohedral R centring is evidence, not proof)",
                   "monoclinic cells with beta near 90 deg index as orthorhombic, so monoclinic patterns are moved "
                   "there more often than search-match alone moves them (see docs/xrd-search-match.md)",
                   "lines are the local maxima above 4 % of the tallest and above 3.5 times the pattern's own "
                   "noise sigma (core.spectra.noise_sigma): on a noisy pattern a weak true line can be left out, "
                   "and a pattern whose noise is not white (a smoothed or interpolated scan) has its noise "
                   "underestimated"],
    }

"""``sfn-stream train xrd-ensemble``: search-match and the network as one calibrated PXRD bundle.

Both members must exist (``models/xrd-search-match``: ``sfn-stream train xrd-search-match``;
``models/xrd-crystal-system``: ``sfn-stream train xrd``, trained on the same split files). The network's
weight in the log-linear mix and the temperature are fitted together by NLL on the formula-disjoint
validation structures, rendered as the search-match calibration renders them (the paper's noisy protocol and
the training augmentation), without and with the sample's element set. Figures: ``sfn-stream evaluate xrd``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.offline.metrics import fit_temperature, probability_metrics

from ._xrd import DEFAULT_STICK_TABLE
from ._xrd_search_match import validation_set

BUNDLE_NAME = "xrd-ensemble"
VERSION = "0.1.0"
SEARCH_MATCH_MEMBER = "xrd-search-match"
NETWORK_MEMBER = "xrd-crystal-system"
WEIGHT_GRID = tuple(round(w, 2) for w in np.arange(0.0, 1.0001, 0.05))


def fit_mix(p_search: np.ndarray, p_network: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The network's weight (grid) and the temperature (NLL-optimal for each weight) of the lowest NLL."""
    from sfn_stream.core.networks import mix_log_linear

    labels = np.asarray(labels)
    tried = {}
    for weight in WEIGHT_GRID:
        temperature = fit_temperature(labels, probabilities_at=lambda t, w=weight: mix_log_linear(
            p_search, p_network, w, t))
        probs = mix_log_linear(p_search, p_network, weight, temperature)
        nll = float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))))
        tried[weight] = {"temperature": temperature, "nll": nll,
                         "accuracy": float((probs.argmax(1) == labels).mean())}
    best = min(tried, key=lambda w: tried[w]["nll"])
    return {"network_weight": best, "temperature": round(tried[best]["temperature"], 6),
            "nll": round(tried[best]["nll"], 6),
            "by_weight": {str(w): {k: round(v, 5) for k, v in fit.items()} for w, fit in tried.items()}}


def build_xrd_ensemble_bundle(out: str | Path | None = None, *, models: str | Path | None = None,
                              sticks: Path = DEFAULT_STICK_TABLE, splits_dir: Path = paths.SPLITS_DIR,
                              max_val: int | None = None, seed: int = 0, progress: bool = True):
    """Calibrate the mix on validation and write the bundle beside its members (``models``: their folder)."""
    from sfn_stream.core.networks import (
        XrdEnsemble,
        load_bundle,
        mix_log_linear,
        models_dir,
        save_bundle,
        xrd_model_from_bundle,
    )

    folder = Path(models or models_dir())
    members = {role: load_bundle(folder / name) for role, name in (("search_match", SEARCH_MATCH_MEMBER),
                                                                  ("network", NETWORK_MEMBER))}
    search, network = (xrd_model_from_bundle(members[r]) for r in ("search_match", "network"))
    data = validation_set(sticks, splits_dir, max_val=max_val, seed=seed, progress=progress)
    renderings, patterns, y, elements, val = data.renderings, data.patterns, data.labels, data.elements, data.val
    # every member's probabilities once, for the fit and for the figures of each rendering
    probabilities = {"": (search.probabilities(patterns), network.probabilities(patterns))}
    if getattr(search, "has_chemistry", False):
        probabilities["_with_elements"] = (search.probabilities(patterns, elements=elements), probabilities[""][1])
    fits = {suffix: fit_mix(p_search, p_network, y) for suffix, (p_search, p_network) in probabilities.items()}
    fit, chemistry = fits[""], fits.get("_with_elements")
    ensemble = XrdEnsemble(search, network, network_weight=fit["network_weight"], temperature=fit["temperature"],
                           chemistry={"network_weight": chemistry["network_weight"],
                                      "temperature": chemistry["temperature"]} if chemistry else None)
    metrics = {}
    for k, name in enumerate(renderings):
        rows = slice(k * len(val), (k + 1) * len(val))
        for suffix, (p_search, p_network) in probabilities.items():
            mixed = mix_log_linear(p_search, p_network, fits[suffix]["network_weight"], fits[suffix]["temperature"])
            metrics[f"val_{name}{suffix}"] = {
                "description": f"formula-disjoint val structures, {name} rendering"
                               f"{', each given its element set' if suffix else ''} (used to fit the mix)",
                **{member: _scores(probs[rows], y[rows]) for member, probs in
                   (("ensemble", mixed), ("search_match", p_search), ("network", p_network))}}
    card = _card(members, fit, chemistry, metrics, len(val))
    return save_bundle(out or folder / BUNDLE_NAME, card, ensemble.weights())


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    m = probability_metrics(labels, probs, CRYSTAL_SYSTEMS)
    return {key: m[key] for key in ("n", "accuracy", "macro_f1", "ece_15_bins")}


def _card(members, fit, chemistry, metrics, n_val) -> dict[str, Any]:
    search = members["search_match"].card
    return {
        "name": BUNDLE_NAME, "version": VERSION, "kind": "xrd", "created": datetime.date.today().isoformat(),
        "description": "Search-match and the CNN-Transformer network on the same pattern, combined as a product of "
                       "experts: p ~ exp(((1 - w) log p_search + w log p_network) / T), w and T fitted on "
                       "validation by NLL (with the sample's elements, search-match ranks by chemistry too and w, T "
                       "are fitted again). Space groups: search-match's. See docs/xrd-search-match.md.",
        "training_data": {
            "description": "no training of its own: the two member bundles (architecture.members) with their "
                           "training data; the mix fitted on the formula-disjoint validation structures",
            "n_val_formula_disjoint": n_val,
            "members": {role: b.card.get("training_data", {}).get("splits") for role, b in members.items()},
            "build": "sfn-stream train xrd-ensemble",
        },
        "label_sources": search["label_sources"],
        "preprocessing": search["preprocessing"],
        "architecture": {"class": "XrdEnsemble",
                         "members": {role: {"bundle": b.path.name, "id": b.id, "weights_sha256": b.weights_sha256}
                                     for role, b in members.items()},
                         "n_parameters": members["network"].card["architecture"].get("n_parameters")},
        "tasks": search["tasks"],
        "calibration": {"method": "the network's weight w (grid 0..1 by 0.05) and T (NLL-optimal per w) with the "
                                  "lowest validation NLL; two renderings of each formula-disjoint val structure",
                        **fit, "chemistry": chemistry},
        "metrics": metrics,
        "references": [
            "G. E. Hinton, Neural Computation 14, 1771 (2002): products of experts",
            "C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, ICML 2017: temperature fitted on validation by NLL",
            *search.get("references", [])[:2],
        ],
        "documentation": "docs/xrd-search-match.md (test figures: sfn-stream evaluate xrd)",
        "limits": [*search.get("limits", []),
                   "the network was trained on simulated patterns of the training split; it has no space-group head"],
    }

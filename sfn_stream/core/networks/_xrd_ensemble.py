"""Search-match and a network on one pattern, combined: a product of experts (Hinton 2002).

The two err in different places: search-match knows structure types its library holds and misses the
others; the network has learned metric rules from renderings of every training structure but resolves
peaks coarsely. Their crystal-system probabilities are mixed log-linearly,
``p ~ exp(((1 - w) log p_search + w log p_network) / T)``, with the network's weight ``w`` and the temperature
``T`` fitted together on the validation split by negative log-likelihood (separately for the ranking with the
sample's elements). Space groups come from search-match alone (the network has no space-group head).

The bundle holds no weights of its own beyond these numbers: its card names the two member bundles
(sibling folders under ``models/``) with their weights' SHA-256, and loading refuses members that changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._bundle import BundleError, ModelBundle, load_member
from ._xrd_indexed import INDEXED_CLASS, XrdIndexed
from ._xrd_search import SEARCH_MATCH_CLASS, XrdSearchMatch, prediction_rows

ENSEMBLE_CLASS = "XrdEnsemble"
_FLOOR = 1e-6  # probabilities below this are taken as this in the log mix (a member's hard zero is not a veto)


def mix_log_linear(p_search: np.ndarray, p_network: np.ndarray, network_weight: float,
                   temperature: float) -> np.ndarray:
    """(n, k) probabilities from the two members' (n, k) probabilities."""
    logits = ((1 - network_weight) * np.log(np.maximum(p_search, _FLOOR))
              + network_weight * np.log(np.maximum(p_network, _FLOOR))) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


class XrdEnsemble:
    """The interface of :class:`XrdSearchMatch` (``probabilities``, ``space_group_probabilities``, ``predict``,
    ``elements=``); load with :meth:`from_bundle`."""

    has_space_group = True

    def __init__(self, search, network, *, network_weight: float, temperature: float,
                 chemistry: dict[str, float] | None = None, bundle_id: str = ""):
        self.search, self.network = search, network
        self.network_weight, self.temperature = float(network_weight), float(temperature)
        self.chemistry = dict(chemistry) if chemistry else None
        self.classes = tuple(search.classes)
        if tuple(network.classes) != self.classes:
            raise BundleError(f"members disagree on the crystal-system classes: {self.classes} vs {network.classes}")
        self.bundle_id = bundle_id

    @property
    def has_chemistry(self) -> bool:
        return self.chemistry is not None and bool(getattr(self.search, "has_chemistry", False))

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> XrdEnsemble:
        """The members from the sibling bundle folders the card names, checked against its weight hashes."""
        key = (str(bundle.path), bundle.weights_sha256)
        if key not in _ENSEMBLES:
            members = {role: xrd_model_from_bundle(load_member(bundle, role, "sfn-stream train xrd-ensemble"))
                       for role in bundle.card["architecture"]["members"]}
            weights = bundle.load_weights()
            chemistry = ({"network_weight": float(weights["chemistry_network_weight"]),
                          "temperature": float(weights["chemistry_temperature"])}
                         if "chemistry_network_weight" in weights else None)
            _ENSEMBLES[key] = cls(members["search_match"], members["network"],
                                  network_weight=float(weights["network_weight"]),
                                  temperature=float(weights["temperature"]), chemistry=chemistry, bundle_id=bundle.id)
        return _ENSEMBLES[key]

    def weights(self) -> dict[str, Any]:
        import torch

        out = {"network_weight": torch.tensor(self.network_weight, dtype=torch.float64),
               "temperature": torch.tensor(self.temperature, dtype=torch.float64)}
        if self.chemistry:
            out["chemistry_network_weight"] = torch.tensor(self.chemistry["network_weight"], dtype=torch.float64)
            out["chemistry_temperature"] = torch.tensor(self.chemistry["temperature"], dtype=torch.float64)
        return out

    def probabilities(self, patterns: np.ndarray, elements=None) -> np.ndarray:
        """(n, XRD_Q_POINTS) -> (n, 7) crystal-system probabilities (``elements``: the sample's, optional)."""
        return self.probabilities_and_space_groups(patterns, elements)[0]

    def probabilities_and_space_groups(self, patterns: np.ndarray, elements=None) -> tuple[np.ndarray, np.ndarray]:
        """The mixed crystal-system probabilities and search-match's space groups, from one search."""
        with_elements = elements is not None and self.has_chemistry
        p_search, groups = self.search.probabilities_and_space_groups(
            patterns, elements=elements if with_elements else None)
        p_network = self.network.probabilities(patterns)
        weight, temperature = ((self.chemistry["network_weight"], self.chemistry["temperature"]) if with_elements
                               else (self.network_weight, self.temperature))
        return mix_log_linear(p_search, p_network, weight, temperature), groups

    def space_group_probabilities(self, patterns: np.ndarray, elements=None) -> np.ndarray:
        return self.search.space_group_probabilities(patterns, elements=elements if self.has_chemistry else None)

    def predict(self, pattern: np.ndarray, elements=None) -> dict[str, Any]:
        return self.predict_batch(np.asarray(pattern)[None, :], elements)[0]

    def predict_batch(self, patterns: np.ndarray, elements=None) -> list[dict[str, Any]]:
        """Per pattern: crystal-system probabilities (all classes) and the five most probable space groups."""
        return prediction_rows(self.classes, *self.probabilities_and_space_groups(patterns, elements))


def xrd_model_from_bundle(bundle: ModelBundle):
    """The inference object of a PXRD bundle by the card's architecture class: search-match, this ensemble,
    search-match with indexing evidence, or a network."""
    kind = bundle.card.get("architecture", {}).get("class")
    if kind == SEARCH_MATCH_CLASS:
        return XrdSearchMatch.from_bundle(bundle)
    if kind == ENSEMBLE_CLASS:
        return XrdEnsemble.from_bundle(bundle)
    if kind == INDEXED_CLASS:
        return XrdIndexed.from_bundle(bundle)
    from ._xrd_net import XrdClassifier

    return XrdClassifier.from_bundle(bundle)


_ENSEMBLES: dict[tuple[str, str], XrdEnsemble] = {}

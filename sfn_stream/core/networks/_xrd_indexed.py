"""Search-match with metric-indexing evidence: a calibrated combination of the two.

Search-match compares profiles, so an isostructural compound whose cell is stretched along one axis (c/a
changed) looks unlike its reference and votes go astray; indexing (``core.spectra.index_pattern``) asks
instead whether a cubic, tetragonal, hexagonal or orthorhombic cell explains the line positions, whatever
the intensities. The two are combined by a multinomial logistic regression (Cox 1958) on the search-match
log-probabilities and the indexing features, fitted on the formula-disjoint validation structures
(separately for the ranking with the sample's elements). Space groups: search-match's, reweighted so that
each crystal system's share matches the combined probability.

The bundle's weights are the regression's coefficients only; its card names the search-match member
(sibling folder under ``models/``) with its weights' SHA-256, and loading refuses a member that changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._bundle import BundleError, ModelBundle, load_member
from ._xrd_peaks import N_SPACE_GROUPS
from ._xrd_search import SEARCH_MATCH_CLASS, XrdSearchMatch, prediction_rows

INDEXED_CLASS = "XrdIndexed"
_FLOOR = 1e-6  # search-match probabilities below this enter the regression as this
# the first space group of each crystal system (International Tables numbering), in CRYSTAL_SYSTEMS order
_FIRST_SPACE_GROUP = (1, 3, 16, 75, 143, 168, 195)


def space_group_systems() -> np.ndarray:
    """(230,) crystal-system index of space groups 1..230."""
    return np.searchsorted(np.array(_FIRST_SPACE_GROUP), np.arange(1, N_SPACE_GROUPS + 1), side="right") - 1


class LogisticCombiner:
    """Softmax(((x - mean) / scale) @ coef + intercept): multinomial logistic regression on standardised inputs."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray):
        self.coef, self.intercept = np.asarray(coef, float), np.asarray(intercept, float)
        self.mean, self.scale = np.asarray(mean, float), np.asarray(scale, float)

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        logits = ((np.asarray(inputs, float) - self.mean) / self.scale) @ self.coef + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        out = np.exp(logits)
        return out / out.sum(axis=1, keepdims=True)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": self.intercept, "mean": self.mean, "scale": self.scale}


def combiner_inputs(p_search: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The regression's inputs: search-match log-probabilities beside the indexing features."""
    return np.hstack([np.log(np.maximum(p_search, _FLOOR)), features])


def indexing_evidence(patterns: np.ndarray) -> list:
    """One :class:`~sfn_stream.core.spectra.IndexingEvidence` per pattern."""
    from sfn_stream.core.spectra import index_pattern

    return [index_pattern(row) for row in np.asarray(patterns)]


def indexing_features(patterns: np.ndarray) -> np.ndarray:
    return np.stack([evidence.features() for evidence in indexing_evidence(patterns)])


class XrdIndexed:
    """The interface of :class:`XrdSearchMatch` (``probabilities``, ``space_group_probabilities``, ``predict``,
    ``elements=``); load with :meth:`from_bundle`."""

    has_space_group = True

    def __init__(self, search, combiner: LogisticCombiner, chemistry: LogisticCombiner | None = None,
                 bundle_id: str = ""):
        self.search, self.combiner, self.chemistry = search, combiner, chemistry
        self.classes = tuple(search.classes)
        self.bundle_id = bundle_id
        self._systems = space_group_systems()

    @property
    def has_chemistry(self) -> bool:
        return self.chemistry is not None and bool(getattr(self.search, "has_chemistry", False))

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> XrdIndexed:
        key = (str(bundle.path), bundle.weights_sha256)
        if key not in _INDEXED:
            member = load_member(bundle, "search_match", "sfn-stream train xrd-indexed")
            if member.card.get("architecture", {}).get("class") != SEARCH_MATCH_CLASS:
                raise BundleError(f"{bundle.id}: its member {member.id} is not a search-match bundle")
            weights = bundle.load_weights()

            def combiner(prefix: str) -> LogisticCombiner | None:
                if f"{prefix}coef" not in weights:
                    return None
                return LogisticCombiner(*(weights[f"{prefix}{name}"].numpy()
                                          for name in ("coef", "intercept", "mean", "scale")))

            _check_inputs(bundle, weights["mean"].numel())
            _INDEXED[key] = cls(XrdSearchMatch.from_bundle(member), combiner(""), combiner("chemistry_"),
                                bundle_id=bundle.id)
        return _INDEXED[key]

    def weights(self) -> dict[str, Any]:
        import torch

        out = {name: torch.from_numpy(value) for name, value in self.combiner.arrays().items()}
        if self.chemistry is not None:
            out.update({f"chemistry_{name}": torch.from_numpy(value)
                        for name, value in self.chemistry.arrays().items()})
        return out

    def probabilities(self, patterns: np.ndarray, elements=None) -> np.ndarray:
        """(n, XRD_Q_POINTS) -> (n, 7) crystal-system probabilities (``elements``: the sample's, optional)."""
        return self.probabilities_and_space_groups(patterns, elements)[0]

    def space_group_probabilities(self, patterns: np.ndarray, elements=None) -> np.ndarray:
        return self.probabilities_and_space_groups(patterns, elements)[1]

    def probabilities_and_space_groups(self, patterns: np.ndarray, elements=None) -> tuple[np.ndarray, np.ndarray]:
        """Combined crystal-system probabilities, and search-match's space groups rescaled to them."""
        return self._predicted(patterns, elements)[:2]

    def _predicted(self, patterns: np.ndarray, elements=None) -> tuple[np.ndarray, np.ndarray, list]:
        """(combined probabilities, rescaled space groups, indexing evidence per pattern)."""
        with_elements = elements is not None and self.has_chemistry
        p_search, groups = self.search.probabilities_and_space_groups(
            patterns, elements=elements if with_elements else None)
        evidence = indexing_evidence(patterns)
        combiner = self.chemistry if with_elements else self.combiner
        combined = combiner.probabilities(combiner_inputs(p_search, np.stack([e.features() for e in evidence])))
        return combined, self._rescaled(groups, p_search, combined), evidence

    def _rescaled(self, groups: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Each space group's probability times (combined / search-match) probability of its crystal system."""
        factor = after / np.maximum(before, _FLOOR)
        out = groups * factor[:, self._systems]
        return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)

    def predict(self, pattern: np.ndarray, elements=None) -> dict[str, Any]:
        return self.predict_batch(np.asarray(pattern)[None, :], elements)[0]

    def predict_batch(self, patterns: np.ndarray, elements=None) -> list[dict[str, Any]]:
        """Per pattern: crystal-system probabilities (all classes), the five most probable space groups, and the
        indexing evidence behind them (``indexing``: lines used, share indexed and merit per lattice family)."""
        systems, groups, evidence = self._predicted(patterns, elements)
        rows = prediction_rows(self.classes, systems, groups)
        for row, found in zip(rows, evidence):
            row["indexing"] = found.to_dict()
        return rows


_INDEXED: dict[tuple[str, str], XrdIndexed] = {}


def _check_inputs(bundle: ModelBundle, n_inputs: int) -> None:
    """A bundle's regression fits one layout of the indexing features: refuse one fitted on another."""
    from sfn_stream.core.spectra import N_INDEXING_FEATURES

    expected = len(_FIRST_SPACE_GROUP) + N_INDEXING_FEATURES  # one search-match log-probability per system
    if n_inputs != expected:
        raise BundleError(f"{bundle.id}: its regression takes {n_inputs} inputs, but this version's indexing "
                          f"gives {expected} ({len(_FIRST_SPACE_GROUP)} search-match + {N_INDEXING_FEATURES}); "
                          "rebuild it with 'sfn-stream train xrd-indexed'")

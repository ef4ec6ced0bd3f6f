"""Search-match for powder XRD: a calibrated k-nearest-neighbour classifier over a reference library.

What XRD users know as search-match (Hanawalt 1938; ICDD PDF search-match): compare the measured
pattern with every reference pattern of a library and rank the references by similarity. Here the
library is the training split of the stick table, each reference a clean simulated profile on the
classifier's Q grid (made by ``sfn_stream.offline.training._xrd_search_match``, stored in the
bundle as float16). For a query pattern (``preprocess_xrd`` output):

1. the pattern and references are Gaussian-blurred (peak-position tolerance) and subsampled;
2. the query is dilated in Q by a set of factors 1 + s (isostructural compounds differ mostly by a
   cell scale, which moves every peak by the same factor in Q) and compared with every reference by
   the cosine over the query's measured Q interval only (a reference's peaks outside the measured
   range cost nothing); a reference's similarity is its best over the dilations (the best
   ``refine_top`` references are also tried at the half steps between them);
3. the k most similar references vote for their crystal system (and space group) with weights
   exp(similarity / T), mixed with a small share of the training prior; k, T and that share are fitted
   on the validation split by negative log-likelihood (kNN probability calibration as in Guo et al.
   2017 fit temperatures).

Optional chemistry (``elements=``): at a beamline the sample's ELEMENTS are usually known (XRF,
synthesis) though not its stoichiometry or phase, and search-match software filters or ranks its
database by chemistry. Given the sample's element set, a reference's ranking score becomes
similarity + lambda * chemistry similarity, the cosine of the two element-group presence vectors
(:data:`ELEMENT_GROUPS`: alkali, alkaline earth, 3d, 4d, 5d, rare earth, ... metals, O, S/Se/Te,
halogen, N, C, P, H); only the element set is used, never amounts. lambda and its own k, T and
prior share are fitted on the validation split by NLL like the others; without elements the
prediction is exactly the chemistry-free one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.spectra import XRD_Q_MIN, XRD_Q_POINTS, XRD_Q_STEP, XrdInputError

from ._bundle import ModelBundle
from ._xrd_peaks import N_SPACE_GROUPS

SEARCH_MATCH_CLASS = "XrdSearchMatch"
TOP_SPACE_GROUPS = 5  # space groups a prediction reports

# Element groups of the chemistry term (presence of each; an element outside them counts as "other").
ELEMENT_GROUPS = {
    "alkali": "Li Na K Rb Cs Fr",
    "alkaline_earth": "Be Mg Ca Sr Ba Ra",
    "3d_metal": "Sc Ti V Cr Mn Fe Co Ni Cu Zn",
    "4d_metal": "Y Zr Nb Mo Tc Ru Rh Pd Ag Cd",
    "5d_metal": "Hf Ta W Re Os Ir Pt Au Hg",
    "rare_earth": "La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu",
    "actinide": "Ac Th Pa U Np Pu Am Cm Bk Cf Es",
    "p_block_metal": "Al Ga In Sn Tl Pb Bi Po",
    "metalloid": "B Si Ge As Sb",
    "O": "O", "chalcogen": "S Se Te", "halogen": "F Cl Br I At", "N": "N", "C": "C", "P": "P", "H": "H",
}
_GROUP_NAMES = (*ELEMENT_GROUPS, "other")
_GROUP_OF = {symbol: name for name, symbols in ELEMENT_GROUPS.items() for symbol in symbols.split()}


def element_group_vector(elements) -> np.ndarray:
    """Unit vector of element-group presence (len(ELEMENT_GROUPS) + 1) of an element set (symbols)."""
    from pymatgen.core import Element

    symbols = {str(e).strip() for e in elements}
    unknown = sorted(s for s in symbols if not Element.is_valid_symbol(s))
    if not symbols or unknown:
        raise XrdInputError(f"elements must be element symbols (e.g. ['Mn', 'O']); got {sorted(symbols)}")
    vector = np.zeros(len(_GROUP_NAMES), dtype=np.float32)
    for symbol in symbols:
        vector[_GROUP_NAMES.index(_GROUP_OF.get(symbol, "other"))] = 1
    return vector / np.linalg.norm(vector)


def blur_and_subsample(patterns: np.ndarray, blur_points: float, subsample: int) -> np.ndarray:
    """Gaussian blur (sigma in grid points) then every ``subsample``-th point; float32 (n, points)."""
    from scipy.ndimage import gaussian_filter1d

    patterns = np.clip(np.asarray(patterns, dtype=np.float32), 0, None)
    blurred = gaussian_filter1d(patterns, blur_points, axis=-1, mode="constant") if blur_points > 0 else patterns
    return np.ascontiguousarray(blurred[..., ::subsample], dtype=np.float32)


class XrdSearchMatch:
    """kNN search-match over reference profiles; the interface of :class:`XrdClassifier` (``probabilities``,
    ``space_group_probabilities``, ``predict``), load with :meth:`from_bundle`."""

    has_space_group = True

    def __init__(self, references: np.ndarray, labels: np.ndarray, spacegroups: np.ndarray, *, blur_points: float,
                 subsample: int, dilations, k: int, temperature: float, prior_share: float, refine_top: int = 0,
                 classes: tuple[str, ...] = CRYSTAL_SYSTEMS, reference_ids=None, bundle_id: str = "",
                 reference_elements=None, chemistry: dict | None = None):
        import torch

        references = np.asarray(references, dtype=np.float32)
        if references.ndim != 2 or references.shape[1] != len(range(0, XRD_Q_POINTS, subsample)):
            raise XrdInputError(f"reference profiles of shape {references.shape} do not match subsample {subsample}")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spacegroups = np.asarray(spacegroups, dtype=np.int64)
        if not (len(self.labels) == len(self.spacegroups) == len(references)) or len(references) < 1:
            raise XrdInputError("references, labels and space groups must be non-empty and of equal length")
        self.blur_points, self.subsample = float(blur_points), int(subsample)
        self.dilations = np.asarray(dilations, dtype=float)
        self.refine_top = int(refine_top)
        self.k = int(min(k, len(references)))
        self.temperature, self.prior_share = float(temperature), float(prior_share)
        self.classes = tuple(classes)
        self.reference_ids = list(reference_ids) if reference_ids is not None else None
        self.bundle_id = bundle_id
        self._references = torch.from_numpy(references)
        # cumulative squared intensity: a reference's norm over any Q interval in O(1)
        squares = np.cumsum(references.astype(float) ** 2, axis=1)
        self._cumulative = np.concatenate([np.zeros((len(references), 1)), squares], axis=1)
        self._norms: dict[tuple[bytes, bytes], np.ndarray] = {}
        self.prior = np.bincount(self.labels, minlength=len(self.classes)) / len(self.labels)
        self.sg_prior = np.bincount(self.spacegroups - 1, minlength=N_SPACE_GROUPS) / len(self.spacegroups)
        self._grid = np.arange(references.shape[1], dtype=float)
        self._origin = XRD_Q_MIN / (XRD_Q_STEP * self.subsample)  # Q = 0 in subsampled grid steps
        # chemistry (optional): each reference's element set ("Mn O"), lambda and the calibration used with it
        self.reference_elements = None
        self._reference_groups = None
        if reference_elements is not None:
            if len(reference_elements) != len(references):
                raise XrdInputError("one element set per reference is needed")
            self.reference_elements = [" ".join(sorted(_symbols(e))) for e in reference_elements]
            self._reference_groups = np.stack([element_group_vector(e.split()) for e in self.reference_elements])
        self.chemistry = None
        if chemistry is not None:
            if self.reference_elements is None:
                raise XrdInputError("a chemistry calibration needs the references' element sets")
            self.chemistry = {"weight": float(chemistry["weight"]), "k": int(min(chemistry["k"], len(references))),
                              "temperature": float(chemistry["temperature"]),
                              "prior_share": float(chemistry["prior_share"])}

    @property
    def has_chemistry(self) -> bool:
        """Whether predictions can use the sample's element set (``elements=``)."""
        return self.chemistry is not None

    @classmethod
    def from_profiles(cls, profiles: np.ndarray, labels, spacegroups, *, blur_points: float, subsample: int,
                      **kwargs) -> XrdSearchMatch:
        """From reference profiles on ``XRD_Q_GRID`` (blurred and subsampled here)."""
        return cls(blur_and_subsample(profiles, blur_points, subsample), labels, spacegroups,
                   blur_points=blur_points, subsample=subsample, **kwargs)

    # --- bundle ----------------------------------------------------------------------------------

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> XrdSearchMatch:
        """Build once per bundle (cached by path and weights hash)."""
        key = (str(bundle.path), bundle.weights_sha256)
        if key not in _SEARCHERS:
            weights = bundle.load_weights()
            kwargs = bundle.card["architecture"]["kwargs"]
            _SEARCHERS[key] = cls(
                weights["references"].float().numpy(), weights["labels"].numpy(), weights["spacegroups"].numpy(),
                blur_points=kwargs["blur_points"], subsample=kwargs["subsample"], dilations=kwargs["dilations"],
                refine_top=kwargs.get("refine_top", 0),
                k=int(weights["k"]), temperature=float(weights["temperature"]),
                prior_share=float(weights["prior_share"]),
                classes=tuple(bundle.card["tasks"]["crystal_system"]["classes"]),
                reference_ids=weights.get("reference_ids"), bundle_id=bundle.id,
                reference_elements=weights.get("reference_elements"),
                chemistry={name: float(weights[f"chemistry_{name}"])
                           for name in ("weight", "k", "temperature", "prior_share")}
                if "chemistry_weight" in weights else None)
        return _SEARCHERS[key]

    def weights(self) -> dict[str, Any]:
        """What ``save_bundle`` stores (references as float16)."""
        import torch

        out = {"references": self._references.half(), "labels": torch.from_numpy(self.labels),
               "spacegroups": torch.from_numpy(self.spacegroups), "k": torch.tensor(self.k),
               "temperature": torch.tensor(self.temperature), "prior_share": torch.tensor(self.prior_share)}
        if self.reference_ids is not None:
            out["reference_ids"] = list(self.reference_ids)
        if self.reference_elements is not None:
            out["reference_elements"] = list(self.reference_elements)
        if self.chemistry is not None:
            out.update({f"chemistry_{name}": torch.tensor(value, dtype=torch.int64 if name == "k" else torch.float64)
                        for name, value in self.chemistry.items()})
        return out

    # --- search ----------------------------------------------------------------------------------

    def similarities(self, patterns: np.ndarray, elements=None, chemistry_weight: float | None = None) -> np.ndarray:
        """(n, XRD_Q_POINTS) -> (n, n_references): best masked cosine over the dilations; with ``elements``
        (one element set for every pattern, or one per pattern) the ranking score similarity + lambda *
        chemistry similarity (lambda: the fitted one unless ``chemistry_weight`` is given)."""
        patterns = self._checked(patterns)
        chemistry = self.chemistry_similarities(elements, len(patterns))
        if chemistry is None:
            return np.stack([self._similarity(row) for row in patterns])
        weight = self._chemistry_weight(chemistry_weight)
        return np.stack([self._similarity(row, weight * c) for row, c in zip(patterns, chemistry)])

    def nearest(self, patterns: np.ndarray, k: int | None = None, elements=None,
                chemistry_weight: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of the ``k`` (default: the fitted k) best-scoring references, best first."""
        if k is None:
            k = self.chemistry["k"] if elements is not None and self.chemistry else self.k
        return _top_k(self.similarities(patterns, elements, chemistry_weight), k)

    def chemistry_similarities(self, elements, n: int) -> np.ndarray | None:
        """(n, n_references) cosine of element-group presence vectors, or None without ``elements``.
        ``elements``: one element set (symbols) for all ``n`` patterns, or a sequence of ``n`` sets."""
        if elements is None:
            return None
        if self._reference_groups is None:
            raise XrdInputError("this search-match bundle stores no reference element sets (rebuild it to use elements)")
        if isinstance(elements, str):
            raise XrdInputError("give elements as symbols (['Mn', 'O']), not as one string")
        elements = list(elements)
        if elements and all(isinstance(e, str) for e in elements):
            return np.repeat((self._reference_groups @ element_group_vector(elements))[None, :], n, axis=0)
        if len(elements) != n:
            raise XrdInputError(f"{len(elements)} element sets for {n} patterns")
        queries = np.stack([element_group_vector(_symbols(e)) for e in elements])
        return queries @ self._reference_groups.T

    def _chemistry_weight(self, weight: float | None) -> float:
        if weight is not None:
            return float(weight)
        if self.chemistry is None:
            raise XrdInputError("this search-match bundle has no chemistry calibration (rebuild it to use elements)")
        return self.chemistry["weight"]

    def _similarity(self, pattern: np.ndarray, bonus: np.ndarray | None = None) -> np.ndarray:
        query = blur_and_subsample(pattern[None, :], self.blur_points, self.subsample)[0]
        interval = _measured_interval(pattern, self.subsample)
        best = self._best_over(query, interval, self.dilations)
        if bonus is not None:
            best += bonus
        if self.refine_top and len(self.dilations) > 1:  # half steps, for the best candidates (by score) only
            top = np.argpartition(-best, min(self.refine_top, len(best)) - 1)[:self.refine_top]
            halves = 0.5 * (self.dilations[1:] + self.dilations[:-1])
            refined = self._best_over(query, interval, halves, top)
            best[top] = np.maximum(best[top], refined if bonus is None else refined + bonus[top])
        return best

    def _best_over(self, query: np.ndarray, interval: tuple[int, int], dilations: np.ndarray,
                   rows: np.ndarray | None = None) -> np.ndarray:
        """Best cosine over ``dilations`` of the query with the references ``rows`` (default: all)."""
        import torch

        first, last = interval
        scale = 1 + dilations
        # the query seen at Q * (1 + s): matches references whose cell is (1 + s) times the query's
        sources = (self._grid[None, :] + self._origin) * scale[:, None] - self._origin
        dilated = np.stack([np.interp(src, self._grid, query, left=0.0, right=0.0) for src in sources])
        lo = np.clip(np.ceil((first + self._origin) / scale - self._origin), 0, len(self._grid) - 1).astype(int)
        hi = np.maximum(np.clip(np.floor((last + self._origin) / scale - self._origin), 0,
                                len(self._grid) - 1).astype(int), lo)
        reference_norms = self._reference_norms(lo, hi)  # (n_ref, n_dil)
        if rows is not None:
            reference_norms = reference_norms[rows]
        query_norms = np.maximum(np.linalg.norm(dilated, axis=1), 1e-12)
        references = self._references if rows is None else self._references[torch.from_numpy(rows)]
        with torch.inference_mode():
            dots = (references @ torch.from_numpy(dilated.astype(np.float32)).T).numpy()  # (n_ref, n_dil)
        return (dots / reference_norms / query_norms[None, :]).max(axis=1)

    def _reference_norms(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Every reference's norm over each dilation's interval [lo, hi]: kept for the next frame, which at a
        beamline nearly always covers the same Q range (a few frames' worth of ranges are kept)."""
        key = (lo.tobytes(), hi.tobytes())
        norms = self._norms.get(key)
        if norms is None:
            norms = np.sqrt(np.maximum(self._cumulative[:, hi + 1] - self._cumulative[:, lo], 1e-12))
            if len(self._norms) >= 8:
                self._norms.clear()
            self._norms[key] = norms
        return norms

    # --- probabilities ---------------------------------------------------------------------------

    def probabilities(self, patterns: np.ndarray, elements=None) -> np.ndarray:
        """(n, XRD_Q_POINTS) -> (n, 7) calibrated crystal-system probabilities (``elements``: the sample's
        element set, optional)."""
        return self._both(patterns, elements)[0]

    def space_group_probabilities(self, patterns: np.ndarray, elements=None) -> np.ndarray:
        """(n, XRD_Q_POINTS) -> (n, 230) probabilities; column k is space group k + 1."""
        return self._both(patterns, elements)[1]

    def probabilities_and_space_groups(self, patterns: np.ndarray, elements=None) -> tuple[np.ndarray, np.ndarray]:
        """Crystal-system (n, 7) and space-group (n, 230) probabilities from one search."""
        return self._both(patterns, elements)

    def _both(self, patterns, elements):
        return self.votes(*self.nearest(patterns, elements=elements), chemistry=elements is not None)

    def votes(self, indices: np.ndarray, similarities: np.ndarray, k: int | None = None,
              temperature: float | None = None, prior_share: float | None = None,
              chemistry: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Crystal-system and space-group probabilities from the neighbours (the fitted k, T, share by default;
        those fitted with the chemistry term when ``chemistry``)."""
        fitted = self.chemistry if chemistry and self.chemistry else \
            {"k": self.k, "temperature": self.temperature, "prior_share": self.prior_share}
        k, temperature = k or fitted["k"], temperature or fitted["temperature"]
        share = fitted["prior_share"] if prior_share is None else prior_share
        indices, similarities = indices[:, :k], similarities[:, :k]
        weights = np.exp((similarities - similarities[:, :1]) / temperature)
        weights /= weights.sum(axis=1, keepdims=True)
        rows = np.repeat(np.arange(len(indices)), indices.shape[1])
        systems = np.zeros((len(indices), len(self.classes)))
        np.add.at(systems, (rows, self.labels[indices].ravel()), weights.ravel())
        groups = np.zeros((len(indices), N_SPACE_GROUPS))
        np.add.at(groups, (rows, self.spacegroups[indices].ravel() - 1), weights.ravel())
        return (1 - share) * systems + share * self.prior, (1 - share) * groups + share * self.sg_prior

    def predict(self, pattern: np.ndarray, elements=None) -> dict[str, Any]:
        return self.predict_batch(np.asarray(pattern)[None, :], elements)[0]

    def predict_batch(self, patterns: np.ndarray, elements=None) -> list[dict[str, Any]]:
        """Per pattern: crystal-system probabilities (all classes) and the five most probable space groups.
        ``elements``: the sample's element set (symbols), used when given (see the module docstring)."""
        return prediction_rows(self.classes, *self._both(patterns, elements))

    @staticmethod
    def _checked(patterns: np.ndarray) -> np.ndarray:
        patterns = np.asarray(patterns, dtype=np.float32)
        if patterns.ndim != 2 or patterns.shape[1] != XRD_Q_POINTS:
            raise XrdInputError(
                f"expected pattern(s) on XRD_Q_GRID ({XRD_Q_POINTS} points), got shape {patterns.shape}; "
                "run sfn_stream.core.spectra.preprocess_xrd first")
        if not np.isfinite(patterns).all():
            raise XrdInputError("pattern contains NaN or inf; preprocess_xrd output is always finite")
        if not (patterns > 0).any(axis=1).all():
            raise XrdInputError("a pattern is all zeros: nothing to match (preprocess_xrd marks such a scan unusable)")
        return patterns


def prediction_rows(classes, systems: np.ndarray, groups: np.ndarray) -> list[dict[str, Any]]:
    """Per pattern: crystal-system probabilities (all classes) and the five most probable space groups."""
    out = []
    for p, g in zip(systems, groups):
        top = np.argsort(-g, kind="stable")[:TOP_SPACE_GROUPS]
        out.append({"crystal_system": {"classes": list(classes), "probabilities": p.tolist()},
                    "space_group": {"classes": [str(int(i) + 1) for i in top],
                                    "probabilities": [float(g[i]) for i in top]}})
    return out


def _measured_interval(pattern: np.ndarray, subsample: int) -> tuple[int, int]:
    """First and last non-zero point of a preprocessed pattern, in subsampled grid steps (zeros outside the
    measured range are what preprocess_xrd writes; a zero stretch at an edge inside it is taken as unmeasured)."""
    nonzero = np.flatnonzero(pattern > 0)
    return int(nonzero[0]) // subsample, int(nonzero[-1]) // subsample


def _symbols(elements) -> list[str]:
    """Element symbols of a set given as symbols or as one space/comma-separated string ("Mn O")."""
    if isinstance(elements, str):
        return [s for s in elements.replace(",", " ").split() if s]
    return [str(s) for s in elements]


def _top_k(similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, similarities.shape[1])
    part = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(similarities, part, 1), axis=1, kind="stable")
    indices = np.take_along_axis(part, order, 1)
    return indices, np.take_along_axis(similarities, indices, 1)


_SEARCHERS: dict[tuple[str, str], XrdSearchMatch] = {}

"""Predictors: preprocessing + a model bundle -> :class:`Prediction`.

They are what the CLI and the Bluesky plugin call, through the model registry (``registry``),
which loads each bundle once per process. Every prediction carries the bundle id, the
preprocessing parameters and the quality flags of the scan it came from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfn_stream.core.networks import COMPOSITION_UNKNOWN, load_bundle, models_dir

from ._composition import element_set, parse_elements
from ._results import ClassPrediction, Prediction, ValuePrediction

XANES_BUNDLE = "xanes-specfusion"
XRD_BUNDLE = "xrd-indexed"  # search-match + indexing: at or above search-match on every test set (docs/xrd-search-match.md)


class PredictorError(ValueError):
    """A request no model can answer (unsupported absorber, unknown element ...)."""


def _limit_torch_threads() -> None:
    """One intra-op thread unless $SFN_TORCH_THREADS says otherwise: single spectra are tiny, and on a
    busy 2-core machine two threads made one PXRD prediction 15-30 times slower than one."""
    import torch

    torch.set_num_threads(int(os.environ.get("SFN_TORCH_THREADS", "1")))


def _status(flags: Sequence[str]) -> str:
    return "flagged" if flags else "ok"


class XanesPredictor:
    """Oxidation state, coordination number (per absorber) and density from a K-edge scan."""

    def __init__(self, bundle_path: str | Path | None = None):
        from sfn_stream.core.networks import XanesEnsemble

        _limit_torch_threads()
        self.bundle = load_bundle(bundle_path or models_dir() / XANES_BUNDLE)
        self.ensemble = XanesEnsemble.from_bundle(self.bundle)

    @property
    def supported_absorbers(self) -> tuple[str, ...]:
        return tuple(self.ensemble.supported_absorbers)

    @property
    def knows_unknown_composition(self) -> bool:
        """Whether the bundle was trained for requests without a composition (``composition=None``); others
        are given the absorbers alone, which the 3d bundle reads as the pure metal."""
        return bool(self.ensemble.unknown_composition)

    def composition_input(self, composition, absorbers: Sequence[str]) -> tuple[list[str], object]:
        """``(elements, fractions)`` the ensemble is given for ``composition`` (elements or a formula); for None,
        the measured ``absorbers`` with the unknown-composition marker, or with no fractions (read as the metal)
        for a bundle not trained for that."""
        if composition is not None:
            return parse_elements(composition)
        return list(absorbers), COMPOSITION_UNKNOWN if self.knows_unknown_composition else None

    def warm_up(self) -> None:
        """Make the first prediction as fast as the next ones (the registry's ``preload`` calls it)."""
        self.ensemble.warm_up()

    def check_request(self, absorber: str, elements: Sequence[str]) -> None:
        """Raise :class:`PredictorError` for requests this bundle cannot serve."""
        if absorber not in self.supported_absorbers:
            raise PredictorError(
                f"no XANES model supports the {absorber} K edge yet (bundle {self.bundle.id} "
                f"supports: {', '.join(self.supported_absorbers)})"
            )
        if absorber not in elements:
            raise PredictorError(f"the absorber {absorber} is not among the sample's elements {list(elements)}")

    def predict_window(self, window, composition: str | Sequence[str] | None, *, extra_flags=()) -> Prediction:
        """Predict from a preprocessed :class:`~sfn_stream.core.spectra.XanesWindow`. ``composition``: the
        sample's elements or formula; None when nothing is known of it (see :attr:`knows_unknown_composition`)."""
        return self.predict_windows([window], composition, extra_flags=extra_flags)

    def predict_windows(self, windows, composition: str | Sequence[str] | None, *, extra_flags=()) -> Prediction:
        """One fused prediction from several edges of one sample (one window per absorber; the first is the
        run's own). An unusable extra edge is left out with a flag; an unusable first one fails the request."""
        return self.predict_many([(windows, composition, extra_flags)])[0]

    def predict_many(self, requests) -> list[Prediction]:
        """Several :meth:`predict_windows` requests, each ``(windows, composition, extra_flags)``, in one forward
        pass of the ensemble: a run's own edge and its sample's fused edges cost about one pass, not two.
        Raises :class:`PredictorError` (before any pass) if any request is one the bundle cannot serve."""
        planned = [_WindowsRequest.plan(self, *request) for request in requests]
        compounds = [request.compound() for request in planned if request.failure is None]
        raws = iter(self.ensemble.predict_batch(compounds))
        return [request.failure if request.failure is not None else request.finish(next(raws), self.bundle.id)
                for request in planned]

    def preprocess_scan(self, energy, mu=None, *, absorber: str, i0=None, it=None, ifluor=None, iref=None):
        """A scan (mu or raw channels) on the model window: a :class:`~sfn_stream.core.spectra.XanesWindow`."""
        from sfn_stream.core.spectra import preprocess_xanes

        return preprocess_xanes(energy, mu, i0=i0, it=it, ifluor=ifluor, iref=iref, absorber=absorber)

    def predict_scan(self, energy, mu=None, *, absorber: str, composition, i0=None, it=None, ifluor=None,
                     iref=None, extra_flags=()):
        """Preprocess a scan (mu or raw channels) and predict; returns ``(prediction, window)``."""
        window = self.preprocess_scan(energy, mu, i0=i0, it=it, ifluor=ifluor, iref=iref, absorber=absorber)
        return self.predict_window(window, composition, extra_flags=extra_flags), window


@dataclass
class _WindowsRequest:
    """One :meth:`XanesPredictor.predict_windows` request, checked and ready for the ensemble (or failed)."""

    used: list  # the usable windows, the run's own first
    elements: list[str]
    fractions: dict[str, float] | str | None  # str: COMPOSITION_UNKNOWN
    flags: list[str]
    inputs: dict
    extras: list  # the windows besides the run's own, usable or not
    failure: Prediction | None = None

    @classmethod
    def plan(cls, predictor: XanesPredictor, windows, composition, extra_flags=()) -> "_WindowsRequest":
        first, extras = windows[0], list(windows[1:])
        unknown = composition is None
        elements, fractions = predictor.composition_input(
            composition, [w.absorber for w in windows if w is first or w.usable])
        flags = [*first.flags, *extra_flags]
        inputs = {"absorber": first.absorber, "elements": None if unknown else elements,
                  "fractions": None if unknown else fractions, "composition": _composition_mode(predictor, unknown, fractions)}
        if not first.usable:
            failure = Prediction.failed("xanes", "insufficient_data", first.reason, bundle_id=predictor.bundle.id,
                                        flags=flags, preprocessing=first.to_dict(), inputs=inputs)
            return cls([], elements, fractions, flags, inputs, extras, failure)
        if len({w.absorber for w in windows}) != len(windows):
            raise PredictorError(f"one window per absorber, got {[w.absorber for w in windows]}")
        used = [first]
        for window in extras:
            if window.usable:
                used.append(window)
            else:
                flags.append(f"edge_left_out:{window.absorber}")
        for window in used:
            predictor.check_request(window.absorber, elements)
        if extras:
            inputs["edges"] = [w.absorber for w in used]
        return cls(used, elements, fractions, flags, inputs, extras)

    def compound(self):
        """The ensemble's input: (elements, absorber -> (window, E0 shift), fractions)."""
        return self.elements, {w.absorber: (w.mu, w.e0_shift) for w in self.used}, self.fractions

    def finish(self, raw, bundle_id: str) -> Prediction:
        properties = {
            name: ValuePrediction(value=float(v["mean"]), std=float(v["std"]), unit=v.get("unit", ""))
            for name, v in raw.get("compound", {}).items()
        }
        properties.update({name: ClassPrediction.from_probabilities(v["classes"], v["probabilities"])
                           for name, v in raw.get("compound_classes", {}).items()})
        per_element = {
            element: {task: ClassPrediction.from_probabilities(v["classes"], v["probabilities"])
                      for task, v in tasks.items()}
            for element, tasks in raw.get("per_element", {}).items()
        }
        preprocessing = self.used[0].to_dict()
        if self.extras:
            preprocessing["other_edges"] = {w.absorber: w.to_dict() for w in self.extras}
        return Prediction(kind="xanes", status=_status(self.flags), bundle_id=bundle_id, properties=properties,
                          per_element=per_element, quality_flags=self.flags,
                          messages=[m for w in self.used for m in w.messages], preprocessing=preprocessing,
                          inputs=self.inputs)


def _composition_mode(predictor: XanesPredictor, unknown: bool, fractions) -> str:
    """How the bundle was told of the sample: "formula", "elements", or with no composition "unknown" (a bundle
    trained for it) or "absorbers_as_elements" (one that was not: it reads the measured metals alone)."""
    if unknown:
        return "unknown" if predictor.knows_unknown_composition else "absorbers_as_elements"
    return "elements" if fractions is None else "formula"


class XrdPredictor:
    """Crystal system from a powder pattern."""

    def __init__(self, bundle_path: str | Path | None = None):
        from sfn_stream.core.networks import xrd_model_from_bundle

        _limit_torch_threads()
        self.bundle = load_bundle(bundle_path or models_dir() / XRD_BUNDLE)
        self.classifier = xrd_model_from_bundle(self.bundle)  # a network or search-match, by the card

    @property
    def uses_elements(self) -> bool:
        """Whether the bundle ranks its references by the sample's elements too (a search-match bundle with a
        chemistry calibration); other bundles ignore ``elements``."""
        return bool(getattr(self.classifier, "has_chemistry", False))

    def predict_pattern_on_grid(self, pattern, *, extra_flags=(), elements=None) -> Prediction:
        """Predict from a preprocessed :class:`~sfn_stream.core.spectra.XrdPattern`. ``elements``: the sample's
        element set (symbols, or a formula of which only the elements are used), when known; used by a
        search-match bundle with a chemistry calibration (``inputs["elements"]`` then records it)."""
        flags = [*pattern.flags, *extra_flags]
        if not pattern.usable:
            return Prediction.failed("xrd", "insufficient_data", pattern.reason, bundle_id=self.bundle.id,
                                     flags=flags, preprocessing=pattern.to_dict())
        symbols = element_set(elements) if elements and self.uses_elements else None
        intensity = np.asarray(pattern.intensity, dtype=np.float32)
        raw = self.classifier.predict(intensity, elements=symbols) if symbols else self.classifier.predict(intensity)
        evidence = raw.pop("indexing", None)  # which cells index the lines: provenance, not a prediction
        properties = {task: ClassPrediction.from_probabilities(v["classes"], v["probabilities"])
                      for task, v in raw.items()}
        preprocessing = {**pattern.to_dict(), **({"indexing": evidence} if evidence else {})}
        return Prediction(kind="xrd", status=_status(flags), bundle_id=self.bundle.id, properties=properties,
                          quality_flags=flags, messages=list(pattern.messages), preprocessing=preprocessing,
                          inputs={"elements": symbols} if symbols else {})

    def predict_pattern(self, x, intensity, *, axis: str = "2theta", wavelength: float | None = None,
                        extra_flags=(), elements=None):
        """Preprocess a 1D pattern (2theta at ``wavelength``, or Q) and predict; returns ``(prediction, pattern)``."""
        from sfn_stream.core.spectra import preprocess_xrd

        pattern = preprocess_xrd(x, intensity, axis=axis, wavelength=wavelength)
        return self.predict_pattern_on_grid(pattern, extra_flags=extra_flags, elements=elements), pattern

"""XANES: one K-edge scan -> one row of ``sfn_xanes_predictions`` at the stop, and the stop summary.

The scan's channels (energy, mu or i0/it/if/iref) are collected as events arrive; at the stop they
are preprocessed onto the model window and predicted by the bundle that covers the absorber.

A run of a sample with several 3d metals (``sfn.sample`` and ``sfn.composition``) also gets the
sample-level result: the multi-edge model fed this run's edge and the sample's earlier edges (the
plugin's :class:`~sfn_stream.live.analyses.samples.SampleMemory`), one row per 3d metal in
``sfn_sample_predictions``, and ``sample_*`` fields in the stop summary naming the runs and edges fused.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from sfn_stream.core.predict import (
    Prediction,
    PredictorError,
    ValuePrediction,
    class_fields,
    parse_elements,
    status_fields,
    summary_fields,
    value_fields,
)
from sfn_stream.core.spectra import absorber_from_scan, element_symbol
from sfn_stream.live.documents import exit_flag, run_summary
from .base import BaseAnalysis, Insufficient, RunContext, bundle_classes, bundle_id, register_analysis
from .samples import SAMPLE_STREAM, MeasuredEdge, SampleFusion

logger = logging.getLogger(__name__)

XANES_STREAM = "sfn_xanes_predictions"
XANES_ROLES = ("energy", "mu", "i0", "it", "if", "iref")

# Used only when no bundle could be loaded, so that the failure row still has its fields.
_DEFAULT_CLASSES = {"oxidation_state": tuple(range(8)), "coordination_number": tuple(range(1, 13))}
METALS_3D = ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn")
_USABLE = ("ok", "flagged")


@register_analysis
class XanesAnalysis(BaseAnalysis):
    """Oxidation state and coordination number of one K-edge scan's absorber, and every sample property its bundle
    predicts (density; from the 3d bundle also band gap, formation energy, Fermi level, is-metal, is-magnetic).

    After the stop: ``prediction`` (a :class:`~sfn_stream.core.predict.Prediction`), ``absorber``, ``window``
    and, for a run of a multi-metal sample, ``sample_fusion`` (the sample-level result, a
    :class:`~sfn_stream.live.analyses.samples.SampleFusion`) for after-stop consumers to use as it is.
    """

    kind = "xanes"
    roles = XANES_ROLES
    stream = XANES_STREAM
    candidates = {
        "energy": ("energy", "mono_energy", "dcm_energy", "energy_readback", "energy_setpoint"),
        "mu": ("mu", "xmu", "mutrans", "mu_trans", "mufluor"),
        "i0": ("i0", "io"),
        "it": ("it", "itrans", "i1"),
        "if": ("if", "ifluor", "ifl", "fluor"),
        "iref": ("iref", "irefer", "i2"),
    }

    def __init__(self, context: RunContext):
        super().__init__(context)
        self._columns: dict[str, list] = defaultdict(list)
        self.prediction: Prediction | None = None
        self.absorber: str | None = None
        self.window = None  # the preprocessed model window (a XanesWindow), for after-stop consumers
        self.sample_fusion: SampleFusion | None = None

    @classmethod
    def recognises(cls, keys: Mapping[str, str], data_keys: Mapping[str, Any]) -> bool:
        return "energy" in keys and ("mu" in keys or ("i0" in keys and bool({"it", "if"} & keys.keys())))

    def add_event(self, values: Mapping[str, Any], seq_num: int) -> None:
        for role, value in values.items():
            self._columns[role].append(value)

    def add_external(self, rows: Mapping[str, list], first_seq_num: int) -> None:
        for role, values in rows.items():
            self._columns[role].extend(values)

    def finish(self, stop: dict) -> dict:
        columns = {role: np.asarray(values, dtype=float) for role, values in self._columns.items()}
        absorber, composition, flags = self._request(columns)
        if exit_flag(stop):
            flags.append(exit_flag(stop))
        started = time.perf_counter()
        window, predictor, failure = self._preprocess(columns, absorber, composition, flags)
        fusion = self._fusion_request(window, composition) if failure is None else None
        if failure is None:
            prediction, fused = self._predict(window, composition, predictor, flags, fusion)
            self.prediction_seconds = time.perf_counter() - started
        else:
            prediction, fused = failure, None
        self.prediction, self.absorber, self.window = prediction, absorber, window
        self.sample_fusion = self._sample_fusion(fusion, fused, composition, prediction, predictor, flags)
        # Rows are written once every prediction is made: each one sets the forwarder sending to Tiled, which
        # would otherwise take the CPU from the fusion still to come (the stop waits for both).
        classes = {task: bundle_classes(predictor, task, default) for task, default in _DEFAULT_CLASSES.items()}
        self.write_row(xanes_row(prediction, absorber or "", classes, window))
        sample_fields = self._write_sample_rows(self.sample_fusion) if self.sample_fusion is not None else {}
        return run_summary(
            self.kind, self.sample, absorber=absorber,
            elements=prediction.inputs.get("elements") or _elements_or_none(composition),
            composition_mode=prediction.inputs.get("composition", ""),
            derived_stream=self.stream, **summary_fields(prediction, absorber),
            preprocessing=_preprocessing_summary(prediction.preprocessing), **sample_fields)

    def _preprocess(self, columns, absorber, composition, flags: list[str]):
        """``(window, predictor, None)``: the scan on the model window and the predictor that serves it; or
        ``(None, predictor or None, failed prediction)`` saying why there is none."""
        predictor = None
        try:
            if "energy" not in columns or not len(columns["energy"]):
                raise Insufficient("no energy readings were recorded")
            if absorber is None:
                raise Insufficient("no absorber given (sfn.element) and the scan shows no 3d-metal K edge of the sample")
            predictor = self.models.predictor("xanes", absorber, composition)
            window = predictor.preprocess_scan(columns["energy"], columns.get("mu"), i0=columns.get("i0"),
                                               it=columns.get("it"), ifluor=columns.get("if"),
                                               iref=columns.get("iref"), absorber=absorber)
            return window, predictor, None
        except Exception as err:
            return None, predictor, _failed(err, flags, predictor, "model failed")

    def _predict(self, window, composition, predictor, flags: list[str], fusion: _FusionRequest | None):
        """The run's own prediction, and the sample's fused one when the same bundle serves both: then one
        forward pass makes the two (the decision a beamline waits on comes sooner). Else ``(own, None)``."""
        own_request = ([window], composition, flags)
        if fusion is not None and fusion.earlier and fusion.predictor is predictor:
            try:
                own, fused = predictor.predict_many([own_request, (fusion.windows, composition, flags)])
                return own, fused
            except Exception:  # one of the two is a request the bundle cannot serve: each says why below
                logger.debug("sfn-stream: the joint XANES pass failed; predicting the run's edge alone", exc_info=True)
        try:
            return predictor.predict_window(window, composition, extra_flags=flags), None
        except Exception as err:
            return _failed(err, flags, predictor, "model failed"), None

    # -- the sample-level result ------------------------------------------------------------------
    def _fusion_request(self, window, composition) -> _FusionRequest | None:
        """What the sample-level result fuses: this run's edge and the sample's earlier ones, for a run of a
        sample (``sfn.sample``) with a usable window (None otherwise)."""
        memory, sample = self.context.samples, self.sample
        if memory is None or sample in (None, "") or window is None or not window.usable:
            return None
        edge = MeasuredEdge(str(self.context.start.get("uid", "")), window.absorber, window)
        earlier = memory.edges(sample, besides=window.absorber)
        metals = _sample_metals(composition, [window.absorber, *(e.absorber for e in earlier)])
        predictor = error = None
        if len(metals) > 1:
            try:
                predictor = self.models.predictor_for_edges("xanes", metals)
            except Exception as err:
                error = err
        return _FusionRequest(edge, earlier, metals, predictor, error)

    def _sample_fusion(self, fusion: _FusionRequest | None, fused, composition, own: Prediction, own_predictor,
                       flags: list[str]) -> SampleFusion | None:
        """Remember this run's edge for the sample and return the sample-level result (None for a run with no
        sample, no usable edge or one 3d metal). ``fused``: made already with the run's own prediction."""
        if fusion is None or own.status not in _USABLE:
            return None
        self.context.samples.remember(self.sample, fusion.edge)
        if len(fusion.metals) < 2:
            return None  # one 3d metal: the run's own prediction is the sample's
        predictor = fusion.predictor
        if fused is None:
            try:
                if fusion.error is not None:
                    raise fusion.error
                if predictor is own_predictor and not fusion.earlier:
                    fused = own  # the very request the run's own prediction made: same bundle, window, composition, flags
                else:
                    fused = predictor.predict_windows(fusion.windows, composition, extra_flags=flags)
            except Exception as err:
                fused = _failed(err, flags, predictor, "fusion failed")
        classes = {task: bundle_classes(predictor, task, default) for task, default in _DEFAULT_CLASSES.items()}
        return SampleFusion(fused, fusion.metals, fusion.edges, classes)

    def _write_sample_rows(self, fusion: SampleFusion) -> dict[str, Any]:
        """Rows of ``sfn_sample_predictions`` (one per 3d metal) and the summary's ``sample_*`` fields."""
        measured = {e.absorber: e.run_uid for e in fusion.edges}
        for metal in fusion.metals:
            self.context.write_row(SAMPLE_STREAM, sample_row(fusion.prediction, metal, measured.get(metal, ""),
                                                             fusion.classes))
        return sample_summary(fusion.prediction, fusion.metals, fusion.edges)

    def _request(self, columns) -> tuple[str | None, Any, list[str]]:
        """The absorber (given, or found from the scanned range), the composition and the run's flags."""
        flags = list(self.metadata_flags)
        given = str(self.md.get("element") or "").strip()
        absorber = element_symbol(given) if given else None  # sfn={"element": "fe"} means Fe
        composition = self.md.get("composition") or None  # None: the predictor asks in its no-composition mode
        if not absorber:
            absorber = _absorber_of_scan(columns, _elements_or_none(composition))
            flags.append("absorber_inferred_from_energy_range")
        if composition is None:
            flags.append("composition_unknown")
        return absorber, composition, flags


@dataclass(frozen=True)
class _FusionRequest:
    """A run's edge, the sample's earlier edges, the sample's 3d metals and the bundle serving them together
    (or the error that says why none does)."""

    edge: MeasuredEdge
    earlier: list[MeasuredEdge]
    metals: list[str]
    predictor: Any
    error: Exception | None

    @property
    def edges(self) -> list[MeasuredEdge]:
        return [self.edge, *self.earlier]

    @property
    def windows(self) -> list:
        return [e.window for e in self.edges]


def _failed(err: Exception, flags: list[str], predictor, what: str) -> Prediction:
    """The failed prediction an exception stands for: too little data, a request no bundle serves, or a bug
    (logged with its traceback)."""
    if isinstance(err, Insufficient):
        return Prediction.failed("xanes", "insufficient_data", str(err), flags=flags)
    if isinstance(err, PredictorError):
        return Prediction.failed("xanes", "error", str(err), flags=flags, bundle_id=bundle_id(predictor))
    logger.error("sfn-stream: XANES %s", what, exc_info=err)
    return Prediction.failed("xanes", "error", f"{what}: {type(err).__name__}: {err}", flags=flags,
                             bundle_id=bundle_id(predictor))


def xanes_row(prediction: Prediction, absorber: str, classes: Mapping[str, Sequence], window=None,
              window_size: int = 200) -> dict[str, Any]:
    """One derived-stream row for a XANES scan (classes: task -> class labels of the bundle)."""
    per_element = prediction.per_element.get(absorber, {})
    row: dict[str, Any] = {"absorber": absorber, **status_fields(prediction, as_text=True)}
    for task, labels in classes.items():
        row.update(class_fields(task, per_element.get(task), labels))
    row.update(value_fields("density", prediction.properties.get("density")))  # also on a failed prediction's row
    row.update(property_fields(prediction.properties))
    pre = prediction.preprocessing or {}
    for name in ("e0", "e0_shift", "edge_step"):
        value = pre.get(name)
        row[name] = math.nan if value is None else float(value)
    # The window's energies are E_ref + linspace(window_start, window_stop, n): three scalars
    # instead of a second 200-point array node.
    if window is not None and getattr(window, "energy", None) is not None:
        energy = np.asarray(window.energy, dtype=float)
        row["e_ref"] = float(window.e_ref)
        row["window_start"], row["window_stop"] = float(energy[0] - window.e_ref), float(energy[-1] - window.e_ref)
        row["norm_window"] = np.asarray(window.mu, dtype=float)
    else:
        row["e_ref"] = row["window_start"] = row["window_stop"] = math.nan
        row["norm_window"] = np.full(window_size, np.nan)
    return row


def sample_row(fused: Prediction, metal: str, source_run: str, classes: Mapping[str, Sequence]) -> dict[str, Any]:
    """One row of ``sfn_sample_predictions``: one 3d metal of the sample, its edge measured (``source_run``
    the run it came from) or predicted from the others, and the sample's properties (the same on every row)."""
    per_element = fused.per_element.get(metal, {})
    row: dict[str, Any] = {"metal": metal, "measured": bool(source_run), "source_run": source_run,
                           **status_fields(fused, as_text=True)}
    for task, labels in classes.items():
        row.update(class_fields(task, per_element.get(task), labels))
    state = row.get("oxidation_state")
    row["species"] = _species(metal, state) if per_element.get("oxidation_state") is not None else ""
    row.update(property_fields(fused.properties))
    return row


def property_fields(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Every sample-level property the bundle predicted (density, band gap, is-metal ...): value and spread of a
    regression, class and probabilities of a flag."""
    row: dict[str, Any] = {}
    for name in sorted(properties):
        value = properties[name]
        if isinstance(value, ValuePrediction):
            row.update(value_fields(name, value))
        else:
            row.update(class_fields(name, value, (False, True)))
    return row


def sample_summary(fused: Prediction, metals: Sequence[str], edges: Sequence[MeasuredEdge]) -> dict[str, Any]:
    """The stop summary's ``sample_*`` fields: what was fused, and per metal its species and confidences
    (``sample_species`` is a list, queried with ``runs_where(client, sample_species="Fe3+")``)."""
    fields: dict[str, Any] = {
        "sample_stream": SAMPLE_STREAM, "sample_status": fused.status, "sample_reason": fused.reason,
        "sample_bundle_id": fused.bundle_id, "sample_edges": [e.absorber for e in edges],
        "sample_runs": [e.run_uid for e in edges], "sample_metals": list(metals)}
    species, per_metal = [], {}
    for metal in metals:
        tasks = fused.per_element.get(metal, {})
        entry = {}
        for task in ("oxidation_state", "coordination_number"):
            if tasks.get(task) is not None:
                entry[task] = tasks[task].value
                entry[f"{task}_confidence"] = round(float(tasks[task].confidence), 4)
        if "oxidation_state" in entry:
            species.append(_species(metal, entry["oxidation_state"]))
        if entry:
            per_metal[metal] = entry
    fields["sample_species"] = species
    fields["sample_per_metal"] = per_metal
    return fields


def _species(metal: str, state) -> str:
    return f"{metal}{int(state)}+" if int(state) > 0 else metal


def _sample_metals(composition, absorbers: Sequence[str]) -> list[str]:
    """The sample's 3d metals in Z order: its composition's, plus any edge measured."""
    elements = set(_elements_or_none(composition) or ()) | set(absorbers)
    return [m for m in METALS_3D if m in elements]


def window_energies(row: Mapping[str, Any]) -> np.ndarray:
    """Absolute energies of a derived row's ``norm_window``."""
    def scalar(key):
        return float(np.asarray(row[key]).ravel()[-1])
    n = np.asarray(row["norm_window"]).shape[-1]
    return scalar("e_ref") + np.linspace(scalar("window_start"), scalar("window_stop"), n)


def _absorber_of_scan(columns, elements):
    """The K edge the scan shows, among the sample's elements when they are known."""
    if columns.get("energy") is None:
        return None
    raw = {k: columns.get(c) for k, c in (("mu", "mu"), ("i0", "i0"), ("it", "it"), ("ifluor", "if"))}
    if raw["mu"] is not None:
        raw = {"mu": raw["mu"]}
    return absorber_from_scan(columns["energy"], candidates=elements, **raw)


def _elements_or_none(composition):
    try:
        return parse_elements(composition)[0] if composition else None
    except ValueError:
        return None


def _preprocessing_summary(pre: dict) -> dict:
    keep = ("e0", "e0_shift", "edge_step", "energy_shift", "calibration", "e_ref")
    return {k: pre[k] for k in keep if k in pre}

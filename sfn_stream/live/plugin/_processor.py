"""Per-run document filter: forwards every document downstream and adds the derived streams.

One :class:`RunProcessor` exists per run (made by the plugin's ``RunRouter`` factory). It
never drops or holds back a raw document: each one is forwarded as it arrives; the only
addition before the stop is the derived stream, and the stop itself carries the summary.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np
from event_model import ComposeDescriptor, unpack_event_page

from sfn_stream.core.predict import Prediction, PredictorError, parse_elements, summarize
from sfn_stream.core.spectra import k_edge_energy
from ._convention import XANES_ROLES, XRD_ROLES, RunConvention
from ._derived import XANES_STREAM, XRD_STREAM, class_probabilities, data_keys_for, json_safe, xanes_row, xrd_row
from ._external import ExternalArrays

logger = logging.getLogger(__name__)

Emit = Callable[[str, dict], None]


class RunProcessor:
    """Forward one run's documents to ``emit``; predict from XANES/PXRD data it recognises."""

    def __init__(self, start: dict, *, emit: Emit, convention: RunConvention, predictors,
                 keep_pattern: bool = False):
        self.start = start
        self.emit = emit
        self.convention = convention
        self.predictors = predictors
        self.md = convention.run_metadata(start)
        self.kind = convention.detect_kind(start)
        self._compose = ComposeDescriptor(start=start, streams={}, event_counters={})
        self._tracked: dict[str, dict[str, str]] = {}  # descriptor uid -> role -> data key
        self._columns: dict[str, list] = defaultdict(list)
        self._external = ExternalArrays()
        self._derived: dict[str, Any] = {}  # stream name -> ComposeDescriptorBundle
        self._xrd_probabilities: list[np.ndarray] = []
        self._xrd_frames = 0
        self._last_xrd: Prediction | None = None
        self._xrd_classes: tuple = ()
        self._errors: list[str] = []
        self.summary: dict[str, Any] | None = None
        self.xanes_prediction: Prediction | None = None  # kept for structure inference
        self._keep_pattern = keep_pattern  # sum the usable PXRD frames (structure inference needs the pattern)
        self._pattern_x: np.ndarray | None = None
        self._pattern_sum: np.ndarray | None = None
        self._pattern_frames = 0
        self.prediction_seconds: float | None = None  # preprocessing + model at the XANES stop

    # -- dispatch ---------------------------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        if name == "stop":  # the summary rides on the stop, so it is emitted by _on_stop
            self._on_stop(doc)
            return
        self.emit(name, doc)
        handler = getattr(self, "_on_" + name, None)
        if handler is None:
            return
        try:
            handler(doc)
        except Exception as err:  # never let analysis break the forwarding of the run
            logger.exception("sfn-stream: failed to analyse %s document", name)
            self._errors.append(f"analysis of a {name} document failed: {type(err).__name__}: {err}")

    def _on_descriptor(self, doc):
        self._compose.streams.setdefault(doc["name"], set(doc["data_keys"]))
        self._compose.event_counters.setdefault(doc["name"], 1)
        if doc["name"] != self.md.get("stream", self.convention.stream):
            return
        if self.kind is None:
            self.kind = self.convention.detect_kind(self.start, doc["data_keys"])
        roles = XANES_ROLES if self.kind == "xanes" else XRD_ROLES if self.kind == "xrd" else ()
        keys = self.convention.find_keys(doc["data_keys"], roles, self.md.get("keys"))
        if self.kind == "xrd" and "x" not in keys:
            self._axis_from_configuration(doc)
        if keys:
            self._tracked[doc["uid"]] = keys
            self._external.register_descriptor(doc, keys)

    def _axis_from_configuration(self, descriptor) -> None:
        """A detector's fixed 2theta/Q axis usually sits in its configuration, not in each event."""
        for device in (descriptor.get("configuration") or {}).values():
            found = self.convention.find_keys(device.get("data_keys") or {}, ("x",), self.md.get("keys"))
            if found:
                self._external.remember_constant("x", device["data"][found["x"]])
                return

    def _on_event(self, doc):
        keys = self._tracked.get(doc["descriptor"])
        if not keys:
            return
        if self.kind == "xanes":
            for role, key in keys.items():
                if key in doc["data"]:
                    self._columns[role].append(doc["data"][key])
        elif self.kind == "xrd":
            x = doc["data"].get(keys.get("x"), self._external.constant("x"))
            self._xrd_frame(doc["data"].get(keys.get("pattern")), x, doc["seq_num"])

    def _on_event_page(self, doc):
        for event in unpack_event_page(doc):
            self._on_event(event)

    def _on_stream_resource(self, doc):
        self._external.register_resource(doc)

    def _on_stream_datum(self, doc):
        keys = self._tracked.get(doc["descriptor"])
        if not keys:
            return
        for role, values in self._external.read(doc).items():
            if self.kind == "xanes":
                self._columns[role].extend(values)
            elif self.kind == "xrd" and role == "pattern":
                start_seq = doc["seq_nums"]["start"]
                for i, pattern in enumerate(values):
                    self._xrd_frame(pattern, self._external.constant("x"), start_seq + i)

    # -- XANES ------------------------------------------------------------------------------
    def _xanes_request(self):
        columns = {role: np.asarray(values, dtype=float) for role, values in self._columns.items()}
        flags = []
        absorber = self.md.get("element")
        if not absorber:
            absorber = _absorber_from_range(columns.get("energy"))
            flags.append("absorber_inferred_from_energy_range")
        composition = self.md.get("composition") or ([absorber] if absorber else None)
        if not self.md.get("composition"):
            flags.append("composition_unknown")
        return columns, absorber, composition, flags

    def _finish_xanes(self, stop: dict) -> dict:
        columns, absorber, composition, flags = self._xanes_request()
        if stop.get("exit_status", "success") != "success":
            flags.append(f"run_{stop.get('exit_status')}")
        window = None
        predictor = None
        try:
            if "energy" not in columns or not len(columns["energy"]):
                raise _Insufficient("no energy readings were recorded")
            if absorber is None:
                raise _Insufficient("no absorber given (sfn.element) and no K edge lies in the scanned range")
            predictor = self.predictors.xanes()
            started = time.perf_counter()
            prediction, window = predictor.predict_scan(
                columns["energy"], columns.get("mu"), i0=columns.get("i0"), it=columns.get("it"),
                ifluor=columns.get("if"), iref=columns.get("iref"), absorber=absorber,
                composition=composition, extra_flags=flags)
            self.prediction_seconds = time.perf_counter() - started
        except _Insufficient as why:
            prediction = Prediction.failed("xanes", "insufficient_data", str(why), flags=flags)
        except PredictorError as why:
            prediction = Prediction.failed("xanes", "error", str(why), flags=flags,
                                           bundle_id=getattr(getattr(predictor, "bundle", None), "id", None))
        except Exception as err:
            logger.exception("sfn-stream: XANES prediction failed")
            prediction = Prediction.failed("xanes", "error", f"model failed: {type(err).__name__}: {err}",
                                           flags=flags,
                                           bundle_id=getattr(getattr(predictor, "bundle", None), "id", None))
        self.xanes_prediction = prediction
        classes = {task: _bundle_classes(predictor, task, default) for task, default in _XANES_CLASSES.items()}
        self._emit_row(XANES_STREAM, xanes_row(prediction, absorber or "", classes, window))
        summary = {"kind": "xanes", "sample": self.md.get("sample"), "absorber": absorber,
                   "elements": prediction.inputs.get("elements") or _elements_or_none(composition),
                   "derived_stream": XANES_STREAM, **summarize(prediction, absorber)}
        summary["preprocessing"] = _preprocessing_summary(prediction.preprocessing)
        return summary

    # -- PXRD -------------------------------------------------------------------------------
    def _xrd_frame(self, pattern, x, seq_num: int) -> None:
        predictor = None
        try:
            if pattern is None or x is None:
                raise _Insufficient("the frame has no pattern or no 2theta/Q axis")
            predictor = self.predictors.xrd()
            prediction, _ = predictor.predict_pattern(
                np.asarray(x, dtype=float), np.asarray(pattern, dtype=float),
                axis=self.md.get("axis", "2theta"), wavelength=self.md.get("wavelength"))
        except _Insufficient as why:
            prediction = Prediction.failed("xrd", "insufficient_data", str(why))
        except Exception as err:
            logger.exception("sfn-stream: PXRD prediction failed")
            prediction = Prediction.failed("xrd", "error", f"model failed: {type(err).__name__}: {err}",
                                           bundle_id=getattr(getattr(predictor, "bundle", None), "id", None))
        classes = _bundle_classes(predictor, "crystal_system", _XRD_CLASSES)
        row = xrd_row(prediction, seq_num, classes)
        self._emit_row(XRD_STREAM, row)
        self._xrd_frames += 1
        self._last_xrd = prediction
        if prediction.usable:
            self._xrd_probabilities.append(class_probabilities(row, "crystal_system", classes))
            if self._keep_pattern:
                self._add_pattern(x, pattern)
        self._xrd_classes = classes

    def _add_pattern(self, x, pattern) -> None:
        try:  # never lets the pattern kept for structure inference disturb the run's own analysis
            x, pattern = np.asarray(x, dtype=float), np.asarray(pattern, dtype=float)
            if pattern.shape != x.shape:
                return
            if self._pattern_x is None or self._pattern_x.shape != x.shape or not np.allclose(self._pattern_x, x):
                self._pattern_x, self._pattern_sum, self._pattern_frames = x.copy(), np.zeros_like(pattern), 0
            self._pattern_sum += pattern
            self._pattern_frames += 1
        except Exception:
            logger.exception("sfn-stream: could not keep a PXRD frame for structure inference")

    def measured_pattern(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(x, mean intensity, frames) of the usable PXRD frames (only with ``keep_pattern``; frames on another
        axis than the last one are left out), or None."""
        if self._pattern_x is None or not self._pattern_frames:
            return None
        return self._pattern_x, self._pattern_sum / self._pattern_frames, self._pattern_frames

    def crystal_system_probabilities(self) -> dict[str, float] | None:
        """The run's crystal-system probabilities: the mean over the usable frames (None if none)."""
        if not self._xrd_probabilities:
            return None
        mean = np.mean(self._xrd_probabilities, axis=0)
        return {str(c): float(p) for c, p in zip(self._xrd_classes, mean) if np.isfinite(p)}

    def _finish_xrd(self, stop: dict) -> dict:
        summary = {"kind": "xrd", "sample": self.md.get("sample"), "derived_stream": XRD_STREAM,
                   "frames": self._xrd_frames, "frames_used": len(self._xrd_probabilities)}
        if self._last_xrd is None:
            summary.update(status="insufficient_data", reason="no powder frames were recorded",
                           quality_flags=[], bundle_id=None)
            return summary
        summary.update(summarize(self._last_xrd))
        if self._xrd_probabilities:  # the run's answer: mean probabilities over usable frames
            mean = np.mean(self._xrd_probabilities, axis=0)
            best = int(np.argmax(mean))
            summary.update(crystal_system=self._xrd_classes[best],
                           crystal_system_confidence=round(float(mean[best]), 4))
        if stop.get("exit_status", "success") != "success":
            summary["quality_flags"] = [*summary.get("quality_flags", []), f"run_{stop.get('exit_status')}"]
        return summary

    # -- stop -------------------------------------------------------------------------------
    def _on_stop(self, doc: dict) -> None:
        summary = None
        try:
            if self.kind == "xanes":
                summary = self._finish_xanes(doc)
            elif self.kind == "xrd":
                summary = self._finish_xrd(doc)
        except Exception as err:  # the stop must go out whatever happens
            logger.exception("sfn-stream: failed to finish the run")
            summary = {"kind": self.kind, "status": "error", "reason": f"{type(err).__name__}: {err}"}
        if summary is not None and self._errors:
            summary["errors"] = list(self._errors)
        self.summary = summary
        self.emit("stop", self._stop_with_summary(doc, summary))

    def _stop_with_summary(self, stop: dict, summary: dict | None) -> dict:
        if summary is None:
            return stop
        stop = copy.deepcopy(stop)  # the RunEngine's document is shared with other subscribers
        stop[self.convention.metadata_key] = json_safe(summary)
        num_events = dict(stop.get("num_events") or {})
        for name in self._derived:
            num_events[name] = self._compose.event_counters[name] - 1
        stop["num_events"] = num_events
        return stop

    # -- helpers ----------------------------------------------------------------------------
    def _emit_row(self, stream: str, row: dict) -> None:
        if stream not in self._derived:
            bundle = self._compose(stream, data_keys_for(row), configuration={})
            self._derived[stream] = bundle
            self.emit("descriptor", bundle.descriptor_doc)
        now = time.time()
        event = self._derived[stream].compose_event(data=row, timestamps={k: now for k in row}, validate=False)
        self.emit("event", event)


class _Insufficient(Exception):
    pass


# Used only when no bundle could be loaded, so that the failure row still has its fields.
_XRD_CLASSES = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
_XANES_CLASSES = {"oxidation_state": tuple(range(8)), "coordination_number": tuple(range(1, 13))}


def _bundle_classes(predictor, task: str, default) -> tuple:
    """Class labels of a task as the bundle's card names them."""
    try:
        return tuple(predictor.bundle.card["tasks"][task]["classes"])
    except (AttributeError, KeyError, TypeError):
        return tuple(default)


def _absorber_from_range(energy) -> str | None:
    """The 3d metal whose tabulated K edge lies inside the scanned range (None if none or several)."""
    from sfn_stream.core.spectra import TRANSITION_METALS_3D

    if energy is None or not len(energy):
        return None
    lo, hi = float(np.nanmin(energy)), float(np.nanmax(energy))
    inside = [el for el in TRANSITION_METALS_3D if lo + 10 < k_edge_energy(el) < hi - 10]
    return inside[0] if len(inside) == 1 else None


def _elements_or_none(composition):
    try:
        return parse_elements(composition)[0] if composition else None
    except ValueError:
        return None


def _preprocessing_summary(pre: dict) -> dict:
    keep = ("e0", "e0_shift", "edge_step", "energy_shift", "calibration", "e_ref")
    return {k: pre[k] for k in keep if k in pre}



"""PXRD: every powder frame -> one row of ``sfn_xrd_predictions`` as it arrives; the run's answer at the stop.

The run's crystal system is the mean of the usable frames' probabilities. The mean pattern of the
usable frames is kept for after-stop consumers (structure inference matches candidates against it),
and so are the space groups a search-match bundle names (structure inference's space-group prior).
A bundle that indexes the lines (``xrd-indexed``) also gives each frame's best-indexing lattice and cell
(``lattice``, e.g. ``tetragonal I``, ``lattice_merit``, ``cell_a/b/c`` in A; empty and NaN otherwise), and the
stop summary the run's best of them (``lattice``, ``lattice_merit``, ``lattice_cell_A``).

The sample's elements, when the start document gives them (``sfn.elements`` or ``sfn.composition``;
of a formula only the element set is used), go to the predictor: a search-match bundle with a
chemistry calibration then ranks its references by chemistry too (docs/xrd-search-match.md). A
composition that cannot be parsed is left out and flagged ``composition_invalid``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.predict import (
    CompositionError,
    Prediction,
    class_fields,
    class_probabilities,
    element_set,
    status_fields,
    summary_fields,
)
from sfn_stream.core.spectra import conventional_cell
from sfn_stream.live.documents import exit_flag, run_summary
from .base import BaseAnalysis, Insufficient, RunContext, bundle_classes, bundle_id, register_analysis

logger = logging.getLogger(__name__)

XRD_STREAM = "sfn_xrd_predictions"
XRD_ROLES = ("pattern", "x")
TOP_SPACE_GROUPS = 5  # as many as a search-match prediction names

# Used only when no bundle could be loaded, so that the failure row still has its fields.
_DEFAULT_CLASSES = CRYSTAL_SYSTEMS


@register_analysis
class XrdAnalysis(BaseAnalysis):
    """Crystal system of every powder frame, live.

    After the stop: :meth:`crystal_system_probabilities`, :meth:`space_group_probabilities` and
    :meth:`measured_pattern`.
    """

    kind = "xrd"
    roles = XRD_ROLES
    stream = XRD_STREAM
    candidates = {
        "pattern": ("pattern", "powder_pattern", "xrd_pattern", "intensity"),
        "x": ("tth", "two_theta", "2theta", "q"),
    }

    def __init__(self, context: RunContext):
        super().__init__(context)
        self._axis = None  # a detector's fixed 2theta/Q axis, from its configuration
        self._frames = 0
        self._last: Prediction | None = None
        self._classes: tuple = ()
        self._probabilities: list[np.ndarray] = []
        self._space_groups: list[dict[int, float]] = []  # per usable frame; empty for a crystal-system-only bundle
        self._pattern = _MeanPattern()
        self._lattice: dict[str, Any] | None = None  # the usable frame whose lattice indexed best
        self._elements = self._sample_elements()

    def _sample_elements(self) -> list[str] | None:
        """The sample's element set from ``sfn.elements`` / ``sfn.composition`` (None if not given or unusable)."""
        spec = self.md.get("elements") or self.md.get("composition")
        if not spec:
            return None
        try:
            return element_set(spec)
        except (CompositionError, TypeError) as err:
            logger.warning("sfn-stream: PXRD run: composition %r not used: %s", spec, err)
            if "composition_invalid" not in self.metadata_flags:
                self.metadata_flags.append("composition_invalid")
            return None

    @classmethod
    def recognises(cls, keys: Mapping[str, str], data_keys: Mapping[str, Any]) -> bool:
        return "pattern" in keys and data_keys[keys["pattern"]].get("dtype") == "array"

    def on_descriptor(self, descriptor: dict, keys: Mapping[str, str]) -> None:
        """A detector's fixed 2theta/Q axis usually sits in its configuration, not in each event."""
        super().on_descriptor(descriptor, keys)
        if "x" in keys:
            return
        for device in (descriptor.get("configuration") or {}).values():
            found = self.context.find_keys(device.get("data_keys") or {}, ("x",))
            if found:
                self._axis = device["data"][found["x"]]
                return

    def add_event(self, values: Mapping[str, Any], seq_num: int) -> None:
        self._frame(values.get("pattern"), values.get("x", self._axis), seq_num)

    def add_external(self, rows: Mapping[str, list], first_seq_num: int) -> None:
        for i, pattern in enumerate(rows.get("pattern", ())):
            self._frame(pattern, self._axis, first_seq_num + i)

    def _frame(self, pattern, x, seq_num: int) -> None:
        predictor = None
        try:
            if pattern is None or x is None:
                raise Insufficient("the frame has no pattern or no 2theta/Q axis")
            predictor = self.models.predictor("xrd")
            prediction, _ = predictor.predict_pattern(
                np.asarray(x, dtype=float), np.asarray(pattern, dtype=float),
                axis=self.md.get("axis", "2theta"), wavelength=self.md.get("wavelength"),
                extra_flags=self.metadata_flags, elements=self._elements)
        except Insufficient as why:
            prediction = Prediction.failed("xrd", "insufficient_data", str(why), flags=self.metadata_flags)
        except Exception as err:
            logger.exception("sfn-stream: PXRD prediction failed")
            prediction = Prediction.failed("xrd", "error", f"model failed: {type(err).__name__}: {err}",
                                           flags=self.metadata_flags, bundle_id=bundle_id(predictor))
        classes = bundle_classes(predictor, "crystal_system", _DEFAULT_CLASSES)
        row = xrd_row(prediction, seq_num, classes)
        self.write_row(row)
        self._frames += 1
        self._last = prediction
        if prediction.usable:
            self._probabilities.append(class_probabilities(row, "crystal_system", classes))
            self._pattern.add(x, pattern)
            space_groups = _space_group_table(prediction)
            if space_groups:
                self._space_groups.append(space_groups)
            if row["lattice"] and (self._lattice is None or row["lattice_merit"] > self._lattice["lattice_merit"]):
                self._lattice = {"lattice": row["lattice"], "lattice_merit": round(row["lattice_merit"], 4),
                                 "lattice_cell_A": [row[f"cell_{axis}"] for axis in "abc"]}
        self._classes = classes

    def finish(self, stop: dict) -> dict:
        summary = run_summary(self.kind, self.sample, derived_stream=self.stream, frames=self._frames,
                              frames_used=len(self._probabilities))
        if self._last is None:
            summary.update(status="insufficient_data", reason="no powder frames were recorded",
                           quality_flags=list(self.metadata_flags), bundle_id=None)
            return summary
        summary.update(summary_fields(self._last))
        if self._probabilities:  # the run's answer: mean probabilities over usable frames
            mean = np.mean(self._probabilities, axis=0)
            best = int(np.argmax(mean))
            summary.update(crystal_system=self._classes[best], crystal_system_confidence=round(float(mean[best]), 4))
        if self._lattice:
            summary.update(self._lattice)
        if exit_flag(stop):
            summary["quality_flags"] = [*summary.get("quality_flags", []), exit_flag(stop)]
        return summary

    def crystal_system_probabilities(self) -> dict[str, float] | None:
        """The run's crystal-system probabilities: the mean over the usable frames (None if none)."""
        if not self._probabilities:
            return None
        mean = np.mean(self._probabilities, axis=0)
        return {str(c): float(p) for c, p in zip(self._classes, mean) if np.isfinite(p)}

    def space_group_probabilities(self, top: int = TOP_SPACE_GROUPS) -> dict[int, float] | None:
        """The run's ``top`` most probable space groups: the mean over the usable frames that named space
        groups, a group counting 0 in a frame that did not name it (None if no frame named any)."""
        if not self._space_groups:
            return None
        total: dict[int, float] = {}
        for table in self._space_groups:
            for number, p in table.items():
                total[number] = total.get(number, 0.0) + p
        best = sorted(total.items(), key=lambda kv: -kv[1])[:top]
        return {number: p / len(self._space_groups) for number, p in best}

    def measured_pattern(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(x, mean intensity, frames) of the usable frames (frames on another axis than the last one are
        left out), or None."""
        return self._pattern.mean()


class _MeanPattern:
    """A running sum of the usable frames on one axis (a new axis starts it afresh)."""

    def __init__(self):
        self._x: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._frames = 0

    def add(self, x, pattern) -> None:
        try:  # the kept pattern never disturbs the run's own analysis
            x, pattern = np.asarray(x, dtype=float), np.asarray(pattern, dtype=float)
            if pattern.shape != x.shape:
                return
            if self._x is None or self._x.shape != x.shape or not np.allclose(self._x, x):
                self._x, self._sum, self._frames = x.copy(), np.zeros_like(pattern), 0
            self._sum += pattern
            self._frames += 1
        except Exception:
            logger.exception("sfn-stream: could not keep a PXRD frame for the mean pattern")

    def mean(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        if self._x is None or not self._frames:
            return None
        return self._x, self._sum / self._frames, self._frames


def _space_group_table(prediction: Prediction) -> dict[int, float]:
    """Space group number -> probability of a prediction's ``space_group`` (empty if it has none)."""
    predicted = prediction.properties.get("space_group")
    if predicted is None:
        return {}
    table = {}
    for label, p in predicted.probabilities.items():
        try:
            table[int(label)] = float(p)
        except (TypeError, ValueError):
            continue
    return {number: p for number, p in table.items() if math.isfinite(p)}


def xrd_row(prediction: Prediction, frame: int, classes: Sequence[str]) -> dict[str, Any]:
    """One derived-stream row per PXRD frame."""
    pre = prediction.preprocessing or {}
    row: dict[str, Any] = {"frame": int(frame), **status_fields(prediction, as_text=True)}
    row.update(class_fields("crystal_system", prediction.properties.get("crystal_system"), classes))
    for name in ("q_min", "q_max", "coverage_fraction"):
        value = pre.get(name)
        row[name] = math.nan if value is None else float(value)
    row.update(lattice_fields(pre.get("indexing")))
    return row


def lattice_fields(indexing: Mapping[str, Any] | None) -> dict[str, Any]:
    """The best-indexing lattice of a frame: ``lattice`` ('tetragonal I'), ``lattice_merit`` and the
    conventional cell edges ``cell_a/b/c`` (A); '' and NaN when the bundle does not index or no family scored."""
    fields = {"lattice": "", "lattice_merit": math.nan, "cell_a": math.nan, "cell_b": math.nan, "cell_c": math.nan}
    merits = (indexing or {}).get("merit") or {}
    if not merits:
        return fields
    family, merit = max(merits.items(), key=lambda item: item[1])
    edges = list((indexing.get("cell_A") or {}).get(family) or [])
    if merit <= 0 or not edges:
        return fields
    a, b, c = conventional_cell(family, edges)
    centring = (indexing.get("centring") or {}).get(family, "")
    fields.update(lattice=f"{family} {centring}".strip(), lattice_merit=float(merit),
                  cell_a=float(a), cell_b=float(b), cell_c=float(c))
    return fields

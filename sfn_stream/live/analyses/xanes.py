"""XANES: one K-edge scan -> one row of ``sfn_xanes_predictions`` at the stop, and the stop summary.

The scan's channels (energy, mu or i0/it/if/iref) are collected as events arrive; at the stop they
are preprocessed onto the model window and predicted by the bundle that covers the absorber.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from sfn_stream.core.predict import (
    Prediction,
    PredictorError,
    class_fields,
    parse_elements,
    status_fields,
    summary_fields,
    value_fields,
)
from sfn_stream.core.spectra import absorber_from_energy_range
from sfn_stream.live.documents import exit_flag, run_summary
from .base import BaseAnalysis, Insufficient, RunContext, bundle_classes, bundle_id, register_analysis

logger = logging.getLogger(__name__)

XANES_STREAM = "sfn_xanes_predictions"
XANES_ROLES = ("energy", "mu", "i0", "it", "if", "iref")

# Used only when no bundle could be loaded, so that the failure row still has its fields.
_DEFAULT_CLASSES = {"oxidation_state": tuple(range(8)), "coordination_number": tuple(range(1, 13))}


@register_analysis
class XanesAnalysis(BaseAnalysis):
    """Oxidation state, coordination number and density of one K-edge scan (predicted at the stop).

    After the stop: ``prediction`` (a :class:`~sfn_stream.core.predict.Prediction`) and ``absorber``.
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
        window = predictor = None
        try:
            if "energy" not in columns or not len(columns["energy"]):
                raise Insufficient("no energy readings were recorded")
            if absorber is None:
                raise Insufficient("no absorber given (sfn.element) and no K edge lies in the scanned range")
            predictor = self.models.predictor("xanes", absorber)
            started = time.perf_counter()
            prediction, window = predictor.predict_scan(
                columns["energy"], columns.get("mu"), i0=columns.get("i0"), it=columns.get("it"),
                ifluor=columns.get("if"), iref=columns.get("iref"), absorber=absorber,
                composition=composition, extra_flags=flags)
            self.prediction_seconds = time.perf_counter() - started
        except Insufficient as why:
            prediction = Prediction.failed("xanes", "insufficient_data", str(why), flags=flags)
        except PredictorError as why:
            prediction = Prediction.failed("xanes", "error", str(why), flags=flags, bundle_id=bundle_id(predictor))
        except Exception as err:
            logger.exception("sfn-stream: XANES prediction failed")
            prediction = Prediction.failed("xanes", "error", f"model failed: {type(err).__name__}: {err}",
                                           flags=flags, bundle_id=bundle_id(predictor))
        self.prediction, self.absorber, self.window = prediction, absorber, window
        classes = {task: bundle_classes(predictor, task, default) for task, default in _DEFAULT_CLASSES.items()}
        self.write_row(xanes_row(prediction, absorber or "", classes, window))
        return run_summary(
            self.kind, self.sample, absorber=absorber,
            elements=prediction.inputs.get("elements") or _elements_or_none(composition),
            derived_stream=self.stream, **summary_fields(prediction, absorber),
            preprocessing=_preprocessing_summary(prediction.preprocessing))

    def _request(self, columns) -> tuple[str | None, Any, list[str]]:
        """The absorber (given, or found from the scanned range), the composition and the run's flags."""
        flags = list(self.metadata_flags)
        absorber = self.md.get("element")
        if not absorber:
            absorber = absorber_from_energy_range(columns.get("energy"))
            flags.append("absorber_inferred_from_energy_range")
        composition = self.md.get("composition") or ([absorber] if absorber else None)
        if not self.md.get("composition"):
            flags.append("composition_unknown")
        return absorber, composition, flags


def xanes_row(prediction: Prediction, absorber: str, classes: Mapping[str, Sequence], window=None,
              window_size: int = 200) -> dict[str, Any]:
    """One derived-stream row for a XANES scan (classes: task -> class labels of the bundle)."""
    per_element = prediction.per_element.get(absorber, {})
    row: dict[str, Any] = {"absorber": absorber, **status_fields(prediction, as_text=True)}
    for task, labels in classes.items():
        row.update(class_fields(task, per_element.get(task), labels))
    row.update(value_fields("density", prediction.properties.get("density")))
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


def window_energies(row: Mapping[str, Any]) -> np.ndarray:
    """Absolute energies of a derived row's ``norm_window``."""
    def scalar(key):
        return float(np.asarray(row[key]).ravel()[-1])
    n = np.asarray(row["norm_window"]).shape[-1]
    return scalar("e_ref") + np.linspace(scalar("window_start"), scalar("window_stop"), n)


def _elements_or_none(composition):
    try:
        return parse_elements(composition)[0] if composition else None
    except ValueError:
        return None


def _preprocessing_summary(pre: dict) -> dict:
    keep = ("e0", "e0_shift", "edge_step", "energy_shift", "calibration", "e_ref")
    return {k: pre[k] for k in keep if k in pre}

"""Rows of the derived streams (``sfn_xanes_predictions``, ``sfn_xrd_predictions``).

Every row has the same fields whatever happened (event-model requires it): a failed or
insufficient scan gets NaN / -1 / empty values, its ``status`` and its ``reason``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..predict import ClassPrediction, Prediction, ValuePrediction

XANES_STREAM = "sfn_xanes_predictions"
XRD_STREAM = "sfn_xrd_predictions"
SOURCE = "sfn-stream"


def _text(value) -> str:
    return "" if value is None else str(value)


def _class_fields(name: str, prediction: ClassPrediction | None, classes: Sequence) -> dict[str, Any]:
    probabilities = np.full(len(classes), np.nan)
    if prediction is None:
        return {name: -1 if _numeric(classes) else "", f"{name}_confidence": math.nan,
                f"{name}_probabilities": probabilities}
    for i, label in enumerate(classes):
        probabilities[i] = prediction.probabilities.get(str(label), 0.0)
    return {name: prediction.value, f"{name}_confidence": prediction.confidence,
            f"{name}_probabilities": probabilities}


def _value_fields(name: str, prediction: ValuePrediction | None) -> dict[str, Any]:
    if prediction is None:
        return {name: math.nan, f"{name}_std": math.nan}
    return {name: prediction.value, f"{name}_std": prediction.std}


def _numeric(classes: Sequence) -> bool:
    return all(isinstance(c, (int, np.integer)) for c in classes)


def _common_fields(prediction: Prediction) -> dict[str, Any]:
    return {"status": prediction.status, "quality_flags": ",".join(prediction.quality_flags),
            "reason": _text(prediction.reason), "bundle_id": _text(prediction.bundle_id)}


def xanes_row(prediction: Prediction, absorber: str, classes: Mapping[str, Sequence], window=None,
              window_size: int = 200) -> dict[str, Any]:
    """One derived-stream row for a XANES scan (classes: task -> class labels of the bundle)."""
    per_element = prediction.per_element.get(absorber, {})
    row: dict[str, Any] = {"absorber": absorber, **_common_fields(prediction)}
    for task, labels in classes.items():
        row.update(_class_fields(task, per_element.get(task), labels))
    row.update(_value_fields("density", prediction.properties.get("density")))
    pre = prediction.preprocessing or {}
    for name in ("e0", "e0_shift", "edge_step"):
        value = pre.get(name)
        row[name] = math.nan if value is None else float(value)
    if window is not None and getattr(window, "energy", None) is not None:
        row["energy_window"] = np.asarray(window.energy, dtype=float)
        row["norm_window"] = np.asarray(window.mu, dtype=float)
    else:
        row["energy_window"] = np.full(window_size, np.nan)
        row["norm_window"] = np.full(window_size, np.nan)
    return row


def xrd_row(prediction: Prediction, frame: int, classes: Sequence[str]) -> dict[str, Any]:
    """One derived-stream row per PXRD frame."""
    pre = prediction.preprocessing or {}
    row: dict[str, Any] = {"frame": int(frame), **_common_fields(prediction)}
    row.update(_class_fields("crystal_system", prediction.properties.get("crystal_system"), classes))
    for name in ("q_min", "q_max", "coverage_fraction"):
        value = pre.get(name)
        row[name] = math.nan if value is None else float(value)
    return row


def data_keys_for(row: Mapping[str, Any]) -> dict[str, dict]:
    """Event-model data keys describing a row (dtype, shape, source)."""
    keys = {}
    for name, value in row.items():
        if isinstance(value, np.ndarray):
            spec = {"dtype": "array", "shape": list(value.shape), "dtype_numpy": value.dtype.str}
        elif isinstance(value, str):
            spec = {"dtype": "string", "shape": []}
        elif isinstance(value, (bool, np.bool_)):
            spec = {"dtype": "boolean", "shape": []}
        elif isinstance(value, (int, np.integer)):
            spec = {"dtype": "integer", "shape": []}
        else:
            spec = {"dtype": "number", "shape": []}
        keys[name] = {"source": SOURCE, **spec}
    return keys

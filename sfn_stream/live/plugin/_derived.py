"""Rows of the derived streams (``sfn_xanes_predictions``, ``sfn_xrd_predictions``).

Every row has the same fields whatever happened (event-model requires it): a failed or
insufficient scan gets NaN / -1 / empty values, its ``status`` and its ``reason``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from sfn_stream.core.predict import ClassPrediction, Prediction, ValuePrediction

XANES_STREAM = "sfn_xanes_predictions"
XRD_STREAM = "sfn_xrd_predictions"
SOURCE = "sfn-stream"


def _text(value) -> str:
    return "" if value is None else str(value)


def probability_key(task: str, label) -> str:
    """Column of one class probability, e.g. ``oxidation_state_p_2``, ``crystal_system_p_cubic``."""
    return f"{task}_p_{label}"


def class_probabilities(row: Mapping[str, Any], task: str, classes: Sequence) -> np.ndarray:
    """The probability columns of one task as an array in class order (NaN where absent)."""
    return np.array([float(np.asarray(row.get(probability_key(task, c), math.nan)).ravel()[-1]) for c in classes])


def _class_fields(name: str, prediction: ClassPrediction | None, classes: Sequence) -> dict[str, Any]:
    # One scalar column per class, not an array: every array becomes its own Tiled node (about
    # 0.1 s per write here), and scalar columns can be queried and plotted directly.
    if prediction is None:
        fields = {name: -1 if _numeric(classes) else "", f"{name}_confidence": math.nan}
        fields.update({probability_key(name, label): math.nan for label in classes})
        return fields
    fields = {name: prediction.value, f"{name}_confidence": prediction.confidence}
    fields.update({probability_key(name, label): float(prediction.probabilities.get(str(label), 0.0))
                   for label in classes})
    return fields


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


def json_safe(value):
    """Plain JSON types only (numpy scalars unwrapped, NaN/inf as None) for start and stop documents."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

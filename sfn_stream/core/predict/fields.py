"""A prediction as flat named fields: the one place that turns predictions into columns.

Two readers use the same names: the rows of the derived streams (every class probability as a scalar
column, placeholders when there is no prediction, so that every row has the same fields) and the
queryable stop summaries (rounded numbers, the most probable class with its confidence).

    class_fields("oxidation_state", p, classes=range(8))
      -> {"oxidation_state": 2, "oxidation_state_confidence": 0.96, "oxidation_state_p_0": 0.0, ...}
    value_fields("density", v, digits=4, unit=True)
      -> {"density": 6.1712, "density_std": 0.3021, "density_unit": "g/cm3"}
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ._results import ClassPrediction, Prediction, ValuePrediction


def probability_key(task: str, label) -> str:
    """Column of one class probability, e.g. ``oxidation_state_p_2``, ``crystal_system_p_cubic``."""
    return f"{task}_p_{label}"


def class_probabilities(row: Mapping[str, Any], task: str, classes: Sequence) -> np.ndarray:
    """The probability columns of one task as an array in class order (NaN where absent)."""
    return np.array([float(np.asarray(row.get(probability_key(task, c), math.nan)).ravel()[-1]) for c in classes])


def class_fields(name: str, prediction: ClassPrediction | None, classes: Sequence = (), *,
                 digits: int | None = None) -> dict[str, Any]:
    """``name``, ``name_confidence`` and one ``name_p_<label>`` column per label in ``classes``.

    Without a prediction: -1 (integer classes) or "" for the class, NaN for the numbers. One scalar
    column per class rather than an array: every array becomes its own Tiled node (about 0.1 s per
    write), and scalar columns can be queried and plotted directly.
    """
    if prediction is None:
        fields = {name: -1 if _numeric(classes) else "", f"{name}_confidence": math.nan}
        fields.update({probability_key(name, label): math.nan for label in classes})
        return fields
    fields = {name: prediction.value, f"{name}_confidence": _rounded(prediction.confidence, digits)}
    fields.update({probability_key(name, label): float(prediction.probabilities.get(str(label), 0.0))
                   for label in classes})
    return fields


def value_fields(name: str, prediction: ValuePrediction | None, *, digits: int | None = None,
                 unit: bool = False) -> dict[str, Any]:
    """``name`` and ``name_std`` (and ``name_unit`` when asked); NaN without a prediction."""
    if prediction is None:
        return {name: math.nan, f"{name}_std": math.nan}
    fields = {name: _rounded(prediction.value, digits), f"{name}_std": _rounded(prediction.std, digits)}
    if unit:
        fields[f"{name}_unit"] = prediction.unit
    return fields


def status_fields(prediction: Prediction, *, as_text: bool = False) -> dict[str, Any]:
    """Status, quality flags, reason and bundle id; ``as_text``: strings only (flags comma-joined, "" for
    none), as a derived-stream column needs."""
    if as_text:
        return {"status": prediction.status, "quality_flags": ",".join(prediction.quality_flags),
                "reason": _text(prediction.reason), "bundle_id": _text(prediction.bundle_id)}
    return {"status": prediction.status, "bundle_id": prediction.bundle_id,
            "quality_flags": list(prediction.quality_flags), "reason": prediction.reason}


def summary_fields(prediction: Prediction, absorber: str | None = None) -> dict[str, Any]:
    """The flat, rounded, queryable form of a prediction: status fields, every compound-level prediction,
    the absorber's per-element ones and its ``species`` (``Cu2+``)."""
    fields = status_fields(prediction)
    for name, value in prediction.properties.items():
        fields.update(_summary_of(name, value))
    if absorber and absorber in prediction.per_element:
        for name, value in prediction.per_element[absorber].items():
            fields.update(_summary_of(name, value))
        state = fields.get("oxidation_state")
        if state is not None:
            fields["species"] = f"{absorber}{int(state)}+" if int(state) > 0 else absorber
    return fields


def _summary_of(name: str, value: ClassPrediction | ValuePrediction) -> dict[str, Any]:
    if isinstance(value, ClassPrediction):
        return class_fields(name, value, digits=4)
    return value_fields(name, value, digits=4, unit=True)


def _rounded(value: float, digits: int | None) -> float:
    return value if digits is None else round(value, digits)


def _numeric(classes: Sequence) -> bool:
    return all(isinstance(c, (int, np.integer)) for c in classes)


def _text(value) -> str:
    return "" if value is None else str(value)

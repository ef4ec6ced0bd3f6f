"""Plain JSON values from numpy-laden results: one cleaner for documents, manifests and cards."""

from __future__ import annotations

import math

import numpy as np


def json_safe(value):
    """Plain JSON types only: numpy scalars unwrapped, arrays and tuples as lists, dict keys as str,
    NaN/inf as None (JSON has no NaN; Tiled and event-model reject it)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

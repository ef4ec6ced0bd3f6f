"""Predictors: preprocessing composed with model bundles. Knows nothing of Bluesky or Tiled.

``registry`` picks the bundle for a request and loads it once; ``fields`` turns a prediction into
flat named fields (derived-stream columns, queryable summaries).
"""

from ._composition import CompositionError, element_set, parse_elements
from ._predictors import COMPOSITION_UNKNOWN, XANES_BUNDLE, XRD_BUNDLE, PredictorError, XanesPredictor, XrdPredictor
from ._results import ClassPrediction, Prediction, ValuePrediction
from .fields import (
    class_fields,
    class_probabilities,
    probability_key,
    status_fields,
    summary_fields,
    value_fields,
)
from .registry import BundleCard, ModelRegistry, default_registry, load_predictor, register_predictor

__all__ = [
    "COMPOSITION_UNKNOWN",
    "XANES_BUNDLE",
    "XRD_BUNDLE",
    "BundleCard",
    "ClassPrediction",
    "CompositionError",
    "ModelRegistry",
    "Prediction",
    "PredictorError",
    "ValuePrediction",
    "XanesPredictor",
    "XrdPredictor",
    "class_fields",
    "class_probabilities",
    "default_registry",
    "load_predictor",
    "element_set",
    "parse_elements",
    "probability_key",
    "register_predictor",
    "status_fields",
    "summary_fields",
    "value_fields",
]

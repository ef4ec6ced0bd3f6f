"""Predictors: preprocessing composed with model bundles. Knows nothing of Bluesky or Tiled."""

from ._composition import CompositionError, parse_elements
from ._predictors import (
    XANES_BUNDLE,
    XRD_BUNDLE,
    PredictorError,
    XanesPredictor,
    XrdPredictor,
    summarize,
    xanes_predictor,
    xrd_predictor,
)
from ._results import ClassPrediction, Prediction, ValuePrediction

__all__ = [
    "XANES_BUNDLE",
    "XRD_BUNDLE",
    "ClassPrediction",
    "CompositionError",
    "Prediction",
    "PredictorError",
    "ValuePrediction",
    "XanesPredictor",
    "XrdPredictor",
    "parse_elements",
    "summarize",
    "xanes_predictor",
    "xrd_predictor",
]

"""Bluesky integration: the document filter that adds sfn-stream's derived streams (and, optionally,
structure-inference runs)."""

from ._convention import METADATA_KEY, RunConvention
from ._derived import XANES_STREAM, XRD_STREAM, class_probabilities, probability_key, window_energies
from ._external import ExternalDataError
from ._plugin import PluginStats, Predictors, SfnPlugin
from ._processor import RunProcessor
from ._service import run_service
from ._structure_runs import (
    STRUCTURE_KIND,
    STRUCTURE_STREAM,
    RunInputs,
    StructureInferenceOptions,
    StructureRuns,
    build_request,
)
from ._writer import make_tiled_writer

__all__ = [
    "class_probabilities",
    "probability_key",
    "window_energies",
    "METADATA_KEY",
    "STRUCTURE_KIND",
    "STRUCTURE_STREAM",
    "XANES_STREAM",
    "XRD_STREAM",
    "ExternalDataError",
    "PluginStats",
    "Predictors",
    "RunConvention",
    "RunInputs",
    "RunProcessor",
    "SfnPlugin",
    "StructureInferenceOptions",
    "StructureRuns",
    "build_request",
    "make_tiled_writer",
    "run_service",
]

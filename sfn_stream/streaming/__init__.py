"""Bluesky integration: the document filter that adds sfn-stream's derived streams."""

from ._convention import METADATA_KEY, RunConvention
from ._derived import XANES_STREAM, XRD_STREAM
from ._external import ExternalDataError
from ._plugin import PluginStats, Predictors, SfnPlugin
from ._processor import RunProcessor
from ._service import run_service
from ._writer import make_tiled_writer

__all__ = [
    "METADATA_KEY",
    "XANES_STREAM",
    "XRD_STREAM",
    "ExternalDataError",
    "PluginStats",
    "Predictors",
    "RunConvention",
    "RunProcessor",
    "SfnPlugin",
    "make_tiled_writer",
    "run_service",
]

"""Bluesky integration: the document filter that adds sfn-stream's derived streams, and runs the
after-stop consumers (structure inference).

The names users need are re-exported here; the extension points live in ``sfn_stream.live.analyses``
(kinds of scan), ``sfn_stream.live.consumers`` (after-stop work) and ``sfn_stream.core.predict``
(``ModelRegistry``: which bundle answers which absorber).
"""

from sfn_stream.core.predict import ModelRegistry, class_probabilities, probability_key
from sfn_stream.live.analyses import (
    XANES_STREAM,
    XRD_STREAM,
    Analysis,
    BaseAnalysis,
    ExternalDataError,
    RunConvention,
    register_analysis,
    window_energies,
)
from sfn_stream.live.consumers import (
    STRUCTURE_KIND,
    STRUCTURE_STREAM,
    BaseConsumer,
    Consumer,
    FinishedRun,
    RunInputs,
    StructureConsumer,
    StructureInferenceOptions,
    build_request,
    register_consumer,
)
from sfn_stream.live.documents import METADATA_KEY
from ._plugin import PluginStats, SfnPlugin
from ._processor import RunProcessor
from ._service import run_service
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
    "Analysis",
    "BaseAnalysis",
    "BaseConsumer",
    "Consumer",
    "ExternalDataError",
    "FinishedRun",
    "ModelRegistry",
    "PluginStats",
    "RunConvention",
    "RunInputs",
    "RunProcessor",
    "SfnPlugin",
    "StructureConsumer",
    "StructureInferenceOptions",
    "build_request",
    "make_tiled_writer",
    "register_analysis",
    "register_consumer",
    "run_service",
]

"""After-stop consumers: work started by finished runs and written as runs of their own (structure
inference). ``base`` says how to add one."""

from .base import (
    BaseConsumer,
    Consumer,
    ConsumerStats,
    FinishedRun,
    StartedRun,
    make_consumer,
    register_consumer,
)
from .next_edge import (
    NEXT_EDGE_CONSUMER,
    EdgeCalibration,
    EdgeCost,
    NextEdgeAgent,
    NextEdgeOptions,
)
from .structure import (
    STRUCTURE_CONSUMER,
    STRUCTURE_KIND,
    STRUCTURE_PLAN,
    STRUCTURE_STREAM,
    RunInputs,
    StructureConsumer,
    StructureInferenceOptions,
    build_request,
    candidate_row,
    result_summary,
    run_inputs,
)

__all__ = [
    "NEXT_EDGE_CONSUMER",
    "STRUCTURE_CONSUMER",
    "STRUCTURE_KIND",
    "STRUCTURE_PLAN",
    "STRUCTURE_STREAM",
    "BaseConsumer",
    "Consumer",
    "ConsumerStats",
    "EdgeCalibration",
    "EdgeCost",
    "FinishedRun",
    "NextEdgeAgent",
    "NextEdgeOptions",
    "RunInputs",
    "StructureConsumer",
    "StartedRun",
    "StructureInferenceOptions",
    "build_request",
    "candidate_row",
    "make_consumer",
    "register_consumer",
    "result_summary",
    "run_inputs",
]

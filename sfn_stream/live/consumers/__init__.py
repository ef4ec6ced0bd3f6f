"""After-stop consumers: work started by finished runs and written as runs of their own (structure
inference). ``base`` says how to add one."""

from .base import BaseConsumer, Consumer, ConsumerStats, FinishedRun, make_consumer, register_consumer
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
    "STRUCTURE_CONSUMER",
    "STRUCTURE_KIND",
    "STRUCTURE_PLAN",
    "STRUCTURE_STREAM",
    "BaseConsumer",
    "Consumer",
    "ConsumerStats",
    "FinishedRun",
    "RunInputs",
    "StructureConsumer",
    "StructureInferenceOptions",
    "build_request",
    "candidate_row",
    "make_consumer",
    "register_consumer",
    "result_summary",
    "run_inputs",
]

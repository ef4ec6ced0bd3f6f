"""Replay one stored run's documents through a RunProcessor and keep only what sfn-stream adds.

The processor is the one the live plugin runs, so a backfilled run gets the same derived rows and
the same summary as if the plugin had watched it. Derived streams the run already has (a forced
backfill) and its old summary are left out of the replay, so they are neither analysed nor counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from sfn_stream.live.analyses import RunConvention
from sfn_stream.live.documents import SOURCE
from sfn_stream.live.plugin import RunProcessor

DocumentPair = tuple[str, Mapping]


@dataclass
class ReplayedRun:
    """What the analysis of one stored run produced: ``kind`` None when no analysis recognised it."""

    kind: str | None
    derived_docs: list[tuple[str, dict]] = field(default_factory=list)
    summary: dict | None = None

    @property
    def rows(self) -> int:
        """Derived rows: one per spectrum or frame predicted."""
        return sum(1 for name, _ in self.derived_docs if name == "event")


def is_derived_descriptor(descriptor: Mapping) -> bool:
    """A descriptor of a stream sfn-stream wrote (all its data keys come from sfn-stream)."""
    data_keys = descriptor.get("data_keys") or {}
    return bool(data_keys) and all(key.get("source") == SOURCE for key in data_keys.values())


def replay_run(documents: Iterable[DocumentPair], *, convention: RunConvention, models,
               samples=None) -> ReplayedRun:
    """Run the stored documents (start first, stop last) through a fresh RunProcessor (``samples``: a
    SampleMemory shared by the runs of one backfill, so that a sample's edges are fused as live)."""
    documents = iter(documents)
    name, start = next(documents, (None, None))
    if name != "start":
        raise ValueError(f"a run's documents begin with its start document, not {name!r}")
    derived: list[tuple[str, dict]] = []
    handed_over = {"doc": start}

    def collect(name: str, doc: dict) -> None:  # the raw documents come back unchanged: keep the rest
        if doc is not handed_over["doc"] and name != "stop":
            derived.append((name, doc))

    processor = RunProcessor(dict(start), emit=collect, convention=convention, models=models, samples=samples)
    handed_over["doc"] = processor.start
    processor("start", processor.start)
    old_streams: dict[str, str] = {}  # descriptor uid -> name, of derived streams already stored
    for name, doc in documents:
        if name == "descriptor" and is_derived_descriptor(doc):
            old_streams[doc["uid"]] = doc["name"]
            continue
        if name in ("event", "event_page") and doc["descriptor"] in old_streams:
            continue
        if name == "stop":
            doc = _without_summary(doc, convention.metadata_key, set(old_streams.values()))
        handed_over["doc"] = doc
        processor(name, doc)
    return ReplayedRun(kind=processor.kind, derived_docs=derived, summary=processor.summary)


def _without_summary(stop: Mapping, metadata_key: str, derived_streams: set[str]) -> dict:
    """The stop as the RunEngine wrote it: no summary, no event counts of derived streams."""
    stop = {key: value for key, value in stop.items() if key != metadata_key}
    if isinstance(stop.get("num_events"), Mapping):
        stop["num_events"] = {k: v for k, v in stop["num_events"].items() if k not in derived_streams}
    return stop

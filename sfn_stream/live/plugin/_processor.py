"""Per-run document filter: forwards every document downstream and adds the derived streams.

One :class:`RunProcessor` exists per run (made by the plugin's ``RunRouter`` factory). It
never drops or holds back a raw document: each one is forwarded as it arrives; the only
addition before the stop is the derived stream, and the stop itself carries the summary.
What the run's data means is the business of its analysis (``sfn_stream.live.analyses``),
looked up by kind: this class knows no kind by name.
"""

from __future__ import annotations

import logging
from typing import Callable

from event_model import unpack_event_page

from sfn_stream.live.analyses import ExternalArrays, RunContext, RunConvention, analysis_for
from sfn_stream.live.documents import DerivedStreams, failed_summary, stop_with_summary

logger = logging.getLogger(__name__)

Emit = Callable[[str, dict], None]


class RunProcessor:
    """Forward one run's documents to ``emit``; feed the run's analysis the data it reads."""

    def __init__(self, start: dict, *, emit: Emit, convention: RunConvention, models, samples=None):
        self.start = start
        self.samples = samples  # the plugin's SampleMemory (cross-run fusion), or None
        self.emit = emit
        self.convention = convention
        self.models = models
        self.md = convention.run_metadata(start)
        self.analysis = None
        self.summary: dict | None = None
        self._streams = DerivedStreams.for_run(start, emit)
        self._tracked: dict[str, dict[str, str]] = {}  # descriptor uid -> role -> data key
        self._external = ExternalArrays()
        self._errors: list[str] = []
        self._begin(convention.detect_kind(start))

    @property
    def kind(self) -> str | None:
        return self.analysis.kind if self.analysis is not None else None

    @property
    def prediction_seconds(self) -> float | None:
        """Preprocessing + model time at the stop, where the analysis measured it."""
        return getattr(self.analysis, "prediction_seconds", None)

    # -- dispatch ---------------------------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        if name == "stop":  # the summary rides on the stop, so it is emitted by _on_stop
            self._on_stop(doc)
            return
        self.emit(name, doc)
        handler = getattr(self, "_on_" + name, None)
        if handler is None:
            return
        try:
            handler(doc)
        except Exception as err:  # never let analysis break the forwarding of the run
            logger.exception("sfn-stream: failed to analyse %s document", name)
            self._errors.append(f"analysis of a {name} document failed: {type(err).__name__}: {err}")

    def _begin(self, kind: str | None) -> None:
        analysis = analysis_for(kind)
        if analysis is None:
            return
        explicit = self.md.get("keys")
        context = RunContext(start=self.start, metadata=self.md, models=self.models, write_row=self._streams.write,
                             find_keys=lambda data_keys, roles: self.convention.find_keys(data_keys, roles, explicit),
                             samples=self.samples)
        self.analysis = analysis(context)

    def _on_descriptor(self, doc):
        self._streams.note_descriptor(doc)
        if doc["name"] != self.md.get("stream", self.convention.stream):
            return
        if self.analysis is None:
            self._begin(self.convention.detect_kind(self.start, doc["data_keys"]))
        if self.analysis is None:
            return
        keys = self.convention.find_keys(doc["data_keys"], self.analysis.roles, self.md.get("keys"))
        self.analysis.on_descriptor(doc, keys)
        if keys:
            self._tracked[doc["uid"]] = keys
            self._external.register_descriptor(doc, keys)

    def _on_event(self, doc):
        keys = self._tracked.get(doc["descriptor"])
        if not keys:
            return
        data = doc["data"]
        self.analysis.add_event({role: data[key] for role, key in keys.items() if key in data}, doc["seq_num"])

    def _on_event_page(self, doc):
        for event in unpack_event_page(doc):
            self._on_event(event)

    def _on_stream_resource(self, doc):
        self._external.register_resource(doc)

    def _on_stream_datum(self, doc):
        if not self._tracked.get(doc["descriptor"]):
            return
        rows = self._external.read(doc)
        if rows:
            self.analysis.add_external(rows, doc["seq_nums"]["start"])

    # -- stop -------------------------------------------------------------------------------
    def _on_stop(self, doc: dict) -> None:
        summary = None
        if self.analysis is not None:
            try:
                summary = self.analysis.finish(doc)
            except Exception as err:  # the stop must go out whatever happens
                logger.exception("sfn-stream: failed to finish the run")
                summary = failed_summary(self.kind, err)
        if summary is not None and self._errors:
            summary["errors"] = list(self._errors)
        self.summary = summary
        self.emit("stop", stop_with_summary(doc, summary, self.convention.metadata_key,
                                            self._streams.event_counts()))

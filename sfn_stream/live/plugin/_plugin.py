"""The Bluesky plugin: subscribe it to a RunEngine (or a RemoteDispatcher) in place of the writer.

    writer = make_tiled_writer(client)
    plugin = SfnPlugin(writer)
    RE.subscribe(plugin)

Every document goes on to ``writer`` (and any other downstream callback) unchanged and in
order; runs an analysis recognises (XANES, PXRD: ``sfn_stream.live.analyses``) gain a derived
stream and a ``stop['sfn']`` summary. By default the work happens on a worker thread, so the
RunEngine's thread only enqueues documents.

After each run's stop, every after-stop consumer (``sfn_stream.live.consumers``) sees the finished
run and may write runs of its own. ``consumers=[...]`` adds consumers (objects or registered names);
``structure_inference=StructureInferenceOptions(...)`` adds the structure-inference one, which infers
a sample's structure once its XANES and PXRD runs have stopped; :meth:`SfnPlugin.infer_structure`
does it by hand.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from event_model import RunRouter

from sfn_stream.core.predict import ModelRegistry, default_registry
from sfn_stream.live.analyses import RunConvention
from sfn_stream.live.consumers import (
    STRUCTURE_CONSUMER,
    Consumer,
    ConsumerStats,
    FinishedRun,
    StructureConsumer,
    StructureInferenceOptions,
    make_consumer,
)
from ._processor import RunProcessor

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict], None]
_STOP = object()
_TASK = object()


@dataclass
class PluginStats:
    """Figures the benchmark reads: seconds on the caller's thread per document, stop-to-written latency;
    ``consumers``: each after-stop consumer's own stats, by name."""

    call_seconds: deque = field(default_factory=lambda: deque(maxlen=100_000))
    stop_latency_seconds: deque = field(default_factory=lambda: deque(maxlen=10_000))
    prediction_seconds: deque = field(default_factory=lambda: deque(maxlen=10_000))
    analysed_runs: int = 0
    downstream_errors: int = 0
    consumers: dict[str, ConsumerStats] = field(default_factory=dict)

    @property
    def structure_runs(self) -> int:
        """Structure-inference runs written."""
        stats = self.consumers.get(STRUCTURE_CONSUMER)
        return stats.runs if stats is not None else 0

    @property
    def structure_seconds(self) -> deque:
        """Seconds each structure-inference run took."""
        stats = self.consumers.get(STRUCTURE_CONSUMER)
        return stats.seconds if stats is not None else deque()


class SfnPlugin:
    """Forward documents downstream and add sfn-stream's derived streams (see module docstring)."""

    def __init__(self, *downstream: Callback, convention: RunConvention | None = None,
                 models: ModelRegistry | None = None, threaded: bool = True, preload: bool = True,
                 keep_summaries: int = 100, consumers: Sequence[Consumer | str] = (),
                 structure_inference: StructureInferenceOptions | None = None):
        self.convention = convention or RunConvention()
        self.models = models or default_registry()
        self.stats = PluginStats()
        self.summaries: OrderedDict[str, dict] = OrderedDict()  # run uid -> stop['sfn']
        self._keep = keep_summaries
        self._downstream: list[Callback] = list(downstream)
        self.consumers: list[Consumer] = []
        for consumer in consumers:
            self.add_consumer(make_consumer(consumer) if isinstance(consumer, str) else consumer)
        if structure_inference is not None:
            self.add_consumer(StructureConsumer(structure_inference))
        self._router = RunRouter([self._factory])
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._work, args=(preload,), name="sfn-stream", daemon=True)
            self._thread.start()
        elif preload:
            self.models.preload()

    @property
    def structure(self) -> StructureConsumer | None:
        """The structure-inference consumer, or None when structure inference is off."""
        return next((c for c in self.consumers if isinstance(c, StructureConsumer)), None)

    def add_consumer(self, consumer: Consumer) -> None:
        """Hand every run that finishes from now on to ``consumer`` (after its stop has gone downstream)."""
        consumer.bind(self._emit, metadata_key=self.convention.metadata_key, keep=self._keep)
        self.consumers.append(consumer)
        self.stats.consumers[consumer.name] = consumer.stats

    def subscribe(self, callback: Callback) -> None:
        """Add a downstream callback (it receives every raw and derived document)."""
        self._downstream.append(callback)

    def __call__(self, name: str, doc: dict) -> None:
        received = time.perf_counter()
        if self._queue is not None:
            self._queue.put((name, doc, received))
        else:
            self._process(name, doc, received)
        self.stats.call_seconds.append(time.perf_counter() - received)

    def submit(self, work: Callable[[], Any]) -> Future:
        """Run ``work`` on the worker thread behind the documents received so far (at once when not
        threaded); the future gives its result or its exception."""
        future: Future = Future()

        def task():
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = work()
            except Exception as err:
                future.set_exception(err)
            else:
                future.set_result(result)

        if self._queue is None:
            task()
        elif self._thread is not None and self._thread.is_alive():
            self._queue.put((_TASK, task, None))
        else:
            future.set_exception(RuntimeError("the plugin is closed"))
        return future

    def infer_structure(self, *run_uids: str, elements: Sequence[str] | None = None,
                        sample: str | None = None) -> Future:
        """Infer the structure from the given XANES run(s) and one PXRD run, by hand.

        The work is queued behind the documents received so far (so runs that have just ended can
        be named) and done on the worker thread. The returned future gives the uid of the inference
        run, or raises if the runs are unknown to the plugin or there is not exactly one PXRD run
        (then no run is written). Needs ``structure_inference`` options (``automatic=False`` for
        by-hand only).
        """
        structure = self.structure
        if structure is None:
            raise RuntimeError("structure inference is off: create the plugin with "
                               "structure_inference=StructureInferenceOptions(...)")
        return self.submit(lambda: structure.infer(run_uids, sample=sample, elements=elements))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every document received so far has gone downstream; False on timeout."""
        if self._queue is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 30) -> None:
        """Finish the queued documents and stop the worker thread."""
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.put((_STOP, None, None))
            self._thread.join(timeout)

    # -- internals ----------------------------------------------------------------------------
    def _work(self, preload: bool) -> None:
        if preload:
            for problem in self.models.preload():
                logger.warning("sfn-stream: predictor not available: %s", problem)
        while True:
            name, doc, received = self._queue.get()
            try:
                if name is _STOP:
                    return
                if name is _TASK:
                    doc()
                    continue
                self._process(name, doc, received)
            except Exception:
                logger.exception("sfn-stream: failed to process a %s document", name)
            finally:
                self._queue.task_done()

    def _process(self, name: str, doc: dict, received: float) -> None:
        self._router(name, doc)
        if name == "stop":
            self.stats.stop_latency_seconds.append(time.perf_counter() - received)

    def _factory(self, name: str, start: dict):
        processor = RunProcessor(start, emit=self._emit, convention=self.convention, models=self.models)
        return [_AfterStop(processor, self)], []

    def _emit(self, name: str, doc: dict) -> None:
        for callback in self._downstream:
            try:
                callback(name, doc)
            except Exception:
                self.stats.downstream_errors += 1
                logger.exception("sfn-stream: downstream callback %r failed on %s", callback, name)

    def _run_finished(self, run_uid: str, processor: RunProcessor) -> None:
        """Keep the run's summary, then hand the run to each consumer (on the thread that processed the stop,
        the worker thread by default)."""
        if processor.summary is not None:
            self.summaries[run_uid] = processor.summary
            self.stats.analysed_runs += 1
            while len(self.summaries) > self._keep:
                self.summaries.popitem(last=False)
            if processor.prediction_seconds is not None:
                self.stats.prediction_seconds.append(processor.prediction_seconds)
        run = FinishedRun(uid=run_uid, kind=processor.kind, metadata=processor.md, summary=processor.summary,
                          analysis=processor.analysis)
        for consumer in self.consumers:
            try:
                consumer.run_finished(run)
            except Exception:
                logger.exception("sfn-stream: consumer %s failed after run %s", consumer.name, run_uid)


class _AfterStop:
    """Wraps a run's processor to tell the plugin once the run's stop has gone out."""

    def __init__(self, processor: RunProcessor, plugin: SfnPlugin):
        self.processor, self.plugin = processor, plugin

    def __call__(self, name, doc):
        self.processor(name, doc)
        if name == "stop":
            self.plugin._run_finished(doc["run_start"], self.processor)

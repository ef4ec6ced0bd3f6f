"""The Bluesky plugin: subscribe it to a RunEngine (or a RemoteDispatcher) in place of the writer.

    writer = make_tiled_writer(client)
    plugin = SfnPlugin(writer)
    RE.subscribe(plugin)

Every document goes on to ``writer`` (and any other downstream callback) unchanged and in
order; XANES and PXRD runs gain derived streams and a ``stop['sfn']`` summary. By default
the work happens on a worker thread, so the RunEngine's thread only enqueues documents.

With ``structure_inference=StructureInferenceOptions(...)`` the plugin also infers a sample's
structure once its XANES and PXRD runs have stopped, and writes the result as a run of its own
(see ``_structure_runs``); :meth:`SfnPlugin.infer_structure` does it by hand.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

from event_model import RunRouter

from ._convention import RunConvention
from ._processor import RunProcessor
from ._structure_runs import StructureInferenceOptions, StructureRuns

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict], None]
_STOP = object()
_TASK = object()


class Predictors:
    """Loads the predictors on first use (or ahead of time with :meth:`preload`) and keeps them."""

    def __init__(self, xanes=None, xrd=None):
        self._xanes, self._xrd = xanes, xrd

    def xanes(self):
        if self._xanes is None:
            from sfn_stream.core.predict import xanes_predictor

            self._xanes = xanes_predictor()
        return self._xanes

    def xrd(self):
        if self._xrd is None:
            from sfn_stream.core.predict import xrd_predictor

            self._xrd = xrd_predictor()
        return self._xrd

    def preload(self) -> list[str]:
        """Load both; return the reasons of those that failed (they fail again, recorded, per run)."""
        problems = []
        for load in (self.xanes, self.xrd):
            try:
                load()
            except Exception as err:
                problems.append(f"{type(err).__name__}: {err}")
        return problems


@dataclass
class PluginStats:
    """Figures the benchmark reads: seconds on the caller's thread per document, stop-to-written latency."""

    call_seconds: deque = field(default_factory=lambda: deque(maxlen=100_000))
    stop_latency_seconds: deque = field(default_factory=lambda: deque(maxlen=10_000))
    prediction_seconds: deque = field(default_factory=lambda: deque(maxlen=10_000))
    analysed_runs: int = 0
    downstream_errors: int = 0
    structure_runs: int = 0
    structure_seconds: deque = field(default_factory=lambda: deque(maxlen=10_000))


class SfnPlugin:
    """Forward documents downstream and add sfn-stream's derived streams (see module docstring)."""

    def __init__(self, *downstream: Callback, convention: RunConvention | None = None,
                 predictors: Predictors | None = None, threaded: bool = True, preload: bool = True,
                 keep_summaries: int = 100, structure_inference: StructureInferenceOptions | None = None):
        self.convention = convention or RunConvention()
        self.predictors = predictors or Predictors()
        self.stats = PluginStats()
        self.summaries: OrderedDict[str, dict] = OrderedDict()  # run uid -> stop['sfn']
        self._keep = keep_summaries
        self._downstream: list[Callback] = list(downstream)
        self.structure: StructureRuns | None = None
        if structure_inference is not None:
            self.structure = StructureRuns(structure_inference, self._emit,
                                           metadata_key=self.convention.metadata_key, keep=keep_summaries)
        self._router = RunRouter([self._factory])
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._work, args=(preload,), name="sfn-stream", daemon=True)
            self._thread.start()
        elif preload:
            self.predictors.preload()

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

    def infer_structure(self, *run_uids: str, elements: Sequence[str] | None = None,
                        sample: str | None = None) -> Future:
        """Infer the structure from the given XANES run(s) and one PXRD run, by hand.

        The work is queued behind the documents received so far (so runs that have just ended can
        be named) and done on the worker thread. The returned future gives the uid of the inference
        run, or raises if the runs are unknown to the plugin or there is not exactly one PXRD run
        (then no run is written). Needs ``structure_inference`` options (``automatic=False`` for
        by-hand only).
        """
        if self.structure is None:
            raise RuntimeError("structure inference is off: create the plugin with "
                               "structure_inference=StructureInferenceOptions(...)")
        future: Future = Future()
        structure = self.structure

        def task():
            if not future.set_running_or_notify_cancel():
                return
            try:
                xanes_runs, xrd_run = structure.lookup(run_uids)
                uid = self._run_structure(xanes_runs, xrd_run, sample=sample, elements=elements, trigger="manual")
            except Exception as err:
                future.set_exception(err)
            else:
                future.set_result(uid)

        if self._queue is None:
            task()
        elif self._thread is not None and self._thread.is_alive():
            self._queue.put((_TASK, task, None))
        else:
            future.set_exception(RuntimeError("the plugin is closed"))
        return future

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
            for problem in self.predictors.preload():
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
        processor = RunProcessor(start, emit=self._emit, convention=self.convention, predictors=self.predictors,
                                 keep_pattern=self.structure is not None)
        return [_SummaryKeeper(processor, self)], []

    def _emit(self, name: str, doc: dict) -> None:
        for callback in self._downstream:
            try:
                callback(name, doc)
            except Exception:
                self.stats.downstream_errors += 1
                logger.exception("sfn-stream: downstream callback %r failed on %s", callback, name)

    def _remember(self, run_uid: str, summary: dict) -> None:
        self.summaries[run_uid] = summary
        self.stats.analysed_runs += 1
        while len(self.summaries) > self._keep:
            self.summaries.popitem(last=False)

    def _structure_after_stop(self, run_uid: str, processor: RunProcessor) -> None:
        """The automatic rule, on the thread that processed the stop (the worker thread by default)."""
        if self.structure is None:
            return
        try:
            written = self.structure.on_stop(run_uid, processor)
        except Exception:
            logger.exception("sfn-stream: structure inference bookkeeping failed after run %s", run_uid)
            return
        self._count_structure_runs(written)

    def _run_structure(self, xanes_runs, xrd_run, **kwargs) -> str:
        uid = self.structure.run(xanes_runs, xrd_run, **kwargs)
        self._count_structure_runs([uid])
        return uid

    def _count_structure_runs(self, uids) -> None:
        for uid in uids:  # each run's own stop summary says how long it took
            self.stats.structure_runs += 1
            self.stats.structure_seconds.append(self.structure.results[uid]["seconds"])


class _SummaryKeeper:
    """Wraps a run's processor to keep its summary once the stop has gone out."""

    def __init__(self, processor: RunProcessor, plugin: SfnPlugin):
        self.processor, self.plugin = processor, plugin

    def __call__(self, name, doc):
        self.processor(name, doc)
        if name != "stop":
            return
        if self.processor.summary is not None:
            self.plugin._remember(doc["run_start"], self.processor.summary)
            if self.processor.prediction_seconds is not None:
                self.plugin.stats.prediction_seconds.append(self.processor.prediction_seconds)
        self.plugin._structure_after_stop(doc["run_start"], self.processor)

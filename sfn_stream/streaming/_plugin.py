"""The Bluesky plugin: subscribe it to a RunEngine (or a RemoteDispatcher) in place of the writer.

    writer = make_tiled_writer(client)
    plugin = SfnPlugin(writer)
    RE.subscribe(plugin)

Every document goes on to ``writer`` (and any other downstream callback) unchanged and in
order; XANES and PXRD runs gain derived streams and a ``stop['sfn']`` summary. By default
the work happens on a worker thread, so the RunEngine's thread only enqueues documents.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from event_model import RunRouter

from ._convention import RunConvention
from ._processor import RunProcessor

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict], None]
_STOP = object()


class Predictors:
    """Loads the predictors on first use (or ahead of time with :meth:`preload`) and keeps them."""

    def __init__(self, xanes=None, xrd=None):
        self._xanes, self._xrd = xanes, xrd

    def xanes(self):
        if self._xanes is None:
            from ..predict import xanes_predictor

            self._xanes = xanes_predictor()
        return self._xanes

    def xrd(self):
        if self._xrd is None:
            from ..predict import xrd_predictor

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


class SfnPlugin:
    """Forward documents downstream and add sfn-stream's derived streams (see module docstring)."""

    def __init__(self, *downstream: Callback, convention: RunConvention | None = None,
                 predictors: Predictors | None = None, threaded: bool = True, preload: bool = True,
                 keep_summaries: int = 100):
        self.convention = convention or RunConvention()
        self.predictors = predictors or Predictors()
        self.stats = PluginStats()
        self.summaries: OrderedDict[str, dict] = OrderedDict()  # run uid -> stop['sfn']
        self._keep = keep_summaries
        self._downstream: list[Callback] = list(downstream)
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
        processor = RunProcessor(start, emit=self._emit, convention=self.convention, predictors=self.predictors)
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


class _SummaryKeeper:
    """Wraps a run's processor to keep its summary once the stop has gone out."""

    def __init__(self, processor: RunProcessor, plugin: SfnPlugin):
        self.processor, self.plugin = processor, plugin

    def __call__(self, name, doc):
        self.processor(name, doc)
        if name == "stop" and self.processor.summary is not None:
            self.plugin._remember(doc["run_start"], self.processor.summary)
            if self.processor.prediction_seconds is not None:
                self.plugin.stats.prediction_seconds.append(self.processor.prediction_seconds)

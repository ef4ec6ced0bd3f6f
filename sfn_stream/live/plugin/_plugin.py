"""The Bluesky plugin: subscribe it to a RunEngine (or a RemoteDispatcher) in place of the writer.

    writer = make_tiled_writer(client)
    plugin = SfnPlugin(writer)
    RE.subscribe(plugin)

Every document is first made durable in a local spool (``sfn_stream.live.delivery``: one JSON-lines file
per run, synced at each stop), then a forwarder thread delivers it to ``writer`` (and any other downstream
callback) unchanged and in order, retrying without limit in time while Tiled is down; a run left undelivered
by an ended process is delivered by the next plugin opened on the same spool. Runs an analysis recognises
(XANES, PXRD: ``sfn_stream.live.analyses``) gain a derived stream and a ``stop['sfn']`` summary, computed on
an analysis thread that reads the spool: the RunEngine's thread only appends to a file, and no document
waits in memory. ``spool=False`` (or ``threaded=False``) keeps the documents in memory instead, with no
durability.

After each run's stop, every after-stop consumer (``sfn_stream.live.consumers``) sees the finished
run and may write runs of its own. ``consumers=[...]`` adds consumers (objects or registered names);
``structure_inference=StructureInferenceOptions(...)`` adds the structure-inference one, which infers
a sample's structure once its XANES and PXRD runs have stopped; :meth:`SfnPlugin.infer_structure`
does it by hand.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from event_model import RunRouter

from sfn_stream.core.predict import ModelRegistry, default_registry
from sfn_stream.live.analyses import RunConvention, SampleMemory
from sfn_stream.live.consumers import (
    STRUCTURE_CONSUMER,
    Consumer,
    ConsumerStats,
    FinishedRun,
    StartedRun,
    StructureConsumer,
    StructureInferenceOptions,
    make_consumer,
)
from sfn_stream.live.delivery import (
    DeliveryState,
    Forwarder,
    RecordReader,
    Spool,
    destination_of,
    target_for,
)

from ._processor import RunProcessor
from ._rehearsal import rehearse

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
    """Spool, analyse and forward documents (see module docstring).

    ``spool``: the spool's root folder (default ``$SFN_SPOOL_DIR`` or ``~/.local/share/sfn-stream/spool``),
    a :class:`~sfn_stream.live.delivery.Spool`, or ``False`` for none. ``analysis_wait``: seconds a run's
    stop waits for its analysis before going out alone. ``exit_drain_seconds``: how long the end of the
    Python session waits for undelivered documents. ``queue_size``: bound of the in-memory queue without a
    spool (the RunEngine waits when it is full). ``fuse_samples``: fuse each XANES run of a multi-metal
    sample with the sample's earlier edges (``sfn_sample_predictions``; ``samples`` is the memory).
    """

    def __init__(self, *downstream: Callback, convention: RunConvention | None = None,
                 models: ModelRegistry | None = None, threaded: bool = True, preload: bool = True,
                 keep_summaries: int = 100, consumers: Sequence[Consumer | str] = (),
                 structure_inference: StructureInferenceOptions | None = None,
                 spool: str | os.PathLike | Spool | bool | None = None, analysis_wait: float = 10.0,
                 exit_drain_seconds: float = 30.0, queue_size: int = 10_000, fuse_samples: bool = True):
        self.convention = convention or RunConvention()
        self.models = models or default_registry()
        self.samples: SampleMemory | None = SampleMemory() if fuse_samples else None
        self.stats = PluginStats()
        self.summaries: OrderedDict[str, dict] = OrderedDict()  # run uid -> stop['sfn']
        self.exit_drain_seconds = exit_drain_seconds
        self._keep = keep_summaries
        self._downstream: list[Callback] = list(downstream)
        self.consumers: list[Consumer] = []
        for consumer in consumers:
            self.add_consumer(make_consumer(consumer) if isinstance(consumer, str) else consumer)
        if structure_inference is not None:
            self.add_consumer(StructureConsumer(structure_inference))
        self._router = RunRouter([self._factory])
        self._ready = threading.Event()  # set once the bundles are loaded and rehearsed (see wait_ready)
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._spool: Spool | None = None
        self._forwarder: Forwarder | None = None
        self._closed = False
        if threaded and spool is not False:
            self._start_spooled(spool, analysis_wait, preload)
        elif threaded:
            self._queue = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(target=self._work, args=(preload,), name="sfn-stream", daemon=True)
            self._thread.start()
        else:
            self._start_up(preload)

    @property
    def structure(self) -> StructureConsumer | None:
        """The structure-inference consumer, or None when structure inference is off."""
        return next((c for c in self.consumers if isinstance(c, StructureConsumer)), None)

    @property
    def spool(self) -> Spool | None:
        """Where documents wait for delivery (None without a spool)."""
        return self._spool

    def add_consumer(self, consumer: Consumer) -> None:
        """Hand every run that finishes from now on to ``consumer`` (after its stop has gone downstream)."""
        consumer.bind(self._emit, metadata_key=self.convention.metadata_key, keep=self._keep)
        self.consumers.append(consumer)
        self.stats.consumers[consumer.name] = consumer.stats

    def subscribe(self, callback: Callback) -> None:
        """Add a downstream callback (it receives every raw and derived document)."""
        self._downstream.append(callback)
        if self._forwarder is not None:
            self._forwarder.add_target(target_for(callback))

    def __call__(self, name: str, doc: dict) -> None:
        received = time.perf_counter()
        if self._spool is not None:
            self._spool_document(name, doc, received)
        elif self._queue is not None:
            self._queue.put((name, doc, received))
        else:
            self._process(name, doc, received)
        self.stats.call_seconds.append(time.perf_counter() - received)

    def delivery(self) -> DeliveryState | None:
        """What is not yet delivered downstream (None without a spool)."""
        return self._forwarder.state() if self._forwarder is not None else None

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

        if self._spool is not None and self._thread.is_alive():
            with self._wake:
                self._tasks.append(task)
                self._wake.notify()
        elif self._queue is None and self._spool is None:
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
        """Wait until every document received so far has been analysed and has gone downstream (to Tiled:
        while Tiled is down this waits); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._idle():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 30) -> bool:
        """Finish the received documents (waiting up to ``timeout`` s for delivery) and stop the threads.
        With a spool, what is still undelivered stays there for the next plugin on it; False if any is."""
        if self._closed:
            return True
        self._closed = True
        if self._spool is not None:
            with self._wake:
                self._closing = True
                self._wake.notify()
            self._thread.join(timeout)
            delivered = self.flush(timeout)
            self._forwarder.stop()
            self._spool.close()
            return delivered
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.put((_STOP, None, None))
            self._thread.join(timeout)
        return True

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the plugin has loaded its bundles and rehearsed a run of each kind (seconds, on its own
        thread, from its creation); runs received before then are analysed after it. False on timeout."""
        return self._ready.wait(timeout)

    def _start_up(self, preload: bool) -> None:
        """With ``preload``, load and warm every bundle and rehearse a run of each kind (see ``_rehearsal``);
        then the plugin is ready."""
        try:
            if preload:
                for problem in self.models.preload():
                    logger.warning("sfn-stream: predictor not available: %s", problem)
                for problem in rehearse(self.convention, self.models):
                    logger.info("sfn-stream: %s (the first real run pays the start-up costs instead)", problem)
        finally:
            self._ready.set()

    # -- the spool's analysis thread ----------------------------------------------------------------
    def _start_spooled(self, spool, analysis_wait: float, preload: bool) -> None:
        targets = [target_for(cb) for cb in self._downstream]
        self._spool = spool if isinstance(spool, Spool) else Spool(None if spool in (None, True) else spool,
                                                                    destination=destination_of(targets))
        self._forwarder = Forwarder(self._spool, targets,
                                    analysis_wait=analysis_wait, on_run_delivered=self._run_delivered)
        self._wake = threading.Condition()
        self._tasks: list[Callable[[], None]] = []
        self._closing = self._busy = False
        self._readers: dict[str, RecordReader] = {}
        self._stop_received: dict[str, float] = {}
        self._current: tuple[str, dict] | None = None
        self._derived_descriptors: set[str] = set()
        # runs an ended process spooled but never analysed are analysed again from their first document
        self._dirty = {run.uid for run in self._spool.runs() if run.recovered and run.has_stop and not run.analysed}
        self._thread = threading.Thread(target=self._analyse_spool, args=(preload,), name="sfn-stream", daemon=True)
        self._thread.start()
        self._forwarder.start()
        atexit.register(_drain_at_exit, weakref.ref(self))

    def _spool_document(self, name: str, doc: dict, received: float) -> None:
        def analyse(run_uid: str) -> None:  # as soon as the document is in the file, before a stop's disk sync
            if name == "stop":
                self._stop_received[run_uid] = received
            with self._wake:
                self._dirty.add(run_uid)
                self._wake.notify()

        self._spool.append_raw(name, doc, on_written=analyse)

    def _analyse_spool(self, preload: bool) -> None:
        self._start_up(preload)
        while True:
            with self._wake:
                while not (self._dirty or self._tasks or self._closing):
                    self._wake.wait()
                if self._closing and not (self._dirty or self._tasks):
                    return
                dirty, self._dirty = self._dirty, set()
                tasks, self._tasks = self._tasks, []
                self._busy = True
            try:
                runs = [run for run in map(self._spool.get, dirty) if run is not None]
                for run in sorted(runs, key=lambda run: run.started):
                    self._analyse_new_records(run)
                for task in tasks:  # after the documents spooled before they were submitted
                    task()
            except Exception:
                logger.exception("sfn-stream: the analysis thread failed on a batch of documents")
            finally:
                with self._wake:
                    self._busy = False

    def _analyse_new_records(self, run) -> None:
        if run.analysed:  # its stop came in while the run was being analysed: nothing is left to do
            self._readers.pop(run.uid, None)
            return
        reader = self._readers.setdefault(run.uid, RecordReader(run.path))
        for kind, name, doc in reader.read_new():
            if kind != "raw":  # derived documents and the final stop are this thread's own
                continue
            self._spool.run_of(name, doc)  # a run an ended session spooled: learn its descriptors
            self._current = (run.uid, doc)
            try:
                self._router(name, doc)
            except Exception:
                logger.exception("sfn-stream: failed to process a %s document", name)
            finally:
                self._current = None
            if name == "stop":
                if not run.analysed:  # the processor failed before emitting its stop
                    self._spool.mark_analysed(run.uid, doc)
                self._readers.pop(run.uid, None)
                return

    def _emit_spooled(self, name: str, doc: dict) -> None:
        """Spool what a run's processor or a consumer emits. The processor re-emits the run's raw documents
        (already spooled; its RunRouter turns events into event pages), its derived stream (a descriptor it
        made, and events of it) and the stop with the summary, which marks the run analysed. A consumer's
        run is spooled as it is and never analysed (as it went straight downstream before the spool)."""
        run_uid, raw = self._current if self._current is not None else (None, None)
        if doc is raw:
            return
        if run_uid is not None:
            if name == "stop" and doc.get("run_start") == run_uid:
                self._finish_spooled_run(run_uid, doc)
                return
            if self._is_derived(run_uid, name, doc, raw):
                self._spool.append_derived(run_uid, name, doc)
                return
            if name != "start" and self._spool.run_of(name, doc) == run_uid:
                return  # a raw document of the run, re-emitted in another form
        owner = self._spool.append_raw(name, doc)
        if name == "stop" and owner is not None:
            self._spool.mark_analysed(owner, doc)

    def _is_derived(self, run_uid: str, name: str, doc: dict, raw: dict) -> bool:
        if name == "descriptor" and doc.get("run_start") == run_uid and doc["uid"] != raw.get("uid"):
            self._derived_descriptors.add(doc["uid"])
            self._spool.run_of(name, doc)
            return True
        return name in ("event", "event_page") and doc.get("descriptor") in self._derived_descriptors

    def _finish_spooled_run(self, run_uid: str, stop: dict) -> None:
        summary = stop.get(self.convention.metadata_key)
        if isinstance(summary, dict):
            stop = {**stop, self.convention.metadata_key: {**summary, "delivery": self._forwarder.state().as_dict()}}
        self._spool.mark_analysed(run_uid, stop)

    def _run_delivered(self, run_uid: str) -> None:
        received = self._stop_received.pop(run_uid, None)
        if received is not None:  # the stop's arrival to the run's last document downstream
            self.stats.stop_latency_seconds.append(time.perf_counter() - received)

    def _idle(self) -> bool:
        if self._spool is not None:
            with self._wake:
                analysing = bool(self._dirty or self._tasks or self._busy)
            return not analysing and self._forwarder.caught_up()
        return self._queue is None or not self._queue.unfinished_tasks

    def _at_exit(self) -> None:
        if self._closed:
            return
        if not self.flush(timeout=0):
            state = self._forwarder.state()
            sys.stderr.write(f"sfn-stream: {state.pending_documents} document(s) of {state.pending_runs} run(s) are "
                             f"not delivered yet (last error: {state.last_error}); waiting up to "
                             f"{self.exit_drain_seconds:.0f} s\n")
        if not self.close(timeout=self.exit_drain_seconds):
            state = self._forwarder.state()
            sys.stderr.write(f"sfn-stream: {state.pending_documents} document(s) of {state.pending_runs} run(s) stay "
                             f"in the spool {self._spool.root}: the next plugin opened on it delivers them "
                             "(or run `sfn-stream deliver`)\n")

    # -- without a spool ----------------------------------------------------------------------------
    def _work(self, preload: bool) -> None:
        self._start_up(preload)
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
        processor = RunProcessor(start, emit=self._emit, convention=self.convention, models=self.models,
                                 samples=self.samples)
        self._run_started(start["uid"], processor)
        return [_AfterStop(processor, self)], []

    def _run_started(self, run_uid: str, processor: RunProcessor) -> None:
        """Let each consumer prepare what the run's stop will need, while the run measures."""
        run = StartedRun(uid=run_uid, metadata=processor.md)
        for consumer in self.consumers:
            hook = getattr(consumer, "run_started", None)  # optional: a Consumer needs only run_finished
            if hook is None:
                continue
            try:
                hook(run)
            except Exception:
                logger.exception("sfn-stream: consumer %s failed at the start of run %s", consumer.name, run_uid)

    def _emit(self, name: str, doc: dict) -> None:
        if self._spool is not None:
            self._emit_spooled(name, doc)
            return
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


def _drain_at_exit(plugin_ref) -> None:
    """At the end of the Python session: warn about, and try to deliver, what the plugin still holds."""
    plugin = plugin_ref()
    if plugin is not None:
        plugin._at_exit()


class _AfterStop:
    """Wraps a run's processor to tell the plugin once the run's stop has gone out."""

    def __init__(self, processor: RunProcessor, plugin: SfnPlugin):
        self.processor, self.plugin = processor, plugin

    def __call__(self, name, doc):
        if name != "stop":
            self.processor(name, doc)
            return
        forwarder = self.plugin._forwarder
        with forwarder.yielding() if forwarder is not None else contextlib.nullcontext():
            self.processor(name, doc)
            self.plugin._run_finished(doc["run_start"], self.processor)

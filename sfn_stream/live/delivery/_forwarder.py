"""The forwarder: a thread that drains the spool to each target, run by run, retrying without limit in time.

Raw documents go out as soon as they are spooled. A run's raw stop waits for the run's analysis (its
derived stream and the stop carrying the summary) up to ``analysis_wait`` seconds; after that the raw stop
goes out alone and the analysis, when it ends, is added to the stored run in place. A failed delivery is
retried with exponential back-off (``retry_min`` doubling to ``retry_max``), for as long as it takes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ._spool import ANALYSED, DERIVED, RAW, RecordReader, Spool, SpooledRun
from ._targets import RunSink, Target

logger = logging.getLogger(__name__)


@dataclass
class _Delivery:
    """One run's progress towards one target."""

    run: SpooledRun
    target: Target
    reader: RecordReader = None
    sink: RunSink | None = None
    attempts: int = 0
    retry_at: float = 0.0
    held_stop: dict | None = None
    held_since: float = 0.0
    raw_stop_sent: bool = False
    late: list = field(default_factory=list)
    retry_record: tuple | None = None
    done: bool = False

    def __post_init__(self):
        self.reader = RecordReader(self.run.path)

    @property
    def caught_up(self) -> bool:
        return self.done or (self.reader.count >= self.run.records and self.held_stop is None
                             and self.retry_record is None and self.attempts == 0)


@dataclass
class DeliveryState:
    """What is not yet delivered: the figures ``sfn-stream status`` and the stop summary report."""

    pending_runs: int
    pending_documents: int
    oldest_pending_age_s: float | None
    last_error: str | None
    last_error_age_s: float | None
    delivered_runs: int
    spool: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Forwarder:
    def __init__(self, spool: Spool, targets: list[Target], *, analysis_wait: float = 10.0,
                 retry_min: float = 0.5, retry_max: float = 30.0,
                 on_run_delivered: Callable[[str], None] | None = None):
        self.spool = spool
        self.targets = list(targets)
        self.analysis_wait = analysis_wait
        self.retry_min, self.retry_max = retry_min, retry_max
        self.last_error: tuple[float, str] | None = None
        self.delivered_runs = 0
        self.on_run_delivered = on_run_delivered
        self._deliveries: dict[tuple[str, int], _Delivery] = {}
        self._stopping = False
        self._released = threading.Event()
        self._released.set()
        self._held_until = 0.0
        self._thread = threading.Thread(target=self._loop, name="sfn-stream-forwarder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add_target(self, target: Target) -> None:
        self.targets.append(target)
        self.spool._notify()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.spool._notify()
        self._thread.join(timeout)

    @contextlib.contextmanager
    def yielding(self, at_most: float = 0.5):
        """Hold deliveries while the caller works, for at most ``at_most`` seconds: the analysis thread finishing
        a run (its prediction and the after-stop decisions a beamline waits on). Python runs one thread at a
        time, and each document sent to Tiled holds the interpreter for milliseconds; the documents wait in
        the spool meanwhile, already safe on disk."""
        self._held_until = time.monotonic() + at_most
        self._released.clear()
        try:
            yield
        finally:
            self._released.set()

    def _wait_while_held(self) -> None:
        remaining = self._held_until - time.monotonic()
        if remaining > 0:
            self._released.wait(remaining)

    def caught_up(self) -> bool:
        """Every record spooled so far has reached every target (runs still open included)."""
        for run in self.spool.runs():
            for index, target in enumerate(self.targets):
                delivery = self._deliveries.get((run.uid, index))
                if delivery is None or not delivery.caught_up:
                    return False
        return True

    def state(self) -> DeliveryState:
        runs = self.spool.runs()
        pending = 0
        for run in runs:
            sent = [self._deliveries[(run.uid, i)].reader.count if (run.uid, i) in self._deliveries else 0
                    for i in range(len(self.targets))]
            pending += run.records - min(sent, default=run.records)
        waiting = [run for run in runs if not self._run_caught_up(run)]
        now = time.time()
        error, error_time = (self.last_error[1], self.last_error[0]) if self.last_error else (None, None)
        return DeliveryState(
            pending_runs=len(waiting), pending_documents=pending,
            oldest_pending_age_s=round(now - min(run.started for run in waiting), 3) if waiting else None,
            last_error=error, last_error_age_s=round(now - error_time, 3) if error_time else None,
            delivered_runs=self.delivered_runs, spool=str(self.spool.session))

    # -- the thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.spool.changed:
                seen = self.spool.generation
            progressed = self._pass()
            if self._stopping:
                return
            with self.spool.changed:  # an append during the pass has bumped the generation: no wait
                if not progressed and self.spool.generation == seen:
                    self.spool.changed.wait(timeout=self._sleep())

    def _pass(self) -> bool:
        progressed = False
        for run in self.spool.runs():
            finished = True
            for index, target in enumerate(self.targets):
                delivery = self._deliveries.get((run.uid, index))
                if delivery is None:
                    delivery = self._deliveries[(run.uid, index)] = _Delivery(run, target)
                progressed |= self._advance(delivery)
                finished &= delivery.done
            if finished and self.targets:
                for index in range(len(self.targets)):
                    self._deliveries.pop((run.uid, index), None)
                self.spool.delivered(run.uid)
                self.delivered_runs += 1
                if self.on_run_delivered is not None:
                    self.on_run_delivered(run.uid)
        return progressed

    def _sleep(self) -> float:
        retries = [d.retry_at for d in self._deliveries.values() if d.attempts and not d.done]
        held = [d.held_since + self.analysis_wait for d in self._deliveries.values() if d.held_stop is not None]
        wake = min(retries + held, default=time.monotonic() + 1.0)
        return min(1.0, max(0.01, wake - time.monotonic()))

    def _advance(self, delivery: _Delivery) -> bool:
        now = time.monotonic()
        if delivery.done or (delivery.attempts and now < delivery.retry_at):
            return False
        try:
            progressed = self._deliver_new(delivery)
        except Exception as err:
            self._failed(delivery, err)
            return False
        if delivery.attempts:
            logger.warning("sfn-stream delivery: run %s reached %s again after %d failed attempt(s)",
                           delivery.run.uid, delivery.target.name, delivery.attempts)
            delivery.attempts = 0
        return progressed

    def _deliver_new(self, delivery: _Delivery) -> bool:
        run = delivery.run
        if delivery.sink is None:
            clear = run.recovered or delivery.attempts > 0
            delivery.sink = delivery.target.open_run(run.uid, clear=clear)
            if delivery.target.replays_runs:
                delivery.reader, delivery.held_stop, delivery.raw_stop_sent = RecordReader(run.path), None, False
                delivery.late = []
        progressed = False
        if delivery.retry_record is not None:
            self._deliver_record(delivery, *delivery.retry_record)
            delivery.retry_record = None
            progressed = True
        for record in delivery.reader.read_new():
            delivery.retry_record = record  # read but not delivered: the run is not caught up until it is
            self._wait_while_held()
            self._deliver_record(delivery, *record)
            delivery.retry_record = None
            progressed = True
            if delivery.done:
                return True
        if delivery.held_stop is not None and time.monotonic() - delivery.held_since > self.analysis_wait:
            logger.warning("sfn-stream delivery: run %s's analysis is not done after %.0f s: its stop goes to %s "
                           "now, the analysis will be added when it ends", run.uid, self.analysis_wait,
                           delivery.target.name)
            delivery.sink.send("stop", delivery.held_stop)
            delivery.held_stop, delivery.raw_stop_sent = None, True
            progressed = True
        if run.recovered and not run.has_stop and delivery.reader.count >= run.records:
            logger.warning("sfn-stream delivery: run %s of an ended session has no stop: delivered as it was left",
                           run.uid)
            delivery.done = True
            progressed = True
        return progressed

    def _deliver_record(self, delivery: _Delivery, kind: str, name: str, doc: dict) -> None:
        if kind == RAW and name == "stop":
            delivery.held_stop, delivery.held_since = doc, time.monotonic()
        elif kind == RAW or (kind == DERIVED and not delivery.raw_stop_sent):
            delivery.sink.send(name, doc)
        elif kind == DERIVED:
            delivery.late.append((name, doc))
        elif kind == ANALYSED:
            if delivery.raw_stop_sent:
                delivery.sink.add_late(delivery.late, doc)
            else:
                delivery.sink.send("stop", doc)
            delivery.held_stop, delivery.done = None, True

    def _failed(self, delivery: _Delivery, err: Exception) -> None:
        delivery.attempts += 1
        delay = min(self.retry_max, self.retry_min * 2 ** (delivery.attempts - 1))
        delivery.retry_at = time.monotonic() + delay
        if delivery.target.replays_runs:
            delivery.sink, delivery.retry_record = None, None  # cleared and written again whole
        message = f"{delivery.target.name}: run {delivery.run.uid}: {type(err).__name__}: {err}"
        self.last_error = (time.time(), message)
        self.spool.record_error(message)
        log = logger.warning if delivery.attempts <= 3 or delivery.attempts % 20 == 0 else logger.debug
        log("sfn-stream delivery: attempt %d failed (%s); retrying in %.1f s; the documents are safe in %s",
            delivery.attempts, message, delay, delivery.run.path)

    def _run_caught_up(self, run: SpooledRun) -> bool:
        return all((run.uid, i) in self._deliveries and self._deliveries[(run.uid, i)].caught_up
                   for i in range(len(self.targets)))

"""After-stop consumers: work that starts once a run has finished, written as runs of its own.

The plugin hands every finished run (its uid, kind, ``sfn`` metadata, stop summary and the analysis
object that kept its data) to each consumer, on the plugin's worker thread. A consumer may write runs
through the ``emit`` it was bound to (the plugin's downstream: TiledWriter stores them beside the raw
runs) and counts what it wrote in its own ``stats``. It may also prepare at a run's start
(``run_started``, same thread, before the run's data) what the stop will need. A new consumer is one module::

    class NextEdgeAgent(BaseConsumer):
        name = "next_edge"

        def run_finished(self, run):
            if run.kind == "xanes" and run.summary and run.summary["status"] == "ok":
                started = time.perf_counter()
                uid = write_suggestion_run(self.emit, run)      # start, events, stop through emit
                self.stats.record(uid, time.perf_counter() - started)

    plugin = SfnPlugin(writer, consumers=[NextEdgeAgent()])

``register_consumer("next_edge", NextEdgeAgent)`` also lets it be named: ``consumers=["next_edge"]``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from sfn_stream.live.documents import METADATA_KEY

Emit = Callable[[str, dict], None]


@dataclass(frozen=True)
class FinishedRun:
    """What a consumer learns of a run that has just stopped."""

    uid: str
    kind: str | None  # the analysis's kind, None for runs no analysis recognised
    metadata: Mapping[str, Any]  # the run's ``sfn`` metadata (start[metadata_key])
    summary: Mapping[str, Any] | None  # its stop summary (None for runs no analysis recognised)
    analysis: Any = None  # the analysis object: what it kept (a XANES prediction, a mean pattern ...)


@dataclass(frozen=True)
class StartedRun:
    """What a consumer learns of a run that has just started (before any of its data)."""

    uid: str
    metadata: Mapping[str, Any]  # the run's ``sfn`` metadata (start[metadata_key])


@dataclass
class ConsumerStats:
    """The runs a consumer wrote and how long each took."""

    runs: int = 0
    seconds: deque = field(default_factory=lambda: deque(maxlen=10_000))

    def record(self, uid: str, seconds: float) -> None:
        self.runs += 1
        self.seconds.append(seconds)


class Consumer(Protocol):
    name: str
    stats: ConsumerStats

    def bind(self, emit: Emit, *, metadata_key: str, keep: int) -> None:
        """The plugin's downstream emit, its metadata key, and how many runs to remember."""

    def run_finished(self, run: FinishedRun) -> None:
        """A run has stopped (and its stop document gone downstream)."""


class BaseConsumer:
    """Keeps what ``bind`` hands over; ``emit`` fails loudly until the plugin has bound it."""

    name = "consumer"

    def __init__(self):
        self.stats = ConsumerStats()
        self.metadata_key = METADATA_KEY
        self.keep = 100
        self._emit: Emit | None = None

    def bind(self, emit: Emit, *, metadata_key: str, keep: int) -> None:
        self._emit, self.metadata_key, self.keep = emit, metadata_key, keep

    def emit(self, name: str, doc: dict) -> None:
        if self._emit is None:
            raise RuntimeError(f"consumer {self.name!r} is not bound to a plugin")
        self._emit(name, doc)

    def run_started(self, run: StartedRun) -> None:
        """Optional (the plugin calls it where a consumer has it): prepare while the run measures what its stop
        will need, so that the stop waits for less. Nothing by default."""

    def run_finished(self, run: FinishedRun) -> None:
        raise NotImplementedError


_CONSUMERS: dict[str, Callable[[], Consumer]] = {}


def register_consumer(name: str, factory: Callable[[], Consumer]) -> None:
    """Make a consumer available by name (``SfnPlugin(consumers=[name])`` calls ``factory()``)."""
    _CONSUMERS[name] = factory


def make_consumer(name: str) -> Consumer:
    try:
        factory = _CONSUMERS[name]
    except KeyError:
        raise KeyError(f"no consumer is registered as {name!r} (known: {', '.join(_CONSUMERS) or 'none'})") from None
    return factory()

"""Where the forwarder delivers: Tiled (through a TiledWriter) or any other document callback.

A Tiled delivery that fails part-way leaves a partial run; TiledWriter cannot resume one (its start would
answer 409 and its per-run state is gone), so the partial run is removed and the whole run is written again
from the spool with a fresh writer: every document ends in Tiled exactly once. A plain callback gets
at-least-once delivery instead: the failed document is offered again.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict], None]


class RunSink(Protocol):
    def send(self, name: str, doc: dict) -> None: ...

    def add_late(self, derived: list[tuple[str, dict]], final_stop: dict) -> None:
        """The analysis finished after the run's raw stop went out: add its derived documents and summary."""


class Target(Protocol):
    name: str
    replays_runs: bool  # True: a failed run is cleared and written again from its first document

    def open_run(self, run_uid: str, *, clear: bool) -> RunSink: ...


def _server(uri: str) -> str:
    """scheme://host:port of a Tiled URI: one server, however a client or a user spells its address."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else uri


def destination_of(targets) -> str:
    """What a spool session is for: its targets' names (a session is adopted only for the same ones)."""
    return ";".join(sorted(target.name for target in targets))


def make_tiled_writer(client, *, batch_size: int | None = None, **kwargs):
    """A :class:`bluesky_tiled_plugins.TiledWriter` set up for sfn-stream's streams.

    ``max_array_size=0`` stores every array (probabilities, windows) as an array node: small
    arrays otherwise stay in the SQL table and read back as strings.
    """
    from bluesky_tiled_plugins import TiledWriter

    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    kwargs.setdefault("max_array_size", 0)
    return TiledWriter(client, **kwargs)


def is_tiled_writer(callback) -> bool:
    return type(callback).__name__ == "TiledWriter" and hasattr(callback, "client")


def target_for(callback) -> Target:
    """A target as it is; a Tiled target for a TiledWriter (see :func:`make_tiled_writer`); a callback target
    for any other callable."""
    if hasattr(callback, "open_run"):
        return callback
    return TiledTarget(callback) if is_tiled_writer(callback) else CallbackTarget(callback)


class TiledTarget:
    """Delivery to Tiled through TiledWriter: a fresh writer per run, keeping the given writer's settings.

    ``TiledTarget.connecting(uri, api_key)`` connects on first use instead, so a service can start,
    and spool, while Tiled is down.
    """

    replays_runs = True

    def __init__(self, writer=None, *, connect: Callable[[], object] | None = None, label: str | None = None,
                 **writer_options):
        self._template, self._connect, self._options = writer, connect, writer_options
        self._client = writer.client if writer is not None else None
        self._standing = None  # the writer used when called as a plain callback (no spool)
        self.name = f"tiled:{_server(getattr(self._client, 'uri', None) or label or '?')}"

    @classmethod
    def connecting(cls, uri: str, api_key: str | None = None, **writer_options) -> "TiledTarget":
        def connect():
            from tiled.client import from_uri

            return from_uri(uri, api_key=api_key)

        return cls(connect=connect, label=uri, **writer_options)

    @property
    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def open_run(self, run_uid: str, *, clear: bool) -> RunSink:
        if clear:
            self.remove(run_uid)
        return _TiledRun(self, run_uid, self._fresh_writer())

    def remove(self, run_uid: str) -> None:
        """Remove what an earlier, failed or interrupted, delivery of the run left in Tiled."""
        if run_uid in self.client:
            logger.warning("sfn-stream delivery: removing the partial run %s from Tiled to write it again whole",
                           run_uid)
            self.client[run_uid].delete(recursive=True, external_only=False)

    def __call__(self, name: str, doc: dict) -> None:
        if self._standing is None:
            self._standing = self._fresh_writer()
        self._standing(name, doc)

    def _fresh_writer(self):
        if self._template is None:
            return make_tiled_writer(self.client, **self._options)
        # A copy keeps the user's TiledWriter settings; its own RunRouter keeps no state of earlier attempts.
        from event_model import RunRouter

        writer = copy.copy(self._template)
        writer._run_router = RunRouter([writer._factory])
        return writer


class _TiledRun:
    def __init__(self, target: TiledTarget, run_uid: str, writer):
        self.target, self.run_uid, self.writer = target, run_uid, writer

    def send(self, name: str, doc: dict) -> None:
        self.writer(name, doc)

    def add_late(self, derived: list[tuple[str, dict]], final_stop: dict) -> None:
        from ._stored_runs import write_derived_into_stored_run

        summary_keys = [key for key in final_stop if key not in _STOP_FIELDS]
        if not summary_keys:  # nothing was analysed: the raw stop in Tiled is the final one
            return
        key = summary_keys[0]
        write_derived_into_stored_run(self.target.client, self.run_uid, derived, final_stop[key], metadata_key=key)


_STOP_FIELDS = {"uid", "time", "run_start", "exit_status", "reason", "num_events"}


class CallbackTarget:
    replays_runs = False

    def __init__(self, callback: Callback):
        self.callback = callback
        self.name = getattr(callback, "__name__", type(callback).__name__)

    def open_run(self, run_uid: str, *, clear: bool) -> RunSink:
        return _CallbackRun(self.callback)


class _CallbackRun:
    def __init__(self, callback: Callback):
        self.callback = callback

    def send(self, name: str, doc: dict) -> None:
        self.callback(name, doc)

    def add_late(self, derived: list[tuple[str, dict]], final_stop: dict) -> None:
        # The raw stop went out already; a callback gets the derived documents, not a second stop.
        for name, doc in derived:
            self.callback(name, doc)

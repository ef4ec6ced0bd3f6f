"""The spool: every document of a run, appended to the run's own JSON-lines file before anything else happens.

Layout (``root`` is ``$SFN_SPOOL_DIR``, else ``~/.local/share/sfn-stream/spool``)::

    root/<session>/lock                 flock held by the live process that owns the session
    root/<session>/<run uid>.jsonl      one record per line: raw documents, derived documents, markers
    root/<session>/last_error.json      the forwarder's last delivery error
    root/<session>/unrouted.jsonl       documents whose run could not be told (never expected)

A record is ``{"k": kind, "n": name, "d": doc}`` with kind ``raw`` (a document as the RunEngine emitted it),
``derived`` (sfn-stream's own stream) or ``analysed`` (the run's final stop, summary included). Each line is
written with one ``write`` and flushed to the OS at once, so a killed process loses nothing it wrote; the
file is fsynced at each stop, so a crash of the machine loses nothing before the last stop.

A session whose lock is free belongs to a process that has ended (exited, killed): the next spool opened on
the same root for the same destination (``root/<session>/destination``: the Tiled server's address) adopts
it and delivers what it holds.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

RAW, DERIVED, ANALYSED = "raw", "derived", "analysed"
SUFFIX = ".jsonl"
_RUN_KEYS = {"descriptor": "run_start", "resource": "run_start", "stream_resource": "run_start",
             "stop": "run_start"}


def default_spool_root() -> Path:
    """``$SFN_SPOOL_DIR``, else ``$XDG_DATA_HOME/sfn-stream/spool`` (``~/.local/share/...``)."""
    if os.environ.get("SFN_SPOOL_DIR"):
        return Path(os.environ["SFN_SPOOL_DIR"]).expanduser()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "sfn-stream" / "spool"


def _encode(value):
    """JSON for what documents carry besides plain types: numpy arrays and scalars."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot spool a {type(value).__name__}")


def encode_record(kind: str, name: str, doc: dict) -> bytes:
    return (json.dumps({"k": kind, "n": name, "d": doc}, default=_encode, separators=(",", ":"))
            + "\n").encode()


@dataclass
class SpooledRun:
    """One run's file and what is known of it; the lock serialises the RunEngine's and the analysis' appends."""

    uid: str
    path: Path
    recovered: bool = False  # written by a process that has ended
    started: float = field(default_factory=time.time)
    records: int = 0
    has_stop: bool = False
    analysed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _handle: object = field(default=None, repr=False)

    def append(self, kind: str, name: str, doc: dict) -> None:
        line = encode_record(kind, name, doc)
        with self.lock:
            if self._handle is None:
                self._handle = open(self.path, "ab", buffering=0)  # unbuffered: each line reaches the OS whole
                if _ends_mid_line(self.path):  # cut by a crash: the next record must start a line of its own
                    self._handle.write(b"\n")
            self._handle.write(line)
            self.records += 1
            if kind == RAW and name == "stop":
                self.has_stop = True
            if kind == ANALYSED:
                self.analysed = True

    def close(self) -> None:
        """Sync the file to disk and close it. The sync runs outside the lock: fsync flushes the file, not the
        handle, so an append made meanwhile (on a handle of its own) need not wait the 5-40 ms a busy disk
        takes; the analysis thread's rows after a stop did."""
        with self.lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            os.fsync(handle.fileno())
            handle.close()


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


class RecordReader:
    """Reads a run file's complete lines from where it last stopped (a line still being written waits)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.count = 0

    def read_new(self) -> Iterator[tuple[str, str, dict]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        for line in data[: end + 1].splitlines():
            self.offset += len(line) + 1
            self.count += 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a crash mid-write, followed by a later append
                logger.error("sfn-stream spool: unreadable line in %s skipped", self.path)
                continue
            yield record["k"], record["n"], record["d"]


def _scan(path: Path) -> tuple[int, bool, bool]:
    """Records in a run file, whether it holds the raw stop and the analysis marker."""
    reader, has_stop, analysed = RecordReader(path), False, False
    for kind, name, _ in reader.read_new():
        has_stop |= kind == RAW and name == "stop"
        analysed |= kind == ANALYSED
    return reader.count, has_stop, analysed


def _destination_of(session: Path) -> str | None:
    try:
        return (session / "destination").read_text()
    except FileNotFoundError:
        return None


class Spool:
    """This process's session in the spool root, plus the sessions it adopted from ended processes."""

    def __init__(self, root: str | os.PathLike | None = None, *, destination: str = ""):
        self.root = Path(root) if root is not None else default_spool_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.destination = destination
        self.session = self.root / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.session.mkdir()
        self._locks = [self._lock(self.session)]
        (self.session / "destination").write_text(destination)
        self._runs: dict[str, SpooledRun] = {}
        self._owner: dict[str, str] = {}  # descriptor or resource uid -> run uid
        self._guard = threading.Lock()
        self.changed = threading.Condition()
        self.generation = 0  # counts appends: a reader that saw generation g waits only while it is still g
        self._adopt_ended_sessions()

    # -- the RunEngine's side ---------------------------------------------------------------------
    def append_raw(self, name: str, doc: dict, *, on_written: Callable[[str], None] | None = None) -> str | None:
        """Make one emitted document durable; return its run's uid (None if no run could be told).

        ``on_written(run_uid)`` is called as soon as the record can be read from the run's file, before a stop
        is synced to disk: a reader (the plugin's analysis) starts while the disk syncs, which takes 5-40 ms on
        a busy machine. The caller still returns only once the stop is on disk."""
        run_uid = self.run_of(name, doc)
        run = self._runs.get(run_uid) if run_uid else None
        if run is None:
            if name == "start":
                run = self._open(doc["uid"])
            else:
                self._unrouted(name, doc)
                return None
        run.append(RAW, name, doc)
        if on_written is not None:
            on_written(run.uid)
        if name == "stop":
            run.close()  # synced (once), then closed; later appends (the analysis rows) open the file again
        self._notify()
        return run.uid

    def append_derived(self, run_uid: str, name: str, doc: dict) -> None:
        self._runs[run_uid].append(DERIVED, name, doc)
        self._notify()

    def mark_analysed(self, run_uid: str, final_stop: dict) -> None:
        """Record the run's final stop (summary included): the run is ready to finish delivering."""
        run = self._runs[run_uid]
        run.append(ANALYSED, "stop", final_stop)
        run.close()  # synced, then closed: one fsync (a second one on a clean file still took ~2 ms)
        self._notify()

    # -- the forwarder's side ---------------------------------------------------------------------
    def runs(self) -> list[SpooledRun]:
        """Runs not yet delivered, oldest first."""
        with self._guard:
            return sorted(self._runs.values(), key=lambda run: run.started)

    def get(self, run_uid: str) -> SpooledRun | None:
        return self._runs.get(run_uid)

    def delivered(self, run_uid: str) -> None:
        """The run is complete downstream: forget it and remove its file."""
        with self._guard:
            run = self._runs.pop(run_uid, None)
            self._owner = {key: uid for key, uid in self._owner.items() if uid != run_uid}
        if run is not None:
            run.close()
            run.path.unlink(missing_ok=True)
        self._release_empty_adopted()

    def record_error(self, message: str) -> None:
        (self.session / "last_error.json").write_text(json.dumps({"time": time.time(), "error": message}))

    def close(self) -> None:
        """Release the session: what it still holds is adopted by the next spool opened on this root."""
        for run in list(self._runs.values()):
            run.close()
        for handle in self._locks:
            handle.close()
        self._locks = []
        if not any(self.session.glob("*" + SUFFIX)):
            shutil.rmtree(self.session, ignore_errors=True)

    # -- internals --------------------------------------------------------------------------------
    def run_of(self, name: str, doc: dict) -> str | None:
        """The uid of the run a document belongs to (descriptors and resources are remembered for their
        events and datums); None if it cannot be told."""
        if name == "start":
            return doc["uid"]
        if name in _RUN_KEYS:
            run_uid = doc.get(_RUN_KEYS[name])
            if name in ("descriptor", "resource", "stream_resource") and run_uid:
                self._owner[doc["uid"]] = run_uid
            return run_uid
        if name in ("event", "event_page", "stream_datum"):
            return self._owner.get(doc.get("descriptor"))
        if name in ("datum", "datum_page"):
            resource = doc.get("resource")
            return self._owner.get(resource[0] if isinstance(resource, list) else resource)
        return None

    def _open(self, run_uid: str) -> SpooledRun:
        run = SpooledRun(run_uid, self.session / f"{run_uid}{SUFFIX}")
        with self._guard:
            self._runs[run_uid] = run
        return run

    def _unrouted(self, name: str, doc: dict) -> None:
        logger.error("sfn-stream spool: a %s document belongs to no run this plugin saw start; kept in %s",
                     name, self.session / "unrouted.jsonl")
        with open(self.session / "unrouted.jsonl", "ab") as handle:
            handle.write(encode_record(RAW, name, doc))

    def _notify(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    @staticmethod
    def _lock(session: Path, *, blocking: bool = True):
        handle = open(session / "lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def _adopt_ended_sessions(self) -> None:
        for session in sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.session):
            if _destination_of(session) != self.destination:
                continue  # its runs are for another Tiled (or other callbacks)
            handle = self._lock(session, blocking=False)
            if handle is None:
                continue  # a live process owns it
            self._locks.append(handle)
            for path in sorted(session.glob("*" + SUFFIX), key=lambda p: p.stat().st_mtime):
                if path.name == "unrouted.jsonl":
                    continue
                records, has_stop, analysed = _scan(path)
                run = SpooledRun(path.stem, path, recovered=True, started=path.stat().st_mtime,
                                 records=records, has_stop=has_stop, analysed=analysed)
                self._runs[run.uid] = run
            if any(run.path.parent == session for run in self._runs.values()):
                logger.warning("sfn-stream spool: adopted %d undelivered run(s) of an ended session %s",
                               sum(run.path.parent == session for run in self._runs.values()), session.name)
        self._release_empty_adopted()

    def _release_empty_adopted(self) -> None:
        for handle in list(self._locks[1:]):
            session = Path(handle.name).parent
            if any(session.glob("*" + SUFFIX)) or (session / "unrouted.jsonl").exists():
                continue
            handle.close()
            self._locks.remove(handle)
            shutil.rmtree(session, ignore_errors=True)

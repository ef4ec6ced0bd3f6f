"""Run campaign items in a persistent child process that can be killed when an item runs too long.

FEFF stages, CrystalNN on an awkward cell or a teacher model can hang or run for hours; a thread
cannot be stopped, a process can. The child (``_serve`` in a fresh interpreter) keeps its
imports and loaded models between items; on a timeout its whole process group (FEFF's stage
workers included) is killed and the next item starts a fresh child. It works under Dask's daemonic
worker processes, which may not use ``multiprocessing`` children, because it uses ``subprocess``.
FEFF prints to standard output, so the child talks to the parent over a duplicate of its original
stdout and sends its own fd 1 to /dev/null.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable

_HEADER = struct.Struct("!Q")


class ItemTimeout(TimeoutError):
    """The item ran past its time limit and its process was killed."""


class SandboxCrashed(RuntimeError):
    """The child process died while running an item (segfault, out of memory)."""


def _write(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, remaining = [], n
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise ItemTimeout()
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise SandboxCrashed("the sandbox process closed its pipe")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read(fd: int, deadline: float | None) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, None if deadline is None else deadline + 60))


class Sandbox:
    """A child Python process that runs ``function(*args)`` calls with a time limit each.

    ``function`` must be importable by its module and name (it is sent by reference).
    """

    def __init__(self, nice: int = 0):
        self.nice = nice
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from sfn_stream.offline.corpus._sandbox import _serve; _serve()", str(self.nice)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
            )
        return self._process

    def call(self, function: Callable, *args: Any, timeout: float | None = None) -> Any:
        """Result of ``function(*args)`` in the child; its exception is re-raised here."""
        with self._lock:
            process = self._start()
            try:
                _write(process.stdin.fileno(), (function.__module__, function.__qualname__, args))
                deadline = None if timeout is None else time.monotonic() + timeout
                ok, value = _read(process.stdout.fileno(), deadline)
            except ItemTimeout:
                self.close()
                raise ItemTimeout(f"{function.__name__} ran past {timeout:g} s and was stopped") from None
            except (SandboxCrashed, BrokenPipeError, EOFError) as err:
                code = process.poll()
                self.close()
                raise SandboxCrashed(f"the sandbox process died (exit code {code}): {err}") from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the child leads its own group: FEFF workers die too
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe:
                pipe.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _orphan_watch(parent: int) -> None:
    """Kill this sandbox and its FEFF stage processes when the parent dies (a killed Dask worker
    runs no atexit hooks, and a FEFF run would otherwise go on for minutes for nobody)."""
    while True:
        time.sleep(5.0)
        if os.getppid() != parent:
            os.killpg(os.getpgrp(), signal.SIGKILL)


def _lower_priority(nice: int) -> None:
    """``nice`` for this process and its session's autogroup. The sandbox runs in a session of its own, and
    with Linux's autogroup scheduling (the default on desktops and many servers) a process's nice value only
    ranks it inside its session: the session as a whole still takes a full share of the CPUs from the user's
    other work, so the group's nice is lowered too."""
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write(str(nice))
    except OSError:
        pass  # no autogroup here (other OS, kernel option off, or not permitted): process nice only


def _serve() -> None:
    import importlib

    if len(sys.argv) > 1 and int(sys.argv[1]):
        _lower_priority(int(sys.argv[1]))
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # FEFF's native stages print here
    in_fd = sys.stdin.fileno()
    while True:
        try:
            module, name, args = _read(in_fd, None)
        except SandboxCrashed:
            return  # parent closed the pipe
        try:
            target = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
            reply = (True, target(*args))
        except BaseException as err:  # noqa: BLE001 - every failure goes back to the parent
            try:
                pickle.dumps(err)
                reply = (False, err)
            except Exception:
                reply = (False, RuntimeError(f"{type(err).__name__}: {err}"))
        _write(out_fd, reply)



"""What a spool holds, read from its folder alone (``sfn-stream status``): any process may ask."""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

from ._spool import SUFFIX, default_spool_root


def _owner_alive(session: Path) -> bool:
    try:
        with open(session / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False


def _documents(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def spool_status(root: str | Path | None = None) -> dict:
    """Pending runs and documents per session, the oldest pending run's age and each session's last error."""
    root = Path(root) if root is not None else default_spool_root()
    now = time.time()
    sessions = []
    for session in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        runs = [p for p in session.glob("*" + SUFFIX) if p.name != "unrouted.jsonl"]
        error_file = session / "last_error.json"
        error = json.loads(error_file.read_text()) if error_file.exists() else None
        sessions.append({
            "session": session.name,
            "owner_alive": _owner_alive(session),
            "pending_runs": len(runs),
            "pending_documents": sum(_documents(p) for p in runs),
            "oldest_pending_age_s": round(now - min(p.stat().st_mtime for p in runs), 1) if runs else None,
            "unrouted_documents": _documents(session / "unrouted.jsonl") if (session / "unrouted.jsonl").exists()
            else 0,
            "last_error": error["error"] if error else None,
            "last_error_age_s": round(now - error["time"], 1) if error else None,
        })
    ages = [s["oldest_pending_age_s"] for s in sessions if s["oldest_pending_age_s"] is not None]
    return {
        "spool": str(root),
        "pending_runs": sum(s["pending_runs"] for s in sessions),
        "pending_documents": sum(s["pending_documents"] for s in sessions),
        "oldest_pending_age_s": max(ages) if ages else None,
        "sessions": sessions,
    }

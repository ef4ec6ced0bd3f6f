"""The IPython startup profile sets up a working session against a Tiled server."""

from __future__ import annotations

import runpy
from pathlib import Path

STARTUP = Path(__file__).resolve().parents[1] / "profiles" / "profile_sfn" / "startup" / "00-sfn.py"


def test_profile_session_measures_and_writes(monkeypatch, tiled_service, client):
    monkeypatch.setenv("SFN_TILED_URI", tiled_service.uri)
    monkeypatch.setenv("SFN_TILED_API_KEY", tiled_service.api_key)
    monkeypatch.delenv("SFN_ZMQ_PUBLISH", raising=False)
    session = runpy.run_path(str(STARTUP))
    RE, plugin = session["RE"], session["plugin"]
    try:
        (uid,) = RE(session["powder_scan"](session["powder"], sample="t-profile"))
        plugin.flush(timeout=60)
        assert client[uid].metadata["stop"]["sfn"]["kind"] == "xrd"
        assert uid in session["runs_where"](session["client"], sample="t-profile")
    finally:
        plugin.close()

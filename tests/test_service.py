"""The out-of-process service: a real 0MQ proxy process and a real service process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bluesky.callbacks.zmq import Publisher

from sfn_stream.simulated_beamline import xanes_scan
from sfn_stream.live.plugin import XANES_STREAM

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait_for_line(process, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if process.poll() is not None:
            raise AssertionError(f"process exited ({process.returncode}): {process.stdout.read()}")
    raise AssertionError(f"no {text!r} within {timeout} s")


@pytest.fixture
def proxy():
    port_in, port_out = _free_ports(2)
    executable = Path(sys.executable).with_name("bluesky-0MQ-proxy")
    process = subprocess.Popen([str(executable), str(port_in), str(port_out)])
    yield port_in, port_out
    process.terminate()
    process.wait(10)


def test_service_process_writes_predictions_to_tiled(proxy, tiled_service, client, beamline, RE):
    port_in, port_out = proxy
    env = {**os.environ, "SFN_TILED_API_KEY": tiled_service.api_key, "PYTHONUNBUFFERED": "1"}
    service = subprocess.Popen(
        [sys.executable, str(ROOT / "callbacks" / "sfn_service.py"), "--zmq", f"127.0.0.1:{port_out}",
         "--tiled", tiled_service.uri],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = Publisher(f"127.0.0.1:{port_in}")
    try:
        _wait_for_line(service, "sfn-stream service ready", timeout=180)
        time.sleep(0.5)  # 0MQ slow joiner: let the subscription reach the proxy
        mono, xas, _ = beamline
        RE.subscribe(publisher)
        (uid,) = RE(xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-service"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if uid in client and "sfn" in (client[uid].metadata.get("stop") or {}):
                break
            time.sleep(0.5)
        run = client[uid]
        summary = run.metadata["stop"]["sfn"]
        assert summary["status"] in ("ok", "flagged")
        assert set(run) == {"primary", XANES_STREAM}
        assert run["primary"].read().sizes["time"] == 200
    finally:
        # Close while the proxy still runs: a PUB socket left to the garbage collector after its
        # peer is gone makes zmq's Context.__del__ wait forever (seen as a hung later test).
        publisher.close()
        service.terminate()
        output, _ = service.communicate(timeout=30)
    assert service.returncode == 0, output
    assert "Traceback" not in output


def test_service_started_while_tiled_is_down_delivers_once_tiled_is_up(proxy, beamline, RE, tmp_path):
    from sfn_stream.offline.evaluation.fault_benchmark import FaultLab

    lab = FaultLab(tmp_path)  # Tiled not started yet
    port_in, port_out = proxy
    env = {**os.environ, "SFN_TILED_API_KEY": lab.api_key, "PYTHONUNBUFFERED": "1",
           "SFN_SPOOL_DIR": str(tmp_path / "spool")}
    service = subprocess.Popen(
        [sys.executable, str(ROOT / "callbacks" / "sfn_service.py"), "--zmq", f"127.0.0.1:{port_out}",
         "--tiled", lab.uri], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = Publisher(f"127.0.0.1:{port_in}")
    try:
        _wait_for_line(service, "sfn-stream service ready", timeout=180)
        time.sleep(0.5)
        mono, xas, _ = beamline
        RE.subscribe(publisher)
        (uid,) = RE(xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-service-down"))
        lab.start_tiled()
        client = lab.client()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (uid in client and "sfn" in (client[uid].metadata.get("stop") or {})):
            time.sleep(0.5)
        run = client[uid]
        assert run.metadata["stop"]["sfn"]["status"] in ("ok", "flagged")
        assert run["primary"].read().sizes["time"] == 200 and set(run) == {"primary", XANES_STREAM}
    finally:
        publisher.close()
        service.terminate()
        output, _ = service.communicate(timeout=60)
        lab.close()
    assert service.returncode == 0, output

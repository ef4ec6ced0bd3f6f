"""The next-edge agent for users: ``sfn-stream agent measure|list-samples``, the IPython profile's
``measure_with_agent`` and the 0MQ service with ``--agent``. Real RunEngine, the simulated beamline replaying
a two-metal test-split corpus material, the session's real Tiled server, a real 0MQ proxy and service
process. No mocks.

The options ``--target-confidence 1.01 --min-bits-per-hour 0`` make every edge worth measuring, so what is
checked follows from the rules, not from the calibrated thresholds (``sfn-stream bench agent`` measures how
well those stop).
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiled.queries import Key

from sfn_stream.cli import main
from sfn_stream.core import paths
from sfn_stream.live.consumers.next_edge import NEXT_EDGE_KIND

pytest.importorskip("pyarrow")
if not (paths.CORPUS_DIR / "materials.parquet").is_file():
    pytest.skip("data/corpus is absent", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
STARTUP = ROOT / "profiles" / "profile_sfn" / "startup" / "00-sfn.py"
EVERY_EDGE = ["--target-confidence", "1.01", "--min-bits-per-hour", "0"]


@pytest.fixture(scope="module")
def two_metal():
    """A two-metal test-split material whose metals one XANES bundle covers together."""
    from sfn_stream.cli._agent import usable_samples
    from sfn_stream.core.predict import PredictorError, default_registry

    registry = default_registry()
    for row in usable_samples("test"):
        if len(row["metals"]) == 2:
            try:
                registry.predictor_for_edges("xanes", row["metals"])
            except PredictorError:
                continue
            return row
    pytest.skip("no two-metal test material that one XANES bundle covers")


def _decisions(client, sample):
    found = client.search(Key("start.sfn.kind") == NEXT_EDGE_KIND).search(Key("start.sfn.sample") == sample)
    return sorted(found.values(), key=lambda run: run.metadata["start"]["time"])


def _stopped(runs, n) -> bool:
    """Whether ``n`` decision runs are in Tiled with their stop (a run is visible from its start on)."""
    return len(runs) == n and all("sfn" in (run.metadata.get("stop") or {}) for run in runs)


def test_list_samples_shows_multi_metal_materials_with_their_split(capsys, two_metal):
    assert main(["agent", "list-samples", "--split", "test", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert two_metal in rows
    assert all(len(row["metals"]) >= 2 and "test" in row["splits"] for row in rows)


def test_measure_from_the_cli_follows_the_first_edge_then_the_agent_and_writes_decisions_to_tiled(
        capsys, monkeypatch, tiled_service, client, two_metal):
    monkeypatch.setenv("SFN_TILED_API_KEY", tiled_service.api_key)
    first, second = reversed(two_metal["metals"])  # the user's choice, not necessarily the agent's
    name = f"t-cli-agent-{two_metal['material_id']}"
    status = main(["agent", "measure", "--material", two_metal["material_id"], "--first-edge", first,
                   "--tiled", tiled_service.uri, "--sample-name", name, "--json", *EVERY_EDGE])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert [step["trigger"] for step in result["steps"]] == ["pxrd", first, second]
    assert result["edges_measured"] == [m for m in two_metal["metals"]]  # in the sample's (Z) order
    assert [step["next_edge"] for step in result["steps"]][1:] == [second, ""]
    assert result["steps"][-1]["done"]
    assert result["steps"][-1]["reason"] == "every 3d-metal edge of the sample is measured"
    assert all(step["stop_to_suggestion_ms"] > 0 for step in result["steps"])
    assert set(result["steps"][-1]["metal_confidence"]) == set(two_metal["metals"])
    assert 0 <= result["labels_right"] <= result["labels_total"]
    runs = _decisions(client, name)
    assert [run.metadata["start"]["uid"] for run in runs] == [step["decision_run"] for step in result["steps"]]
    xanes = client.search(Key("start.sfn.kind") == "xanes").search(Key("start.sfn.sample") == name)
    assert sorted(run.metadata["start"]["sfn"]["element"] for run in xanes.values()) == sorted(two_metal["metals"])


def test_measure_with_the_progress_display_stops_where_the_user_says(capsys, monkeypatch, tiled_service, client,
                                                                      two_metal):
    monkeypatch.setenv("SFN_TILED_API_KEY", tiled_service.api_key)
    name = f"t-cli-progress-{two_metal['material_id']}"
    status = main(["agent", "measure", "--material", two_metal["material_id"], "--tiled", tiled_service.uri,
                   "--sample-name", name, "--max-edges", "1", "--no-pxrd", "--elements-only", *EVERY_EDGE])
    assert status == 0
    captured = capsys.readouterr()
    assert "edges measured" in captured.err and "(1/2)" in captured.err  # the bar and a decision's line
    assert "elements only" in captured.err
    assert f"{name}: 1 of 2 edges measured" in captured.out.replace("\n", " ")
    (run,) = client.search(Key("start.sfn.kind") == "xanes").search(Key("start.sfn.sample") == name).values()
    told = run.metadata["start"]["sfn"]["composition"]
    assert "," in told and set(told.split(",")) >= set(two_metal["metals"])  # the element list, no formula


@pytest.mark.parametrize("argv, message", [
    (["--material", "no-such-material"], "no material 'no-such-material'"),
    (["--first-edge", "Zn"], "has no Zn edge"),
    (["--max-edges", "0"], "--max-edges must be at least 1"),
])
def test_measure_refuses_bad_input_with_the_reason(capsys, two_metal, argv, message):
    if "--material" not in argv:
        argv = ["--material", two_metal["material_id"], *argv]
    if "Zn" in argv and "Zn" in two_metal["metals"]:
        pytest.skip("the sample has a Zn edge")
    assert main(["agent", "measure", *argv]) == 2
    assert message in capsys.readouterr().err


def test_profile_measure_with_agent_uses_the_session_plugin(capsys, monkeypatch, tiled_service, client, two_metal):
    monkeypatch.setenv("SFN_TILED_URI", tiled_service.uri)
    monkeypatch.setenv("SFN_TILED_API_KEY", tiled_service.api_key)
    monkeypatch.delenv("SFN_ZMQ_PUBLISH", raising=False)
    session = runpy.run_path(str(STARTUP))
    plugin = session["plugin"]
    name = f"t-profile-agent-{two_metal['material_id']}"
    try:
        result = session["measure_with_agent"](material=two_metal["material_id"], name=name)
    finally:
        plugin.close()
    # the session's own agent, with its calibrated stopping rule: one edge at least, then its call
    assert 1 <= len(result.edges_measured) <= 2 and set(result.edges_measured) <= set(two_metal["metals"])
    assert result.final.done and session["agent"] in plugin.consumers
    lines = capsys.readouterr().out
    assert "after pxrd:" in lines and f"{name}: measured {', '.join(result.edges_measured)}" in lines
    assert len(_decisions(client, name)) == 1 + len(result.edges_measured)


def test_service_with_agent_writes_decision_runs_to_tiled(tiled_service, client, RE, two_metal):
    from bluesky.callbacks.zmq import Publisher

    from sfn_stream.simulated_beamline import (
        corpus_beamline,
        load_corpus_sample,
        measure_edge,
        powder_scan,
    )
    from tests.test_service import _free_ports, _wait_for_line

    sample = load_corpus_sample(two_metal["material_id"])
    name = f"t-service-agent-{sample.material_id}"
    port_in, port_out = _free_ports(2)
    proxy = subprocess.Popen([str(Path(sys.executable).with_name("bluesky-0MQ-proxy")), str(port_in), str(port_out)])
    env = {**os.environ, "SFN_TILED_API_KEY": tiled_service.api_key, "PYTHONUNBUFFERED": "1"}
    service = subprocess.Popen(
        [sys.executable, str(ROOT / "callbacks" / "sfn_service.py"), "--zmq", f"127.0.0.1:{port_out}",
         "--tiled", tiled_service.uri, "--agent", "--agent-target-confidence", "1.01",
         "--agent-min-bits-per-hour", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = Publisher(f"127.0.0.1:{port_in}")
    try:
        _wait_for_line(service, "sfn-stream service ready (with the next-edge agent)", timeout=180)
        time.sleep(0.5)  # 0MQ slow joiner
        mono, xas, powder = corpus_beamline(sample, seed=11)
        RE.subscribe(publisher)
        RE(powder_scan(powder, sample=name, composition=sample.formula))
        (xanes_uid,) = RE(measure_edge(sample, xas, mono, sample.metals[0], name=name))
        deadline, runs = time.monotonic() + 120, []
        while time.monotonic() < deadline and not _stopped(runs, 2):
            time.sleep(0.5)
            runs = _decisions(client, name)
    finally:
        publisher.close()
        service.terminate()
        output, _ = service.communicate(timeout=60)
        proxy.terminate()
        proxy.wait(10)
    assert service.returncode == 0, output
    assert len(runs) == 2, output
    after_edge = runs[1].metadata
    assert after_edge["start"]["sfn"]["trigger_run"] == xanes_uid
    assert after_edge["stop"]["sfn"]["edges_measured"] == [sample.metals[0]]
    assert after_edge["stop"]["sfn"]["next_edge"] == sample.metals[1]

"""Nothing lost, nothing written twice: the spool and its forwarder against a real Tiled server that goes
down, a RunEngine session that is killed or exits without flushing, and a spool read back after a crash."""

from __future__ import annotations

import json
import time

import pytest
import stamina
from bluesky import RunEngine

from sfn_stream.live.delivery import CallbackTarget, Forwarder, RecordReader, Spool
from sfn_stream.live.plugin import XANES_STREAM
from sfn_stream.offline.evaluation.fault_benchmark import FaultLab, _child_scenario, audit, run_scans


@pytest.fixture
def lab(tmp_path):
    lab = FaultLab(tmp_path, outage_seconds=1.0)
    yield lab
    lab.close()


@pytest.fixture
def no_client_retries():
    """Tiled's client gives up at once (it retries ~45 s): the forwarder's own retries must do the work."""
    stamina.set_testing(True, attempts=1)
    yield
    stamina.set_testing(False)


def _scan_with_outage(lab, demo_sample, beamline, *, stop_at_point):
    lab.start_tiled()
    client = lab.client()
    plugin = lab.plugin(client)
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(plugin)
    recorder: dict = {}

    def during(i, point):
        if point == stop_at_point:
            lab.stop_tiled()

    run_scans(RE, beamline, demo_sample, 1, recorder, during=during)
    assert not plugin.flush(timeout=2), "Tiled is down: the run cannot have been delivered"
    state = plugin.delivery()
    assert state.pending_runs == 1 and state.pending_documents > 0 and state.last_error
    lab.start_tiled()
    assert plugin.flush(timeout=120)
    assert plugin.delivery().pending_runs == 0
    plugin.close()
    return client, recorder


@pytest.mark.parametrize("stop_at_point", [1, 150])
def test_a_run_survives_tiled_going_down_and_is_written_once(lab, demo_sample, beamline, no_client_retries,
                                                             stop_at_point):
    client, recorder = _scan_with_outage(lab, demo_sample, beamline, stop_at_point=stop_at_point)
    complete, emitted, lost, duplicated = audit(client, recorder)
    assert (complete, lost, duplicated) == (1, 0, 0) and emitted > 200
    run_uid = next(uid for uid in recorder if uid != "_descriptors")
    run = client[run_uid]
    assert set(run) == {"primary", XANES_STREAM}
    summary = run.metadata["stop"]["sfn"]
    assert summary["status"] == "ok" and summary["delivery"]["pending_runs"] >= 1  # it waited itself
    json.dumps(summary)  # serialisable wherever it goes: no arrays left in the summary


def test_a_killed_session_leaves_its_runs_to_the_next_one(lab):
    result = _child_scenario(lab, "process_killed", 2, "kill")
    assert result.notes[0] == "child exit code -9"
    assert (result.complete, result.documents_lost, result.rows_duplicated) == (2, 0, 0)
    assert result.documents_emitted > 400
    assert not list(lab.spool_dir.glob("*/*.jsonl")), "delivered runs leave the spool"


def test_a_session_that_ends_without_flush_delivers_before_exit(lab):
    result = _child_scenario(lab, "exit_without_flush", 2, "exit")
    assert result.notes[0] == "child exit code 0"
    assert (result.complete, result.documents_lost, result.rows_duplicated) == (2, 0, 0)


def test_a_live_session_is_never_adopted_and_an_ended_one_is_for_the_same_destination_only(tmp_path):
    live = Spool(tmp_path, destination="tiled:http://a:8000")
    live.append_raw("start", {"uid": "run-a", "time": 1.0})
    other = Spool(tmp_path, destination="tiled:http://a:8000")
    assert other.runs() == []  # run-a belongs to a live session
    live.close()
    assert Spool(tmp_path, destination="tiled:http://b:8000").runs() == []  # run-a is for another server
    adopted = Spool(tmp_path, destination="tiled:http://a:8000")
    assert [(run.uid, run.recovered, run.has_stop) for run in adopted.runs()] == [("run-a", True, False)]


def test_the_spool_keeps_every_document_in_order_and_skips_a_line_cut_by_a_crash(tmp_path):
    import numpy as np

    spool = Spool(tmp_path)
    spool.append_raw("start", {"uid": "r", "time": 0.0})
    spool.append_raw("descriptor", {"uid": "d", "run_start": "r", "name": "primary", "data_keys": {}})
    spool.append_raw("event", {"uid": "e", "descriptor": "d", "seq_num": 1, "data": {"x": np.arange(3)},
                               "timestamps": {}, "time": 1.0})
    path = spool.get("r").path
    spool.get("r").close()
    with open(path, "ab") as handle:
        handle.write(b'{"k":"raw","n":"event","d":{"uid":"cut')  # a process killed mid-write
    reader = RecordReader(path)
    records = list(reader.read_new())
    assert [name for _, name, _ in records] == ["start", "descriptor", "event"]
    assert records[2][2]["data"]["x"] == [0, 1, 2]
    spool.append_raw("stop", {"uid": "s", "run_start": "r", "time": 2.0, "exit_status": "success"})
    assert [name for _, name, _ in reader.read_new()] == ["stop"]  # the cut line is skipped, nothing else is
    assert spool.get("r").has_stop
    unrouted = spool.append_raw("event", {"uid": "x", "descriptor": "unknown", "seq_num": 1, "data": {},
                                          "timestamps": {}, "time": 3.0})
    assert unrouted is None and (spool.session / "unrouted.jsonl").exists()


def test_an_analysis_that_ends_after_the_stop_went_out_is_added_to_the_stored_run(lab, demo_sample, beamline,
                                                                                   caplog):
    lab.start_tiled()
    client = lab.client()
    plugin = lab.plugin(client, analysis_wait=0.0)  # a stop whose analysis is not done goes out at once
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(plugin)
    recorder: dict = {}

    def during(i, point):
        if point == 199:  # hold the analysis thread busy while the stop arrives
            plugin.submit(lambda: time.sleep(3))

    with caplog.at_level("WARNING", logger="sfn_stream.live.delivery"):
        run_scans(RE, beamline, demo_sample, 1, recorder, during=during)
        assert plugin.flush(timeout=120)
    plugin.close()
    assert any("the analysis will be added when it ends" in record.getMessage() for record in caplog.records)
    complete, _, lost, duplicated = audit(client, recorder)
    assert (complete, lost, duplicated) == (1, 0, 0)
    run = client[next(uid for uid in recorder if uid != "_descriptors")]
    assert run.metadata["stop"]["sfn"]["status"] == "ok" and run.metadata["stop"]["num_events"][XANES_STREAM] == 1


def test_status_shows_what_an_ended_session_left_and_deliver_sends_it(lab, demo_sample, beamline,
                                                                      no_client_retries, capsys):
    from sfn_stream.cli import main

    lab.start_tiled()
    client = lab.client()
    plugin = lab.plugin(client)
    lab.stop_tiled()
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(plugin)
    recorder: dict = {}
    run_scans(RE, beamline, demo_sample, 1, recorder)
    assert not plugin.close(timeout=1)  # Tiled is down: the run stays in the spool
    capsys.readouterr()
    assert main(["status", "--spool", str(lab.spool_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pending_runs"] == 1 and report["pending_documents"] > 200
    assert report["sessions"][0]["owner_alive"] is False and report["sessions"][0]["last_error"]

    lab.start_tiled()
    assert main(["deliver", "--tiled", lab.uri, "--api-key", lab.api_key, "--spool", str(lab.spool_dir)]) == 0
    capsys.readouterr()
    assert main(["status", "--spool", str(lab.spool_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending_runs"] == 0
    complete, emitted, lost, duplicated = audit(lab.client(), recorder)
    assert (complete, lost, duplicated) == (1, 0, 0) and emitted > 200


def test_the_derived_stream_and_summary_are_plain_json(RE, beamline, demo_sample):
    from sfn_stream.live.plugin import SfnPlugin
    from sfn_stream.simulated_beamline import xanes_scan

    mono, xas, _ = beamline
    emitted = []
    plugin = SfnPlugin(lambda name, doc: emitted.append((name, doc)), threaded=False)
    RE.subscribe(plugin)
    RE(xanes_scan(xas, mono, demo_sample.absorber, composition=demo_sample.formula, sample="json"))
    derived = {doc["uid"] for name, doc in emitted if name == "descriptor" and doc["name"] == XANES_STREAM}
    ours = [doc for name, doc in emitted if name == "stop" or (name == "event" and doc["descriptor"] in derived)]
    assert len(ours) == 2
    for doc in ours:  # TiledWriter's JSONL backup and any JSON consumer take them as they are
        assert json.loads(json.dumps(doc, allow_nan=True)) == doc


def test_deliveries_wait_while_a_run_is_being_finished_and_never_longer_than_allowed(tmp_path):
    """The analysis thread holds the forwarder while it predicts and decides (a beamline waits on that);
    a read but undelivered document is not 'caught up', and a hold that overstays lets deliveries go on."""
    spool, received = Spool(tmp_path), []
    forwarder = Forwarder(spool, [CallbackTarget(lambda name, doc: received.append(name))])
    forwarder.start()
    try:
        spool.append_raw("start", {"uid": "r", "time": 0.0})
        _wait_for(lambda: received == ["start"])
        with forwarder.yielding(at_most=5.0):
            spool.append_raw("descriptor", {"uid": "d", "run_start": "r", "name": "primary", "data_keys": {}})
            time.sleep(0.3)
            assert received == ["start"] and not forwarder.caught_up()
        _wait_for(lambda: received == ["start", "descriptor"])
        assert forwarder.caught_up()
        with forwarder.yielding(at_most=0.2):  # a consumer that takes seconds (structure inference)
            spool.append_raw("stop", {"uid": "s", "run_start": "r", "time": 2.0, "exit_status": "success"})
            spool.mark_analysed("r", {"uid": "s", "run_start": "r", "time": 2.0, "exit_status": "success"})
            _wait_for(lambda: received[-1:] == ["stop"], timeout=3.0)
    finally:
        forwarder.stop()
    assert received == ["start", "descriptor", "stop"]


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)

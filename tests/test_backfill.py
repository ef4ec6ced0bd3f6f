"""Backfill: runs stored by TiledWriter alone get, in place, what the live plugin would have written.

Real RunEngine, simulated beamline, real Tiled server (the session's TiledService), real models.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
from bluesky import plans as bp
from ophyd.sim import det

from sfn_stream.cli import main
from sfn_stream.live.backfill import NOT_RECOGNISED, BackfillError, backfill, documents_from_streams, select_runs
from sfn_stream.live.delivery import StoredRunError, write_derived_into_stored_run
from sfn_stream.live.plugin import XANES_STREAM, XRD_STREAM, SfnPlugin, make_tiled_writer
from sfn_stream.simulated_beamline import powder_scan, xanes_scan
from test_streaming import XANES_FIELDS, Recorder


def _stored_without_plugin(RE, client, plan):
    """Run ``plan`` with TiledWriter alone; the start uid and every document the RunEngine emitted."""
    recorder = Recorder()
    tokens = [RE.subscribe(recorder), RE.subscribe(make_tiled_writer(client))]
    try:
        RE(plan)
    finally:
        for token in tokens:
            RE.unsubscribe(token)
    return recorder.docs[0][1]["uid"], recorder.docs


def _replayed_live(client, docs, suffix="-live"):
    """The same documents through the live plugin under another run uid (same data, so same predictions)."""
    plugin = SfnPlugin(make_tiled_writer(client), threaded=False)
    for name, doc in copy.deepcopy(docs):
        if name == "start":
            doc["uid"] += suffix
        elif "run_start" in doc:
            doc["run_start"] += suffix
        plugin(name, doc)
    return docs[0][1]["uid"] + suffix


def _as_json(doc):
    return json.loads(json.dumps(doc))


def _node_layout(node):
    """Keys, structure family, specs and dims of a node and its children (what a reader sees)."""
    base = node.base if hasattr(node, "base") else node
    layout = {}
    for key in base:
        child = base[key]
        structure = child.structure()
        layout[key] = (child.structure_family, [s.name for s in child.specs],
                       getattr(structure, "dims", None), getattr(structure, "shape", None),
                       sorted(getattr(structure, "columns", None) or []))
    return layout


def _state(client, uid, stream):
    """What a backfill may change in a run."""
    run = client[uid]
    derived = run[stream] if stream in run else None
    return (run.metadata["stop"], run.metadata.get("notes"), sorted(run),
            None if derived is None else (derived.metadata["uid"], derived.read().sizes["time"]))


def _comparable(documents):
    """Names and the parts of each document a replay uses (event uids are the exporter's own)."""
    out = []
    for name, doc in documents:
        doc = _as_json(dict(doc))
        if name == "event":
            doc = {k: doc[k] for k in ("descriptor", "seq_num", "time", "data", "timestamps")}
        out.append((name, doc))
    return out


def test_stored_runs_serve_their_bluesky_documents_in_order(RE, beamline, client):
    mono, xas, _ = beamline
    uid, docs = _stored_without_plugin(RE, client, xanes_scan(xas, mono, "Cu", sample="t-bf-docs"))
    served = list(client[uid].documents())
    assert [name for name, _ in served] == [name for name, _ in docs]
    assert dict(served[0][1]) == _as_json(docs[0][1]) and dict(served[-1][1]) == _as_json(docs[-1][1])
    sent_events = [doc for name, doc in docs if name == "event"]
    served_events = [doc for name, doc in served if name == "event"]
    assert [e["seq_num"] for e in served_events] == [e["seq_num"] for e in sent_events]
    for key in ("mono_energy", "xas_i0", "xas_it", "xas_iref"):
        assert [e["data"][key] for e in served_events] == [e["data"][key] for e in sent_events]

    # a server without the exporter: the same documents, read from the stream tables and array nodes
    assert _comparable(documents_from_streams(client[uid])) == _comparable(served)
    assert backfill(client, uids=[uid]).counts["written"] == 1  # now with a derived stream and its array node
    run = client[uid]
    assert _comparable(documents_from_streams(run)) == _comparable(run.documents())


def _plan(kind, beamline, sample):
    mono, xas, powder = beamline
    if kind == "xanes":
        return xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample=sample), XANES_STREAM, 1
    return powder_scan(powder, num=2, sample=sample), XRD_STREAM, 2


@pytest.mark.parametrize("kind", ["xanes", "xrd"])
def test_backfill_writes_what_the_live_plugin_writes(RE, beamline, client, kind):
    plan, stream, rows = _plan(kind, beamline, f"t-bf-live-{kind}")
    uid, docs = _stored_without_plugin(RE, client, plan)
    assert set(client[uid]) == {"primary"} and "sfn" not in client[uid].metadata["stop"]
    live_uid = _replayed_live(client, docs)

    report = backfill(client, uids=[uid])
    assert report.counts == {"written": 1, "unchanged": 0, "skipped": 0, "failed": 0} and report.spectra == rows

    stored, live = client[uid], client[live_uid]
    assert set(stored) == set(live) == {"primary", stream}
    assert stored.metadata["stop"]["sfn"] == live.metadata["stop"]["sfn"]
    assert stored.metadata["stop"]["num_events"] == live.metadata["stop"]["num_events"] == \
        {"primary": rows if kind == "xrd" else 200, stream: rows}
    assert stored.metadata.get("notes") == live.metadata.get("notes")
    # the derived stream: same nodes, same descriptor fields, same columns and values
    assert _node_layout(stored[stream]) == _node_layout(live[stream])
    stored_md, live_md = dict(stored[stream].metadata), dict(live[stream].metadata)
    assert stored_md.keys() == live_md.keys() and stored_md["data_keys"] == live_md["data_keys"]
    ours, theirs = stored[stream].read(), live[stream].read()
    assert ours.sizes["time"] == rows and set(ours.data_vars) == set(theirs.data_vars)
    if kind == "xanes":
        assert XANES_FIELDS <= set(ours.data_vars)
    for key in ours.data_vars:
        assert ours[key].dtype == theirs[key].dtype, key
        if key.startswith("ts_"):
            continue
        if ours[key].dtype.kind == "f":
            np.testing.assert_allclose(ours[key].values, theirs[key].values, rtol=1e-6, err_msg=key)
        else:
            assert np.array_equal(ours[key].values, theirs[key].values), key
    # the raw stream is untouched
    assert stored["primary"].read().sizes["time"] == live["primary"].read().sizes["time"]


def test_a_second_backfill_changes_nothing_and_force_replaces_without_duplicating(RE, beamline, client):
    mono, xas, powder = beamline
    xanes_uid, _ = _stored_without_plugin(RE, client, xanes_scan(xas, mono, "Cu", sample="t-bf-again"))
    xrd_uid, _ = _stored_without_plugin(RE, client, powder_scan(powder, num=2, sample="t-bf-again"))
    uids, streams = [xanes_uid, xrd_uid], {xanes_uid: XANES_STREAM, xrd_uid: XRD_STREAM}

    first = backfill(client, uids=uids)
    assert first.counts["written"] == 2 and first.spectra == 3  # one spectrum, two frames
    after_first = {uid: _state(client, uid, streams[uid]) for uid in uids}
    assert after_first[xrd_uid][3][1] == 2 and client[xrd_uid].metadata["stop"]["sfn"]["frames"] == 2

    second = backfill(client, uids=uids)
    assert second.counts == {"written": 0, "unchanged": 2, "skipped": 0, "failed": 0}
    assert {uid: _state(client, uid, streams[uid]) for uid in uids} == after_first

    forced = backfill(client, uids=uids, force=True)
    assert forced.counts["written"] == 2
    for uid in uids:
        stop, notes, keys, (descriptor_uid, rows) = _state(client, uid, streams[uid])
        assert rows == after_first[uid][3][1] and keys == after_first[uid][2]  # replaced, not appended
        assert descriptor_uid != after_first[uid][3][0]
        assert stop["num_events"] == after_first[uid][0]["num_events"]
        assert stop["sfn"]["derived_stream"] == streams[uid]

    # an interrupted write (stream written, stop not yet) is completed by rewriting the stream whole
    client[xanes_uid].base.patch_metadata(metadata_patch=[{"op": "remove", "path": "/stop/sfn"}], drop_revision=True)
    third = backfill(client, uids=[xanes_uid])
    assert third.counts["written"] == 1
    assert client[xanes_uid][XANES_STREAM].read().sizes["time"] == 1 and "sfn" in client[xanes_uid].metadata["stop"]


def test_a_run_that_is_not_xanes_or_pxrd_is_skipped_with_the_reason(RE, client):
    uid, _ = _stored_without_plugin(RE, client, bp.count([det], num=3))
    report = backfill(client, uids=[uid])
    assert report.counts == {"written": 0, "unchanged": 0, "skipped": 1, "failed": 0}
    assert report.outcomes[0].reason == NOT_RECOGNISED
    assert report.to_dict()["reasons"] == {NOT_RECOGNISED: 1}
    assert set(client[uid]) == {"primary"} and "sfn" not in client[uid].metadata["stop"]


def test_runs_are_selected_by_uid_metadata_and_start_time(RE, beamline, client):
    mono, xas, _ = beamline
    since = time.time()
    uid, _ = _stored_without_plugin(RE, client, bp.count([det], num=1, md={"sfn_test": "t-bf-select"}))
    other, _ = _stored_without_plugin(RE, client, bp.count([det], num=1, md={"sfn_test": "t-bf-other"}))
    until = time.time()
    assert select_runs(client, where={"sfn_test": "t-bf-select"}) == [uid]
    assert select_runs(client, where={"start.sfn_test": "t-bf-select"}) == [uid]
    assert sorted(select_runs(client, since=since, until=until)) == sorted([uid, other])
    assert select_runs(client, uids=[uid, other], where={"sfn_test": "t-bf-other"}) == [other]
    assert select_runs(client, since=until) == []
    with pytest.raises(BackfillError, match="no run not-a-run"):
        select_runs(client, uids=["not-a-run"])
    with pytest.raises(StoredRunError, match="no run not-a-run"):
        write_derived_into_stored_run(client, "not-a-run", [], {})


def _cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_backfill_command(RE, beamline, client, tiled_service, capsys):
    mono, xas, _ = beamline
    uid, _ = _stored_without_plugin(RE, client, xanes_scan(xas, mono, "Cu", sample="t-bf-cli"))
    server = ["--tiled", tiled_service.uri, "--api-key", tiled_service.api_key]
    status, out, err = _cli(capsys, "backfill", *server, "--where", "sfn.sample=t-bf-cli", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["written"] == 1 and result["outcomes"][0]["uid"] == uid
    assert result["runs_per_second"] > 0 and result["spectra_per_second"] > 0
    status, out, _ = _cli(capsys, "backfill", *server, "--uid", uid, "--json")
    assert status == 0 and json.loads(out)["unchanged"] == 1

    status, _, err = _cli(capsys, "backfill", *server, "--uid", "not-a-run")
    assert status == 2 and err.strip() == "sfn-stream: no run not-a-run in Tiled"
    status, _, err = _cli(capsys, "backfill", "--tiled", "http://127.0.0.1:9/api/v1", "--uid", uid)
    assert status == 2 and "cannot reach the Tiled server" in err and len(err.strip().splitlines()) == 1
    status, _, err = _cli(capsys, "backfill", *server, "--since", "yesterday")
    assert status == 2 and "--since" in err


@pytest.mark.slow
def test_bench_backfill_prints_its_figures(capsys):
    status, out, _ = _cli(capsys, "bench", "backfill", "--runs", "1", "--json")
    result = json.loads(out)
    assert status == 0 and result["runs"] == 1 and result["first_pass"]["written"] == 1
    assert result["complete"] == 1 and result["unchanged_on_second_pass"] == 1 and result["second_pass"]["written"] == 0
    assert {"runs_per_second", "spectra_per_second", "seconds"} <= set(result["first_pass"])

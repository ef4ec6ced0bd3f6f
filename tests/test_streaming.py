"""The plugin with a real RunEngine, the real models and a real Tiled server."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import RunEngineInterrupted
from event_model import compose_run, pack_event_page

from sfn_stream.simulated_beamline import powder_scan, xanes_energies, xanes_scan
from sfn_stream.live.catalog import runs_where
from sfn_stream.core.predict import ModelRegistry, XanesPredictor
from sfn_stream.live.plugin import XANES_STREAM, XRD_STREAM, SfnPlugin, make_tiled_writer, window_energies

XANES_FIELDS = {"absorber", "status", "quality_flags", "reason", "bundle_id", "oxidation_state",
                "oxidation_state_confidence", "coordination_number", "coordination_number_confidence",
                "density", "density_std", "e0", "e0_shift", "edge_step", "e_ref", "window_start", "window_stop",
                "norm_window"}


class Recorder:
    """Keeps every document it is given (what the RunEngine emitted)."""

    def __init__(self):
        self.docs = []

    def __call__(self, name, doc):
        self.docs.append((name, doc))


@pytest.fixture
def plugin(client):
    plugin = SfnPlugin(make_tiled_writer(client))
    yield plugin
    plugin.close()


def _run(RE, plugin, plan):
    recorder = Recorder()
    RE.subscribe(recorder)
    RE.subscribe(plugin)
    try:
        uids = RE(plan)
    except RunEngineInterrupted:
        uids = ()
    assert plugin.flush(timeout=300), "the plugin did not drain its queue within 300 s"
    start_uid = next(doc["uid"] for name, doc in recorder.docs if name == "start")
    return start_uid, recorder.docs, uids


def _primary_events(docs):
    primary = {doc["uid"] for name, doc in docs if name == "descriptor" and doc["name"] == "primary"}
    return [doc for name, doc in docs if name == "event" and doc["descriptor"] in primary]


def test_xanes_run_gets_derived_stream_and_queryable_summary(RE, plugin, beamline, client, demo_sample):
    mono, xas, _ = beamline
    uid, docs, _ = _run(RE, plugin, xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-xanes"))
    run = client[uid]
    assert set(run) == {"primary", XANES_STREAM}
    derived = run[XANES_STREAM].read()
    assert XANES_FIELDS <= set(derived.data_vars)
    assert derived["status"].values[0] in ("ok", "flagged")
    assert np.asarray(derived["norm_window"]).shape == (1, 200)
    probabilities = [np.asarray(derived[k])[0] for k in derived if k.startswith("oxidation_state_p_")]
    assert len(probabilities) >= 3 and np.isclose(sum(probabilities), 1.0, atol=1e-5)
    energies = window_energies(derived)
    assert energies.shape == (200,) and np.isclose(energies[-1] - energies[0], 56.0)

    stop = run.metadata["stop"]
    summary = stop["sfn"]
    assert summary["kind"] == "xanes" and summary["absorber"] == "Cu" and summary["sample"] == "t-xanes"
    assert summary["bundle_id"].startswith("xanes-specfusion@")
    assert stop["num_events"][XANES_STREAM] == 1
    assert summary["preprocessing"]["calibration"] == "reference_foil"
    # queryable through Tiled, as users ask
    assert uid in runs_where(client, species=summary["species"])
    assert uid in runs_where(client, oxidation_state=summary["oxidation_state"], kind="xanes")

    # the raw primary stream is intact: every reading the RunEngine emitted, in order
    events = _primary_events(docs)
    primary = run["primary"].read()
    assert len(events) == len(xanes_energies("Cu")) == primary.sizes["time"]
    for key in ("mono_energy", "xas_i0", "xas_it", "xas_iref"):
        assert np.array_equal(np.asarray(primary[key]), [e["data"][key] for e in events])


def test_event_pages_give_the_same_predictions(RE, beamline, client):
    mono, xas, _ = beamline
    recorder = Recorder()
    RE.subscribe(recorder)
    RE(xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-pages"))
    direct = SfnPlugin(threaded=False)
    paged = SfnPlugin(make_tiled_writer(client), threaded=False)
    for name, doc in recorder.docs:
        direct(name, doc)
        if name == "event":  # a whole-run event page, as a RunRouter or a file replay hands them over
            paged("event_page", pack_event_page(doc))
        else:
            paged(name, doc)
    uid = recorder.docs[0][1]["uid"]
    assert paged.summaries[uid]["oxidation_state"] == direct.summaries[uid]["oxidation_state"]
    assert paged.summaries[uid]["density"] == pytest.approx(direct.summaries[uid]["density"])
    assert client[uid]["primary"].read().sizes["time"] == 200


def _interrupted_xanes(xas, mono, energies, pause_after):
    md = {"sfn": {"kind": "xanes", "element": "Cu", "composition": "Sr3CuPtO6", "sample": "t-abort"}}

    @bpp.run_decorator(md=md)
    def inner():
        for i, energy in enumerate(energies):
            yield from bps.mv(mono, energy)
            yield from bps.trigger_and_read([xas, mono])
            if i == pause_after:
                yield from bps.checkpoint()
                yield from bps.pause()

    return (yield from inner())


@pytest.mark.parametrize("pause_after, covered", [(185, True), (20, False)])
def test_aborted_run_is_complete_and_predicted_only_if_the_edge_was_covered(
        RE, plugin, beamline, client, pause_after, covered):
    mono, xas, _ = beamline
    energies = list(xanes_energies("Cu"))
    uid, docs, _ = _run(RE, plugin, _interrupted_xanes(xas, mono, energies, pause_after))
    RE.abort("operator stopped the scan")
    plugin.flush(timeout=60)
    run = client[uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "abort"
    assert run["primary"].read().sizes["time"] == pause_after + 1
    summary = stop["sfn"]
    assert "run_abort" in summary["quality_flags"]
    if covered:
        assert summary["status"] == "flagged" and summary["oxidation_state"] is not None
    else:
        assert summary["status"] == "insufficient_data"
        assert summary["reason"]


class _FailingModel(XanesPredictor):
    def predict_window(self, *args, **kwargs):
        raise RuntimeError("weights corrupted")


def test_model_failure_still_gives_a_complete_run_with_the_reason(RE, beamline, client):
    mono, xas, _ = beamline
    plugin = SfnPlugin(make_tiled_writer(client), models=ModelRegistry.with_predictors(xanes=_FailingModel()))
    try:
        uid, docs, _ = _run(RE, plugin, xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-fail"))
    finally:
        plugin.close()
    run = client[uid]
    summary = run.metadata["stop"]["sfn"]
    assert summary["status"] == "error"
    assert "weights corrupted" in summary["reason"]
    assert run["primary"].read().sizes["time"] == 200
    derived = run[XANES_STREAM].read()
    assert derived["status"].values[0] == "error" and "weights corrupted" in derived["reason"].values[0]
    assert uid in runs_where(client, status="error")


def test_weights_that_do_not_match_their_card_give_a_complete_run_with_the_reason(RE, beamline, client,
                                                                                   tampered_models):
    mono, xas, _ = beamline
    plugin = SfnPlugin(make_tiled_writer(client), models=ModelRegistry(tampered_models))
    RE.subscribe(plugin)
    try:
        (uid,) = RE(xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-tampered"))
        assert plugin.flush(timeout=300)
    finally:
        plugin.close()
    run = client[uid]
    summary = run.metadata["stop"]["sfn"]
    assert summary["status"] == "error"
    assert "does not match its model card" in summary["reason"]
    assert run["primary"].read().sizes["time"] == 200
    assert run[XANES_STREAM].read()["status"].values[0] == "error"


def test_a_scan_that_misses_the_edge_is_recorded_as_insufficient(RE, plugin, beamline, client):
    mono, xas, _ = beamline
    uid, _, _ = _run(RE, plugin, xanes_scan(xas, mono, "Cu", regions=((-200.0, -60.0, 2.0),), sample="t-miss"))
    summary = client[uid].metadata["stop"]["sfn"]
    assert summary["status"] == "insufficient_data"
    assert "edge" in summary["reason"].lower()


def test_unsupported_absorber_is_an_error_with_a_reason(RE, plugin, beamline, client):
    mono, xas, _ = beamline
    uid, _, _ = _run(RE, plugin, xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-zn",
                                           md={"sfn": {"kind": "xanes", "element": "Zn", "composition": "ZnO"}}))
    summary = client[uid].metadata["stop"]["sfn"]
    assert summary["status"] in ("error", "insufficient_data")
    assert "Zn" in summary["reason"]


def test_xanes_is_recognised_from_data_keys_without_metadata(RE, plugin, beamline, client):
    from bluesky import plans as bp

    mono, xas, _ = beamline
    uid, _, _ = _run(RE, plugin, bp.list_scan([xas], mono, list(xanes_energies("Cu"))))
    summary = client[uid].metadata["stop"]["sfn"]
    assert summary["absorber"] == "Cu"
    assert {"absorber_inferred_from_energy_range", "composition_unknown"} <= set(summary["quality_flags"])


def test_xrd_frames_are_predicted_live(RE, plugin, beamline, client):
    _, _, powder = beamline
    seen = []
    plugin.subscribe(lambda name, doc: seen.append(name))
    uid, docs, _ = _run(RE, plugin, powder_scan(powder, num=3, sample="t-xrd"))
    run = client[uid]
    derived = run[XRD_STREAM].read()
    assert list(np.asarray(derived["frame"])) == [1, 2, 3]
    assert set(derived["status"].values) <= {"ok", "flagged"}
    summary = run.metadata["stop"]["sfn"]
    assert summary["frames"] == 3 and summary["crystal_system"] in derived["crystal_system"].values
    # the default bundle indexes each frame: the run's lattice is the best-indexing frame's, with its cell
    best = int(np.nanargmax(np.asarray(derived["lattice_merit"])))
    assert summary["lattice"] == derived["lattice"].values[best] != ""
    assert summary["lattice_cell_A"] == pytest.approx([float(derived[f"cell_{axis}"].values[best]) for axis in "abc"])
    assert uid in runs_where(client, lattice=summary["lattice"])
    # each derived event went out before the next raw event (live, not at the stop)
    order = [n for n in seen if n in ("event", "event_page")]
    assert len(order) == 6


def test_external_hdf5_frames_are_read_and_predicted(tmp_path, client, demo_sample):
    """A detector that writes frames to HDF5 (StreamResource/StreamDatum), as ophyd-async ones do."""
    from sfn_stream.simulated_beamline import PowderDetector

    detector = PowderDetector(name="pd", wavelength=demo_sample.wavelength, seed=5)
    detector.load_sticks(demo_sample.sticks_q, demo_sample.sticks_intensity)
    frames = []
    for _ in range(2):
        detector.trigger()
        frames.append(detector.pattern.get())
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as fh:
        fh["entry/data"] = np.asarray(frames)
    tth = detector.tth.get()

    bundle = compose_run(metadata={"sfn": {"kind": "xrd", "wavelength": demo_sample.wavelength,
                                           "sample": "t-h5"}})
    n = len(tth)
    desc = bundle.compose_descriptor(
        name="primary",
        data_keys={"pd_pattern": {"source": "pd", "dtype": "array", "shape": [n], "external": "STREAM:"}},
        configuration={"pd": {"data": {"pd_tth": list(map(float, tth))},
                              "timestamps": {"pd_tth": 0.0},
                              "data_keys": {"pd_tth": {"source": "pd", "dtype": "array", "shape": [n]}}}})
    resource = bundle.compose_stream_resource(mimetype="application/x-hdf5", uri=f"file://localhost{path}",
                                              data_key="pd_pattern", parameters={"dataset": "entry/data"})
    datum = resource.compose_stream_datum(indices={"start": 0, "stop": 2}, seq_nums={"start": 1, "stop": 3},
                                          descriptor=desc.descriptor_doc)
    plugin = SfnPlugin(threaded=False)
    rows = []
    plugin.subscribe(lambda name, doc: rows.append(doc) if name == "event" else None)
    for name, doc in [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc),
                      ("stream_resource", resource.stream_resource_doc), ("stream_datum", datum),
                      ("stop", bundle.compose_stop())]:
        plugin(name, doc)
    assert [row["data"]["frame"] for row in rows] == [1, 2]
    assert all(row["data"]["status"] in ("ok", "flagged") for row in rows)
    assert plugin.summaries[bundle.start_doc["uid"]]["frames_used"] == 2


def test_the_start_up_rehearsal_runs_every_bundle_kind_and_writes_nothing(RE, beamline, client):
    """The plugin rehearses a XANES run per bundle, a two-metal sample and a powder frame while it starts, so
    that a beamline's first run does not pay the process's one-off costs; none of it reaches Tiled or the
    plugin's memory."""
    from sfn_stream.core.predict import default_registry
    from sfn_stream.live.analyses import RunConvention
    from sfn_stream.live.plugin._rehearsal import REHEARSAL_SAMPLE, rehearse

    assert rehearse(RunConvention(), default_registry()) == []  # every shipped bundle predicted its made-up run
    mono, xas, _ = beamline
    plugin = SfnPlugin(make_tiled_writer(client))
    try:
        uid, _, _ = _run(RE, plugin, xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="t-rehearsed"))
    finally:
        plugin.close()
    assert client[uid].metadata["stop"]["sfn"]["status"] == "ok"
    assert runs_where(client, sample=REHEARSAL_SAMPLE) == {}
    assert plugin.samples.edges(REHEARSAL_SAMPLE) == []

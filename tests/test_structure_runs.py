"""Structure inference from Bluesky: a real RunEngine, the simulated beamline, the plugin with inference on,
a small in-memory template set and the session's Tiled server. No mocks.

What is checked here is the wiring (trigger rule, the inference run's documents, links to the raw runs,
queries through Tiled); the inference's skill is tested in test_structure.py. The template set holds
delafossite-type CuAlO2 and CuCrO2 (substitution gives CuFeO2 delafossite), alpha-NaFeO2 and rutile as
distractors, and the demo sample's own structure (read from its CIF), whatever the demo sample is.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure
from tiled.queries import Contains, Key

from sfn_stream.simulated_beamline import powder_scan, xanes_scan
from sfn_stream.live.catalog import runs_where
from sfn_stream.live.plugin import (
    STRUCTURE_KIND,
    STRUCTURE_STREAM,
    XANES_STREAM,
    XRD_STREAM,
    SfnPlugin,
    StructureInferenceOptions,
    make_tiled_writer,
)
from sfn_stream.core.structure import StructureSource


def delafossite(m: str, a: float, c: float, z: float) -> Structure:
    return Structure.from_spacegroup("R-3m", Lattice.hexagonal(a, c), ["Cu", m, "O"],
                                     [[0, 0, 0], [0, 0, 0.5], [0, 0, z]])


def alpha_nafeo2() -> Structure:
    return Structure.from_spacegroup("R-3m", Lattice.hexagonal(3.022, 16.09), ["Na", "Fe", "O"],
                                     [[0, 0, 0.5], [0, 0, 0], [0, 0, 0.2316]])


def rutile_sno2() -> Structure:
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.737, 3.186), ["Sn", "O"],
                                     [[0, 0, 0], [0.3053, 0.3053, 0]])


@pytest.fixture(scope="module")
def templates(demo_sample):
    return StructureSource("bluesky-templates", {
        "CuAlO2-delafossite": delafossite("Al", 2.858, 16.958, 0.1099),
        "CuCrO2-delafossite": delafossite("Cr", 2.975, 17.10, 0.1078),
        "NaFeO2-alpha": alpha_nafeo2(), "SnO2-rutile": rutile_sno2(),
        "demo-sample-cif": Structure.from_str(demo_sample.cif, fmt="cif"),
    })


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("structure-index"))


class Recorder:
    def __init__(self):
        self.docs = []

    def __call__(self, name, doc):
        self.docs.append((name, doc, threading.current_thread().name))


def _start_uid(RE, plan):
    uids = RE(plan)
    return uids[0]


def _inference_runs(client, sample):
    found = client.search(Key("start.sfn.kind") == STRUCTURE_KIND).search(Key("start.sfn.sample") == sample)
    return {uid: run for uid, run in found.items()}


def test_a_samples_xanes_and_xrd_runs_give_a_linked_queryable_inference_run(RE, beamline, client, demo_sample,
                                                                            templates, cache):
    mono, xas, powder = beamline
    recorder = Recorder()
    plugin = SfnPlugin(make_tiled_writer(client), recorder,
                       structure_inference=StructureInferenceOptions(sources=[templates], cache_dir=cache, top=5))
    RE.subscribe(plugin)
    try:
        other = _start_uid(RE, powder_scan(powder, num=1, sample="t-other", composition=demo_sample.formula))
        xanes = _start_uid(RE, xanes_scan(xas, mono, demo_sample.absorber, composition=demo_sample.formula,
                                          sample="t-structure"))
        assert plugin.flush(timeout=120)
        assert plugin.structure.results == {}  # XANES alone, and another sample's PXRD: nothing to pair
        xrd = _start_uid(RE, powder_scan(powder, num=2, sample="t-structure", composition=demo_sample.formula))
        assert plugin.flush(timeout=300)
    finally:
        plugin.close()

    assert list(plugin.structure.results) and len(plugin.structure.results) == 1
    uid = next(iter(plugin.structure.results))
    assert set(_inference_runs(client, "t-structure")) == {uid}
    assert not _inference_runs(client, "t-other")
    assert uid in client.search(Key("start.sample") == "t-structure")
    run = client[uid]

    # linked to the raw runs it used, in its start document
    start = run.metadata["start"]
    assert start["sfn"]["source_runs"] == start["source_runs"] == [xanes, xrd]
    assert start["sfn"]["xanes_runs"] == [xanes] and start["sfn"]["xrd_run"] == xrd
    assert start["plan_name"] == "sfn_structure_inference" and start["sample"] == "t-structure"
    expected_elements = {el.symbol for el in Composition(demo_sample.formula)}
    assert set(start["sfn"]["elements"]) == expected_elements and start["sfn"]["trigger"] == "automatic"
    inputs = start["sfn"]["inputs"]
    assert set(inputs["oxidation_states"]) == {demo_sample.absorber}
    assert inputs["crystal_systems"] and inputs["xrd"]["wavelength"] == pytest.approx(demo_sample.wavelength)
    # the default PXRD bundle (search-match) names five space groups per frame: the run's top 5 travel too
    assert len(inputs["space_group_probabilities"]) == 5
    assert uid in client.search(Contains("start.source_runs", xrd))  # which inferences used this run?

    # the stop summary, queryable like the others
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success"
    summary = stop["sfn"]
    assert summary["kind"] == STRUCTURE_KIND and summary["status"] == "ok" and summary["reason"] is None
    assert summary["top_formula"] == Composition(demo_sample.formula).reduced_formula
    if demo_sample.truth.get("space_group"):
        assert summary["top_space_group"] == demo_sample.truth["space_group"]
    assert summary["n_candidates"] == stop["num_events"][STRUCTURE_STREAM] >= 1
    assert summary["seconds"] > 0 and summary["source_runs"] == [xanes, xrd]
    provenance = summary["provenance"]
    assert provenance["sources"] == {"bluesky-templates": 5}
    assert provenance["xanes_bundles"][xanes].startswith("xanes-")
    assert uid in runs_where(client, kind=STRUCTURE_KIND, top_formula=summary["top_formula"])
    assert uid in client.search(Key("stop.sfn.top_crystal_system") == summary["top_crystal_system"])

    # one event per candidate, best first, CIF included
    assert set(run) == {STRUCTURE_STREAM}
    candidates = run[STRUCTURE_STREAM].read()
    n = summary["n_candidates"]
    assert list(np.asarray(candidates["rank"])) == list(range(1, n + 1))
    assert candidates["formula"].values[0] == summary["top_formula"]
    assert candidates["space_group"].values[0] == summary["top_space_group"]
    scores = np.asarray(candidates["score"], dtype=float)
    assert np.all(np.diff(scores) <= 0) and 0 < float(candidates["probability"].values[0]) <= 1
    assert str(candidates["template_id"].values[0]).startswith("bluesky-templates:")
    assert np.isfinite(np.asarray(candidates["space_group_log_prior"], dtype=float)).all()
    assert "_cell_length_a" in str(candidates["cif"].values[0])

    # the raw runs are what they were; the inference run reached Tiled from the spool's forwarder thread,
    # never from the RunEngine's
    assert set(client[xanes]) == {"primary", XANES_STREAM} and set(client[xrd]) == {"primary", XRD_STREAM}
    assert client[xanes].metadata["stop"]["sfn"]["kind"] == "xanes"
    assert client[other].metadata["stop"]["sfn"]["kind"] == "xrd"
    threads = {thread for name, doc, thread in recorder.docs if name == "start" and doc["uid"] == uid}
    assert threads == {"sfn-stream-forwarder"}


def test_each_new_pair_of_runs_is_inferred_once(RE, beamline, client, demo_sample, templates, cache):
    mono, xas, powder = beamline
    plugin = SfnPlugin(make_tiled_writer(client),
                       structure_inference=StructureInferenceOptions(sources=[templates], cache_dir=cache))
    RE.subscribe(plugin)
    try:
        xrd1 = _start_uid(RE, powder_scan(powder, num=1, sample="t-pairs", composition=demo_sample.formula))
        xanes = _start_uid(RE, xanes_scan(xas, mono, demo_sample.absorber, composition=demo_sample.formula,
                                          sample="t-pairs"))
        xrd2 = _start_uid(RE, powder_scan(powder, num=1, sample="t-pairs", composition=demo_sample.formula))
        assert plugin.flush(timeout=300)
    finally:
        plugin.close()
    linked = [tuple(summary["source_runs"]) for summary in plugin.structure.results.values()]
    assert linked == [(xanes, xrd1), (xanes, xrd2)]  # the latest PXRD run pairs with the XANES run
    assert set(_inference_runs(client, "t-pairs")) == set(plugin.structure.results)
    assert plugin.stats.structure_runs == 2


def test_no_template_gives_a_complete_run_with_the_reason_and_failures_are_runs_too(RE, beamline, client,
                                                                                     demo_sample, cache):
    """By hand (automatic off), with templates of no compatible type: an empty, complete run with the reason;
    a request that cannot be answered as given: a complete run that failed, with the reason."""
    mono, xas, powder = beamline
    rutile_only = StructureSource("rutile-only", {"SnO2-rutile": rutile_sno2()})
    options = StructureInferenceOptions(sources=[rutile_only], cache_dir=cache, automatic=False)
    plugin = SfnPlugin(make_tiled_writer(client), structure_inference=options)
    RE.subscribe(plugin)
    try:
        xanes = _start_uid(RE, xanes_scan(xas, mono, demo_sample.absorber, composition=demo_sample.formula,
                                          sample="t-empty"))
        xrd = _start_uid(RE, powder_scan(powder, num=1, sample="t-empty", composition=demo_sample.formula))
        anonymous = _start_uid(RE, powder_scan(powder, num=1, composition=demo_sample.formula))
        assert plugin.flush(timeout=120)
        assert plugin.structure.results == {}  # automatic off: nothing until asked
        empty = plugin.infer_structure(xanes, xrd).result(timeout=120)
        failed = plugin.infer_structure(xanes, xrd, elements=[demo_sample.absorber]).result(timeout=120)
        pxrd_only = plugin.infer_structure(anonymous).result(timeout=120)  # no XANES run, no sample name
        with pytest.raises(KeyError, match="not seen"):
            plugin.infer_structure(xrd, "no-such-run").result(timeout=120)
        with pytest.raises(ValueError, match="exactly one PXRD run"):
            plugin.infer_structure(xanes).result(timeout=120)
    finally:
        plugin.close()

    run = client[empty]
    assert run.metadata["start"]["sfn"]["source_runs"] == [xanes, xrd]
    assert run.metadata["start"]["sfn"]["trigger"] == "manual"
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success"
    summary = stop["sfn"]
    assert summary["status"] == "empty" and summary["n_candidates"] == 0
    assert "no template" in summary["reason"] and summary.get("top_formula") is None
    assert set(run) == set()  # no candidates, no stream
    assert empty in runs_where(client, kind=STRUCTURE_KIND, status="empty")

    run = client[failed]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail" and "2 to 5 elements" in stop["reason"]
    assert stop["sfn"]["status"] == "error" and "2 to 5 elements" in stop["sfn"]["reason"]
    assert run.metadata["start"]["sfn"]["source_runs"] == [xanes, xrd]
    assert failed in runs_where(client, kind=STRUCTURE_KIND, status="error")
    assert set(_inference_runs(client, "t-empty")) == {empty, failed}

    run = client[pxrd_only]
    assert "sample" not in run.metadata["start"] and run.metadata["start"]["sfn"]["sample"] is None
    assert run.metadata["start"]["sfn"]["source_runs"] == [anonymous]
    assert run.metadata["stop"]["exit_status"] == "success" and run.metadata["stop"]["sfn"]["status"] == "empty"
    # the raw runs are untouched
    assert client[xanes].metadata["stop"]["exit_status"] == "success"
    assert set(client[xrd]) == {"primary", XRD_STREAM}


def test_structure_inference_is_off_by_default():
    plugin = SfnPlugin(threaded=False, preload=False)
    assert plugin.structure is None
    with pytest.raises(RuntimeError, match="structure inference is off"):
        plugin.infer_structure("a", "b")


def test_the_pxrd_runs_space_groups_reach_the_request_unless_switched_off():
    from sfn_stream.live.consumers import RunInputs, build_request

    xanes = RunInputs("x1", "xanes", "s", ("Cu", "Fe", "O"), "ok", None, absorber="Cu", oxidation_states={1: 1.0})
    xrd = RunInputs("x2", "xrd", "s", ("Cu", "Fe", "O"), "ok", None, crystal_systems={"trigonal": 0.9},
                    space_groups={166: 0.7, 160: 0.1}, x=np.linspace(10, 80, 50), intensity=np.ones(50))
    assert build_request([xanes], xrd).space_group_probabilities == {166: 0.7, 160: 0.1}
    assert build_request([xanes], xrd, space_group_prior=False).space_group_probabilities is None
    assert StructureInferenceOptions().space_group_prior

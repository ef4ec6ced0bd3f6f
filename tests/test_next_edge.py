"""The next-edge agent from Bluesky: a real RunEngine, the simulated beamline replaying a two-metal corpus
material (its FEFF10 spectra at both 3d-metal edges), the plugin with the agent as an after-stop consumer,
the committed multi-edge bundle and the session's Tiled server. No mocks.

What is checked is the wiring (ingest, the decision runs and their streams, queries through Tiled, the
bluesky-adaptive loop); how well the agent chooses is measured by ``sfn-stream bench agent``. The options
make the other edge always worth measuring (``min_bits_per_hour=0``, a confidence target that cannot be
reached), so the decisions here follow from the rules, not from tuned thresholds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiled.queries import Key

from sfn_stream.core import paths
from sfn_stream.core.predict import PredictorError, default_registry
from sfn_stream.live.catalog import runs_where
from sfn_stream.live.consumers import NextEdgeAgent, NextEdgeOptions
from sfn_stream.live.consumers.next_edge import (
    CANDIDATES_STREAM,
    INGESTED_STREAM,
    NEXT_EDGE_KIND,
    POSTERIOR_STREAM,
)
from sfn_stream.live.consumers.next_edge_optimizer import NextEdgeOptimizer
from sfn_stream.live.plugin import (
    STRUCTURE_KIND,
    SfnPlugin,
    StructureInferenceOptions,
    make_tiled_writer,
)
from sfn_stream.simulated_beamline import (
    corpus_beamline,
    load_corpus_sample,
    measure_edge,
    measure_sample,
    multi_metal_materials,
    powder_scan,
)
from tests.test_structure_runs import cache, templates  # noqa: F401  (fixtures: a small template set)

pytest.importorskip("pyarrow")
if not (paths.CORPUS_DIR / "materials.parquet").is_file():
    pytest.skip("data/corpus is absent", allow_module_level=True)

ALWAYS_NEXT = NextEdgeOptions(min_bits_per_hour=0.0, target_confidence=1.01)


@pytest.fixture(scope="module")
def two_metal_sample():
    """A two-metal corpus material whose metals one bundle covers together, from the model's test split."""
    from sfn_stream.offline.training import read_unified_splits

    test_ids = set(read_unified_splits()["test"])
    registry = default_registry()
    for material_id in multi_metal_materials(among=test_ids):
        sample = load_corpus_sample(material_id)
        if len(sample.metals) == 2 and len(sample.sticks_q):
            try:
                registry.predictor_for_edges("xanes", sample.metals)
            except PredictorError:
                pass
            else:
                return sample
    pytest.skip("no two-metal test material that one XANES bundle covers")


def _decisions(client, sample):
    found = client.search(Key("start.sfn.kind") == NEXT_EDGE_KIND).search(Key("start.sfn.sample") == sample)
    return sorted(found.values(), key=lambda run: run.metadata["start"]["time"])


def test_after_the_first_edge_the_agent_suggests_the_other_and_after_both_it_is_done(RE, client, two_metal_sample):
    sample = two_metal_sample
    first, second = sample.metals
    name = f"t-next-edge-{sample.material_id}"
    mono, xas, _ = corpus_beamline(sample, seed=5)
    agent = NextEdgeAgent(ALWAYS_NEXT)
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    RE.subscribe(plugin)
    try:
        RE(measure_edge(sample, xas, mono, first, name=name))
        assert plugin.flush(timeout=120)
        assert agent.latest[name].next_edge == second and not agent.latest[name].done
        RE(measure_edge(sample, xas, mono, second, name=name))
        assert plugin.flush(timeout=120)
    finally:
        plugin.close()

    runs = _decisions(client, name)
    assert len(runs) == 2 == agent.stats.runs
    after_first, after_both = (run.metadata["stop"]["sfn"] for run in runs)
    assert after_first["next_edge"] == second and after_first["done"] is False
    assert after_first["edges_measured"] == [first] and after_first["edges_remaining"] == [second]
    assert after_both["next_edge"] == "" and after_both["done"] is True
    assert after_both["reason"] == "every 3d-metal edge of the sample is measured"
    assert after_both["edges_measured"] == [first, second]
    assert 0 < after_both["confidence"] <= 1 and after_both["decision_ms"] > 0

    # linked to the raw runs it read, queryable by its stop summary
    start = runs[1].metadata["start"]
    xanes_uids = start["source_runs"]
    assert start["plan_name"] == "sfn_next_edge" and len(xanes_uids) == 2 and start["sfn"]["trigger_run"] == xanes_uids[1]
    assert [client[uid].metadata["start"]["sfn"]["element"] for uid in xanes_uids] == [first, second]
    assert runs[0].metadata["start"]["uid"] in client.search(Key("stop.sfn.next_edge") == second)
    assert runs[1].metadata["start"]["uid"] in client.search(Key("stop.sfn.done") == True)
    # a query for the sample's predictions finds its measurements, not the decisions that repeat them
    decisions = {run.metadata["start"]["uid"] for run in runs}
    assert set(runs_where(client, sample=name)) == set(xanes_uids)
    assert set(runs_where(client, kind="next_edge", sample=name)) == decisions

    # streams: what it ingested, every candidate edge's score, the fused belief per metal
    assert set(runs[0]) == {INGESTED_STREAM, CANDIDATES_STREAM, POSTERIOR_STREAM}
    candidates = runs[0][CANDIDATES_STREAM].read()
    assert list(candidates["edge"].values) == [first, second]
    assert list(candidates["measured"].values) == [True, False] and list(candidates["chosen"].values) == [False, True]
    assert float(candidates["expected_bits"].values[1]) >= 0 and float(candidates["cost_seconds"].values[1]) > 0
    posterior = runs[1][POSTERIOR_STREAM].read()
    assert list(posterior["metal"].values) == [first, second]
    assert all(str(source).startswith("fused:") for source in posterior["source"].values)
    for probabilities in posterior["oxidation_state_probabilities"].values:
        assert sum(json.loads(str(probabilities)).values()) == pytest.approx(1, abs=0.01)
    ingested = runs[1][INGESTED_STREAM].read()
    assert list(ingested["run_uid"].values) == xanes_uids and list(ingested["edge"].values) == [first, second]


def test_bluesky_adaptive_optimize_measures_the_sample_until_the_agent_is_done(RE, client, two_metal_sample):
    pytest.importorskip("bluesky_adaptive")
    sample = two_metal_sample
    name = f"t-adaptive-{sample.material_id}"
    mono, xas, powder = corpus_beamline(sample, seed=6)
    agent = NextEdgeAgent(ALWAYS_NEXT)
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    lines = []
    optimizer = NextEdgeOptimizer(agent, sample=name, composition=sample.formula, wait=plugin.flush,
                                  progress=lines.append)
    RE.subscribe(plugin)
    try:
        RE(measure_sample(sample, mono, xas, powder, optimizer, name=name))
        assert plugin.flush(timeout=120)
    finally:
        plugin.close()

    assert optimizer.should_stop() == (True, "every 3d-metal edge of the sample is measured")
    measured = [outcome["edge"] for _, outcome in optimizer.history]
    assert sorted(measured) == sorted(sample.metals) and len(lines) == 2
    assert lines[-1].startswith(f"{name}: edges measured") and "(2/2)" in lines[-1]
    runs = _decisions(client, name)
    assert len(runs) == 3  # after the PXRD run and after each edge
    assert runs[0].metadata["stop"]["sfn"]["crystal_system"] is not None  # the PXRD run's prediction, ingested
    assert [run.metadata["stop"]["sfn"]["done"] for run in runs] == [False, False, True]
    optimize_runs = client.search(Key("start.plan_name") == "optimize").search(Key("start.optimizer") == "NextEdgeOptimizer")
    assert len(optimize_runs) >= 1
    assert np.isfinite(optimizer.get_best_points()[0][2]["confidence"])


def test_a_powder_run_alone_gives_a_decision_from_the_elements(RE, client, two_metal_sample):
    sample = two_metal_sample
    name = f"t-prior-{sample.material_id}"
    _, _, powder = corpus_beamline(sample, seed=7)
    agent = NextEdgeAgent(ALWAYS_NEXT)
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    RE.subscribe(plugin)
    try:
        RE(powder_scan(powder, num=1, sample=name, composition=sample.formula))
        assert plugin.flush(timeout=120)
    finally:
        plugin.close()
    (run,) = _decisions(client, name)
    summary = run.metadata["stop"]["sfn"]
    assert summary["edges_measured"] == [] and summary["next_edge"] in sample.metals
    posterior = run[POSTERIOR_STREAM].read()
    assert all(str(source).startswith("model_prior:") for source in posterior["source"].values)


def test_the_agent_runs_structure_inference_when_confident_enough(RE, client, two_metal_sample,
                                                                  templates, cache):  # noqa: F811
    sample = two_metal_sample
    name = f"t-agent-structure-{sample.material_id}"
    mono, xas, powder = corpus_beamline(sample, seed=8)
    structure = StructureInferenceOptions(sources=[templates], cache_dir=cache, automatic=False)
    agent = NextEdgeAgent(NextEdgeOptions(structure=structure, structure_confidence=0.0, crystal_system_confidence=0.0))
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    RE.subscribe(plugin)
    try:
        xrd = RE(powder_scan(powder, num=1, sample=name, composition=sample.formula))[0]
        xanes = RE(measure_edge(sample, xas, mono, sample.metals[0], name=name))[0]
        assert plugin.flush(timeout=300)
    finally:
        plugin.close()
    first, second = (run.metadata["stop"]["sfn"] for run in _decisions(client, name))
    assert first["structure_run"] is None  # a PXRD run alone: no oxidation state measured yet
    structure_run = client[second["structure_run"]]
    assert structure_run.metadata["start"]["sfn"]["kind"] == STRUCTURE_KIND
    assert structure_run.metadata["start"]["sfn"]["trigger"] == "manual"
    assert structure_run.metadata["start"]["source_runs"] == [xanes, xrd]
    assert len(structure_run.metadata["start"]["sfn"]["inputs"]["space_group_probabilities"]) == 5  # PXRD top 5
    assert list(agent.structure.results) == [second["structure_run"]]


def test_edges_no_bundle_covers_are_never_suggested_and_their_metal_keeps_a_class_prior(tmp_path):
    from sfn_stream.core.networks import models_dir
    from sfn_stream.core.predict import ModelRegistry
    from sfn_stream.live.consumers.next_edge import SampleAgent, SampleState

    (tmp_path / "xanes-specfusion").symlink_to(models_dir() / "xanes-specfusion")  # the Cu-only bundle
    agent = SampleAgent(NextEdgeOptions(min_bits_per_hour=0.0, target_confidence=1.01,
                                        models=ModelRegistry(tmp_path)))
    state = SampleState("t-cu-only")
    state.add_elements("Fe2CuO4")
    decision = agent.decide(state)
    fe, cu = decision.candidates
    assert (fe.edge, fe.covered, fe.expected_bits) == ("Fe", False, 0.0) and "no XANES model covers" in fe.reason
    assert decision.beliefs["Fe"].source == "class_prior" and cu.covered and decision.next_edge == "Cu"


def test_a_sample_known_only_by_its_edge_is_asked_as_the_run_analysis_asks_it(two_metal_sample):
    from sfn_stream.core.spectra import preprocess_xanes
    from sfn_stream.live.consumers.next_edge import EdgeInput, SampleAgent, SampleState

    metal = two_metal_sample.metals[0]
    window = preprocess_xanes(*two_metal_sample.replay_spectrum(metal), absorber=metal)
    state = SampleState("t-blind")
    state.add_elements([metal], given=False)  # what a XANES run with no sfn.composition tells the agent
    state.edges[metal] = EdgeInput("run-blind", metal, np.asarray(window.mu, float), float(window.e0_shift), {}, "ok")
    belief = SampleAgent(ALWAYS_NEXT).decide(state).beliefs[metal]
    predictor = default_registry().predictor("xanes", metal)
    own = predictor.predict_window(window, None).per_element[metal]  # the run's own prediction
    for task, table in belief.tables.items():
        best = max(table, key=table.get)
        assert best == own[task].value and table[best] == pytest.approx(own[task].confidence, abs=1e-3)
    state.add_elements(f"{metal},O")  # elements from the metadata: asked with them from now on
    assert state.composition_given


def test_the_agent_uses_the_runs_fused_prediction_when_it_answered_the_same_request(two_metal_sample, monkeypatch):
    from sfn_stream.core.spectra import preprocess_xanes
    from sfn_stream.live.analyses import MeasuredEdge, SampleFusion
    from sfn_stream.live.consumers.next_edge import EdgeInput, SampleAgent, SampleState

    sample = two_metal_sample
    predictor = default_registry().predictor_for_edges("xanes", sample.metals)
    windows = [preprocess_xanes(*sample.replay_spectrum(m), absorber=m) for m in sample.metals]
    state = SampleState("t-reuse")
    state.add_elements(sample.formula)
    for window in windows:
        state.edges[window.absorber] = EdgeInput(f"run-{window.absorber}", window.absorber,
                                                 np.asarray(window.mu, float), float(window.e0_shift), {}, "ok")
    agent = SampleAgent(ALWAYS_NEXT)
    computed = agent.decide(state)  # no run result to reuse: one forward pass

    fused = predictor.predict_windows(windows, sample.formula)  # what the last run's analysis wrote
    state.fused = SampleFusion(fused, sample.metals, [MeasuredEdge(f"run-{w.absorber}", w.absorber, w)
                                                      for w in windows], {})
    passes = []
    forward = predictor.ensemble.predict
    monkeypatch.setattr(predictor.ensemble, "predict", lambda *args, **kw: passes.append(1) or forward(*args, **kw))
    reused = agent.decide(state)
    assert passes == []
    assert {m: b.tables for m, b in reused.beliefs.items()} == {m: b.tables for m, b in computed.beliefs.items()}
    assert reused.next_edge == computed.next_edge and reused.confidence == computed.confidence

    first = state.edges[sample.metals[0]]  # the same edge from another run: the result does not answer this request
    state.edges[first.metal] = EdgeInput("run-again", first.metal, first.window, first.e0_shift, {}, "ok")
    agent.decide(state)
    assert passes == [1]


def test_a_samples_prior_is_made_while_its_first_run_measures_and_its_first_decision_reuses_it(two_metal_sample,
                                                                                                 monkeypatch):
    from sfn_stream.live.consumers import FinishedRun, StartedRun
    from sfn_stream.live.consumers.next_edge import SampleAgent, SampleState

    sample = two_metal_sample
    cold_state = SampleState("t-cold")
    cold_state.add_elements(sample.formula)
    cold = SampleAgent(ALWAYS_NEXT).decide(cold_state)  # its own forward pass, no prior kept

    predictor = default_registry().predictor_for_edges("xanes", sample.metals)
    passes = []
    forward = predictor.ensemble.predict
    monkeypatch.setattr(predictor.ensemble, "predict", lambda *args, **kw: passes.append(1) or forward(*args, **kw))
    agent = NextEdgeAgent(ALWAYS_NEXT)
    documents = []
    agent.bind(lambda name, doc: documents.append((name, doc)), metadata_key="sfn", keep=10)
    metadata = {"sample": "t-warm", "composition": sample.formula}
    agent.run_started(StartedRun("pxrd-run", metadata))
    assert passes == [1]  # made at the start, while the powder frame is measured
    agent.run_finished(FinishedRun("pxrd-run", "xrd", metadata, {"status": "ok"}))
    assert passes == [1]  # the decision after the stop made none
    warm = agent.latest["t-warm"]
    assert {m: b.tables for m, b in warm.beliefs.items()} == {m: b.tables for m, b in cold.beliefs.items()}
    assert warm.next_edge == cold.next_edge and [name for name, _ in documents][-1] == "stop"

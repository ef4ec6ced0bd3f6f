"""Cross-run fusion in the plugin: each XANES run of a multi-metal sample carries the sample-level result of
every edge measured so far. A real RunEngine replays a two-metal corpus material's FEFF10 spectra at both of its
edges through the plugin into the session's Tiled server; the committed multi-edge bundle predicts. No mocks.
"""

from __future__ import annotations

import numpy as np
from sfn_stream.core.predict import default_registry
from sfn_stream.core.spectra import preprocess_xanes
from sfn_stream.live.analyses import SAMPLE_STREAM
from sfn_stream.live.catalog import runs_where, samples_where
from sfn_stream.live.plugin import XANES_STREAM, SfnPlugin, make_tiled_writer
from sfn_stream.simulated_beamline import corpus_beamline, measure_edge
from tests.test_next_edge import two_metal_sample  # noqa: F401  (fixture: a two-metal test material)


def _measure(RE, plugin, sample, metals, name, seed=7):
    mono, xas, _ = corpus_beamline(sample, seed=seed)
    uids = []
    RE.subscribe(plugin)
    try:
        for metal in metals:
            uids.append(RE(measure_edge(sample, xas, mono, metal, name=name))[0])
            assert plugin.flush(timeout=120)
    finally:
        plugin.close()
    return uids


def test_each_edge_run_carries_the_sample_result_of_every_edge_so_far(RE, client, two_metal_sample):
    sample = two_metal_sample
    first, second = sample.metals
    name = f"t-fusion-{sample.material_id}"
    uids = _measure(RE, SfnPlugin(make_tiled_writer(client)), sample, [first, second], name)

    one, both = (client[uid] for uid in uids)
    summary_one, summary_both = (run.metadata["stop"]["sfn"] for run in (one, both))
    assert summary_one["sample_edges"] == [first] and summary_one["sample_runs"] == [uids[0]]
    assert summary_both["sample_edges"] == [second, first] and summary_both["sample_runs"] == [uids[1], uids[0]]
    assert summary_both["sample_metals"] == [first, second] and summary_both["sample_status"] in ("ok", "flagged")
    assert summary_both["sample_bundle_id"] and len(summary_both["sample_species"]) == 2

    rows_one, rows_both = one[SAMPLE_STREAM].read(), both[SAMPLE_STREAM].read()
    assert list(rows_one["metal"].values) == [first, second] == list(rows_both["metal"].values)
    assert list(rows_one["measured"].values) == [True, False]  # the second metal from the first edge alone
    assert list(rows_both["measured"].values) == [True, True]
    assert list(rows_both["source_run"].values) == [uids[0], uids[1]]
    for rows in (rows_one, rows_both):
        p_ox = [c for c in rows.keys() if c.startswith("oxidation_state_p_")]
        assert np.allclose(rows[p_ox].to_array().values.sum(axis=0), 1, atol=0.01)

    # the fused rows are the bundle's prediction from both windows, not the run's own one re-labelled
    registry = default_registry()
    predictor = registry.predictor_for_edges("xanes", [first, second])
    windows = [preprocess_xanes(*sample.replay_spectrum(metal), absorber=metal) for metal in (second, first)]
    direct = predictor.predict_windows(windows, sample.formula)
    for metal in (first, second):
        stored = summary_both["sample_per_metal"][metal]
        assert stored["oxidation_state"] == direct.per_element[metal]["oxidation_state"].value
        assert stored["coordination_number"] == direct.per_element[metal]["coordination_number"].value

    # queryable: the list field by containment, the sample through its runs
    species = summary_both["sample_species"][0]
    assert uids[1] in runs_where(client, sample_species=species)
    assert uids[1] in samples_where(client, sample_species=species).get(name, [])
    assert uids[0] not in runs_where(client, sample_edges=second)


def test_one_metal_samples_and_plugins_without_fusion_write_no_sample_stream(RE, client, two_metal_sample):
    """... and the run's own stream carries every sample property the 3d bundle predicts, as its stop does."""
    sample = two_metal_sample
    first = next(m for m in sample.metals if m != "Cu")  # Cu goes to the Cu bundle, which predicts density only
    name = f"t-no-fusion-{sample.material_id}"
    (uid,) = _measure(RE, SfnPlugin(make_tiled_writer(client), fuse_samples=False), sample, [first], name)
    run = client[uid]
    summary = run.metadata["stop"]["sfn"]
    assert SAMPLE_STREAM not in run and "sample_edges" not in summary
    assert summary["absorber"] == first
    row = run[XANES_STREAM].read()
    properties = ("density", "band_gap", "formation_energy_per_atom", "fermi_level", "is_metal", "is_magnetic")
    for name in properties:
        assert name in summary, name
        stored = row[name].values[0]
        assert stored == summary[name] or np.isclose(float(stored), float(summary[name]), atol=1e-3), name


def test_the_sample_metals_are_its_composition_s_and_its_measured_edges_in_z_order():
    from sfn_stream.live.analyses.xanes import _sample_metals

    assert _sample_metals("Fe2O3", ["Fe"]) == ["Fe"]
    assert _sample_metals("Mn,Fe,O", ["Fe"]) == ["Mn", "Fe"]
    assert _sample_metals("ZnO", ["Cu"]) == ["Cu", "Zn"]


def test_a_run_and_its_sample_result_come_from_one_forward_pass(two_metal_sample, monkeypatch):
    """What the plugin does at a sample's second edge: the run's own prediction and the fused one in one pass,
    the same numbers as two separate requests; a request the bundle cannot serve fails before any pass."""
    import pytest
    from sfn_stream.core.predict import PredictorError

    sample = two_metal_sample
    predictor = default_registry().predictor_for_edges("xanes", sample.metals)
    windows = [preprocess_xanes(*sample.replay_spectrum(metal), absorber=metal) for metal in sample.metals]
    separate = [predictor.predict_window(windows[0], sample.formula), predictor.predict_windows(windows, sample.formula)]
    passes = []
    batch = predictor.ensemble.predict_batch
    monkeypatch.setattr(predictor.ensemble, "predict_batch", lambda compounds: passes.append(len(compounds))
                        or batch(compounds))
    joint = predictor.predict_many([([windows[0]], sample.formula, ()), (windows, sample.formula, ())])
    assert passes == [2]
    for alone, together in zip(separate, joint):
        assert together.inputs == alone.inputs and together.quality_flags == alone.quality_flags
        assert np.allclose(_numbers(together), _numbers(alone), atol=1e-5)
    with pytest.raises(PredictorError, match="not among the sample's elements"):
        predictor.predict_many([([windows[0]], sample.formula, ()), (windows, "Zn", ())])
    assert passes == [2]


def _numbers(prediction) -> list[float]:
    """Every probability and value of a prediction, in a fixed order."""
    out = []
    for metal in sorted(prediction.per_element):
        for task in sorted(prediction.per_element[metal]):
            out += list(prediction.per_element[metal][task].probabilities.values())
    for name in sorted(prediction.properties):
        value = prediction.properties[name]
        out += list(value.probabilities.values()) if hasattr(value, "probabilities") else [value.value, value.std]
    return out

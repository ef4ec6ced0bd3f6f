"""The 3d-metal XANES model: one split assignment, one corpus reader, predictions for every 3d metal
through the registry (real corpus files, the committed bundles, the real CLI)."""

from __future__ import annotations

import json
from pathlib import Path
import math
from collections import defaultdict

import numpy as np
import pytest

from sfn_stream.cli import main
from sfn_stream.core import paths
from sfn_stream.core.networks import SpecFusionNet, encode_compounds, models_dir
from sfn_stream.core.predict import XanesPredictor, default_registry
from sfn_stream.offline.evaluation.xanes_3d_eval import POOLED
from sfn_stream.offline.splits import unified_splits
from sfn_stream.offline.training import (
    METALS_3D,
    XANES_3D_BUNDLE,
    edge_window,
    read_corpus_materials,
    read_splits,
    read_unified_splits,
)

HAVE_CORPUS = (paths.CORPUS_DIR / "materials.parquet").is_file()
HAVE_BUNDLE = (models_dir() / XANES_3D_BUNDLE / "card.json").is_file()
needs_corpus = pytest.mark.skipif(not HAVE_CORPUS, reason="data/corpus is absent")
needs_bundle = pytest.mark.skipif(not (HAVE_CORPUS and HAVE_BUNDLE), reason="the 3d-metal bundle or corpus is absent")


@pytest.fixture(scope="module")
def corpus():
    return read_corpus_materials(omnixas=False, progress=False)


def test_unified_splits_keep_pinned_ids_formulas_and_hold_out_whole_chemical_systems():
    rows = [(f"m{i}", f"F{i % 40}", f"S{i % 40 // 2}", [f"Fe|s{i % 3}"]) for i in range(400)]
    pinned = {"m0": "test", "m1": "train"}
    assignment, held_out = unified_splits(rows, pinned, chemical_system_fraction=0.2)
    assert assignment["m0"] == "test" and assignment["m1"] == "train"
    by_formula, by_system = defaultdict(set), defaultdict(set)
    for material_id, formula, system, _ in rows:
        by_formula[formula].add(assignment[material_id])
        by_system[system].add(assignment[material_id])
    assert all(len(splits) == 1 for splits in by_formula.values())
    assert held_out and all(assignment[m] == "test" for m in held_out)
    systems = {system for mid, _, system, _ in rows if mid in held_out}
    assert all(by_system[system] == {"test"} for system in systems)
    again, _ = unified_splits(rows + [("new", "F3", "S1", ["Fe|s0"])], assignment)
    assert {k: again[k] for k in assignment} == assignment and again["new"] == assignment["m3"]


@needs_corpus
def test_committed_splits_are_formula_and_chemical_system_disjoint_and_keep_the_cu_bundle_test(corpus):
    splits = read_unified_splits()
    split = {mid: name for name in ("train", "val", "test") for mid in splits[name]}
    assert set(split) >= {m.material_id for m in corpus}
    by_formula, by_system = defaultdict(set), defaultdict(set)
    for material in corpus:
        by_formula[material.formula].add(split[material.material_id])
        by_system[material.chemical_system].add(split[material.material_id])
    assert all(len(names) == 1 for names in by_formula.values())
    systems = {m.chemical_system for m in corpus if m.material_id in set(splits["test_chemical_system"])}
    assert systems and all(by_system[s] == {"test"} for s in systems)
    cu_test_in_corpus = set(read_splits()["test"]) & set(split)
    assert cu_test_in_corpus and all(split[mid] == "test" for mid in cu_test_in_corpus)


@needs_corpus
def test_reader_gives_every_3d_metal_and_multi_edge_materials(corpus):
    edges = {absorber for m in corpus for absorber, e in m.edges.items() if e.source == "feff10"}
    assert edges == set(METALS_3D)
    multi = [m for m in corpus if len(m.edges) >= 2]
    assert multi and all(set(m.edges) <= set(m.metal_labels) for m in multi)
    assert all(np.all(np.diff(e.energy) > 0) for m in multi[:20] for e in m.edges.values())


def test_unknown_stoichiometry_is_zero_fractions_only_for_bundles_trained_without_it():
    compounds = [(["V", "O"], {}, None)]
    zero = encode_compounds(compounds, spectrum_length=200, unknown_fractions="zero")
    equal = encode_compounds(compounds, spectrum_length=200)
    assert zero.fractions[0, :2].tolist() == [0.0, 0.0] and equal.fractions[0, :2].tolist() == [0.5, 0.5]
    net = SpecFusionNet(np.zeros((100, 20), np.float32), unknown_fractions="zero", compound_classifications=("is_metal",))
    assert net.config["unknown_fractions"] == "zero" and "unknown_fractions" not in SpecFusionNet(np.zeros((100, 20))).config


def test_an_unknown_composition_is_the_measured_tokens_at_a_fraction_no_composition_has():
    from sfn_stream.core.networks import COMPOSITION_UNKNOWN, UNKNOWN_COMPOSITION_FRACTION

    batch = encode_compounds([(["Fe", "Mn"], {}, COMPOSITION_UNKNOWN)], spectrum_length=200, unknown_fractions="zero")
    assert batch.fractions[0].tolist() == [UNKNOWN_COMPOSITION_FRACTION] * 2 and UNKNOWN_COMPOSITION_FRACTION < 0
    net = SpecFusionNet(np.zeros((100, 20), np.float32), unknown_composition=True)
    assert net.config["unknown_composition"] is True and "unknown_composition" not in SpecFusionNet(np.zeros((100, 20))).config


def test_training_hides_the_unmeasured_elements_of_an_unknown_composition_example(corpus):
    import torch

    from sfn_stream.offline.training._xanes3d import MaterialTable, _loss, material_views

    materials = [m for m in corpus if len(m.edges) >= 2 and len(m.elements) >= 3][:4]
    rng = np.random.default_rng(0)
    table = MaterialTable(materials, [material_views(m, None, rng) for m in materials], n_views=1)
    index = torch.arange(len(materials))
    generator = torch.Generator().manual_seed(0)
    z, fractions, _, _, keep = table.batch(index, generator, edge_keep=0.5, stoichiometry_dropout=0.0,
                                           augmented=False, composition_unknown=1.0)
    assert torch.equal(z > 0, keep)  # only the drawn edges' tokens remain
    assert torch.all(fractions[keep] == -1.0) and torch.all(fractions[~keep] == 0.0)
    known = table.batch(index, generator, edge_keep=0.5, stoichiometry_dropout=0.0, augmented=False)
    assert torch.equal(known[0], table.z[index]) and torch.equal(known[1], table.fractions[index])
    # a withheld token's label is not asked for: its logits cannot change the loss
    logits = {t: torch.zeros(len(index), z.shape[1], n) for t, n in (("oxidation_state", 8), ("coordination_number", 12))}
    out = {"element_logits": logits, "compound_mean": torch.zeros(len(index), 4), "compound_log_var": torch.zeros(len(index), 4),
           "compound_logits": torch.zeros(len(index), 2)}
    base = _loss(out, table, index, torch.zeros(4), torch.ones(4), present=z > 0)
    for t in logits:
        logits[t][~(z > 0)] = torch.randn(int((~(z > 0)).sum()), logits[t].shape[-1]) * 5
    assert float(_loss(out, table, index, torch.zeros(4), torch.ones(4), present=z > 0)) == pytest.approx(float(base))


def _corpus_file(tmp_path, corpus, absorber: str):
    """A corpus FEFF10 spectrum written as a measured, foil-calibrated scan (energy - energy offset)."""
    material = next(m for m in corpus if absorber in m.edges and m.edges[absorber].source == "feff10"
                    and len(m.elements) == 2)
    edge = material.edges[absorber]
    path = tmp_path / f"{material.material_id}_{absorber}.csv"
    path.write_text("energy,mu\n" + "\n".join(f"{e - edge.energy_offset:.3f},{m:.6f}" for e, m in zip(edge.energy, edge.mu)))
    return material, path


@needs_bundle
@pytest.mark.parametrize("absorber", ["Fe", "Ti", "Zn"])
def test_a_corpus_spectrum_of_a_new_metal_is_predicted_through_the_registry(tmp_path, capsys, corpus, absorber):
    material, path = _corpus_file(tmp_path, corpus, absorber)
    status = main(["predict", "xanes", str(path), "--absorber", absorber, "--elements", ",".join(material.elements), "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    result = json.loads(out.out)
    assert result["bundle_id"].startswith(f"{XANES_3D_BUNDLE}@")
    for task in ("oxidation_state", "coordination_number", "is_metal", "is_magnetic"):
        assert sum(result["predictions"][task]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    for name in ("density", "band_gap", "formation_energy_per_atom", "fermi_level"):
        assert np.isfinite(result["predictions"][name]["value"]) and result["predictions"][name]["std"] > 0


@needs_bundle
def test_predict_without_elements_says_how_the_model_was_asked(tmp_path, capsys, corpus):
    _, path = _corpus_file(tmp_path, corpus, "Fe")
    assert main(["predict", "xanes", str(path), "--absorber", "Fe", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    predictor = default_registry().predictor("xanes", "Fe")
    assert result["inputs"]["composition"] == ("unknown" if predictor.knows_unknown_composition else "absorbers_as_elements")
    assert "composition_unknown" in result["quality_flags"]
    assert main(["predict", "xanes", str(path), "--absorber", "Fe"]) == 0
    assert "no composition given" in capsys.readouterr().out
    assert main(["predict", "xanes", str(path), "--absorber", "Fe", "--elements", "Fe,O"]) == 0
    assert "no composition given" not in capsys.readouterr().out


@needs_bundle
def test_cu_with_a_formula_goes_to_the_cu_bundle_with_elements_to_this_one_and_unmeasured_metals_get_an_answer(corpus):
    registry = default_registry()
    assert registry.bundle_path("xanes", "Cu", "Sr3CuPtO6").name == "xanes-specfusion"  # better with a formula
    for elements in (["Cu", "O"], "Cu,O"):  # elements only: the 3d bundle is better on Cu
        assert registry.bundle_path("xanes", "Cu", elements).name == XANES_3D_BUNDLE
    for metal in (["Cu"], "Cu"):  # the absorber alone is the metal (a foil): only the 3d bundle learned foils
        assert registry.bundle_path("xanes", "Cu", metal).name == XANES_3D_BUNDLE
    # nothing said of the sample: the 3d bundle, trained for it (the Cu bundle would read the Cu metal)
    assert registry.bundle_path("xanes", "Cu", None).name == XANES_3D_BUNDLE
    assert registry.bundle_path("xanes", "Fe", "Fe2O3").name == XANES_3D_BUNDLE  # the only one covering Fe
    predictor = default_registry().predictor("xanes", "Fe")
    material = next(m for m in corpus if {"Fe", "Ti"} <= set(m.edges))
    window = edge_window(material.edges["Fe"])
    prediction = predictor.predict_window(window, list(material.elements))
    assert {"Fe", "Ti"} <= set(prediction.per_element)  # Ti predicted from the Fe edge and the composition
    blind = predictor.predict_window(window, None)  # nothing known of the sample: the card says how it is asked
    expected = "unknown" if predictor.knows_unknown_composition else "absorbers_as_elements"
    assert blind.inputs["composition"] == expected and set(blind.per_element) == {"Fe"}
    if not predictor.knows_unknown_composition:
        with pytest.raises(ValueError, match="not trained without a composition"):
            predictor.ensemble.predict(["Fe"], {"Fe": (window.mu, window.e0_shift)}, "unknown")


@pytest.mark.parametrize("trained_without_composition", [True, False])
def test_the_registry_routes_by_what_is_known_of_the_sample(tmp_path, trained_without_composition):
    from sfn_stream.core.predict import ModelRegistry

    (tmp_path / "cu").mkdir()
    (tmp_path / "cu" / "card.json").write_text(json.dumps({"kind": "xanes", "supported_absorbers": ["Cu"]}))
    (tmp_path / "all").mkdir()
    card = {"kind": "xanes", "supported_absorbers": ["Fe", "Cu"], "preferred_for_elements_only": ["Fe", "Cu"]}
    if trained_without_composition:
        card["preferred_without_composition"] = ["Fe", "Cu"]
    (tmp_path / "all" / "card.json").write_text(json.dumps(card))
    registry = ModelRegistry(tmp_path)
    assert registry.bundle_path("xanes", "Cu", "Cu2O").name == "cu"  # a formula: the narrowest
    assert registry.bundle_path("xanes", "Cu", "Cu,O").name == "all"  # elements only
    assert registry.bundle_path("xanes", "Cu", ["Cu"]).name == "all"  # the metal
    assert registry.bundle_path("xanes", "Cu", None).name == ("all" if trained_without_composition else "cu")
    assert registry.bundle_path("xanes", "Fe", None).name == "all"  # the only one covering Fe


@needs_bundle
def test_refusals_say_why(tmp_path, capsys, corpus):
    _, path = _corpus_file(tmp_path, corpus, "Fe")
    status = main(["predict", "xanes", str(path), "--absorber", "Fe", "--elements", "Ti,O"])
    err = capsys.readouterr().err
    assert status == 2 and "not among the sample's elements" in err and "Traceback" not in err
    ga = tmp_path / "ga.csv"
    energy = np.linspace(10250, 10550, 300)
    ga.write_text("energy,mu\n" + "\n".join(f"{e},{0.5 + np.arctan((e - 10367) / 2) / np.pi}" for e in energy))
    status = main(["predict", "xanes", str(ga), "--absorber", "Ga", "--elements", "Ga,As"])
    err = capsys.readouterr().err
    assert status == 2 and "Ga K edge" in err and "Traceback" not in err


@needs_bundle
def test_evaluate_xanes_reports_every_metal_in_both_modes_beside_the_baselines(capsys, corpus, tmp_path):
    import shutil

    bundle = shutil.copytree(models_dir() / XANES_3D_BUNDLE, tmp_path / "bundle")
    status = main(["evaluate", "xanes", "--bundle", str(bundle), "--no-dev", "--json", "--write-card",
                   "--plot", str(tmp_path / "evaluation.png")])
    out = capsys.readouterr()
    assert status == 0, out.err
    report = json.loads(out.out)
    assert report["corpus_content_hash"] == json.loads((paths.CORPUS_DIR / "corpus.json").read_text())["content_hash"]
    test_ids = set(read_unified_splits()["test"])
    for mode in ("elements", "formula"):
        table = report["results"][f"test/{mode}"]["per_absorber"]
        assert set(METALS_3D) <= set(table)
        for metal in METALS_3D:
            expected = sum(1 for m in corpus if m.material_id in test_ids and metal in m.edges)
            assert 0 < table[metal]["n_units"] <= expected
            for task in ("oxidation_state", "coordination_number"):
                assert {"model", "composition_rule", "majority_class"} <= set(table[metal][task])
        assert "cu_bundle" in table["Cu"]["oxidation_state"]
        mean = report["results"][f"test/{mode}"]["mean_over_metals"]
        for task in ("oxidation_state", "coordination_number"):  # the interval holds the nine-metal mean
            lo, hi = mean[f"{task}_accuracy_model_ci95"]
            assert lo <= mean[f"{task}_accuracy_model"] <= hi and hi - lo > 0
        for head in ("oxidation_state", "coordination_number", "is_metal", "is_magnetic"):  # every head's calibration
            scores = table[POOLED][head]["model"]
            assert 0 <= scores["ece"] <= 1 and 0 < scores["ece_if_calibrated"] < 1
            assert sum(n for n, _, _ in scores["reliability"]) == table[POOLED][head]["n"]  # every unit in a bin
    mix = report["results"]["test/elements"]["by_site_mix"]["coordination_number"]  # every labelled unit, once
    assert mix["one"]["n"] + mix.get("several", {"n": 0})["n"] == table[POOLED]["coordination_number"]["n"]
    assert (tmp_path / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads((bundle / "card.json").read_text())  # --write-card: the summary with its interval
    summary = card["metrics"]["summary_elements_only_test"]
    assert summary["oxidation_state_accuracy"]["model"] == round(
        report["results"]["test/elements"]["mean_over_metals"]["oxidation_state_accuracy_model"], 4)
    assert len(summary["accuracy_ci95_model"]["oxidation_state"]) == 2


def _fe_material(corpus):
    return next(m for m in corpus if "Fe" in m.edges and m.edges["Fe"].source == "feff10" and len(m.elements) == 2)


def _plugin_fe_run(client, material, **sfn) -> str:
    """The uid of a Fe K-edge run of ``material`` (its corpus spectrum on the measured scale) through the real
    plugin into a real Tiled."""
    from event_model import compose_run

    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer

    edge = material.edges["Fe"]
    plugin = SfnPlugin(make_tiled_writer(client), threaded=False)
    run = compose_run(metadata={"sfn": {"kind": "xanes", "element": "Fe", **sfn}})
    plugin("start", run.start_doc)
    keys = {"mono_energy": {"dtype": "number", "shape": [], "source": "sim"},
            "xas_mu": {"dtype": "number", "shape": [], "source": "sim"}}
    descriptor = run.compose_descriptor(name="primary", data_keys=keys)
    plugin("descriptor", descriptor.descriptor_doc)
    for energy, mu in zip(edge.energy - edge.energy_offset, edge.mu):
        plugin("event", descriptor.compose_event(data={"mono_energy": float(energy), "xas_mu": float(mu)},
                                                 timestamps={"mono_energy": 0.0, "xas_mu": 0.0}))
    plugin("stop", run.compose_stop())
    plugin.close()
    return run.start_doc["uid"]


@needs_bundle
@needs_bundle
def test_evaluate_xanes_judges_a_folder_of_measured_files_named_by_their_elements_only(capsys, tmp_path):
    """A kept-aside set laid out as the development set, without an absorber column: the energies say it."""
    import shutil

    data = Path(__file__).parent / "data"
    shutil.copy(data / "fe_synthetic.csv", tmp_path / "sample_a.csv")
    shutil.copy(data / "cu_synthetic.xdi", tmp_path / "sample_b.xdi")
    (tmp_path / "labels.csv").write_text("file,elements,oxidation_state,cn\nsample_a.csv,\"Fe,Cr,O\",3,6\n"
                                         "sample_b.xdi,\"Cu,O\",,\nmissing.xdi,\"Ni,O\",2,6\n")
    status = main(["evaluate", "xanes", "--measured", str(tmp_path), "--measured-only", "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    dev = json.loads(out.out)["measured_dev"]
    rows = {r["file"]: r for r in dev["files"]}
    assert rows["sample_a.csv"]["absorber"] == "Fe" and rows["sample_b.xdi"]["absorber"] == "Cu"
    assert rows["sample_a.csv"]["oxidation_state"] in range(8) and "reason" not in rows["sample_b.xdi"]
    assert "no such file" in rows["missing.xdi"]["reason"]  # recorded, not a crash
    assert dev["model"]["oxidation_state"]["n_labelled"] == 2  # sample_b has no label, missing.xdi has one
    assert main(["evaluate", "xanes", "--measured", str(tmp_path / "nowhere"), "--measured-only"]) == 2
    assert "no labels.csv" in capsys.readouterr().err


def test_the_plugin_predicts_a_fe_run_with_the_3d_bundle(client, corpus):
    from sfn_stream.live.plugin import XANES_STREAM

    material = _fe_material(corpus)
    uid = _plugin_fe_run(client, material, composition=",".join(material.elements), sample="t-fe")
    summary = client[uid].metadata["stop"]["sfn"]
    assert summary["absorber"] == "Fe" and summary["status"] in ("ok", "flagged"), summary.get("reason")
    assert summary["bundle_id"].startswith(f"{XANES_3D_BUNDLE}@")
    assert summary["species"].startswith("Fe") and 0 <= summary["is_metal_confidence"] <= 1
    derived = client[uid][XANES_STREAM].read()
    assert derived["absorber"].values[0] == "Fe"


@needs_bundle
def test_a_run_without_a_composition_is_asked_in_the_no_composition_mode_and_says_so(client, corpus):
    from sfn_stream.live.plugin import XANES_STREAM

    uid = _plugin_fe_run(client, _fe_material(corpus), sample="t-fe-blind")
    summary = client[uid].metadata["stop"]["sfn"]
    assert summary["status"] == "flagged" and "composition_unknown" in summary["quality_flags"]
    predictor = default_registry().predictor("xanes", "Fe")
    assert summary["composition_mode"] == ("unknown" if predictor.knows_unknown_composition else "absorbers_as_elements")
    assert client[uid][XANES_STREAM].read()["absorber"].values[0] == "Fe"


def _write_edge(path, edge):
    path.write_text("energy,mu\n" + "\n".join(f"{e - edge.energy_offset:.3f},{m:.6f}" for e, m in zip(edge.energy, edge.mu)))
    return path


@needs_bundle
def test_two_edges_of_one_sample_give_one_fused_prediction(tmp_path, capsys, corpus):
    material = next(m for m in corpus if {"Fe", "Ti"} <= set(m.edges))
    fe = _write_edge(tmp_path / "fe.csv", material.edges["Fe"])
    ti = _write_edge(tmp_path / "ti.csv", material.edges["Ti"])
    status = main(["predict", "xanes", str(fe), "--absorber", "Fe", "--elements", ",".join(material.elements),
                   "--edge", f"Ti={ti}", "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    result = json.loads(out.out)
    assert result["inputs"]["edges"] == ["Fe", "Ti"] and result["bundle_id"].startswith(f"{XANES_3D_BUNDLE}@")
    assert {"Fe", "Ti"} <= set(result["per_element"])
    assert "Ti" in result["preprocessing"]["other_edges"]
    # a Cu edge with another 3d edge goes to the bundle that covers both, not to the Cu-only one
    assert default_registry().predictor_for_edges("xanes", ["Cu", "Fe"]).bundle.card["name"] == XANES_3D_BUNDLE
    status = main(["predict", "xanes", str(fe), "--absorber", "Fe", "--elements", "Fe,O", "--edge", "Ti"])
    assert status == 2 and "EL=FILE" in capsys.readouterr().err


def test_mixed_valence_sites_split_their_oxidation_state_target_between_the_two_states():
    from sfn_stream.offline.training._xanes3d import OX_CLASSES, mixed_valence_target

    magnetite = mixed_valence_target(OX_CLASSES.index(3), 8 / 3)  # Fe3O4: class 3 (round half up), mean 2.67
    assert magnetite[2] == pytest.approx(1 / 3) and magnetite[3] == pytest.approx(2 / 3) and magnetite.sum() == 1
    assert mixed_valence_target(2, 2.0).tolist() == [0, 0, 1, 0, 0, 0, 0, 0]  # integer state: one-hot
    assert mixed_valence_target(2, None)[2] == 1  # no site average: the class
    assert mixed_valence_target(5, 2.5)[5] == 1  # a class that is neither neighbour (an audit fix) wins
    assert not mixed_valence_target(-1, 2.5).any()  # withheld label: no target


def test_draw_weights_give_each_kind_of_material_its_share_of_an_epoch():
    from types import SimpleNamespace

    from sfn_stream.offline.training._corpus_xanes import REFERENCE
    from sfn_stream.offline.training._xanes3d import draw_weights

    def material(source, edge_source="feff10"):
        return SimpleNamespace(source=source, edges={"Fe": SimpleNamespace(source=edge_source)})

    materials = ([material(REFERENCE)] * 3 + [material("amcsd")] * 10
                 + [material("omnixas_cu", "omnixas_cu")] * 5)
    weights = np.asarray(draw_weights(materials, omnixas_share=0.3, reference_share=0.05))
    assert weights.sum() == pytest.approx(1.0)
    assert weights[:3].sum() == pytest.approx(0.05) and weights[13:].sum() == pytest.approx(0.3)
    no_references = draw_weights(materials[3:], omnixas_share=0.3, reference_share=0.05)
    assert sum(no_references[:10]) == pytest.approx(0.7)  # no foils: their share goes to the FEFF10 materials


@needs_corpus
def test_a_small_multi_edge_training_run_writes_a_bundle_that_predicts(corpus, tmp_path):
    """The whole training path on a few corpus materials (mixed-valence targets, edge dropout, calibration)."""
    from sfn_stream.core.networks import XanesEnsemble, load_bundle
    from sfn_stream.offline.training._xanes3d import Train3dConfig, train_xanes3d_bundle

    feff = [m for m in corpus if any(e.source == "feff10" for e in m.edges.values())]
    multi = [m for m in feff if len(m.edges) >= 2][:6]
    train, val = feff[:40] + multi, feff[40:52]
    config = Train3dConfig(epochs=2, examples_per_epoch=128, members=1, mixed_valence_targets=True)
    bundle = train_xanes3d_bundle(tmp_path / "bundle", config=config, progress=False, materials=train + val,
                                  splits={"train": [m.material_id for m in train], "val": [m.material_id for m in val],
                                          "test": []})
    card = load_bundle(bundle.path).card
    assert card["architecture"]["training"]["mixed_valence_targets"] is True
    assert card["architecture"]["training"]["members"][0]["checkpoint"] == "last"  # the schedule's end
    assert set(card["calibration"]["temperatures"]) >= {"oxidation_state", "coordination_number"}
    material = multi[0]
    spectra = {a: (np.asarray(w.mu, np.float32), float(w.e0_shift))
               for a, e in material.edges.items() if (w := edge_window(e)) is not None}
    result = XanesEnsemble.from_bundle(load_bundle(bundle.path)).predict(list(material.elements), spectra)
    for metal in spectra:
        probabilities = result["per_element"][metal]["oxidation_state"]["probabilities"]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    # trained for requests without a composition: the measured metals are answered, nothing else is assumed
    assert card["architecture"]["kwargs"]["unknown_composition"] is True
    predictor = XanesPredictor(bundle.path)
    windows = [w for e in material.edges.values() if (w := edge_window(e)) is not None]
    blind = predictor.predict_windows(windows, None)
    assert blind.inputs["composition"] == "unknown" and blind.inputs["elements"] is None
    assert set(blind.per_element) == {w.absorber for w in windows}
    assert blind.properties["density"].std > 0


def test_herfd_sharpening_narrows_a_white_line_and_leaves_the_other_windows_alone():
    import torch

    from sfn_stream.core.spectra import XANES_WINDOW
    from sfn_stream.offline.training._xanes3d import Augmentation3d, _sharpen

    energy = torch.linspace(XANES_WINDOW.start, XANES_WINDOW.stop, XANES_WINDOW.n_points)
    line = 1 / (1 + torch.exp(-energy / 1.5)) + 0.6 * torch.exp(-0.5 * ((energy - 8) / 2.5) ** 2)
    spectra = line.repeat(2, 1, 1)  # (batch 2, 1 token, points)
    always = Augmentation3d(sharpen=0.6, sharpen_probability=1.0)
    sharp = _sharpen(spectra, torch.Generator().manual_seed(0), always)
    assert (sharp.amax(-1) > spectra.amax(-1) + 0.01).all()  # a taller white line
    flat = slice(-20, None)  # the post-edge tail, where there is nothing to sharpen
    assert torch.allclose(sharp[..., flat], spectra[..., flat], atol=1e-3)
    never = Augmentation3d(sharpen=0.6, sharpen_probability=0.0)
    assert torch.equal(_sharpen(spectra, torch.Generator().manual_seed(0), never), spectra)


@needs_bundle
def test_bundles_of_one_architecture_combine_into_one_recalibrated_ensemble(tmp_path, corpus):
    import copy

    from sfn_stream.core.networks import XanesEnsemble, load_bundle, save_bundle
    from sfn_stream.offline.training import TrainingDataError, combine_xanes3d_bundles

    shipped = load_bundle(models_dir() / XANES_3D_BUNDLE)
    combined = combine_xanes3d_bundles([shipped.path, shipped.path], tmp_path / "combined", progress=False)
    card = combined.card
    n = shipped.card["architecture"]["ensemble_members"]
    assert card["architecture"]["ensemble_members"] == 2 * n == len(combined.load_weights()["members"])
    assert [s["bundle_id"] for s in card["architecture"]["combined_from"]] == [shipped.id, shipped.id]
    assert card["calibration"]["fitted_on"].startswith("validation") and combined.id != shipped.id
    material = next(m for m in corpus if "Fe" in m.edges and m.edges["Fe"].source == "feff10")
    window = edge_window(material.edges["Fe"])
    result = XanesEnsemble.from_bundle(combined).predict(list(material.elements),
                                                         {"Fe": (np.asarray(window.mu, np.float32), window.e0_shift)})
    assert sum(result["per_element"]["Fe"]["oxidation_state"]["probabilities"]) == pytest.approx(1.0, abs=1e-4)

    other = copy.deepcopy(shipped.card)
    other["architecture"]["kwargs"] = {**other["architecture"]["kwargs"], "d_model": 96}
    other.pop("weights_sha256")
    different = save_bundle(tmp_path / "other", other, shipped.load_weights())
    with pytest.raises(TrainingDataError, match="architecture"):
        combine_xanes3d_bundles([shipped.path, different.path], tmp_path / "refused", progress=False)


def test_site_mix_scores_keep_absorbers_with_one_cn_apart_from_those_whose_sites_differ():
    from types import SimpleNamespace

    from sfn_stream.offline.evaluation.xanes_3d_eval import Unit, site_mix_scores

    def unit(cn, cn_mixed, ox_mean):
        labels = {"coordination_number": cn, "cn_mixed": cn_mixed, "oxidation_state": round(ox_mean),
                  "oxidation_state_mean": ox_mean}
        return Unit(SimpleNamespace(metal_labels={"Fe": labels}, labels={}), "Fe", "feff10", None, False)

    def said(cn, ox):
        return {"per_element": {"Fe": {"coordination_number": {"classes": [4, 5, 6], "probabilities": [
            0.8 if c == cn else 0.1 for c in (4, 5, 6)]}, "oxidation_state": {"classes": [2, 3], "probabilities": [
            0.9 if c == ox else 0.1 for c in (2, 3)]}}}}

    units = [unit(6, False, 3.0), unit(4, False, 2.0), unit(5, True, 2.67), unit(6, None, 3.0)]
    predictions = [said(6, 3), said(6, 2), said(4, 2), said(6, 3)]
    mix = site_mix_scores(units, predictions)
    assert mix["coordination_number"]["one"] == {"n": 2, "accuracy_mean_over_metals": 0.5, "accuracy_pooled": 0.5}
    assert mix["coordination_number"]["several"]["n"] == 1  # Fe3O4-like: label 5, no site has it; read 4
    assert mix["coordination_number"]["several"]["accuracy_pooled"] == 0.0  # the unit without a flag is left out
    assert mix["oxidation_state"]["one"]["n"] == 3 and mix["oxidation_state"]["several"]["n"] == 1
    assert mix["oxidation_state"]["several"]["accuracy_pooled"] == 0.0  # label round(2.67) = 3, read 2


def test_volume_increments_recover_the_atomic_volumes_the_densities_were_made_from():
    from types import SimpleNamespace

    from pymatgen.core import Element

    from sfn_stream.offline.evaluation.xanes_3d_eval import (
        AMU_PER_A3_IN_G_PER_CM3,
        _fit_atomic_volumes,
        _increment_density,
    )

    volumes = {"Fe": 11.0, "O": 17.0, "Mn": 12.5}
    materials = []
    for elements, fractions in ((["Fe", "O"], [1, 1]), (["Fe", "O"], [2, 3]), (["Mn", "O"], [1, 2]),
                                (["Mn", "Fe", "O"], [1, 2, 4]), (["Mn", "O"], [3, 4])):
        total = sum(fractions)
        mass = sum(f / total * float(Element(e).atomic_mass) for e, f in zip(elements, fractions))
        volume = sum(f / total * volumes[e] for e, f in zip(elements, fractions))
        materials.append(SimpleNamespace(elements=elements, fractions=fractions,
                                         labels={"density": mass * AMU_PER_A3_IN_G_PER_CM3 / volume}))
    fitted = _fit_atomic_volumes(materials, ridge=1e-9)
    assert fitted == pytest.approx(volumes, rel=1e-4)
    assert _increment_density({"Fe": 3, "O": 4}, fitted) == pytest.approx(
        (3 * 55.845 + 4 * 15.999) / 7 * AMU_PER_A3_IN_G_PER_CM3 / ((3 * 11 + 4 * 17) / 7), rel=1e-3)
    assert math.isnan(_increment_density({"Fe": 1, "Pu": 1}, fitted))  # an element never seen: no guess


def test_beta_nll_is_the_gaussian_nll_at_unit_variance_and_frees_the_mean_from_small_variances():
    import torch

    from sfn_stream.offline.training._xanes3d import regression_nll

    mean, target = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.5])
    ones = torch.ones(2)
    assert float(regression_nll(mean, target, ones, 0.5)) == pytest.approx(float(regression_nll(mean, target, ones)))
    variance = torch.tensor([0.01, 4.0])
    grads = {}
    for beta in (0.0, 1.0):
        m = mean.clone().requires_grad_(True)
        regression_nll(m, target, variance, beta).backward()
        grads[beta] = m.grad
    assert abs(grads[0.0][0]) > 100 * abs(grads[0.0][1])  # the plain NLL's mean follows the small variance
    torch.testing.assert_close(grads[1.0], (mean - target) / 2)  # beta 1: the squared error's gradient

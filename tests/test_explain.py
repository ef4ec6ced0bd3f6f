"""Integrated-gradient explanations of XANES predictions and the region ablation (the committed 3d-metal bundle,
corpus FEFF10 spectra, the real CLI)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from sfn_stream.cli import main
from sfn_stream.core import paths
from sfn_stream.core.networks import load_bundle, models_dir
from sfn_stream.core.predict import default_registry
from sfn_stream.core.predict.explain import (
    REGIONS,
    edge_step_baseline,
    explain_windows,
    region_masks,
)
from sfn_stream.offline.training import (
    XANES_3D_BUNDLE,
    edge_window,
    read_corpus_materials,
)

HAVE_DATA = (paths.CORPUS_DIR / "materials.parquet").is_file() and (models_dir() / XANES_3D_BUNDLE / "card.json").is_file()
pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="the 3d-metal bundle or data/corpus is absent")


@pytest.fixture(scope="module")
def corpus():
    return read_corpus_materials(omnixas=False, progress=False)


@pytest.fixture(scope="module")
def fe_ti_material(corpus):
    return next(m for m in corpus if {"Fe", "Ti"} <= set(m.edges)
                and all(edge_window(m.edges[a]) is not None for a in ("Fe", "Ti")))


def _write_edge(path, edge):
    """A corpus FEFF10 spectrum written as a foil-calibrated measured scan."""
    path.write_text("energy,mu\n" + "\n".join(f"{e - edge.energy_offset:.3f},{m:.6f}" for e, m in zip(edge.energy, edge.mu)))
    return path


def test_regions_partition_the_window_relative_to_e0(fe_ti_material):
    window = edge_window(fe_ti_material.edges["Fe"])
    masks = region_masks(window)
    assert list(masks) == list(REGIONS)
    assert np.all(sum(mask.astype(int) for mask in masks.values()) == 1)
    relative = window.energy - window.e0
    assert relative[masks["edge"]].min() >= -5.0 and relative[masks["edge"]].max() < 5.0
    assert relative[masks["white_line"]].min() >= 5.0 and relative[masks["post_edge"]].min() >= 20.0
    baseline = edge_step_baseline(window)
    assert baseline[relative < -4].max() < 0.01 and baseline[relative > 4].min() > 0.99


def test_attributions_add_up_to_the_change_of_each_output_from_the_baseline(fe_ti_material):
    predictor = default_registry().predictor_for_edges("xanes", ["Fe", "Ti"])
    windows = [edge_window(fe_ti_material.edges[a]) for a in ("Fe", "Ti")]
    explanation = explain_windows(predictor, windows, list(fe_ti_material.elements), steps=32)
    prediction = predictor.predict_windows(windows, list(fe_ti_material.elements))
    targets = {task.target: task for task in explanation.tasks}
    assert {"Fe oxidation_state", "Fe coordination_number", "Ti oxidation_state", "density"} <= set(targets)
    for task in explanation.tasks:
        change = task.f_input - task.f_baseline
        assert abs(task.completeness_gap) <= 0.02 * abs(change) + 1e-3, task.target
        assert set(task.attributions) == {"Fe", "Ti"}
        assert sum(sum(shares.values()) for shares in task.region_shares.values()) == pytest.approx(1.0, abs=1e-6)
        if task.element:  # the explained class is the predicted one, and f is a mean log-probability
            assert task.top_class == prediction.per_element[task.element][task.task].value
            assert math.exp(task.f_input) <= task.probability + 1e-4
    assert targets["density"].f_input == pytest.approx(prediction.properties["density"].value, rel=1e-3)
    summary = json.loads(json.dumps(explanation.to_dict()))
    assert summary["bundle_id"] == predictor.bundle.id and summary["windows"]["Fe"]["preprocessing"]["e0"] > 7100
    assert summary["tasks"][0]["region_shares"]["Fe"].keys() == REGIONS.keys()


def test_cli_writes_one_png_per_file_and_exits_2_on_a_bad_file(tmp_path, capsys, fe_ti_material):
    good = _write_edge(tmp_path / "sample_fe.csv", fe_ti_material.edges["Fe"])
    bad = tmp_path / "broken_fe.csv"
    bad.write_text("energy,mu\n7100,0.1\n7110,nan\n")
    out = tmp_path / "figures"
    elements = ",".join(fe_ti_material.elements)
    status = main(["explain", "xanes", str(good), str(bad), "--absorber", "Fe", "--elements", elements,
                   "--out", str(out), "--steps", "16", "--json"])
    captured = capsys.readouterr()
    assert status == 2 and "broken_fe.csv" in captured.err and "Traceback" not in captured.err
    results = json.loads(captured.out)
    assert [r["file"] for r in results] == [str(good)]
    figure = out / "sample_fe_explain.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and results[0]["figure"] == str(figure)
    assert not (out / "broken_fe_explain.png").exists()
    assert results[0]["bundle_id"].startswith(f"{XANES_3D_BUNDLE}@")
    ga = tmp_path / "ga.csv"
    energy = np.linspace(10250, 10550, 300)
    ga.write_text("energy,mu\n" + "\n".join(f"{e},{0.5 + np.arctan((e - 10367) / 2) / np.pi}" for e in energy))
    status = main(["explain", "xanes", str(ga), "--absorber", "Ga", "--elements", "Ga,As", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "Ga K edge" in err and "Traceback" not in err


def test_region_ablation_runs_on_a_few_units_and_writes_the_card_of_a_copy(tmp_path):
    from sfn_stream.offline.evaluation.xanes_ablation import (
        INTACT,
        OVERALL,
        WHOLE,
        ablated_windows,
        ablation_test_units,
        evaluate_ablation,
        write_card_interpretability,
    )

    units, baselines = ablation_test_units()
    few = units[:8]
    variants = ablated_windows(few[0].window)
    masks = region_masks(few[0].window)
    filled = variants["white_line"].mu[masks["white_line"]]
    assert np.allclose(np.diff(filled, 2), 0.0, atol=1e-5)  # a straight line across the region
    assert np.array_equal(variants["white_line"].mu[~masks["white_line"]], few[0].window.mu[~masks["white_line"]].astype(np.float32))
    assert np.allclose(variants[WHOLE].mu, edge_step_baseline(few[0].window))

    report = evaluate_ablation(units=few, baselines=baselines)
    assert report["n_units"] == 8 and report["variants"] == [INTACT, *REGIONS, WHOLE]
    overall = report["table"][OVERALL]
    for task in ("oxidation_state", "coordination_number"):
        if overall[task] is None:
            continue
        for variant in report["variants"][1:]:
            entry = overall[task][variant]
            assert entry["change"] == pytest.approx(entry["accuracy"] - overall[task][INTACT]["accuracy"])

    bundle = tmp_path / "bundle"
    shutil.copytree(models_dir() / XANES_3D_BUNDLE, bundle)
    before = load_bundle(bundle).id
    write_card_interpretability(bundle, report)
    card = json.loads((bundle / "card.json").read_text())
    assert card["interpretability"]["region_ablation"]["n_units"] == 8
    assert OVERALL in card["interpretability"]["region_ablation_accuracy"] and load_bundle(bundle).id == before

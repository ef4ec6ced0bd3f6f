"""The PXRD ensemble (search-match x network): the mix, a bundle built beside real members, and its refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.networks import (
    BundleError,
    XrdEnsemble,
    load_bundle,
    mix_log_linear,
    models_dir,
    save_bundle,
    xrd_model_from_bundle,
)
from sfn_stream.core.predict import XrdPredictor
from sfn_stream.core.simulation import StickTable
from sfn_stream.offline.evaluation.xrd_eval import NOISY, protocol_patterns
from sfn_stream.offline.training import DEFAULT_STICK_TABLE, build_xrd_ensemble_bundle

MEMBERS = ("xrd-search-match", "xrd-crystal-system")
pytestmark = pytest.mark.skipif(
    not DEFAULT_STICK_TABLE.is_file() or not all((models_dir() / m / "card.json").is_file() for m in MEMBERS),
    reason="no committed stick table or member bundles")


def test_the_mix_weights_each_member_and_the_temperature_sharpens_or_flattens():
    p_search = np.array([[0.7, 0.2, 0.1]])
    p_network = np.array([[0.1, 0.5, 0.4]])
    assert mix_log_linear(p_search, p_network, 0.0, 1.0) == pytest.approx(p_search)
    assert mix_log_linear(p_search, p_network, 1.0, 1.0) == pytest.approx(p_network)
    half = mix_log_linear(p_search, p_network, 0.5, 1.0)[0]
    assert half.sum() == pytest.approx(1.0) and half.argmax() == 1  # both give class 1 a fair share: it wins
    assert mix_log_linear(p_search, p_network, 0.5, 0.5)[0].max() > half.max()  # T < 1 sharpens


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Copies of the shipped members and an ensemble built beside them on a few validation structures."""
    out = tmp_path_factory.mktemp("models")
    for name in MEMBERS:
        shutil.copytree(models_dir() / name, out / name)
    build_xrd_ensemble_bundle(out / "xrd-ensemble", models=out, max_val=30, progress=False)
    return out


def test_the_ensemble_predicts_crystal_systems_and_space_groups_through_the_predictor(folder):
    bundle = load_bundle(folder / "xrd-ensemble")
    model = xrd_model_from_bundle(bundle)
    assert isinstance(model, XrdEnsemble) and model.has_chemistry
    fit = bundle.card["calibration"]
    assert 0.0 <= fit["network_weight"] <= 1.0 and fit["temperature"] > 0
    table = StickTable.load(DEFAULT_STICK_TABLE)
    patterns = protocol_patterns(table, [0, 1, 2], NOISY, seed=3)
    probs = model.probabilities(patterns)
    assert probs.shape == (3, len(CRYSTAL_SYSTEMS)) and np.allclose(probs.sum(1), 1.0)
    with_elements = model.probabilities(patterns, elements=[["Mn", "O"]] * 3)
    assert not np.allclose(with_elements, probs)  # the elements reach search-match's ranking
    predictor = XrdPredictor(folder / "xrd-ensemble")
    assert predictor.uses_elements
    result = model.predict(patterns[0], elements=["Mn", "O"])
    assert len(result["space_group"]["classes"]) == 5


def test_an_ensemble_refuses_a_member_it_was_not_calibrated_with(folder, tmp_path):
    moved = tmp_path / "models"
    shutil.copytree(folder, moved)
    network = load_bundle(moved / "xrd-crystal-system")
    weights = network.load_weights()
    weights["temperature"] = weights["temperature"] * 2  # another network, as far as the ensemble can tell
    card = {k: v for k, v in network.card.items() if k != "weights_sha256"}
    save_bundle(moved / "xrd-crystal-system", card, weights)
    with pytest.raises(BundleError, match="not the one it was calibrated with"):
        xrd_model_from_bundle(load_bundle(moved / "xrd-ensemble"))


def test_predict_xrd_takes_another_bundle_and_says_which_answered(tmp_path, capsys):
    import json

    from sfn_stream.cli import main
    from sfn_stream.core.spectra import two_theta_to_q

    two_theta = np.arange(10.0, 90.0, 0.02)
    q = two_theta_to_q(two_theta, 1.5406)
    a = 4.2  # rock salt: h, k, l all even or all odd
    peaks = [2 * np.pi * np.sqrt(h * h + k * k + l * l) / a for h, k, l in
             ((1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2), (4, 0, 0), (3, 3, 1), (4, 2, 0))]
    y = 100 + sum(3000 * np.exp(-0.5 * ((q - c) / 0.006) ** 2) for c in peaks)
    path = tmp_path / "rock_salt.xy"
    np.savetxt(path, np.column_stack([two_theta, y]))
    assert main(["predict", "xrd", str(path), "--bundle", str(models_dir() / "xrd-ensemble"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bundle_id"] == load_bundle(models_dir() / "xrd-ensemble").id
    assert main(["predict", "xrd", str(path), "--bundle", str(tmp_path / "nothing")]) != 0
    assert "--bundle" in capsys.readouterr().err


def test_evaluate_xrd_writes_each_bundles_test_figures_into_its_card_and_a_plot(folder, capsys, tmp_path):
    import json

    from sfn_stream.cli import main

    bundle = folder / "xrd-ensemble"
    plot = tmp_path / "figures" / "xrd.png"
    status = main(["evaluate", "xrd", "--bundle", str(bundle), "--max-test", "12", "--max-reference", "40",
                   "--no-measured", "--write-card", "--json", "--plot", str(plot)])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    loaded = load_bundle(bundle)
    test = loaded.card["metrics"]["test"]
    noisy = report["sets"]["noisy_formula_disjoint"]
    assert test["noisy_formula_disjoint"]["model"]["accuracy"] == noisy[loaded.id]["accuracy"]
    assert test["noisy_formula_disjoint"]["model_with_elements"]["accuracy"] == noisy[f"{loaded.id} + elements"]["accuracy"]
    assert set(test["clean"]) >= {"model", "nearest_neighbour_baseline", "majority_class"}
    assert xrd_model_from_bundle(loaded).bundle_id == loaded.id  # the weights, and so the id, are untouched
    assert sum(n for n, _, _ in noisy[loaded.id]["reliability"]) == noisy[loaded.id]["n"]  # every pattern in a bin
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Site averaging, splits, augmentation, a tiny end-to-end training run, and the committed bundle."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sfn_stream.core.networks import XANES_CARD_KEYS, UnsupportedAbsorberError, XanesEnsemble, load_bundle, models_dir
from sfn_stream.core.networks._bundle import CARD_KEYS
from sfn_stream.core.spectra import k_edge_energy
from sfn_stream.offline.corpus import IncompleteSpectrum, average_site_spectra
from sfn_stream.offline.shared import have_shared
from sfn_stream.offline.splits import balanced_splits
from sfn_stream.offline.training import (
    Augmentation,
    TrainConfig,
    XanesDataset,
    train_xanes_bundle,
    window_sample,
)
from sfn_stream.offline.training._xanes import augmented_views, gaussian_broaden

E_CU = k_edge_energy("Cu")


def _feff_like(edge: float, peak: float = 10.0, start: float = -8.0, stop: float = 140.0):
    """A smooth K-edge: arctan step at ``edge`` plus a white-line peak ``peak`` eV above it."""
    energy = E_CU + np.concatenate([np.arange(start, 30, 0.3), np.arange(30, stop, 1.5)])
    x = energy - E_CU
    mu = 0.5 + np.arctan((x - edge) / 1.5) / np.pi + 0.6 * np.exp(-0.5 * ((x - edge - peak) / 3.0) ** 2)
    return energy, mu * (1 + 0.0005 * x)


# --- site averaging ----------------------------------------------------------------------------


def test_equivalent_sites_with_the_same_spectrum_average_to_it():
    energy, mu = _feff_like(2.0)
    grid, mean, weights, used = average_site_spectra([[0, 1]], {0: (energy, mu), 1: (energy, mu)})
    assert weights == (2,) and used == ((0, 1),)
    np.testing.assert_allclose(mean, np.interp(grid, energy, mu))


def test_multiplicity_weights_and_common_grid():
    e_a, mu_a = _feff_like(1.0)
    e_b, mu_b = _feff_like(6.0)
    e_b = e_b + 0.7  # a second site on a shifted native grid: interpolated, no extrapolation
    grid, mean, weights, _ = average_site_spectra([[0, 1, 2], [5]], {0: (e_a, mu_a), 5: (e_b, mu_b)})
    assert weights == (3, 1)
    assert grid[0] >= e_b[0] and grid[-1] <= e_a[-1]
    expected = (3 * np.interp(grid, e_a, mu_a) + np.interp(grid, e_b, mu_b)) / 4
    np.testing.assert_allclose(mean, expected)


def test_a_group_without_any_spectrum_is_an_error():
    energy, mu = _feff_like(2.0)
    with pytest.raises(IncompleteSpectrum, match=r"\[3, 4\]"):
        average_site_spectra([[0], [3, 4]], {0: (energy, mu)})


@pytest.mark.skipif(not have_shared(), reason="needs ../shared (OmniXAS Cu)")
def test_material_spectrum_of_a_three_site_omnixas_material():
    from sfn_stream.offline.training import material_spectrum

    spectrum = material_spectrum("mp-1021507")  # Ba2Y(CuO2)3: three inequivalent Cu sites
    assert spectrum.weights == (1, 1, 1) and len(spectrum.site_keys) == 3
    assert np.all(np.diff(spectrum.energy) > 0) and spectrum.energy[0] > 8900


# --- splits and augmentation --------------------------------------------------------------------


def test_split_never_puts_a_formula_in_two_splits():
    formulas = {f"mp-{i}": f"F{i % 37}" for i in range(400)}
    splits = balanced_splits(formulas, seed=0)
    seen = {name: {formulas[i] for i in ids} for name, ids in splits.items()}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert sum(len(v) for v in splits.values()) == 400
    assert 0.7 < len(splits["train"]) / 400 < 0.9
    assert splits == balanced_splits(formulas, seed=0)


def test_gaussian_broadening_keeps_the_step_and_softens_the_edge():
    energy, mu = _feff_like(2.0)
    grid, broad = gaussian_broaden(energy, mu, fwhm=2.0)
    sharp = np.interp(grid, energy, mu)
    assert np.max(np.gradient(broad, grid)) < np.max(np.gradient(sharp, grid))
    assert broad[-50:].mean() == pytest.approx(sharp[-50:].mean(), rel=0.01)


def test_energy_jitter_moves_window_and_e0_shift_together():
    energy, mu = _feff_like(3.0)
    sample = window_sample("s", "CuO", energy + 5.0, mu, absorber="Cu", energy_offset=5.0, labels={})
    views = augmented_views(sample, 5.0, Augmentation(views=8, energy_jitter=1.0, broadening=(0.5, 0.6)), np.random.default_rng(1))
    assert len(views) == 8
    shifts = np.array([s for _, s in views]) - sample.e0_shift
    assert np.all(np.abs(shifts) < 1.3) and np.std(shifts) > 0.1
    # the half-height crossing of each window moves with its e0_shift
    grid = np.linspace(-10, 46, 200)
    crossings = np.array([np.interp(0.5, w[:60], grid[:60]) for w, _ in views])
    assert np.corrcoef(crossings, shifts)[0, 1] > 0.9


def test_energy_offset_is_measured_from_a_feff_metal_spectrum(tmp_path):
    from sfn_stream.offline.training import measure_feff_energy_offset, recorded_energy_offset

    energy, mu = _feff_like(edge=0.0, start=-6.0)
    energy = energy + 7.5  # a FEFF-like scale 7.5 eV above the tabulated edge
    k = np.zeros_like(energy)
    np.savetxt(tmp_path / "xmu.dat", np.column_stack([energy, energy - 8990, k, mu, mu, mu * 0]), header="omega e k mu mu0 chi")
    record = measure_feff_energy_offset(tmp_path / "xmu.dat")
    assert record["energy_offset"] == pytest.approx(7.5, abs=0.3)
    committed = recorded_energy_offset()
    assert committed["energy_offset"] == pytest.approx(committed["feff_metal_e0"] - committed["tabulated_edge"])


def test_blanking_covers_where_computed_spectra_lack_data():
    from sfn_stream.offline.training._xanes import blank_points

    energy, mu = _feff_like(4.0, start=-2.0)  # data start 2 eV below the tabulated edge
    sample = window_sample("s", "CuO", energy, mu, absorber="Cu", energy_offset=0.0, labels={})
    assert sample.extra["data_start"] == pytest.approx(-2.0, abs=0.01)
    points = blank_points([sample])
    grid = np.linspace(-10, 46, 200)
    assert grid[points - 1] < -2.0 <= grid[points]


# --- tiny end-to-end training -------------------------------------------------------------------


def _synthetic_dataset(n=30, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        ox = int(rng.integers(1, 3))
        cn = 2 if ox == 1 else 4
        energy, mu = _feff_like(edge=2.0 + 3.0 * ox + rng.normal(0, 0.3), peak=6.0 + 2 * cn)
        others = ["O"] if i % 2 else ["O", "La"]
        formula = "Cu" + "".join(others) + ("" if i % 3 else "2")
        sample = window_sample(
            f"syn-{i}", formula, energy, mu, absorber="Cu", energy_offset=0.0,
            labels={"density": 4.0 + ox + 0.1 * rng.normal(), "oxidation_state": ox, "coordination_number": cn},
        )
        assert not isinstance(sample, str), sample
        samples.append(sample)
    return XanesDataset(samples, energy_offset=0.0, description="synthetic arctan edges (test)")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    dataset = _synthetic_dataset()
    ids = [s.material_id for s in dataset.samples]
    splits = {"train": ids[:20], "val": ids[20:25], "test": ids[25:]}
    config = TrainConfig(epochs=3, batch_size=8, model={"d_model": 16, "n_heads": 2, "n_layers": 1, "cnn_channels": 4, "pool_size": 4, "dropout": 0.0})
    out = tmp_path_factory.mktemp("bundle") / "xanes-tiny"
    return train_xanes_bundle(
        out, members=2, progress=False, dataset=dataset, splits=splits, config=config,
        augmentation=Augmentation(views=1), label_sources={"all": "synthetic"},
    )


def test_tiny_training_writes_a_loadable_bundle(tiny_bundle):
    bundle = load_bundle(tiny_bundle.path)
    assert set(CARD_KEYS) <= set(bundle.card)
    assert bundle.card["supported_absorbers"] == ["Cu"]
    assert bundle.card["training_data"]["n_train"] == 20
    assert set(bundle.card["metrics"]["test"]) >= {"oxidation_state", "coordination_number", "density"}
    json.dumps(bundle.card)  # the card is plain JSON
    ensemble = XanesEnsemble.from_bundle(bundle)
    assert ensemble is XanesEnsemble.from_bundle(bundle)  # cached by bundle id
    assert len(ensemble.members) == 2 and ensemble.supported_absorbers == ("Cu",)


def test_predict_returns_the_documented_structure(tiny_bundle):
    ensemble = XanesEnsemble.from_bundle(tiny_bundle)
    sample = _synthetic_dataset(n=1, seed=5).samples[0]
    result = ensemble.predict(["Cu", "O"], {"Cu": (sample.window, sample.e0_shift)}, {"Cu": 1, "O": 1})
    density = result["compound"]["density"]
    assert density["unit"] == "g/cm3" and math.isfinite(density["mean"]) and density["std"] > 0
    cu = result["per_element"]["Cu"]
    assert cu["oxidation_state"]["classes"] == list(range(8))
    assert cu["coordination_number"]["classes"] == list(range(1, 13))
    for task in ("oxidation_state", "coordination_number"):
        probabilities = cu[task]["probabilities"]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5) and min(probabilities) >= 0
    batch = ensemble.predict_batch([(["Cu", "O"], {"Cu": (sample.window, sample.e0_shift)}, None)] * 3)
    assert len(batch) == 3 and batch[0] == batch[2]
    with pytest.raises(UnsupportedAbsorberError):
        ensemble.predict(["Fe", "O"], {"Fe": (sample.window, 0.0)})
    with pytest.raises(ValueError, match="element"):
        ensemble.predict(["Cu", "Zz"], {"Cu": (sample.window, 0.0)})


# --- the committed bundle -----------------------------------------------------------------------


def test_committed_bundle_loads_and_its_card_is_complete():
    path = models_dir() / "xanes-specfusion"
    bundle = load_bundle(path)
    card = bundle.card
    assert set(XANES_CARD_KEYS) <= set(card)
    assert card["name"] == "xanes-specfusion" and card["kind"] == "xanes" and card["supported_absorbers"] == ["Cu"]
    assert (path / "weights.pt").stat().st_size < 5e6
    test = card["metrics"]["test"]
    for task in ("oxidation_state", "coordination_number"):
        assert {"accuracy", "macro_f1", "ece", "baseline_majority_class", "confusion"} <= set(test[task])
    assert {"mae", "r2", "fraction_within_1_std", "baseline_training_mean"} <= set(test["density"])
    assert card["preprocessing"]["energy_offset"]["energy_offset"] != 0
    ensemble = XanesEnsemble.from_bundle(bundle)
    energy, mu = _feff_like(2.0)
    from sfn_stream.core.spectra import preprocess_xanes

    window = preprocess_xanes(energy, mu, absorber="Cu")
    result = ensemble.predict(["Cu", "O"], {"Cu": (window.mu, window.e0_shift)})
    assert sum(result["per_element"]["Cu"]["oxidation_state"]["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_committed_splits_are_disjoint_by_formula():
    from sfn_stream.offline.training import read_omnixas_labels, read_splits

    splits = read_splits()
    formulas = {mid: row["formula"] for mid, row in read_omnixas_labels().items()}
    seen = {name: {formulas[i] for i in ids} for name, ids in splits.items()}
    assert not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"]) and not (seen["train"] & seen["val"])
    assert Path(models_dir() / "xanes-specfusion" / "card.json").is_file()

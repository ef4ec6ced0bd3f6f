"""Search-match PXRD bundle: built from a slice of the committed stick table, used through the registry."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.networks import (
    XrdSearchMatch,
    load_bundle,
    models_dir,
    xrd_model_from_bundle,
)
from sfn_stream.core.predict import XrdPredictor
from sfn_stream.core.predict.registry import ModelRegistry, load_predictor
from sfn_stream.core.simulation import StickTable, synthesize_pattern
from sfn_stream.core.spectra import (
    XRD_Q_GRID,
    XRD_Q_POINTS,
    XrdInputError,
    two_theta_to_q,
)
from sfn_stream.offline.training import DEFAULT_STICK_TABLE, build_search_match_bundle

pytestmark = pytest.mark.skipif(not DEFAULT_STICK_TABLE.is_file(), reason="no committed stick table")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "xrd-search-match"
    return build_search_match_bundle(out, max_reference=150, max_val=20, progress=False)


@pytest.fixture(scope="module")
def table():
    return StickTable.load(DEFAULT_STICK_TABLE)


def _lab_scan(sticks, rng, strain: float = 0.0, noise: float = 0.01, background: float = 0.3):
    """A Cu K-alpha1 scan, 15-85 deg, of ``sticks`` (cell scaled by 1 + strain) with background and Gaussian
    noise (``noise`` of the tallest peak), preprocessed."""
    q_range = two_theta_to_q(np.array([15.0, 85.0]), 1.5406)
    conditions = {"source": "lab", "wavelength": 1.5406, "wavelength2": None, "q_range": tuple(q_range),
                  "instrument_fwhm_deg": 0.12, "crystallite_size_A": 1e6, "microstrain": 0.0, "eta": 0.5,
                  "zero_shift_deg": 0.0, "displacement_mm": 0.0, "lattice_strain": strain, "debye_waller_B": 0.0,
                  "per_peak_log_sigma": 0.0, "march_dollase_r": None, "background_fraction": background,
                  "peak_counts": 1e5, "gaussian_noise": noise}
    return synthesize_pattern(sticks, XRD_Q_GRID, rng, conditions=conditions).astype(np.float32)


def test_bundle_card_and_loader(bundle):
    assert bundle.card["kind"] == "xrd"
    assert bundle.card["architecture"]["class"] == "XrdSearchMatch"
    assert bundle.card["training_data"]["n_reference"] == 150
    assert isinstance(xrd_model_from_bundle(bundle), XrdSearchMatch)
    assert not isinstance(xrd_model_from_bundle(load_bundle(models_dir() / "xrd-crystal-system")), XrdSearchMatch)


SHIPPED = models_dir() / "xrd-search-match"


@pytest.mark.parametrize("strain", [0.0, 0.04])
def test_a_reference_structure_is_matched_to_itself(bundle, table, strain):
    """Search: the structure's own reference is the best match, also with its cell 4 % larger (dilation)."""
    searcher = xrd_model_from_bundle(bundle)
    position = {key: i for i, key in enumerate(table.ids)}
    rng = np.random.default_rng(7)
    for reference in rng.choice(len(searcher.reference_ids), 3, replace=False):
        sticks = table.sticks(position[searcher.reference_ids[reference]])
        pattern = _lab_scan(sticks, rng, strain, noise=0.003, background=0.0)
        indices, similarities = searcher.nearest(pattern[None, :], 3)
        assert indices[0, 0] == reference, (searcher.reference_ids[reference], similarities)


@pytest.mark.skipif(not (SHIPPED / "card.json").is_file(), reason="no shipped xrd-search-match bundle")
def test_the_shipped_bundle_gives_a_reference_structure_its_own_class(table):
    """Match: with the fitted k and temperature, noisy scans of library structures get their structures' class.
    Most, not all: the k = 500 neighbours vote, and a structure whose pattern many references of another class
    share (close-packed hexagonal polytypes beside cubic ones) is outvoted (37 of 40 right when measured)."""
    searcher = xrd_model_from_bundle(load_bundle(SHIPPED))
    position = {key: i for i, key in enumerate(table.ids)}
    rng = np.random.default_rng(11)
    wrong = []
    for reference in rng.choice(len(searcher.reference_ids), 20, replace=False):
        structure = position[searcher.reference_ids[reference]]
        scan = _lab_scan(table.sticks(structure), rng, 0.02, noise=0.003, background=0.0)
        probabilities = searcher.predict(scan)["crystal_system"]["probabilities"]
        if CRYSTAL_SYSTEMS[int(np.argmax(probabilities))] != table.crystal_systems[structure]:
            wrong.append(str(table.ids[structure]))
    assert len(wrong) <= 3, wrong  # a mislabelled or misaligned library gets most of them wrong


def test_norms_kept_from_one_q_range_are_not_used_for_another(bundle, table, tmp_path):
    """A frame of another measured Q range after one of the full range scores as a fresh searcher (one loaded
    from a copy of the bundle: searchers are kept per bundle folder) scores it."""
    rng = np.random.default_rng(5)
    full = _lab_scan(table.sticks(0), rng)
    part = full.copy()
    part[: len(part) // 3] = 0.0  # measured from a higher angle only
    searcher = xrd_model_from_bundle(bundle)
    searcher.similarities(full[None, :])
    fresh = xrd_model_from_bundle(load_bundle(shutil.copytree(bundle.path, tmp_path / "copy")))
    assert fresh is not searcher
    np.testing.assert_array_equal(searcher.similarities(part[None, :]), fresh.similarities(part[None, :]))


def test_probabilities_sum_to_one(bundle, table):
    searcher = xrd_model_from_bundle(bundle)
    rng = np.random.default_rng(3)
    patterns = np.stack([_lab_scan(table.sticks(i), rng) for i in rng.choice(len(table), 4, replace=False)])
    systems, groups = searcher.probabilities(patterns), searcher.space_group_probabilities(patterns)
    assert systems.shape == (4, len(CRYSTAL_SYSTEMS)) and groups.shape == (4, 230)
    np.testing.assert_allclose(systems.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(groups.sum(axis=1), 1.0, atol=1e-9)
    assert (systems >= 0).all() and (groups >= 0).all()


@pytest.mark.parametrize("bad, message", [
    (np.ones(500), "1200 points"),
    (np.full(XRD_Q_POINTS, np.nan), "NaN"),
    (np.zeros(XRD_Q_POINTS), "all zeros"),
])
def test_bad_input_is_refused_with_a_reason(bundle, bad, message):
    with pytest.raises(XrdInputError, match=message):
        xrd_model_from_bundle(bundle).predict(bad)


def test_named_bundle_serves_predictions_through_the_registry(bundle, table, tmp_path):
    from sfn_stream.live.analyses.xrd import xrd_row

    predictor = load_predictor("xrd", bundle.path)
    assert isinstance(predictor, XrdPredictor) and predictor.bundle.id == bundle.id
    structure = table.ids.tolist().index(xrd_model_from_bundle(bundle).reference_ids[0])
    two_theta = np.arange(10.0, 90.0, 0.02)
    q = two_theta_to_q(two_theta, 1.5406)
    sticks = table.sticks(structure)
    scan = 50 + sum(1e4 * h * np.exp(-0.5 * ((q - c) / 0.006) ** 2) for c, h in zip(sticks.q, sticks.intensity))
    prediction, _ = predictor.predict_pattern(two_theta, np.random.default_rng(0).poisson(scan), wavelength=1.5406)
    assert prediction.status == "ok" and prediction.bundle_id == bundle.id
    assert sum(prediction.properties["crystal_system"].probabilities.values()) == pytest.approx(1.0)
    assert len(prediction.properties["space_group"].probabilities) == 5
    # the derived-stream row has the network's columns, no more
    network = load_predictor("xrd", models_dir() / "xrd-crystal-system")
    network_prediction, _ = network.predict_pattern(two_theta, scan, wavelength=1.5406)
    assert set(xrd_row(prediction, 0, CRYSTAL_SYSTEMS)) == set(xrd_row(network_prediction, 0, CRYSTAL_SYSTEMS))


def test_search_match_with_indexing_is_the_default_and_the_others_stay_loadable(tmp_path):
    for name in ("xrd-crystal-system", "xrd-search-match", "xrd-indexed"):
        (tmp_path / name).symlink_to(models_dir() / name)
    registry = ModelRegistry(tmp_path)
    assert registry.bundle_path("xrd").name == "xrd-indexed"
    kinds = {card.name: type(load_predictor("xrd", card.path).classifier).__name__
             for card in registry.cards() if card.kind == "xrd"}
    assert kinds == {"xrd-crystal-system": "XrdClassifier", "xrd-search-match": "XrdSearchMatch",
                     "xrd-indexed": "XrdIndexed"}

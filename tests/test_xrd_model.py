"""PXRD simulation with augmentation, the CNN-Transformer classifier and its bundle."""

import math

import numpy as np
import pytest
from pymatgen.analysis.diffraction.xrd import XRDCalculator
from pymatgen.core import Lattice, Structure

from sfn_stream.core.networks import CRYSTAL_SYSTEMS, XrdClassifier, load_bundle, models_dir
from sfn_stream.core.simulation import (
    StickTable,
    lorentz_polarization,
    q_to_two_theta,
    render_peaks,
    stick_pattern,
    synthesize_pattern,
)
from sfn_stream.core.spectra import XRD_Q_GRID, XrdInputError, preprocess_xrd
from sfn_stream.offline.training._xrd import assign_splits, structure_record, train_xrd_bundle


def rock_salt(a=5.64, cation="Na", anion="Cl"):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_stick_pattern_of_rock_salt():
    sticks = stick_pattern(rock_salt())
    a = 5.64
    assert sticks.q[0] == pytest.approx(2 * math.pi * math.sqrt(3) / a, rel=1e-6)  # (111)
    assert tuple(sorted(abs(int(v)) for v in sticks.hkl[0])) == (1, 1, 1)
    assert sticks.intensity.max() == pytest.approx(1.0)
    # sticks are stored without the Lorentz-polarisation factor: putting it back gives pymatgen's pattern
    reference = XRDCalculator(wavelength=1.5406).get_pattern(rock_salt(), two_theta_range=(10, 100))
    with_lp = sticks.intensity * lorentz_polarization(sticks.q, 1.5406)
    with_lp = 100 * with_lp / with_lp.max()
    tt = q_to_two_theta(sticks.q, 1.5406)
    matched = [with_lp[np.argmin(np.abs(tt - x))] for x in reference.x]
    np.testing.assert_allclose(matched, reference.y, rtol=1e-4)
    assert sorted(abs(int(v)) for v in sticks.hkl[np.argmax(with_lp)]) == [0, 0, 2]  # (200)


def test_render_peaks_conserves_area_and_position():
    centers, areas, fwhm = np.array([1.5, 3.0]), np.array([1.0, 2.0]), np.array([0.002, 0.03])
    profile = render_peaks(XRD_Q_GRID, centers, areas, fwhm, eta=0.3)
    step = XRD_Q_GRID[1] - XRD_Q_GRID[0]
    assert profile.sum() * step == pytest.approx(3.0, rel=0.03)  # Lorentzian tails cut at 12 FWHM
    for center in centers:
        window = np.abs(XRD_Q_GRID - center) < 0.05
        assert XRD_Q_GRID[window][np.argmax(profile[window])] == pytest.approx(center, abs=step)


def test_synthesize_pattern_shape_range_and_determinism():
    sticks = stick_pattern(rock_salt())
    a = synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(7))
    b = synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(7))
    c = synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(8))
    assert a.shape == XRD_Q_GRID.shape and np.isfinite(a).all()
    assert a.max() == pytest.approx(1.0) and a.min() >= 0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    details = synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(3), return_details=True)
    assert not details["pattern"][~details["covered"]].any()  # zero outside the sampled range
    assert {"wavelength", "zero_shift_deg", "crystallite_size_A"} <= set(details["conditions"])


def test_noise_free_share_renders_clean_patterns_and_leaves_the_default_stream_alone():
    sticks = stick_pattern(rock_salt())
    clean = synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(5), augmentation={"p_noise_free": 1.0},
                               return_details=True)
    covered = clean["covered"]
    assert clean["conditions"]["gaussian_noise"] == 0 and clean["conditions"]["background_fraction"] == 0
    assert clean["raw"][covered].max() == pytest.approx(1.0)  # the bare profile: no counts, no noise
    assert clean["raw"][covered].min() >= 0
    noisy = synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(5), return_details=True)
    assert noisy["raw"][noisy["covered"]].max() > 100  # counts
    np.testing.assert_array_equal(  # the option off draws nothing: earlier renderings are reproduced
        synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(5), augmentation={"p_noise_free": 0.0}),
        noisy["pattern"])


def test_synthesized_peaks_sit_at_the_bragg_positions():
    sticks = stick_pattern(rock_salt())
    conditions = dict(
        source="synchrotron", wavelength=0.6, wavelength2=None, q_range=(0.5, 6.5), instrument_fwhm_deg=0.01,
        crystallite_size_A=2000.0, microstrain=0.0, eta=0.5, zero_shift_deg=0.0, displacement_mm=0.0,
        lattice_strain=0.0, debye_waller_B=0.0, per_peak_log_sigma=0.0, march_dollase_r=None,
        background_fraction=0.1, peak_counts=1e5, gaussian_noise=0.0,
    )
    pattern = synthesize_pattern(sticks, XRD_Q_GRID, np.random.default_rng(0), conditions=conditions)
    q200 = 2 * math.pi * 2 / 5.64
    window = np.abs(XRD_Q_GRID - q200) < 0.05
    assert XRD_Q_GRID[window][np.argmax(pattern[window])] == pytest.approx(q200, abs=0.005)


def _tiny_table():
    lattices = {
        "cubic": ("Pm-3m", Lattice.cubic(3.1)),
        "tetragonal": ("P4/mmm", Lattice.tetragonal(3.0, 4.2)),
        "orthorhombic": ("Pmmm", Lattice.orthorhombic(3.0, 3.7, 4.4)),
        "hexagonal": ("P6/mmm", Lattice.hexagonal(3.0, 4.6)),
        "monoclinic": ("P2/m", Lattice.monoclinic(3.0, 3.8, 4.5, 104)),
        "triclinic": ("P-1", Lattice.from_parameters(3.1, 3.9, 4.6, 78, 85, 97)),
        "trigonal": ("P-3m1", Lattice.hexagonal(3.2, 5.0)),
    }
    records = []
    for system, (group, lattice) in lattices.items():
        anion_site = [1 / 3, 2 / 3, 0.23] if system == "trigonal" else [0.5, 0.5, 0.5]  # CdI2 type
        for element in ("Cu", "Fe"):
            structure = Structure.from_spacegroup(group, lattice, [element, "O"], [[0, 0, 0], anion_site])
            record, reason = structure_record(f"test:{system}:{element}", structure)
            assert reason is None, reason
            records.append(record)
    return StickTable.from_records(records, {"source": "test"})


def test_structure_records_and_grouped_splits():
    table = _tiny_table()
    assert set(table.crystal_systems) == set(CRYSTAL_SYSTEMS)
    splits = assign_splits(table, seed=0)
    assert sum(len(v) for v in splits.values()) == len(table)
    again = assign_splits(table, seed=0)
    assert all(np.array_equal(splits[name], again[name]) for name in splits)
    # a duplicate (same formula and space group) always lands in the same split as its twin
    doubled = StickTable.from_records([dict(id=f"{k}", formula="CuO", spacegroup=221, crystal_system="cubic",
                                            sticks=table.sticks(0)) for k in range(5)])
    assert sum(len(v) > 0 for v in assign_splits(doubled, seed=3).values()) == 1


def test_tiny_training_run_writes_a_loadable_bundle(tmp_path):
    table = _tiny_table()
    path = table.save(tmp_path / "sticks.npz")
    bundle = train_xrd_bundle(
        tmp_path / "bundle", epochs=1, batch_size=8, stick_table=path, splits_dir=tmp_path / "splits",
        test_patterns_per_structure=1, val_patterns_per_structure=1, evaluate_measured_set=False,
        architecture={"channels": (8, 8, 16), "d_model": 16, "n_heads": 2, "n_layers": 1, "dim_feedforward": 32},
        threads=1, progress=False,
    )
    assert (tmp_path / "splits" / "xrd_train.txt").read_text().split()
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.id == bundle.id  # what training returned is what loads back
    assert loaded.card["name"] == "xrd-crystal-system" and loaded.card["kind"] == "xrd"
    assert loaded.card["training_data"]["sha256"] and "simulated_test" in loaded.card["metrics"]
    classifier = XrdClassifier.from_bundle(loaded)
    assert XrdClassifier.from_bundle(loaded) is classifier  # cached
    out = classifier.predict(synthesize_pattern(table.sticks(0), XRD_Q_GRID, np.random.default_rng(0)))
    assert out["crystal_system"]["classes"] == list(CRYSTAL_SYSTEMS)
    assert sum(out["crystal_system"]["probabilities"]) == pytest.approx(1.0)
    with pytest.raises(XrdInputError, match="XRD_Q_GRID"):
        classifier.predict(np.zeros(100))


def _measured_like_rock_salt(wavelength=1.5406):
    """A lab-like 2theta scan of NaCl from pymatgen sticks: pseudo-Voigt peaks, background, noise."""
    pattern = XRDCalculator(wavelength=wavelength).get_pattern(rock_salt(), two_theta_range=(10, 100))
    tt = np.arange(10.0, 100.0, 0.01)
    y = 200 + 80 * np.exp(-tt / 25)
    for center, height in zip(pattern.x, pattern.y):
        width = 0.08 + 0.001 * center
        y += 50 * height * (0.5 / (1 + ((tt - center) / (width / 2)) ** 2) + 0.5 * np.exp(-4 * math.log(2) * ((tt - center) / width) ** 2))
    return tt, np.random.default_rng(0).poisson(y).astype(float)


def test_committed_bundle_calls_rock_salt_cubic():
    bundle = load_bundle(models_dir() / "xrd-crystal-system")
    classifier = XrdClassifier.from_bundle(bundle)
    tt, y = _measured_like_rock_salt()
    pattern = preprocess_xrd(tt, y, wavelength=1.5406)
    assert pattern.usable
    out = classifier.predict(pattern.intensity)["crystal_system"]
    probs = np.array(out["probabilities"])
    assert probs.sum() == pytest.approx(1.0) and (probs >= 0).all()
    assert out["classes"][int(probs.argmax())] == "cubic"
    batch = classifier.predict_batch(np.stack([pattern.intensity, pattern.intensity]))
    assert len(batch) == 2
    np.testing.assert_allclose(batch[1]["crystal_system"]["probabilities"], probs, atol=1e-6)

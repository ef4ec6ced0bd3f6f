"""Metric indexing of powder patterns (cubic, tetragonal, hexagonal, orthorhombic cells) and the search-match
bundle that uses it as evidence: real structures through the real simulation, a bundle built beside the
shipped search-match."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.networks import (
    BundleError,
    XrdIndexed,
    load_bundle,
    models_dir,
    save_bundle,
    xrd_model_from_bundle,
)
from sfn_stream.core.networks._xrd_indexed import space_group_systems
from sfn_stream.core.simulation import stick_pattern, synthesize_pattern
from sfn_stream.core.spectra import (
    TOLERANCE_Q,
    XRD_Q_GRID,
    index_pattern,
    lattice_lines,
    metric_forms,
    noise_sigma,
    peak_positions,
    two_theta_to_q,
)
from sfn_stream.core.spectra._xrd_indexing import N_FEATURES, NO_FIT, refined_fit
from sfn_stream.offline.training import DEFAULT_STICK_TABLE, build_xrd_indexed_bundle


def _pattern(structure: Structure, noise: float = 0.0, fwhm: float = 0.05, seed: int = 0) -> np.ndarray:
    """A Cu K-alpha1 scan, 10-90 deg 2theta, as the paper's protocol renders it."""
    rng = np.random.default_rng(seed)
    q_range = two_theta_to_q(np.array([10.0, 90.0]), 1.5406)
    conditions = {"source": "lab", "wavelength": 1.5406, "wavelength2": None, "q_range": tuple(q_range),
                  "instrument_fwhm_deg": fwhm, "crystallite_size_A": 1e6, "microstrain": 0.0, "eta": 0.5,
                  "zero_shift_deg": 0.0, "displacement_mm": 0.0, "lattice_strain": 0.0, "debye_waller_B": 0.0,
                  "per_peak_log_sigma": 0.0, "march_dollase_r": None, "background_fraction": 0.0,
                  "peak_counts": 1e9, "gaussian_noise": noise}
    return synthesize_pattern(stick_pattern(structure), XRD_Q_GRID, rng, conditions=conditions)


ROCK_SALT = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
RUTILE = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                   [[0, 0, 0], [0.305, 0.305, 0]])
WURTZITE = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])
ORTHORHOMBIC = Structure(Lattice.orthorhombic(3.1, 4.3, 5.7), ["Cu", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


CORUNDUM = Structure.from_spacegroup("R-3c", Lattice.hexagonal(4.759, 12.99), ["Al", "O"],
                                    [[0, 0, 0.3521], [0.3064, 0, 0.25]])


def test_each_cell_is_indexed_by_its_own_family_with_its_cell_and_centring():
    cases = ((ROCK_SALT, "cubic", (5.64,), "F"), (RUTILE, "tetragonal", (4.594, 2.959), "P"),
             (WURTZITE, "hexagonal", (3.25, 5.21), "P"), (CORUNDUM, "hexagonal", (4.759, 12.99), "R"),
             (ORTHORHOMBIC, "orthorhombic", (5.7, 4.3, 3.1), "P"))
    for structure, family, edges, centring in cases:
        evidence = index_pattern(_pattern(structure))
        assert evidence.merit[family] > 0.85, (structure.formula, evidence.merit)
        assert evidence.centring[family] == centring
        assert np.allclose(evidence.cell[family], edges, rtol=0.005), (evidence.cell[family], edges)
        assert set(evidence.cell) == set(evidence.centring) == {f for f, m in evidence.merit.items() if m > 0}
        if family != "cubic":
            assert evidence.merit["cubic"] < 0.5


def test_a_lower_family_indexes_a_higher_symmetry_pattern_only_with_the_higher_metric():
    evidence = index_pattern(_pattern(RUTILE))
    # an orthorhombic description of a tetragonal cell keeps two equal edges (here the C-centred setting, a = b)
    a, b, c = sorted(evidence.cell["orthorhombic"], reverse=True)
    assert evidence.merit["orthorhombic"] <= evidence.merit["tetragonal"]
    assert np.isclose(a, b, rtol=0.002) or np.isclose(b, c, rtol=0.002)
    orthorhombic = index_pattern(_pattern(ORTHORHOMBIC)).merit  # 20 lines: some fit other cells by chance
    assert max(orthorhombic[f] for f in ("cubic", "tetragonal", "hexagonal")) < orthorhombic["orthorhombic"] - 0.3


def test_the_lines_of_an_indexed_cell_are_its_centrings_lines_and_cover_the_peaks():
    a = 5.64
    face_centred = (lattice_lines("cubic", "F", (a,), 5.0) * a / (2 * np.pi)) ** 2
    assert np.allclose(face_centred, [3, 4, 8, 11, 12, 16, 19, 20], atol=1e-6)  # no (100), (110), (210) ...
    assert len(lattice_lines("cubic", "P", (a,), 5.0)) > len(face_centred)
    for structure in (CORUNDUM, ORTHORHOMBIC):
        pattern = _pattern(structure)
        evidence, peaks = index_pattern(pattern), peak_positions(pattern)
        family = max(evidence.merit, key=evidence.merit.get)
        lines = lattice_lines(family, evidence.centring[family], evidence.cell[family], peaks[-1] + 0.1)
        indexed = np.abs(peaks[:, None] - lines[None, :]).min(axis=1) <= 0.006
        assert indexed.mean() == pytest.approx(evidence.indexed[family])  # the ticks are what was scored


def test_noise_at_the_papers_level_leaves_a_tetragonal_cell_indexed():
    merit = index_pattern(_pattern(RUTILE, noise=0.02, fwhm=0.2, seed=1)).merit
    assert merit["tetragonal"] > 0.8
    assert max(merit[f] for f in ("cubic", "hexagonal")) < merit["tetragonal"] - 0.2


def test_peaks_are_found_where_the_cell_puts_them():
    q = peak_positions(_pattern(ROCK_SALT))
    # rock salt's all-even lines (200) ... (422) are strong (Na and Cl add); of the all-odd ones, where they
    # subtract, only (111) reaches the threshold
    expected = 2 * np.pi * np.sqrt(np.array([3, 4, 8, 12, 16, 20, 24])) / 5.64
    assert np.abs(q[:, None] - expected[None, :]).min(axis=0).max() < 0.003
    assert len(q) == len(expected)


def _broadcast_hits(family, cells, s, tol, allowed, indices):
    """The screen written as one NumPy broadcast over (cells, lines, indices): the reference the compiled
    kernels must equal."""
    def distance(x):
        near = allowed.table[np.clip((x * 1024 + 0.5).astype(np.intp), 0, len(allowed.table) - 1)]
        return np.where(x < 0, allowed.values[0] - x, near)

    if family == "cubic":
        return (distance(s[None, :] / cells) * cells <= tol[None, :]).sum(axis=1)
    if family == "orthorhombic":
        a, b, c = (cells[:, m, None, None, None] for m in range(3))
        rest = (s[None, :, None, None] - a * indices[None, None, :, None] - b * indices[None, None, None, :]) / c
        return (distance(rest) * c <= tol[None, :, None, None]).any(axis=(2, 3)).sum(axis=1)
    a, c = cells[:, 0:1, None], cells[:, 1:2, None]
    return (distance((s[None, :, None] - c * indices[None, None, :]) / a) * a <= tol[None, :, None]).any(
        axis=2).sum(axis=1)


def test_the_compiled_screen_counts_and_ranks_exactly_as_a_broadcast_and_a_lexsort_do():
    from sfn_stream.core.spectra import _xrd_indexing as ix

    checked = 0
    for structure, fwhm in ((ROCK_SALT, 0.05), (RUTILE, 0.2), (CORUNDUM, 0.1), (ORTHORHOMBIC, 0.2)):
        q = peak_positions(_pattern(structure, noise=0.02, fwhm=fwhm, seed=3))
        s, tol = q ** 2 / ix.FOUR_PI2, 2 * q * ix.TOLERANCE_Q / ix.FOUR_PI2
        trials = {"cubic": ([ix._cubic_trials(s)], ix._CUBIC, None),
                  "tetragonal": (ix._uniaxial_trials(s, ix._PLANAR["tetragonal"]), ix._PLANAR["tetragonal"], ix._L2_32),
                  "hexagonal": (ix._uniaxial_trials(s, ix._PLANAR["hexagonal"]), ix._PLANAR["hexagonal"], ix._L2_32),
                  "orthorhombic": (ix._orthorhombic_trials(s), ix._SQUARES,
                                   ix._SQUARES.values[:4].astype(np.float32))}
        n = ix.SCREEN_LINES
        for family, (rules, allowed, indices) in trials.items():
            for cells in rules:
                lines = (s[:n].astype(np.float32), tol[:n].astype(np.float32))
                expected = _broadcast_hits(family, cells.astype(np.float32), *lines, allowed, indices)
                hits = ix._screen_hits(family, cells, *lines)
                assert np.array_equal(hits, expected), family
                volume = np.prod(cells, axis=1) * (cells[:, 0] if cells.shape[1] == 2 else 1.0)
                assert np.array_equal(ix._xrd_kernels.best_cells(hits, cells, 48),
                                      np.lexsort((-volume, -hits))[:48]), family
                checked += len(cells)
    assert checked > 10_000


def test_indexing_works_where_numba_has_nowhere_to_cache(tmp_path):
    """A read-only install without a writable home: numba finds no cache locator and the kernels compile per process
    (the locator list is cut to one that never applies, as such an install would leave it)."""
    import json
    import os
    import subprocess
    import sys

    np.save(tmp_path / "pattern.npy", _pattern(RUTILE))
    code = ("import json, sys, numpy as np; from sfn_stream.core.spectra import index_pattern; "
            f"print(json.dumps(index_pattern(np.load({str(tmp_path / 'pattern.npy')!r})).to_dict()))")
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "ZipCacheLocator"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == json.loads(json.dumps(index_pattern(_pattern(RUTILE)).to_dict()))


def test_trial_cells_are_solved_bit_for_bit_as_einsum_solves_them():
    """The compiled solve keeps np.einsum's order of summation: the cells the bundle was fitted with."""
    import itertools

    from sfn_stream.core.spectra import _xrd_indexing as ix

    q = peak_positions(_pattern(ORTHORHOMBIC, noise=0.02, fwhm=0.2, seed=4))
    s = q ** 2 / ix.FOUR_PI2
    any_low = np.array([(p, m * m) for p in (0.0, 1.0, 2.0, 4.0) for m in range(4) if (p, m) != (0, 0)])
    for first, forms in ((ix._LOW_FIRST, ix._LOW), (any_low, any_low)):
        inverse = ix._inverse_systems(first.tobytes(), forms.tobytes(), forms.shape[1])
        lines = np.array(list(itertools.combinations(range(1, 7), forms.shape[1] - 1)))
        rhs = np.concatenate([np.full((len(lines), 1), s[0]), s[lines]], axis=1)
        expected = np.einsum("aij,cj->cai", inverse, rhs).reshape(-1, forms.shape[1])
        assert np.array_equal(ix._solve_metric(s, first, forms, range(1, 7)), expected)


def test_the_noise_is_read_from_the_pattern_and_keeps_noise_maxima_out_of_the_lines():
    clean, noisy = _pattern(ROCK_SALT), _pattern(ROCK_SALT, noise=0.02, fwhm=0.05, seed=3)
    assert noise_sigma(clean) < 0.003  # smooth peaks barely move a second difference
    assert 0.01 < noise_sigma(noisy) < 0.04  # 2 % of the tallest peak added
    expected = 2 * np.pi * np.sqrt(np.array([3, 4, 8, 11, 12, 16, 19, 20, 24])) / 5.64
    def false_lines(q):
        return int((np.abs(q[:, None] - expected[None, :]).min(axis=1) > 0.006).sum())
    four_percent = peak_positions(noisy, noise_sigmas=0.0)
    assert false_lines(four_percent) >= 2  # noise maxima above 4 % of the tallest: the lines a cell cannot index
    assert false_lines(peak_positions(noisy)) == 0
    assert np.array_equal(peak_positions(clean), peak_positions(clean, noise_sigmas=0.0))


def test_the_true_cell_fits_after_refinement_and_a_chance_cell_does_not():
    evidence = index_pattern(_pattern(RUTILE))
    true = evidence.fit["tetragonal"]
    assert true.indexed == 1.0 and true.deviation < 0.1 and true.log10_m > 1.5  # de Wolff M > 30
    s = (peak_positions(_pattern(RUTILE)) / (2 * np.pi)) ** 2
    tol = 2 * np.sqrt(s) * 2 * np.pi * TOLERANCE_Q / (2 * np.pi) ** 2
    window = (0.0, s[-1] + tol[-1])
    forms = metric_forms("cubic", np.array([(h, k, l) for h in range(8) for k in range(8) for l in range(8)
                                            if h or k or l]))
    chance = refined_fit(s, tol, window, forms, np.array([s[0] / 7.0]))  # a cell seven times too large
    assert chance.deviation > 3 * true.deviation and chance.log10_m < true.log10_m - 1
    assert evidence.to_dict()["fit"]["tetragonal"]["log10_m"] == true.log10_m
    features = evidence.features()
    assert features.shape == (N_FEATURES,) and features[13 + 3:13 + 6].tolist() == list(true)


def test_a_pattern_with_too_few_lines_gives_no_evidence():
    few = np.zeros(len(XRD_Q_GRID))
    few[[200, 400, 600]] = 1.0
    evidence = index_pattern(few)
    assert evidence.n_lines == 3 and set(evidence.merit.values()) == {0.0} and evidence.cell == {}
    assert index_pattern(np.zeros(len(XRD_Q_GRID))).n_lines == 0
    assert evidence.features().shape == (N_FEATURES,) and evidence.features()[13:].tolist() == list(NO_FIT) * 4


def test_space_groups_map_to_their_crystal_systems():
    systems = space_group_systems()
    names = {number: CRYSTAL_SYSTEMS[systems[number - 1]] for number in (1, 2, 14, 62, 136, 166, 194, 225, 230)}
    assert names == {1: "triclinic", 2: "triclinic", 14: "monoclinic", 62: "orthorhombic", 136: "tetragonal",
                     166: "trigonal", 194: "hexagonal", 225: "cubic", 230: "cubic"}


needs_member = pytest.mark.skipif(
    not DEFAULT_STICK_TABLE.is_file() or not (models_dir() / "xrd-search-match" / "card.json").is_file(),
    reason="no committed stick table or search-match bundle")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A copy of the shipped search-match and an indexed bundle built beside it on a few validation structures."""
    out = tmp_path_factory.mktemp("models")
    shutil.copytree(models_dir() / "xrd-search-match", out / "xrd-search-match")
    build_xrd_indexed_bundle(out / "xrd-indexed", models=out, max_val=60, progress=False)
    return out


@needs_member
def test_the_indexed_bundle_gives_probabilities_and_space_groups_that_agree(folder):
    bundle = load_bundle(folder / "xrd-indexed")
    model = xrd_model_from_bundle(bundle)
    assert isinstance(model, XrdIndexed) and model.has_chemistry
    patterns = np.stack([_pattern(RUTILE, 0.01, 0.1), _pattern(WURTZITE, 0.01, 0.1)])
    systems, groups = model.probabilities_and_space_groups(patterns)
    assert systems.shape == (2, len(CRYSTAL_SYSTEMS)) and np.allclose(systems.sum(1), 1.0)
    assert np.allclose(groups.sum(1), 1.0)
    per_system = np.zeros_like(systems)  # the space groups' shares per crystal system follow the combination
    np.add.at(per_system.T, space_group_systems(), groups.T)
    assert np.allclose(per_system, systems, atol=0.02)
    with_elements = model.probabilities(patterns, elements=[["Ti", "O"], ["Zn", "O"]])
    assert with_elements.shape == systems.shape and not np.allclose(with_elements, systems)
    row = model.predict(patterns[0], elements=["Ti", "O"])
    assert len(row["space_group"]["classes"]) == 5
    metrics = bundle.card["metrics"]["val_noisy_protocol"]
    assert metrics["combined_cross_validated"]["n"] == metrics["search_match"]["n"] == 60


def _copy_with_changed_weights(folder, tmp_path, name: str, change) -> Path:
    """A copy of ``folder``'s bundles in which bundle ``name`` is saved again with ``change(weights)`` applied."""
    moved = tmp_path / "models"
    shutil.copytree(folder, moved)
    bundle = load_bundle(moved / name)
    weights = bundle.load_weights()
    change(weights)
    save_bundle(moved / name, {k: v for k, v in bundle.card.items() if k != "weights_sha256"}, weights)
    return moved


@needs_member
def test_an_indexed_bundle_refuses_a_search_match_it_was_not_fitted_with(folder, tmp_path):
    def hotter(weights):  # another search-match, as far as the combination can tell
        weights["temperature"] = weights["temperature"] * 2

    moved = _copy_with_changed_weights(folder, tmp_path, "xrd-search-match", hotter)
    with pytest.raises(BundleError, match="not the one it was"):
        xrd_model_from_bundle(load_bundle(moved / "xrd-indexed"))


@needs_member
def test_an_indexed_bundle_fitted_on_another_feature_layout_is_refused_with_the_fix(folder, tmp_path):
    def old_layout(weights):  # a regression of the 0.2.0 layout: 7 + 13 inputs
        for prefix in ("", "chemistry_"):
            for name in ("coef", "mean", "scale"):
                weights[f"{prefix}{name}"] = weights[f"{prefix}{name}"][:20]

    moved = _copy_with_changed_weights(folder, tmp_path, "xrd-indexed", old_layout)
    with pytest.raises(BundleError, match="takes 20 inputs.*train xrd-indexed"):
        xrd_model_from_bundle(load_bundle(moved / "xrd-indexed"))


@needs_member
def test_a_prediction_carries_the_indexing_evidence_and_the_cli_shows_it(tmp_path, capsys):
    from sfn_stream.cli import main
    from sfn_stream.core.predict import XrdPredictor

    two_theta = np.arange(10.0, 90.0, 0.02)
    pattern = _pattern(RUTILE, noise=0.005, fwhm=0.08)
    counts = 50 + 5000 * np.interp(two_theta_to_q(two_theta, 1.5406), XRD_Q_GRID, pattern)
    prediction, _ = XrdPredictor(models_dir() / "xrd-indexed").predict_pattern(two_theta, counts, wavelength=1.5406)
    evidence = prediction.preprocessing["indexing"]
    assert evidence["merit"]["tetragonal"] > 0.8 and evidence["n_lines"] >= 6
    path = tmp_path / "rutile.xy"
    np.savetxt(path, np.column_stack([two_theta, counts]))
    assert main(["predict", "xrd", str(path), "--bundle", str(models_dir() / "xrd-indexed")]) == 0
    assert evidence["centring"]["tetragonal"] == "P"
    assert np.allclose(evidence["cell_A"]["tetragonal"], [4.594, 2.959], rtol=0.005)
    shown = " ".join(capsys.readouterr().out.split())
    assert "minus chance): tetragonal P 0.9" in shown  # the best-indexing family first, with its cell
    assert "(a 4.59" in shown and ", c 2.9" in shown
    m = 10 ** evidence["fit"]["tetragonal"]["log10_m"]
    assert m > 20 and f"refined fit M {m:.0f})" in shown  # de Wolff's M of the refined cell, as indexers give it


def test_a_structures_own_cell_is_fitted_from_its_sticks_and_refused_in_another_setting():
    from sfn_stream.offline.evaluation.xrd_indexing_eval import own_cell

    sticks = stick_pattern(RUTILE)
    params = own_cell("tetragonal", sticks.hkl, sticks.q)
    assert np.allclose(params, [1 / 4.594 ** 2, 1 / 2.959 ** 2], rtol=1e-4)
    assert own_cell("cubic", sticks.hkl, sticks.q) is None  # rutile's lines are no cubic cell's


def test_evaluate_indexing_prints_per_system_figures(capsys):
    import json

    from sfn_stream.cli import main

    assert main(["evaluate", "indexing", "--max", "40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_structures"] == 40
    for protocol in ("noisy", "clean"):
        by_class = report["protocols"][protocol]
        assert sum(m["n"] for m in by_class.values()) == 40
        shares = [m[k] for m in by_class.values() for k in ("own_cell_indexes", "search_finds") if m[k] is not None]
        assert shares and all(0.0 <= v <= 1.0 for v in shares)
    assert main(["evaluate", "indexing", "--max", "0"]) == 2

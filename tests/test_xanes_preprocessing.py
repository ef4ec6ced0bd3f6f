"""XANES preprocessing: synthetic edges with known answers, bad inputs, and the shared measured files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sfn_stream.core.spectra import (
    TRANSITION_METALS_3D,
    XANES_WINDOW,
    UnknownEdgeError,
    XanesInputError,
    edge_energy,
    find_e0,
    find_first_inflection,
    k_edge_energy,
    preprocess_xanes,
    preprocess_xanes_file,
)
from sfn_stream.offline.shared import have_shared, shared_dir

CU = 8979.0


def synthetic_mu(energy, e0, step=1.0, white_line=0.5, background=0.2, slope=-2e-4):
    """arctan edge (width 1.5 eV) + Lorentzian white line 4 eV above + sloping background."""
    edge = step * (0.5 + np.arctan((energy - e0) / 1.5) / np.pi)
    line = white_line * step * 2.0**2 / ((energy - e0 - 4.0) ** 2 + 2.0**2)
    return background + slope * (energy - e0) + edge + line


def scan_grid(e_tab=CU, start=-150.0, stop=400.0):
    """A typical step scan: 5 eV pre-edge, 0.25 eV over the edge, 2 eV above."""
    pre = np.arange(e_tab + start, e_tab - 20.0, 5.0)
    edge = np.arange(e_tab - 20.0, e_tab + 40.0, 0.25)
    post = np.arange(e_tab + 40.0, e_tab + stop, 2.0)
    return np.concatenate([pre, edge, post])


# ----------------------------------------------------------------------------- edges table


def test_k_edge_table_values_and_errors():
    assert k_edge_energy("Cu") == 8979.0
    assert k_edge_energy("fe") == 7112.0
    assert edge_energy("Ti", "K") == 4966.0
    assert {"Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"} <= set(TRANSITION_METALS_3D)
    with pytest.raises(UnknownEdgeError, match="Xx"):
        k_edge_energy("Xx")
    with pytest.raises(UnknownEdgeError, match="only K edges"):
        edge_energy("Cu", "L3")
    with pytest.raises(ValueError):  # UnknownEdgeError is a ValueError
        k_edge_energy("W")


# ----------------------------------------------------------------------------- E0


def test_find_e0_locates_arctan_edge():
    energy = np.arange(8900.0, 9100.0, 0.2)
    mu = synthetic_mu(energy, 8983.0, white_line=0.0)
    assert abs(find_e0(energy, mu) - 8983.0) < 0.3


def test_first_inflection_prefers_shoulder_over_steeper_rise():
    energy = np.arange(8250.0, 8500.0, 0.25)
    shoulder = 0.3 * (0.5 + np.arctan((energy - 8333.0) / 1.0) / np.pi)
    main = 0.7 * (0.5 + np.arctan((energy - 8341.0) / 0.8) / np.pi)
    mu = shoulder + main
    assert abs(find_e0(energy, mu) - 8341.0) < 0.5  # steepest rise
    assert abs(find_first_inflection(energy, mu) - 8333.0) < 0.5  # tabulated-edge convention


# ----------------------------------------------------------------------------- good spectra


def test_clean_scan_normalises_and_fills_the_window():
    energy = scan_grid()
    result = preprocess_xanes(energy, synthetic_mu(energy, 8981.0), absorber="Cu")
    assert result.usable and result.reason is None
    assert result.flags == []
    assert abs(result.e0 - 8981.0) < 1.0
    assert abs(result.e0_shift - (result.e0 - CU)) < 1e-9
    assert result.edge_step == pytest.approx(1.0, rel=0.08)
    assert result.pre_edge_method == "line"
    assert result.calibration == "as_measured"
    assert result.energy.shape == (200,) and result.mu.shape == (200,)
    assert result.energy[0] == pytest.approx(CU - 10.0) and result.energy[-1] == pytest.approx(CU + 46.0)
    assert abs(result.mu[0]) < 0.05  # pre-edge level 0
    assert 0.9 < result.mu[-1] < 1.1  # post-edge level 1
    assert result.window_coverage == 1.0
    payload = result.to_dict()
    json.dumps(payload)
    for key in ("e0", "e0_shift", "edge_step", "pre1", "pre2", "pre_slope", "pre_intercept",
                "norm1", "norm2", "nnorm", "norm_coefs", "calibration", "energy_shift", "window"):
        assert key in payload
    assert len(result.to_dict(arrays=True)["mu"]) == 200


def test_chemical_shift_survives_in_window_and_e0_shift():
    energy = scan_grid()
    low = preprocess_xanes(energy, synthetic_mu(energy, 8980.0), absorber="Cu")
    high = preprocess_xanes(energy, synthetic_mu(energy, 8983.0), absorber="Cu")
    assert low.usable and high.usable
    assert high.e0_shift - low.e0_shift == pytest.approx(3.0, abs=0.3)
    np.testing.assert_array_equal(low.energy, high.energy)  # window fixed at the tabulated edge
    assert np.max(np.abs(high.mu - low.mu)) > 0.3


def test_flat_and_norm_outputs_differ_only_above_e0():
    energy = scan_grid()
    mu = synthetic_mu(energy, 8981.0) + 4e-4 * np.clip(energy - 8981.0, 0, None)  # post-edge slope
    flat = preprocess_xanes(energy, mu, absorber="Cu", normalization="flat")
    norm = preprocess_xanes(energy, mu, absorber="Cu", normalization="norm")
    below = flat.energy < flat.e0
    np.testing.assert_allclose(flat.mu[below], norm.mu[below])
    assert np.max(np.abs(flat.mu - norm.mu)) > 0.005


def test_raw_transmission_and_fluorescence_channels_match_mu():
    energy = scan_grid()
    mu = synthetic_mu(energy, 8981.0)
    i0 = 1e5 * (1.0 + 0.02 * np.sin(energy / 50.0))
    direct = preprocess_xanes(energy, mu, absorber="Cu")
    trans = preprocess_xanes(energy, i0=i0, it=i0 * np.exp(-mu), absorber="Cu")
    fluor = preprocess_xanes(energy, i0=i0, ifluor=i0 * mu * 0.01, absorber="Cu")
    assert trans.mode == "transmission" and fluor.mode == "fluorescence"
    np.testing.assert_allclose(trans.mu, direct.mu, atol=1e-9)
    np.testing.assert_allclose(fluor.mu, direct.mu, atol=1e-9)


def test_reference_foil_recovers_monochromator_offset():
    true_energy = scan_grid()
    offset = 4.3  # the monochromator reads 4.3 eV low
    measured = true_energy - offset
    sample = synthetic_mu(true_energy, 8984.0)
    foil = synthetic_mu(true_energy, CU, white_line=0.0, step=2.0)
    i0 = np.full_like(true_energy, 2e5)
    it = i0 * np.exp(-sample)
    iref = it * np.exp(-foil)
    calibrated = preprocess_xanes(measured, i0=i0, it=it, iref=iref, absorber="Cu")
    assert calibrated.usable
    assert calibrated.calibration == "reference_foil"
    assert calibrated.energy_shift == pytest.approx(offset, abs=0.3)
    assert calibrated.e0 == pytest.approx(8984.0, abs=1.0)
    uncalibrated = preprocess_xanes(measured, i0=i0, it=it, absorber="Cu")
    assert uncalibrated.e0 == pytest.approx(calibrated.e0 - calibrated.energy_shift, abs=0.3)


def test_reference_without_edge_falls_back_to_as_measured():
    energy = scan_grid()
    i0 = np.full_like(energy, 2e5)
    it = i0 * np.exp(-synthetic_mu(energy, 8981.0))
    iref = it * np.exp(-(0.5 - 1e-4 * (energy - CU)))  # a reference channel with no foil edge
    result = preprocess_xanes(energy, i0=i0, it=it, iref=iref, absorber="Cu")
    assert result.usable
    assert result.calibration == "as_measured"
    assert "reference_calibration_failed" in result.flags


def test_computed_offset_shifts_energies():
    energy = np.linspace(8985.0, 9125.0, 173)
    mu = synthetic_mu(energy, 8995.0, background=0.0, slope=0.0)
    result = preprocess_xanes(energy, mu, absorber="Cu", energy_offset=8.0)
    assert result.calibration == "computed_offset"
    assert result.energy_shift == -8.0
    assert result.e0 == pytest.approx(8987.0, abs=1.0)


def test_spectrum_starting_just_before_edge_uses_flagged_constant_pre_edge():
    energy = np.linspace(CU + 2.0, CU + 140.0, 173)  # FEFF-like: starts ~4 eV below E0
    mu = synthetic_mu(energy, CU + 6.0, background=0.0, slope=0.0)
    result = preprocess_xanes(energy, mu, absorber="Cu")
    assert result.usable
    assert result.pre_edge_method == "constant_fallback"
    assert "pre_edge_fallback_constant" in result.flags
    assert "window_padded_below" in result.flags
    assert np.all(result.mu[result.energy < energy[0]] == 0.0)
    assert result.window_coverage == pytest.approx(1 - 12.0 / 56.0, abs=0.02)


def test_large_chemical_shift_is_a_warning():
    energy = scan_grid()
    result = preprocess_xanes(energy, synthetic_mu(energy, CU + 25.0), absorber="Cu")
    assert result.usable
    assert "e0_far_from_edge" in result.flags


# ----------------------------------------------------------------------------- bad data


def test_non_finite_points_are_dropped_and_flagged():
    energy = scan_grid()
    mu = synthetic_mu(energy, 8981.0)
    mu[[3, 50, 200]] = [np.nan, np.inf, -np.inf]
    result = preprocess_xanes(energy, mu, absorber="Cu")
    assert result.usable
    assert "non_finite_dropped" in result.flags
    assert result.n_points == len(energy) - 3
    assert any("3 of" in m for m in result.messages)


def test_transmission_with_zero_counts_is_flagged_not_raised():
    energy = scan_grid()
    i0 = np.full_like(energy, 1e5)
    it = i0 * np.exp(-synthetic_mu(energy, 8981.0))
    it[10] = 0.0
    result = preprocess_xanes(energy, i0=i0, it=it, absorber="Cu")
    assert result.usable and "non_finite_dropped" in result.flags


def test_unsorted_and_duplicate_energies_are_fixed():
    energy = scan_grid()
    mu = synthetic_mu(energy, 8981.0)
    clean = preprocess_xanes(energy, mu, absorber="Cu")
    rng = np.random.default_rng(1)
    order = rng.permutation(len(energy))
    repeat = order[:20]
    shuffled_e = np.concatenate([energy[order], energy[repeat]])
    shuffled_mu = np.concatenate([mu[order], mu[repeat]])
    result = preprocess_xanes(shuffled_e, shuffled_mu, absorber="Cu")
    assert result.usable
    assert {"energies_unsorted", "duplicate_energies_averaged"} <= set(result.flags)
    assert result.n_points == len(energy)
    np.testing.assert_allclose(result.mu, clean.mu, atol=1e-12)


def test_too_few_points_is_rejected():
    energy = np.linspace(CU - 30, CU + 60, 10)
    result = preprocess_xanes(energy, synthetic_mu(energy, 8981.0), absorber="Cu")
    assert not result.usable
    assert "too_few_points" in result.flags
    assert "10" in result.reason
    assert np.all(np.isnan(result.mu)) and result.energy.shape == (200,)


@pytest.mark.parametrize("start, stop", [(CU - 300.0, CU - 30.0), (CU + 60.0, CU + 600.0)])
def test_edge_outside_scan_is_rejected(start, stop):
    energy = np.arange(start, stop, 1.0)
    result = preprocess_xanes(energy, synthetic_mu(energy, 8981.0), absorber="Cu")
    assert not result.usable
    assert result.flags[-1] == "edge_not_covered"
    assert "8979.0" in result.reason


def test_energies_in_kev_are_converted_and_flagged():
    energy = scan_grid()
    mu = synthetic_mu(energy, 8981.0)
    in_ev = preprocess_xanes(energy, mu, absorber="Cu")
    in_kev = preprocess_xanes(energy / 1000.0, mu, absorber="Cu")
    assert in_kev.usable and in_kev.flags[0] == "energy_converted_from_kev"
    assert in_kev.e0 == pytest.approx(in_ev.e0)
    np.testing.assert_allclose(in_kev.mu, in_ev.mu, atol=1e-9)


def test_energies_neither_ev_nor_kev_are_rejected():
    energy = scan_grid() / 10.0  # 887-942: below any K edge in eV, above any in keV
    result = preprocess_xanes(energy, synthetic_mu(energy * 10.0, 8981.0), absorber="Cu")
    assert not result.usable and result.flags == ["energy_not_in_ev"]
    assert "neither eV nor keV" in result.reason


def test_scan_ending_soon_after_edge_is_rejected():
    energy = np.arange(CU - 150.0, CU + 30.0, 0.5)
    result = preprocess_xanes(energy, synthetic_mu(energy, 8981.0), absorber="Cu")
    assert not result.usable and "post_edge_too_short" in result.flags


def test_scan_starting_after_window_start_is_rejected_when_too_much_is_missing():
    energy = np.linspace(CU + 8.0, CU + 150.0, 300)
    result = preprocess_xanes(energy, synthetic_mu(energy, CU + 12.0, background=0.0, slope=0.0), absorber="Cu")
    assert not result.usable
    assert "window_not_covered" in result.flags


def test_wrong_absorber_is_rejected_with_both_energies_named():
    energy = np.arange(6900.0, 7900.0, 0.5)
    iron = synthetic_mu(energy, 7113.0)
    result = preprocess_xanes(energy, iron, absorber="Co")
    assert not result.usable
    assert "e0_inconsistent_with_absorber" in result.flags
    assert "7709.0" in result.reason and "7113" in result.reason
    assert "Fe K edge" in result.reason


def test_flat_data_is_rejected():
    energy = scan_grid()
    rng = np.random.default_rng(0)
    flat = 0.5 - 1e-4 * (energy - CU) + rng.normal(0, 1e-3, len(energy))
    result = preprocess_xanes(energy, flat, absorber="Cu")
    assert not result.usable
    assert {"edge_step_too_small", "edge_step_not_positive", "edge_too_sharp"} & set(result.flags)


def test_inverted_data_have_non_positive_step():
    energy = scan_grid()
    result = preprocess_xanes(energy, -synthetic_mu(energy, 8981.0), absorber="Cu")
    assert not result.usable
    assert "edge_step_not_positive" in result.flags


def test_tiny_edge_in_noise_is_rejected():
    energy = scan_grid()
    rng = np.random.default_rng(2)
    mu = synthetic_mu(energy, 8981.0, step=2e-3, white_line=0.0) + rng.normal(0, 5e-4, len(energy))
    result = preprocess_xanes(energy, mu, absorber="Cu")
    assert not result.usable
    assert "edge_step_too_small" in result.flags


def test_glitch_on_smooth_background_is_not_an_edge():
    """A blank: smooth curved background plus a 4-point glitch, no absorption edge."""
    energy = scan_grid()
    rng = np.random.default_rng(3)
    mu = 0.6 - 2e-4 * (energy - CU) + 2e-7 * (energy - CU) ** 2 + rng.normal(0, 2e-5, len(energy))
    spike = int(np.argmin(np.abs(energy - (CU + 3.0))))
    mu[spike : spike + 4] += [0.004, 0.008, 0.012, 0.004]
    result = preprocess_xanes(energy, mu, absorber="Cu")
    assert not result.usable
    assert "edge_too_sharp" in result.flags


# ----------------------------------------------------------------------------- wrong calls


def test_programming_errors_raise_xanes_input_error():
    energy = scan_grid()
    mu = synthetic_mu(energy, 8981.0)
    i0 = np.ones_like(energy)
    with pytest.raises(XanesInputError, match="give mu"):
        preprocess_xanes(energy, absorber="Cu")
    with pytest.raises(XanesInputError, match="equal lengths"):
        preprocess_xanes(energy, mu[:-1], absorber="Cu")
    with pytest.raises(XanesInputError, match="not both"):
        preprocess_xanes(energy, mu, i0=i0, absorber="Cu")
    with pytest.raises(XanesInputError, match="i0 alone"):
        preprocess_xanes(energy, i0=i0, absorber="Cu")
    with pytest.raises(XanesInputError, match="iref"):
        preprocess_xanes(energy, mu, iref=i0, absorber="Cu")
    with pytest.raises(XanesInputError, match="energy_offset"):
        preprocess_xanes(energy, i0=i0, it=i0, iref=i0, absorber="Cu", energy_offset=3.0)
    with pytest.raises(XanesInputError, match="1-D"):
        preprocess_xanes(np.ones((3, 3)), np.ones((3, 3)), absorber="Cu")
    with pytest.raises(UnknownEdgeError):
        preprocess_xanes(energy, mu, absorber="Qq")


def test_window_definition_is_the_papers():
    assert XANES_WINDOW.n_points == 200
    assert XANES_WINDOW.stop - XANES_WINDOW.start == 56.0
    grid = XANES_WINDOW.energies(CU)
    assert grid[0] == CU - 10.0 and np.allclose(np.diff(grid), 56.0 / 199)


# ----------------------------------------------------------------------------- shared data

needs_shared = pytest.mark.skipif(not have_shared(), reason="../shared not available")
NOT_SPECTRA = ("LICENSE", "labels.csv")


def _measured_results():
    folder = shared_dir() / "data" / "xanes_experimental_dev"
    with (folder / "labels.csv").open() as fh:
        labels = {row["file"]: row for row in csv.DictReader(fh)}
    results = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(NOT_SPECTRA)):
        relative = str(path.relative_to(folder))
        absorber = labels.get(relative, {}).get("absorber")
        try:
            results[relative] = preprocess_xanes_file(path, absorber=absorber)
        except ValueError as exc:  # SpectrumFileError: unreadable or no absorber
            results[relative] = exc
    return results


@pytest.fixture(scope="module")
def measured():
    return _measured_results()


@needs_shared
@pytest.mark.shared
def test_every_measured_file_is_processed_or_rejected_with_reason(measured):
    assert len(measured) >= 100
    usable = 0
    for name, result in measured.items():
        if isinstance(result, ValueError):
            assert name in str(result) or Path(name).name in str(result)
            continue
        if result.usable:
            usable += 1
            assert np.all(np.isfinite(result.mu)), name
            assert result.mu.shape == (200,)
        else:
            assert result.reason, name
    assert usable >= 100


def _foil_shift(result, reference) -> float:
    """Energy shift that best aligns a foil spectrum with a calibrated one of the same metal."""
    grid = np.arange(reference.e_ref - 10.0, reference.e_ref + 50.0, 0.1)
    target = np.interp(grid, reference.energy_full, reference.norm_full)
    shifts = np.arange(-10.0, 10.0, 0.05)
    errors = [np.mean((np.interp(grid, result.energy_full + s, result.norm_full) - target) ** 2) for s in shifts]
    return float(shifts[int(np.argmin(errors))])


@needs_shared
@pytest.mark.shared
def test_metal_foils_land_within_3_ev_or_are_shifted_copies(measured):
    """Foils: E0 within 3 eV of the table; a foil outside must be an energy-shifted copy of a
    calibrated foil of the same metal, with the shift explaining its E0 error."""
    foils = {
        name: r for name, r in measured.items()
        if not isinstance(r, ValueError) and r.usable and any(w in name.lower() for w in ("foil", "metal"))
    }
    assert len(foils) >= 15
    good = {n: r for n, r in foils.items() if abs(r.e0_shift) <= 3.0}
    for name, result in foils.items():
        if name in good:
            continue
        partner = next(r for r in good.values() if r.absorber == result.absorber)
        shift = _foil_shift(result, partner)
        assert abs((result.e0 + shift) - partner.e0) < 1.0, (name, result.e0, shift)
    assert len(good) >= len(foils) - 1


@needs_shared
@pytest.mark.shared
def test_feff_site_spectra_take_the_same_path():
    from sfn_stream.offline.shared import omnixas_site_spectra

    spectra = omnixas_site_spectra()
    keys = sorted(spectra)[::100]
    # 8 eV: within the plausible range of FEFF's Cu-metal E0 - 8979 eV; the checks below hold for
    # any offset of 5-11 eV (`sfn-stream bench feff-xanes`: >= 5298/5299 usable over that range)
    results = [
        preprocess_xanes(spectra[k]["energy"], spectra[k]["mu"], absorber="Cu", energy_offset=8.0) for k in keys
    ]
    usable = [r for r in results if r.usable]
    assert len(usable) >= 0.9 * len(results)
    for r in usable:
        assert r.calibration == "computed_offset"
        assert r.pre_edge_method == "constant_fallback"  # FEFF starts a few eV below E0
        assert np.all(np.isfinite(r.mu))


def test_every_raised_flag_is_documented():
    """All flag codes in the source are listed in XANES_FLAGS (the plugin documents them from there)."""
    import re

    import sfn_stream.core.spectra._xanes as module
    from sfn_stream.core.spectra import XANES_FLAGS

    source = Path(module.__file__).read_text()
    raised = {code: kind for kind, code in re.findall(r'log\.(warn|fatal)\(\s*"([a-z0-9_]+)"', source)}
    assert raised and set(raised) == set(XANES_FLAGS)
    for code, kind in raised.items():
        assert XANES_FLAGS[code][0] == ("fatal" if kind == "fatal" else "warning"), code

"""PXRD preprocessing onto the Q grid and the pdCIF profile reader."""

import json
import math

import numpy as np
import pytest

from sfn_stream.core.spectra import (
    XRD_Q_GRID,
    PdCifError,
    XrdInputError,
    preprocess_xrd,
    read_pdcif,
    snip_background,
    two_theta_to_q,
)
from sfn_stream.offline.shared import have_shared, shared_path

D_SPACINGS = np.array([3.2, 2.5, 1.9, 1.45, 1.2])  # A
HEIGHTS = np.array([1.0, 0.6, 0.8, 0.3, 0.5])


def _scan(wavelength, two_theta=None, fwhm_q=0.02, background=None, noise=0.0, seed=0):
    """A 2theta scan with Gaussian peaks at D_SPACINGS (widths given in Q)."""
    if two_theta is None:
        two_theta = np.arange(5.0, 120.0, 0.01)
    q = two_theta_to_q(two_theta, wavelength)
    y = np.zeros_like(q)
    for d, h in zip(D_SPACINGS, HEIGHTS):
        y += 1000 * h * np.exp(-0.5 * ((q - 2 * math.pi / d) / (fwhm_q / 2.355)) ** 2)
    if background is not None:
        y += background(q)
    if noise:
        y += np.random.default_rng(seed).normal(0, noise, len(q))
    return two_theta, y


def _peak_q(pattern, near_q, window=0.1):
    sel = np.abs(pattern.q - near_q) < window
    return pattern.q[sel][np.argmax(pattern.intensity[sel])]


def test_two_theta_at_two_wavelengths_lands_on_the_same_q():
    cu = preprocess_xrd(*_scan(1.5406), wavelength=1.5406)
    mo_tt = np.arange(2.0, 60.0, 0.005)
    mo = preprocess_xrd(*_scan(0.7093, mo_tt), wavelength=0.7093)
    assert cu.usable and mo.usable
    for d in D_SPACINGS:
        expected = 2 * math.pi / d
        assert abs(_peak_q(cu, expected) - expected) <= 0.005
        assert abs(_peak_q(mo, expected) - expected) <= 0.005
    # same peaks on the same grid: the two preprocessed patterns nearly coincide
    both = cu.covered & mo.covered
    assert np.abs(cu.intensity[both] - mo.intensity[both]).max() < 0.05


def test_q_axis_input_equals_two_theta_input():
    tt, y = _scan(1.5406)
    from_tt = preprocess_xrd(tt, y, wavelength=1.5406)
    from_q = preprocess_xrd(two_theta_to_q(tt, 1.5406), y, axis="q")
    assert from_q.axis == "q" and from_q.wavelength is None
    np.testing.assert_allclose(from_q.intensity, from_tt.intensity, atol=1e-9)


def test_background_removal_keeps_peaks_and_flattens_the_rest():
    def background(q):
        return 300 + 150 * np.exp(-0.5 * ((q - 1.6) / 0.5) ** 2) + 400 * np.exp(-q / 0.4) - 20 * q

    clean = preprocess_xrd(*_scan(1.5406), wavelength=1.5406)
    with_bg = preprocess_xrd(*_scan(1.5406, background=background, noise=3.0), wavelength=1.5406)
    assert with_bg.usable and with_bg.background["method"] == "snip"
    peaks = np.array([2 * math.pi / d for d in D_SPACINGS])
    far = with_bg.covered & (np.abs(with_bg.q[:, None] - peaks[None, :]).min(axis=1) > 0.1)
    assert np.percentile(with_bg.intensity[far], 95) < 0.03  # background gone (noise floor only)
    heights = [with_bg.intensity[np.abs(with_bg.q - p) < 0.02].max() for p in peaks]
    clean_heights = [clean.intensity[np.abs(clean.q - p) < 0.02].max() for p in peaks]
    np.testing.assert_allclose(heights, clean_heights, atol=0.06)


def test_snip_follows_a_smooth_baseline():
    x = np.linspace(0, 1, 800)
    baseline = 50 + 30 * x
    y = baseline + 500 * np.exp(-0.5 * ((x - 0.5) / 0.004) ** 2)
    estimate = snip_background(y, iterations=30)
    assert np.abs(estimate - baseline)[np.abs(x - 0.5) > 0.05].max() < 1.5
    assert estimate[400] < baseline[400] + 2  # not pulled up by the peak


def test_coverage_is_reported_and_zero_outside():
    tt = np.arange(20.0, 60.0, 0.01)  # Cu: Q 1.42 - 4.24
    pattern = preprocess_xrd(*_scan(1.5406, tt), wavelength=1.5406)
    assert pattern.q_min == pytest.approx(two_theta_to_q(20.0, 1.5406))
    assert pattern.q_max == pytest.approx(two_theta_to_q(tt[-1], 1.5406))
    expected = ((XRD_Q_GRID >= pattern.q_min) & (XRD_Q_GRID <= pattern.q_max)).mean()
    assert pattern.coverage_fraction == pytest.approx(expected)
    assert "partial_coverage" in pattern.flags and pattern.usable
    assert not pattern.intensity[~pattern.covered].any()


def test_too_narrow_coverage_is_unusable():
    tt = np.arange(30.0, 40.0, 0.01)
    pattern = preprocess_xrd(*_scan(1.5406, tt), wavelength=1.5406)
    assert "too_narrow_coverage" in pattern.flags
    assert not pattern.usable and "grid" in pattern.reason
    assert not pattern.intensity.any()


def test_two_theta_without_wavelength_raises():
    tt, y = _scan(1.5406)
    with pytest.raises(XrdInputError, match="wavelength"):
        preprocess_xrd(tt, y)
    with pytest.raises(XrdInputError, match="wavelength"):
        preprocess_xrd(tt, y, wavelength=-1.0)
    with pytest.raises(XrdInputError, match="axis"):
        preprocess_xrd(tt, y, axis="d", wavelength=1.5406)
    with pytest.raises(XrdInputError, match="equal length"):
        preprocess_xrd(tt, y[:-3], wavelength=1.5406)


def test_non_finite_values_are_dropped_and_flagged():
    tt, y = _scan(1.5406)
    y[100:150] = np.nan
    y[500] = np.inf
    pattern = preprocess_xrd(tt, y, wavelength=1.5406)
    assert "non_finite_values" in pattern.flags and pattern.usable
    assert np.isfinite(pattern.intensity).all() and pattern.intensity.max() == pytest.approx(1.0)


def test_flat_and_noise_only_patterns_are_flagged_not_raised():
    tt = np.arange(10.0, 100.0, 0.02)
    flat = preprocess_xrd(tt, np.full_like(tt, 250.0), wavelength=1.5406)
    noise = preprocess_xrd(tt, np.random.default_rng(1).poisson(200, len(tt)).astype(float), wavelength=1.5406)
    for pattern in (flat, noise):
        assert "no_peaks" in pattern.flags and not pattern.usable and pattern.reason


def test_too_few_points_and_negative_counts():
    few = preprocess_xrd(np.linspace(10, 90, 20), np.ones(20), wavelength=1.5406)
    assert "too_few_points" in few.flags and not few.usable
    tt, y = _scan(1.5406)
    negative = preprocess_xrd(tt, y - 50, wavelength=1.5406)
    assert "negative_counts" in negative.flags and negative.usable


def test_to_dict_is_json_ready():
    pattern = preprocess_xrd(*_scan(1.5406), wavelength=1.5406)
    summary = pattern.to_dict()
    assert "intensity" not in summary and summary["usable"] is True
    json.dumps(summary)
    full = pattern.to_dict(arrays=True)
    assert len(full["intensity"]) == len(XRD_Q_GRID)
    json.dumps(full)


PDCIF = """\
data_profile
_pd_block_id  test|profile
_diffrn_radiation_wavelength
0.7093
loop_
 _pd_proc_point_id
 _pd_proc_2theta_corrected   # angle
 _pd_proc_intensity_net
 _pd_calc_intensity_net
{rows}
data_profile_simulated_1.54
_diffrn_radiation_wavelength 1.54
loop_
 _pd_proc_2theta_corrected
 _pd_calc_intensity_total
 1.0 5
 2.0 6
"""

PDCIF_RANGE = """\
data_meas
_publ_section_title
;
A text field with _pd_meas_counts_total inside, which is not a tag
;
_pd_meas_2theta_range_min 10.00
_pd_meas_2theta_range_max 10.40
_pd_meas_2theta_range_inc 0.05
loop_
 _pd_meas_counts_total
 _pd_calc_intensity_total
 100 1
 101(3) 1
 ? 1
 130 1
 300 1
 140 1
 120 1
 110 1
 100 1
"""


def test_pdcif_reader_on_fixture(tmp_path):
    tt, y = _scan(0.7093, np.arange(3.0, 50.0, 0.01))
    rows = "\n".join(f" {i + 1} {t:.3f} {v:.2f}(5) {v * 0.9:.2f}" for i, (t, v) in enumerate(zip(tt, y)))
    path = tmp_path / "profile.cif"
    path.write_text(PDCIF.format(rows=rows))
    profile = read_pdcif(path)
    assert profile.wavelength == pytest.approx(0.7093)  # the simulated block's 1.54 is ignored
    assert profile.angle_tag == "_pd_proc_2theta_corrected"
    assert profile.intensity_tag == "_pd_proc_intensity_net"
    np.testing.assert_allclose(profile.two_theta, np.round(tt, 3))
    np.testing.assert_allclose(profile.intensity, np.round(y, 2))  # esd "(5)" stripped
    pattern = preprocess_xrd(profile.two_theta, profile.intensity, wavelength=profile.wavelength)
    assert pattern.usable
    assert abs(_peak_q(pattern, 2 * math.pi / 2.5) - 2 * math.pi / 2.5) <= 0.005


def test_pdcif_angles_from_range_and_missing_values(tmp_path):
    path = tmp_path / "range.cif"
    path.write_text(PDCIF_RANGE)
    profile = read_pdcif(path)
    assert profile.angle_tag == "<range>" and profile.intensity_tag == "_pd_meas_counts_total"
    np.testing.assert_allclose(profile.two_theta, 10.0 + 0.05 * np.arange(9))
    assert profile.intensity[1] == 101 and np.isnan(profile.intensity[2])
    assert profile.wavelength is None


def test_pdcif_without_profile_raises(tmp_path):
    path = tmp_path / "single_crystal.cif"
    path.write_text("data_x\n_cell_length_a 5.0\nloop_\n _atom_site_label\n _atom_site_fract_x\n Na 0.0\n")
    with pytest.raises(PdCifError, match="no measured powder profile"):
        read_pdcif(path)


@pytest.mark.skipif(not have_shared(), reason="needs ../shared")
def test_pdcif_reader_on_a_real_rietveld_cif():
    path = shared_path("data", "pxrd_experimental_dev", "iucr_rietveld", "gw5052Mg2Si_100K_LTsup2.rtv.combined.cif")
    profile = read_pdcif(path)
    assert profile.wavelength == pytest.approx(0.49935)
    assert len(profile.two_theta) == 6801 and profile.two_theta[0] == pytest.approx(7.0)
    pattern = preprocess_xrd(profile.two_theta, profile.intensity, wavelength=profile.wavelength)
    assert pattern.usable and pattern.coverage_fraction > 0.8

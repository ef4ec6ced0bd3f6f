"""Reflections of candidate structures and their agreement with a measured powder pattern.

Structure factors follow pymatgen's ``XRDCalculator`` (same atomic scattering factors,
f(s) = Z - 41.78214 s^2 sum a_i exp(-b_i s^2), no Debye-Waller term, Friedel pairs merged), but
are kept per (h, k, l) instead of merged into peaks: a cell-parameter change then moves each
reflection without recomputing |F|^2, which makes the cell refinement below cheap.

Similarity (why a profile similarity, not Rwp): a substituted template is never exactly the
sample's structure: its cell is off by a few per cent (anisotropically), its intensities by
tens of per cent (different scattering powers, texture, sample effects). Rwp punishes both at
the full measured resolution and is dominated by the few strongest peaks; a normalised
cross-correlation of the two profiles after broadening both with a common kernel (the weighted
cross-correlation of de Gelder, Wehrens & Hageman 2001, J. Comput. Chem. 22, 273, with a
Gaussian weight) degrades smoothly with misplaced peaks and needs no intensity scale. We
compare sqrt(intensity) so that weak reflections (which carry the symmetry information) count,
and let each candidate adjust its cell within bounds (isotropic scale first, by correlation in
ln Q; then the free axes of its crystal system and a 2theta zero shift) before it is scored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

LAB_WAVELENGTH = 1.5406  # used for the Lorentz-polarisation factor when only Q is given
SCALE_RANGE = 0.08  # +-8 % isotropic cell scaling searched in ln Q
AXIS_RANGE = 0.05  # +-5 % per free axis around the isotropic optimum (substitution is anisotropic)
ZERO_SHIFT_RANGE_DEG = 0.15  # 2theta zero shift searched (lab goniometers: typically < 0.1 deg)
LOG_GRID_POINTS = 2048
COARSE_SIGMA_LN = 0.006  # Gaussian sigma in ln Q for the isotropic search (0.6 % relative)
FINE_SIGMA_Q = 0.008  # 1/A, extra Gaussian sigma of the final comparison (~0.1 deg 2theta at Cu, 30 deg)
INTENSITY_POWER = 1.0  # intensities as measured: on the dev split, sqrt(intensity) was not better (0.61 vs 0.63 top-1)
EDGE_MARGIN_Q = 0.08
PROFILE_ETA = 0.5  # pseudo-Voigt mixing of the simulated peaks
NOISE_FLOOR_SIGMAS = 3.0


@lru_cache(maxsize=1)
def _scattering_params() -> dict[str, np.ndarray]:
    import os

    import pymatgen.analysis.diffraction as diffraction

    path = os.path.join(os.path.dirname(diffraction.__file__), "atomic_scattering_params.json")
    with open(path) as fh:
        return {el: np.asarray(coeff, dtype=float) for el, coeff in json.load(fh).items()}


@dataclass
class Reflections:
    """|F|^2 of every reflection (one of each Friedel pair) of one structure up to ``q_max``."""

    hkl: np.ndarray  # (n, 3) int
    f2: np.ndarray  # (n,) |F|^2 x 2 (Friedel mate)
    reciprocal_metric: np.ndarray  # (3, 3) of the crystallographic reciprocal lattice (1/A^2, no 2 pi)
    crystal_system: str

    def q(self, axis_scales=(1.0, 1.0, 1.0)) -> np.ndarray:
        h = self.hkl / np.asarray(axis_scales, dtype=float)[None, :]
        g2 = np.einsum("ni,ij,nj->n", h, self.reciprocal_metric, h)
        return 2 * math.pi * np.sqrt(np.clip(g2, 0, None))


def reflections(structure, crystal_system: str, q_max: float = 7.0) -> Reflections:
    """All reflections of ``structure`` (its own cell and setting) with Q <= ``q_max``."""
    lattice = structure.lattice
    recip = lattice.reciprocal_lattice_crystallographic.matrix  # rows a*, b*, c* (1/A)
    g_max = q_max / (2 * math.pi)
    bounds = [int(math.floor(g_max * length)) for length in lattice.abc]
    axes = [np.arange(-b, b + 1) for b in bounds]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    h, k, l = hkl.T
    half = (h > 0) | ((h == 0) & (k > 0)) | ((h == 0) & (k == 0) & (l > 0))
    hkl = hkl[half]
    g = np.linalg.norm(hkl @ recip, axis=1)
    keep = g <= g_max
    hkl, g = hkl[keep], g[keep]
    s2 = (g / 2) ** 2
    params = _scattering_params()
    frac = structure.frac_coords
    symbols = [site.specie.symbol for site in structure]
    f_hkl = np.zeros(len(hkl), dtype=np.complex128)
    from pymatgen.core import Element

    for symbol in sorted(set(symbols)):
        if symbol not in params:
            raise ValueError(f"no X-ray scattering factors for {symbol}")
        coeff = params[symbol]
        fs = Element(symbol).Z - 41.78214 * s2 * np.sum(coeff[:, 0] * np.exp(-coeff[:, 1] * s2[:, None]), axis=1)
        idx = [i for i, s in enumerate(symbols) if s == symbol]
        f_hkl += fs * _phase_sum(hkl, frac[idx], bounds)
    f2 = 2 * (f_hkl * f_hkl.conjugate()).real
    strong = f2 > 1e-6 * max(f2.max(initial=0.0), 1e-30)
    return Reflections(hkl[strong], f2[strong], recip @ recip.T, crystal_system)


def _phase_sum(hkl: np.ndarray, frac: np.ndarray, bounds: list[int]) -> np.ndarray:
    """sum over atoms of exp(2 pi i (h x + k y + l z)) for every (h, k, l).

    The exponential factorises per axis: tables of exp(2 pi i h x) for the few h in range make each
    term two complex products instead of one complex exponential (several times faster on large cells).
    """
    tables = [np.exp(2j * math.pi * np.outer(np.arange(-b, b + 1), frac[:, axis])) for axis, b in enumerate(bounds)]
    h, k, l = (hkl[:, axis] + b for axis, b in enumerate(bounds))
    return (tables[0][h] * tables[1][k] * tables[2][l]).sum(axis=1)


def lorentz_polarization(q: np.ndarray, wavelength: float) -> np.ndarray:
    s = np.clip(q * wavelength / (4 * math.pi), 1e-6, 1 - 1e-9)
    theta = np.arcsin(s)
    return (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))


def free_axes(crystal_system: str) -> list[list[int]]:
    """Groups of cell axes that scale together while keeping the crystal system."""
    return {
        "cubic": [[0, 1, 2]],
        "tetragonal": [[0, 1], [2]],
        "hexagonal": [[0, 1], [2]],
        "trigonal": [[0, 1], [2]],
    }.get(crystal_system, [[0], [1], [2]])


def _gaussian_kernel(sigma_points: float) -> np.ndarray:
    half = max(1, int(math.ceil(4 * sigma_points)))
    x = np.arange(-half, half + 1)
    k = np.exp(-0.5 * (x / max(sigma_points, 1e-6)) ** 2)
    return k / k.sum()


def _pseudo_voigt_kernel(fwhm_points: float, eta: float) -> np.ndarray:
    """Pseudo-Voigt peak shape (measured lab peaks have Lorentzian tails), cut at +-8 FWHM."""
    fwhm_points = max(fwhm_points, 1.0)
    half = int(math.ceil(8 * fwhm_points))
    x = np.arange(-half, half + 1)
    gauss = np.exp(-4 * math.log(2) * (x / fwhm_points) ** 2)
    lorentz = 1 / (1 + 4 * (x / fwhm_points) ** 2)
    k = (1 - eta) * gauss / gauss.sum() + eta * lorentz / lorentz.sum()
    return k / k.sum()


def _deposit(grid_start: float, step: float, n: int, positions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sticks onto a uniform grid with linear (area-preserving) sharing between neighbours."""
    x = (positions - grid_start) / step
    i0 = np.floor(x).astype(np.int64)
    frac = x - i0
    out = np.zeros(n)
    for idx, w in ((i0, weights * (1 - frac)), (i0 + 1, weights * frac)):
        ok = (idx >= 0) & (idx < n)
        out += np.bincount(idx[ok], weights=w[ok], minlength=n)
    return out


@dataclass
class MeasuredProfile:
    """The measured pattern prepared once per query for all candidates."""

    q: np.ndarray
    covered: np.ndarray
    wavelength: float | None
    sigma_measured: float  # estimated Gaussian sigma of the measured peaks (1/A)
    fine: np.ndarray  # sqrt-intensity, broadened by FINE_SIGMA_Q, zero outside coverage
    fine_norm: float
    ln_grid: np.ndarray
    ln_covered: np.ndarray
    coarse: np.ndarray  # on ln_grid, broadened by COARSE_SIGMA_LN
    info: dict = field(default_factory=dict)


def measured_profile(pattern) -> MeasuredProfile:
    """From a usable ``sfn_stream.core.spectra.XrdPattern`` (background removed, max 1)."""
    q = np.asarray(pattern.q, dtype=float)
    step = q[1] - q[0]
    # the background fit leaves steps at the ends of the measured range: leave EDGE_MARGIN_Q out
    q_min, q_max = pattern.q_min + EDGE_MARGIN_Q, pattern.q_max - EDGE_MARGIN_Q
    covered = (q >= q_min) & (q <= q_max)
    raw = np.clip(np.asarray(pattern.intensity, dtype=float), 0, None) * covered
    # sqrt would lift the noise floor into a continuum that no candidate has: remove it first
    noise = 1.4826 * np.median(np.abs(np.diff(raw[covered], 2))) / math.sqrt(6) if covered.sum() > 10 else 0.0
    y = np.clip(raw - NOISE_FLOOR_SIGMAS * noise, 0, None) ** INTENSITY_POWER
    sigma_m = _peak_sigma(raw, step)
    fine = np.convolve(y, _gaussian_kernel(FINE_SIGMA_Q / step), mode="same") * covered
    ln_grid = np.linspace(math.log(q[0]), math.log(q[-1]), LOG_GRID_POINTS)
    ln_q = np.exp(ln_grid)
    ln_covered = (ln_q >= q_min) & (ln_q <= q_max)
    du = ln_grid[1] - ln_grid[0]
    coarse = np.interp(ln_q, q, y) * ln_covered
    coarse = np.convolve(coarse, _gaussian_kernel(COARSE_SIGMA_LN / du), mode="same")
    return MeasuredProfile(
        q, covered, pattern.wavelength, sigma_m, fine, float(np.linalg.norm(fine)), ln_grid, ln_covered, coarse,
        {"sigma_measured_q": sigma_m, "noise": noise, "q_range": [q_min, q_max]},
    )


def _peak_sigma(y: np.ndarray, step: float) -> float:
    """Gaussian-equivalent sigma of the peaks from the width of the pattern's autocorrelation."""
    y = y - y.mean()
    n = len(y)
    spec = np.fft.rfft(y, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[: n // 4]
    if ac[0] <= 0:
        return 2 * step
    below = np.nonzero(ac < 0.5 * ac[0])[0]
    half_width = below[0] if len(below) else 2
    # autocorrelation of Gaussians of sigma s has sigma s*sqrt(2); HWHM = 1.1774 sigma
    return float(max(half_width * step / (1.1774 * math.sqrt(2)), step / 2))


def _sim_profile(
    refl: Reflections, measured: MeasuredProfile, axis_scales, zero_shift_deg: float, wavelength: float
) -> np.ndarray:
    q = refl.q(axis_scales)
    if zero_shift_deg and measured.wavelength:
        s = np.clip(q * wavelength / (4 * math.pi), 0, 1)
        two_theta = 2 * np.degrees(np.arcsin(s)) + zero_shift_deg
        q = 4 * math.pi * np.sin(np.radians(two_theta / 2)) / wavelength
    weights = refl.f2 * lorentz_polarization(q, wavelength)
    step = measured.q[1] - measured.q[0]
    sticks = _deposit(measured.q[0], step, len(measured.q), q, weights)
    profile = np.convolve(sticks, _pseudo_voigt_kernel(measured.sigma_measured * 2.3548 / step, PROFILE_ETA), mode="same")
    profile = np.clip(profile, 0, None)
    profile = (profile / max(profile.max(), 1e-30)) ** INTENSITY_POWER
    # the measured side is broadened by FINE_SIGMA_Q once more: match it
    return np.convolve(profile, _gaussian_kernel(FINE_SIGMA_Q / step), mode="same") * measured.covered


def _cosine(a: np.ndarray, b: np.ndarray, b_norm: float) -> float:
    na = np.linalg.norm(a)
    if na <= 0 or b_norm <= 0:
        return 0.0
    return float(a @ b / (na * b_norm))


def coarse_scale(refl: Reflections, measured: MeasuredProfile, wavelength: float) -> tuple[float, float]:
    """Best isotropic cell scale in +-SCALE_RANGE and its similarity, by cross-correlation in ln Q."""
    q = refl.q()
    ok = q > 0
    grid = measured.ln_grid
    du = grid[1] - grid[0]
    weights = refl.f2[ok] * lorentz_polarization(q[ok], wavelength)
    sticks = _deposit(grid[0], du, len(grid), np.log(q[ok]), weights)
    profile = np.convolve(sticks, _gaussian_kernel(COARSE_SIGMA_LN / du), mode="same")
    profile = (np.clip(profile, 0, None) / max(profile.max(), 1e-30)) ** INTENSITY_POWER
    lags = int(math.ceil(math.log(1 + SCALE_RANGE) / du))
    best = (-1.0, 1.0)
    meas = measured.coarse
    mask = measured.ln_covered.astype(float)
    m_norm = np.linalg.norm(meas)
    n = len(grid)
    for lag in range(-lags, lags + 1):
        # a cell scaled by s moves ln Q by -ln s: shifted[i] = profile[i + lag] means ln Q shifted by -lag du
        if lag >= 0:
            shifted = np.concatenate([profile[lag:], np.zeros(lag)])
        else:
            shifted = np.concatenate([np.zeros(-lag), profile[: n + lag]])
        shifted = shifted * mask
        sim = _cosine(shifted, meas, m_norm)
        if sim > best[0]:
            best = (sim, math.exp(lag * du))
    return best[1], max(best[0], 0.0)


@dataclass
class PatternFit:
    similarity: float
    axis_scales: tuple[float, float, float]
    zero_shift_deg: float
    evaluations: int

    def to_dict(self) -> dict:
        return {
            "similarity": self.similarity,
            "axis_scales": list(self.axis_scales),
            "zero_shift_deg": self.zero_shift_deg,
            "evaluations": self.evaluations,
        }


def refine_fit(refl: Reflections, measured: MeasuredProfile, wavelength: float, start_scale: float, max_evaluations: int = 120) -> PatternFit:
    """Maximise the fine similarity over the free axis scales (+-AXIS_RANGE) and the zero shift."""
    from scipy.optimize import minimize

    groups = free_axes(refl.crystal_system)
    use_shift = measured.wavelength is not None

    def unpack(params):
        scales = np.full(3, start_scale)
        for g, value in zip(groups, params[: len(groups)]):
            scales[g] = start_scale * (1 + value)
        shift = params[len(groups)] if use_shift else 0.0
        return scales, shift

    count = [0]

    def loss(params):
        count[0] += 1
        scales, shift = unpack(params)
        return -_cosine(_sim_profile(refl, measured, scales, shift, wavelength), measured.fine, measured.fine_norm)

    x0 = np.zeros(len(groups) + (1 if use_shift else 0))
    bounds = [(-AXIS_RANGE, AXIS_RANGE)] * len(groups) + ([(-ZERO_SHIFT_RANGE_DEG, ZERO_SHIFT_RANGE_DEG)] if use_shift else [])
    start = loss(x0)
    result = minimize(loss, x0, method="Powell", bounds=bounds,
                      options={"maxfev": max_evaluations, "xtol": 1e-4, "ftol": 1e-4})
    params = result.x if result.fun < start else x0
    scales, shift = unpack(params)
    return PatternFit(float(-min(result.fun, start)), tuple(float(s) for s in scales), float(shift), count[0])


def scaled_structure(structure, axis_scales):
    """``structure`` with its cell lengths multiplied by ``axis_scales`` (angles and fractional coordinates kept)."""
    from pymatgen.core import Lattice

    a, b, c = (length * s for length, s in zip(structure.lattice.abc, axis_scales))
    return structure.__class__(Lattice.from_parameters(a, b, c, *structure.lattice.angles),
                               structure.species, structure.frac_coords)

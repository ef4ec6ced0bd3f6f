"""Powder XRD preprocessing: any wavelength / axis -> the classifier's fixed Q grid.

Steps (each recorded on the result): sort and drop non-finite points; 2theta -> Q with Bragg's
law (Q = 4 pi sin(theta) / lambda); area-conserving rebinning onto ``XRD_Q_GRID`` (bin means,
so a finely stepped scan is averaged, not aliased); SNIP background (Ryan et al. 1988, Nucl.
Instrum. Meth. B 34, 396; Morhac & Matousek 2008, Appl. Spectrosc. 62, 91) on the log-log-sqrt transformed intensities;
subtraction, clipping at zero, normalisation to max = 1; zeros outside the measured range.

Bad data never raises: the result carries ``flags``, ``messages``, ``usable`` and ``reason``.
Bad calls (2theta without wavelength, unknown axis, mismatched arrays) raise ``XrdInputError``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Q grid of the classifier, 1/A. 0.5-6.495 covers Cu K-alpha 2theta 7-99 deg (Q 0.50-6.25 at 10-100
# deg: 92 % of the grid) and synchrotron scans at 0.5-0.8 A up to 2theta 30-60 deg. The step, 0.005
# 1/A, equals a lab peak FWHM of ~0.07 deg 2theta at 2theta = 30 deg (Cu K-alpha), i.e. one to two
# points per FWHM of the sharpest lab peaks; broader peaks are well sampled.
XRD_Q_MIN, XRD_Q_STEP, XRD_Q_POINTS = 0.5, 0.005, 1200
XRD_Q_GRID = XRD_Q_MIN + XRD_Q_STEP * np.arange(XRD_Q_POINTS)

# SNIP clipping half-window: 0.1 1/A (20 grid points) is above the widest Bragg peaks we expect
# (nanocrystalline FWHM ~0.05-0.07 1/A) and below the width of amorphous humps / air scatter; a
# wider window cuts more off the top of a hump (a sigma 0.5 1/A hump leaves 1.7 % of the tallest
# peak at 0.1, 4 % at 0.15). Windows shrink from the widest to 1 point (Morhac & Matousek 2008).
SNIP_HALF_WINDOW_Q = 0.1
BACKGROUND = {
    "method": "snip",
    "transform": "log(log(sqrt(y + 1) + 1) + 1)",
    "half_window_q": SNIP_HALF_WINDOW_Q,
    "iterations": int(round(SNIP_HALF_WINDOW_Q / XRD_Q_STEP)),
    "order": "decreasing window",
    "reference": "Ryan et al. 1988; Morhac & Matousek 2008",
}

MIN_POINTS = 50  # fewer finite points than this is not a powder pattern
MIN_COVERAGE = 0.25  # fraction of the grid: less than this and the classifier is guessing
PARTIAL_COVERAGE = 0.6
MIN_PEAK_SNR = 8.0  # tallest net peak over the point-to-point noise (pure noise reaches ~5)


class XrdInputError(ValueError):
    """A preprocessing call that cannot be honoured (wrong axis, no wavelength for 2theta, ...)."""


@dataclass
class XrdPattern:
    q: np.ndarray
    intensity: np.ndarray  # on ``q``; max 1 when usable, zero outside coverage
    q_min: float  # measured range mapped to Q (NaN when nothing is left)
    q_max: float
    coverage_fraction: float  # fraction of the grid points with data
    background: dict[str, Any]
    wavelength: float | None
    axis: str
    n_points: int  # finite input points used
    flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    usable: bool = True
    reason: str | None = None

    @property
    def covered(self) -> np.ndarray:
        return (self.q >= self.q_min - 1e-9) & (self.q <= self.q_max + 1e-9)

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        out = asdict(self)
        for key in ("q", "intensity"):
            out[key] = np.asarray(out[key]).tolist() if arrays else None
        if not arrays:
            out.pop("q"), out.pop("intensity")
        for key in ("q_min", "q_max"):
            out[key] = None if not math.isfinite(out[key]) else out[key]
        return out


def two_theta_to_q(two_theta, wavelength: float) -> np.ndarray:
    """2theta (degrees) at ``wavelength`` (A) -> Q (1/A)."""
    return 4 * math.pi * np.sin(np.radians(np.asarray(two_theta, dtype=float) / 2)) / wavelength


def snip_background(y: np.ndarray, iterations: int = BACKGROUND["iterations"]) -> np.ndarray:
    """SNIP background of ``y`` (last axis; 1D or batched 2D), with the LLS transform."""
    y = np.asarray(y, dtype=float)
    v = np.log(np.log(np.sqrt(np.clip(y, 0, None) + 1) + 1) + 1)
    n = v.shape[-1]
    for p in range(min(iterations, (n - 1) // 2), 0, -1):
        mean = 0.5 * (v[..., : n - 2 * p] + v[..., 2 * p :])
        v[..., p : n - p] = np.minimum(v[..., p : n - p], mean)
    return (np.exp(np.exp(v) - 1) - 1) ** 2 - 1


def rebin_to_grid(q: np.ndarray, y: np.ndarray, grid: np.ndarray = XRD_Q_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``y`` over each grid bin (area-conserving; linear between points); mask of covered bins."""
    step = grid[1] - grid[0]
    edges = np.concatenate([grid - step / 2, [grid[-1] + step / 2]])
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(q))])
    at_edges = np.interp(edges, q, cumulative)
    values = np.diff(at_edges) / step
    covered = (grid >= q[0]) & (grid <= q[-1])
    return np.where(covered, values, 0.0), covered


def finish_on_grid(raw: np.ndarray, covered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtract and normalise grid intensities (1D or batched); returns (net, background).

    The same function makes the training patterns, so that the model sees what the live path gives.
    """
    raw = np.where(covered, raw, 0.0)
    background = snip_background(_extend_edges(raw, covered))
    net = np.clip(raw - background, 0, None) * covered
    peak = net.max(axis=-1, keepdims=True)
    return np.divide(net, peak, out=np.zeros_like(net), where=peak > 0), background


def _extend_edges(raw: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Fill uncovered bins with the nearest covered value so SNIP does not clip to the zeros."""
    if covered.all():
        return raw.copy()
    raw2, cov2 = np.atleast_2d(raw), np.atleast_2d(covered)
    out = raw2.copy()
    idx = np.arange(raw2.shape[-1])
    for row, (values, mask) in enumerate(zip(raw2, cov2)):
        if mask.any():
            first, last = idx[mask][0], idx[mask][-1]
            out[row, :first], out[row, last + 1 :] = values[first], values[last]
    return out.reshape(raw.shape)


def preprocess_xrd(x, intensity, *, axis: str = "2theta", wavelength: float | None = None) -> XrdPattern:
    """Map a 1D powder pattern (2theta in degrees at ``wavelength`` A, or Q in 1/A) onto ``XRD_Q_GRID``."""
    x, y = _check_call(x, intensity, axis, wavelength)
    flags, messages = [], []

    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        flags.append("non_finite_values")
        messages.append(f"dropped {int((~finite).sum())} non-finite points")
    x, y = x[finite], y[finite]
    if axis == "2theta":
        valid = (x > 0) & (x < 180)
        if not valid.all():
            flags.append("invalid_angles")
            messages.append(f"dropped {int((~valid).sum())} points outside 0 < 2theta < 180 deg")
        x, y = x[valid], y[valid]
        q = two_theta_to_q(x, wavelength)
    else:
        q = x
    order = np.argsort(q, kind="stable")
    q, y = q[order], y[order]
    if len(q) and (y < 0).any():
        flags.append("negative_counts")
        messages.append(f"{int((y < 0).sum())} points with negative intensity (background-subtracted input?)")

    def result(values, covered, usable=True, reason=None):
        return XrdPattern(
            q=XRD_Q_GRID.copy(), intensity=values,
            q_min=float(q[0]) if len(q) else math.nan, q_max=float(q[-1]) if len(q) else math.nan,
            coverage_fraction=float(covered.mean()), background=dict(BACKGROUND),
            wavelength=wavelength, axis=axis, n_points=int(len(q)),
            flags=flags, messages=messages, usable=usable, reason=reason,
        )

    empty = np.zeros_like(XRD_Q_GRID)
    if len(q) < MIN_POINTS:
        flags.append("too_few_points")
        return result(empty, np.zeros(XRD_Q_POINTS, bool), False, f"only {len(q)} finite points (need {MIN_POINTS})")
    q, y = _merge_duplicates(q, y)
    raw, covered = rebin_to_grid(q, y)
    fraction = covered.mean()
    if fraction < MIN_COVERAGE:
        flags.append("too_narrow_coverage")
        reason = (f"covers Q {q[0]:.2f}-{q[-1]:.2f} 1/A, {fraction:.0%} of the grid "
                  f"{XRD_Q_GRID[0]:.2f}-{XRD_Q_GRID[-1]:.2f} (need {MIN_COVERAGE:.0%})")
        return result(empty, covered, False, reason)
    if fraction < PARTIAL_COVERAGE:
        flags.append("partial_coverage")
        messages.append(f"only {fraction:.0%} of the Q grid is measured; predictions are less certain")

    net, _ = finish_on_grid(raw, covered)
    snr = _peak_snr(raw, covered)
    if snr < MIN_PEAK_SNR:
        flags.append("no_peaks")
        return result(empty, covered, False, f"no peak above the noise (peak/noise {snr:.1f} < {MIN_PEAK_SNR})")
    return result(net, covered)


def _check_call(x, intensity, axis, wavelength) -> tuple[np.ndarray, np.ndarray]:
    if axis not in ("2theta", "q"):
        raise XrdInputError(f"axis must be '2theta' (degrees) or 'q' (1/A), not {axis!r}")
    if axis == "2theta":
        if wavelength is None:
            raise XrdInputError("a 2theta pattern needs the wavelength in A (e.g. wavelength=1.5406 for Cu K-alpha1)")
        if not (isinstance(wavelength, (int, float, np.floating)) and math.isfinite(wavelength) and wavelength > 0):
            raise XrdInputError(f"wavelength must be a positive number in A, got {wavelength!r}")
        wavelength = float(wavelength)
    try:
        x = np.asarray(x, dtype=float)
        y = np.asarray(intensity, dtype=float)
    except (TypeError, ValueError) as err:
        raise XrdInputError(f"x and intensity must be numeric arrays: {err}") from err
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise XrdInputError(f"x and intensity must be 1D arrays of equal length, got shapes {x.shape} and {y.shape}")
    return x, y


def _merge_duplicates(q: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if (np.diff(q) > 0).all():
        return q, y
    unique, inverse = np.unique(q, return_inverse=True)
    return unique, np.bincount(inverse, weights=y) / np.bincount(inverse)


def _peak_snr(raw: np.ndarray, covered: np.ndarray) -> float:
    """Tallest net peak of the 3-bin smoothed pattern over the point-to-point noise of the raw one.

    Noise sigma: MAD of second differences / sqrt(6) (robust to peaks and smooth background). Pure
    Poisson noise gives 3-5 here (rebinned bins average unequal numbers of points); measured
    patterns give hundreds.
    """
    values = raw[covered]
    if len(values) < 5 or np.ptp(values) == 0:
        return 0.0
    smooth = np.convolve(values, np.ones(3) / 3, mode="same")[1:-1]
    height = float(np.max(smooth - snip_background(smooth)))
    noise = 1.4826 * np.median(np.abs(np.diff(values, 2))) / math.sqrt(6)
    return height / max(noise, 1e-12 * max(np.abs(values).max(), 1e-300))

"""XANES preprocessing shared by measured scans and computed (FEFF) spectra.

One code path, one set of defaults, for beamline data and training data:

1. build mu(E) from mu or from raw channels (transmission ln(i0/it), fluorescence ifluor/i0);
2. clean: drop non-finite points, sort, average duplicate energies;
3. calibrate the energy scale: reference foil (ln(it/iref)) aligned to the tabulated edge,
   the scan as measured, or a computed spectrum's per-element offset;
4. E0 = maximum of the smoothed derivative, following Larch ``find_e0``;
5. Athena/Larch normalisation (Ravel & Newville, J. Synchrotron Rad. 12 (2005) 537;
   Larch ``pre_edge``): pre-edge line, post-edge polynomial, edge step at E0, flattening;
6. interpolate onto the model window, a fixed grid around the absorber's TABULATED edge, so
   that the chemical shift of the edge (the oxidation-state signal) survives.

Bad data never raise: the result carries ``usable=False``, a ``reason``, snake_case ``flags``
and human-readable ``messages``. Only programming errors raise :class:`XanesInputError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sfn_stream.core.serialize import json_safe
from ._edges import K_EDGE_ENERGIES, TRANSITION_METALS_3D, edge_energy, element_symbol

__all__ = [
    "E0_METHOD",
    "XANES_DEFAULTS",
    "XANES_FLAGS",
    "XANES_WINDOW",
    "NormalizationDefaults",
    "WindowDefinition",
    "XanesInputError",
    "XanesWindow",
    "find_e0",
    "find_first_inflection",
    "preprocess_xanes",
]


class XanesInputError(ValueError):
    """preprocess_xanes was called wrongly (missing or inconsistent arrays)."""


@dataclass(frozen=True)
class WindowDefinition:
    """The model's fixed energy grid, relative to the absorber's tabulated edge E_ref."""

    start: float = -10.0
    stop: float = 46.0
    n_points: int = 200

    def energies(self, e_ref: float) -> np.ndarray:
        return e_ref + np.linspace(self.start, self.stop, self.n_points)

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "stop": self.stop, "n_points": self.n_points, "relative_to": "tabulated_edge"}


# 200 points over 56 eV, E_ref - 10 eV .. E_ref + 46 eV (the paper's window, placed at the edge).
XANES_WINDOW = WindowDefinition()


@dataclass(frozen=True)
class NormalizationDefaults:
    """Defaults chosen so that measured scans and FEFF spectra share one normalisation.

    Energies are relative to E0. See docs/preprocessing-check.md for the reasons.
    """

    pre1: float = -150.0  # Athena's default pre-edge range, clipped to the data
    pre2: float = -30.0  # ends before the 1s->3d pre-edge peaks
    norm1: float = 25.0  # Larch's norm1 for short (XANES) scans
    norm2: float = 110.0  # FEFF spectra end ~130 eV above E0; measured scans are clipped here
    nnorm: int = 1  # a line over ~100 eV (Larch: nnorm=1 for spans of 30-300 eV)
    normalization: Literal["flat", "norm"] = "flat"
    min_points: int = 20
    min_pre_points: int = 3
    pre_fallback_span: float = 2.0  # eV above the first point averaged for the constant fallback
    min_post_span: float = 15.0  # eV; shorter post-edge ranges cannot define an edge step
    min_post_points: int = 4
    min_below_e0: float = 1.0  # eV of data needed below E0 (else the edge onset is missing)
    e0_warn_shift: float = 20.0  # |E0 - E_ref| beyond this: possible but unusual chemical shift
    e0_max_shift: float = 50.0  # beyond this: wrong absorber or an uncalibrated monochromator
    reference_max_shift: float = 30.0  # larger foil shifts are not trusted
    min_edge_snr: float = 20.0  # edge step / point-to-point noise
    max_edge_slope: float = 3.0  # edge steps per eV; K-edge rises are broadened by >= 0.8 eV core holes
    reference_min_peak: float = 0.3  # first derivative peak of a foil, as a fraction of the largest
    max_window_missing: float = 0.25  # fraction of the window the data may leave uncovered
    duplicate_tolerance: float = 0.0005  # eV; closer energies are averaged (Larch TINY_ENERGY nudges them apart)


XANES_DEFAULTS = NormalizationDefaults()

# Every flag preprocess_xanes can raise: code -> (severity, meaning). "fatal" makes usable False.
XANES_FLAGS: dict[str, tuple[str, str]] = {
    "energy_not_in_ev": ("fatal", "energies between 100 and 1000: neither eV nor keV of a K edge"),
    "energy_converted_from_kev": ("warning", "energies below 100 were read as keV and multiplied by 1000"),
    "non_finite_dropped": ("warning", "NaN/inf points (or non-positive counts) were dropped"),
    "energies_unsorted": ("warning", "energies were sorted"),
    "duplicate_energies_averaged": ("warning", "repeated energies were averaged"),
    "too_few_points": ("fatal", "fewer than min_points usable points"),
    "reference_calibration_failed": ("warning", "reference channel without a usable foil edge; used as measured"),
    "edge_not_covered": ("fatal", "the scan does not contain the absorber's tabulated edge"),
    "e0_inconsistent_with_absorber": ("fatal", "E0 beyond e0_max_shift from the tabulated edge"),
    "e0_far_from_edge": ("warning", "E0 between e0_warn_shift and e0_max_shift from the tabulated edge"),
    "edge_onset_not_covered": ("fatal", "the scan starts less than min_below_e0 below E0"),
    "pre_edge_fallback_constant": ("warning", "no data for a pre-edge line; constant from the lowest points"),
    "post_edge_too_short": ("fatal", "not enough data above E0+norm1 for the post-edge fit"),
    "post_edge_range_clipped": ("warning", "post-edge range shortened by the end of the scan"),
    "edge_step_not_positive": ("fatal", "absorption does not rise across the edge"),
    "edge_step_too_small": ("fatal", "edge step below min_edge_snr times the point noise"),
    "edge_too_sharp": ("fatal", "rise steeper than max_edge_slope steps/eV: a glitch"),
    "window_padded_below": ("warning", "window starts below the data: padded with 0"),
    "window_padded_above": ("warning", "window ends above the data: padded with the last value"),
    "window_not_covered": ("fatal", "more than max_window_missing of the window has no data"),
}

# A scan whose energies all lie below this is in keV (3d K edges: 4.97-9.66 keV); scans in eV start above 1 keV
KEV_BELOW = 100.0

E0_METHOD = "max_smoothed_derivative (Larch find_e0: unsmoothed pass, then Lorentzian-smoothed dmu/dE)"


# ----------------------------------------------------------------------------- result


@dataclass
class XanesWindow:
    """Preprocessed XANES: the model window plus every parameter that produced it.

    Pre-edge line: ``pre_intercept + pre_slope * (E - e0)``; post-edge curve minus pre-edge:
    ``sum(norm_coefs[i] * (E - e0)**i)``, so ``edge_step == norm_coefs[0]``. Energies are on the
    calibrated scale (eV). ``mu`` holds the ``normalization`` kind ("flat" or "norm"); it is NaN
    when processing stopped before normalisation (see ``reason``). ``energy_full``, ``norm_full``
    and ``flat_full`` are the whole cleaned, calibrated spectrum, for plots.
    """

    absorber: str
    edge: str
    e_ref: float
    window: WindowDefinition
    energy: np.ndarray
    mu: np.ndarray
    usable: bool
    reason: str | None
    flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    mode: str = "mu"
    calibration: str = "as_measured"
    energy_shift: float = 0.0
    reference_e0: float | None = None
    e0: float = math.nan
    e0_shift: float = math.nan
    e0_method: str = E0_METHOD
    edge_step: float = math.nan
    edge_snr: float = math.nan
    pre_edge_method: str = ""
    pre1: float = math.nan
    pre2: float = math.nan
    pre_slope: float = math.nan
    pre_intercept: float = math.nan
    norm1: float = math.nan
    norm2: float = math.nan
    nnorm: int = 0
    norm_coefs: tuple[float, ...] = ()
    normalization: str = "flat"
    window_coverage: float = 0.0
    n_points: int = 0
    energy_min: float = math.nan
    energy_max: float = math.nan
    energy_full: np.ndarray = field(default_factory=lambda: np.empty(0))
    norm_full: np.ndarray = field(default_factory=lambda: np.empty(0))
    flat_full: np.ndarray = field(default_factory=lambda: np.empty(0))

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "absorber": self.absorber,
            "edge": self.edge,
            "e_ref": self.e_ref,
            "usable": self.usable,
            "reason": self.reason,
            "flags": list(self.flags),
            "messages": list(self.messages),
            "mode": self.mode,
            "calibration": self.calibration,
            "energy_shift": self.energy_shift,
            "reference_e0": self.reference_e0,
            "e0": self.e0,
            "e0_shift": self.e0_shift,
            "e0_method": self.e0_method,
            "edge_step": self.edge_step,
            "edge_snr": self.edge_snr,
            "pre_edge_method": self.pre_edge_method,
            "pre1": self.pre1,
            "pre2": self.pre2,
            "pre_slope": self.pre_slope,
            "pre_intercept": self.pre_intercept,
            "norm1": self.norm1,
            "norm2": self.norm2,
            "nnorm": self.nnorm,
            "norm_coefs": list(self.norm_coefs),
            "normalization": self.normalization,
            "window": self.window.to_dict(),
            "window_coverage": self.window_coverage,
            "n_points": self.n_points,
            "energy_min": self.energy_min,
            "energy_max": self.energy_max,
        }
        if arrays:
            for name in ("energy", "mu", "energy_full", "norm_full", "flat_full"):
                out[name] = getattr(self, name).tolist()
        return json_safe(out)


# ----------------------------------------------------------------------------- E0


def _energy_step(energy: np.ndarray) -> float:
    """Typical small energy step, ignoring the smallest 1% (as Larch find_energy_step)."""
    steps = np.sort(np.diff(energy))
    skip = int(0.01 * len(steps))
    chosen = steps[skip : skip + 10]
    return float(chosen.mean()) if len(chosen) else 1.0


def _lorentzian_smooth(x: np.ndarray, y: np.ndarray, step: float) -> np.ndarray:
    """Convolve y(x) with a unit-area Lorentzian of half width ``step`` on a uniform grid
    (mirror-padded ends, kernel as wide as the data, as Larch ``smooth``, but centred)."""
    n_grid = max(3, min(int((x[-1] - x[0]) / step) + 11, 50 * len(x)))
    grid = np.linspace(x[0] - 5 * step, x[-1] + 5 * step, n_grid)
    values = np.interp(grid, x, y)
    dx = grid[1] - grid[0]
    offsets = np.arange(-(n_grid - 1), n_grid) * dx
    kernel = step / (offsets**2 + step**2)
    kernel /= kernel.sum()
    padded = np.concatenate([values[n_grid - 1 : 0 : -1], values, values[-2 :: -1]])
    smoothed = np.convolve(padded, kernel, mode="valid")
    return np.interp(x, grid, smoothed)


def _max_derivative_index(energy: np.ndarray, mu: np.ndarray, smooth_step: float | None) -> int:
    """Index of the largest derivative that is flanked by large derivatives (glitch guard)."""
    n = len(energy)
    dmu = np.gradient(mu) / np.gradient(energy)
    if smooth_step is not None:
        dmu = _lorentzian_smooth(energy, dmu, smooth_step)
    dmu = np.where(np.isfinite(dmu), dmu, -1.0)
    nmin = max(3, int(0.02 * n))
    inner = dmu[nmin : n - nmin]
    if len(inner) == 0:
        return int(np.argmax(dmu))
    scaled = (dmu - inner.min()) / max(1e-10, float(np.ptp(inner)))
    threshold = 0.6 if n > 20 else 0.3
    high = scaled > threshold
    for _ in range(2):
        if high.sum() > 3:
            break
        threshold *= 0.5
        high = scaled > threshold
    candidates = np.zeros(n, dtype=bool)
    candidates[1:-1] = high[1:-1] & high[:-2] & high[2:]
    candidates[:nmin] = False
    candidates[n - nmin + 1 :] = False
    if not candidates.any():
        return 0
    return int(np.flatnonzero(candidates)[np.argmax(scaled[candidates])])


def find_e0(energy: np.ndarray, mu: np.ndarray) -> float:
    """E0 as the maximum of the smoothed derivative, following Larch ``find_e0``.

    A first pass on the raw derivative locates the edge; a second pass within +-75 points
    of it smooths dmu/dE with a Lorentzian whose width averages the scan's finest energy step
    and E/25000 (0.2 eV at 5 keV), both clipped to [0.01, 1] eV. E0 is an energy of the data.
    Energies must be sorted, unique and finite.
    """
    energy = np.asarray(energy, dtype=float)
    mu = np.asarray(mu, dtype=float)
    n = len(energy)
    if n < 8:
        return float(energy[int(np.argmax(np.gradient(mu) / np.gradient(energy)))])
    i_first = _max_derivative_index(energy, mu, None)
    e_first = energy[i_first]
    start, stop = max(3, i_first - 75), min(i_first + 75, n - 3)
    if i_first < 0.05 * n:  # edge in the first 5% of points: more often a glitch
        e_first = float(energy.mean())
        start, stop = max(3, i_first - 20), n - 3
    step = _smoothing_step(energy, e_first)
    if stop - start < 8:
        return float(e_first)
    i_local = _max_derivative_index(energy[start:stop], mu[start:stop], step)
    if i_local < 1:
        return float(energy[start + 2])
    return float(energy[start + i_local])


def _smoothing_step(energy: np.ndarray, e_edge: float) -> float:
    """Larch's smoothing width: mean of the finest step and E/25000, each clipped to [0.01, 1] eV."""
    return 0.5 * (min(1.0, max(0.01, _energy_step(energy))) + min(1.0, max(0.01, e_edge / 25000.0)))


def find_first_inflection(energy: np.ndarray, mu: np.ndarray, min_peak: float = 0.3) -> float:
    """First inflection point of an edge: the lowest-energy peak of the smoothed derivative
    reaching ``min_peak`` of the largest one, at most 25 eV below :func:`find_e0`.

    Tabulated edge energies are the first inflection points of the metals (Bearden & Burr 1967;
    Kraft et al., Rev. Sci. Instrum. 67 (1996) 681), which for foils with a shoulder (Ni, Ti, Fe)
    can lie several eV below the steepest rise, so reference foils are aligned on this point.
    """
    energy = np.asarray(energy, dtype=float)
    mu = np.asarray(mu, dtype=float)
    e_max = find_e0(energy, mu)
    region = (energy >= e_max - 40.0) & (energy <= e_max + 15.0)
    if region.sum() < 8:
        return e_max
    en = energy[region]
    dmu = _lorentzian_smooth(en, np.gradient(mu[region]) / np.gradient(en), _smoothing_step(energy, e_max))
    top = float(dmu[np.argmin(np.abs(en - e_max))])
    if not top > 0:
        return e_max
    for i in range(1, len(en) - 1):
        if en[i] < e_max - 25.0 or en[i] > e_max + 0.5:
            continue
        if dmu[i] < min_peak * top or not (dmu[i] > dmu[i - 1] and dmu[i] >= dmu[i + 1]):
            continue
        higher = np.flatnonzero(dmu[i + 1 :] > dmu[i])
        # a real peak: the derivative dips by 5% of the top before rising above it again
        if len(higher) == 0 or dmu[i + 1 : i + 1 + higher[0]].min() <= dmu[i] - 0.05 * top:
            return float(en[i])
    return e_max


# ----------------------------------------------------------------------------- helpers


class _Log:
    """Collects flags and messages; the first fatal one becomes the reason."""

    def __init__(self) -> None:
        self.flags: list[str] = []
        self.messages: list[str] = []
        self.reason: str | None = None

    def warn(self, flag: str, message: str) -> None:
        self.flags.append(flag)
        self.messages.append(message)

    def fatal(self, flag: str, message: str) -> None:
        self.warn(flag, message)
        if self.reason is None:
            self.reason = message


def _as_1d(name: str, values: Any) -> np.ndarray | None:
    if values is None:
        return None
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise XanesInputError(f"{name} must be a 1-D array of numbers: {exc}") from None
    if array.ndim != 1:
        raise XanesInputError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _absorption(
    mu: np.ndarray | None,
    i0: np.ndarray | None,
    it: np.ndarray | None,
    ifluor: np.ndarray | None,
    iref: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """mu(E), the reference foil's mu_ref(E) (or None) and the detection mode."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if mu is not None:
            if i0 is not None or ifluor is not None:
                raise XanesInputError("give either mu or the raw channels (i0 with it or ifluor), not both")
            signal, mode = mu, "mu"
        else:
            if i0 is None:
                raise XanesInputError("give mu, or the raw channels i0 plus it (transmission) or ifluor (fluorescence)")
            if ifluor is not None:
                signal, mode = ifluor / i0, "fluorescence"
            elif it is not None:
                signal, mode = np.log(i0 / it), "transmission"
            else:
                raise XanesInputError(
                    "i0 alone is not a spectrum: also give it (transmission) or ifluor (fluorescence)"
                )
        reference = None
        if iref is not None:
            if it is None:
                raise XanesInputError("the reference channel iref needs it as well: mu_ref = ln(it/iref)")
            reference = np.log(it / iref)
    return signal, reference, mode


def _clean(
    energy: np.ndarray, mu: np.ndarray, reference: np.ndarray | None, tolerance: float, log: _Log
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Drop non-finite points, sort by energy, average points closer than ``tolerance``."""
    finite = np.isfinite(energy) & np.isfinite(mu)
    if reference is not None:
        finite &= np.isfinite(reference)
    if not finite.all():
        dropped = int((~finite).sum())
        log.warn("non_finite_dropped", f"dropped {dropped} of {len(energy)} points with non-finite energy or mu")
        energy, mu = energy[finite], mu[finite]
        reference = reference[finite] if reference is not None else None
    if len(energy) > 1 and np.any(np.diff(energy) < 0):
        order = np.argsort(energy, kind="stable")
        energy, mu = energy[order], mu[order]
        reference = reference[order] if reference is not None else None
        log.warn("energies_unsorted", "energies were not increasing; the points were sorted")
    if len(energy) > 1:
        same = np.diff(energy) < tolerance
        if same.any():
            group = np.concatenate([[0], np.cumsum(~same)])
            counts = np.bincount(group)
            energy = np.bincount(group, energy) / counts
            mu = np.bincount(group, mu) / counts
            reference = np.bincount(group, reference) / counts if reference is not None else None
            log.warn(
                "duplicate_energies_averaged",
                f"averaged {int(same.sum())} repeated energies (closer than {tolerance} eV)",
            )
    return energy, mu, reference


def absorber_from_scan(energy: Any, mu: Any = None, *, i0: Any = None, it: Any = None, ifluor: Any = None,
                       candidates: Any = None) -> str | None:
    """The 3d metal whose K edge this scan measured, as Athena finds an edge: the one tabulated K edge inside
    the scanned range, or, when several are inside, the one nearest the steepest rise (within
    ``XANES_DEFAULTS.e0_max_shift``). ``candidates`` (the sample's elements) limits the choice. None when no
    edge qualifies or the data cannot tell."""
    allowed = [m for m in TRANSITION_METALS_3D if candidates is None or m in candidates]
    energy = _as_1d("energy", energy)
    if energy is None or not allowed:
        return None
    arrays = [_as_1d(n, v) for n, v in (("mu", mu), ("i0", i0), ("it", it), ("ifluor", ifluor))]
    try:
        signal, _, _ = _absorption(*arrays, None)
    except XanesInputError:
        return None
    keep = np.isfinite(energy) & np.isfinite(signal)
    energy, signal = energy[keep], signal[keep]
    if len(energy) < XANES_DEFAULTS.min_points:
        return None
    if energy.max() < KEV_BELOW:
        energy = energy * 1000.0
    order = np.argsort(energy)
    energy, signal = energy[order], signal[order]
    inside = [m for m in allowed if energy[0] < K_EDGE_ENERGIES[m] < energy[-1]]
    if len(inside) <= 1:
        return inside[0] if inside else None
    distinct = np.concatenate([[True], np.diff(energy) > XANES_DEFAULTS.duplicate_tolerance])
    e0 = find_e0(energy[distinct], signal[distinct])
    nearest = min(inside, key=lambda m: abs(K_EDGE_ENERGIES[m] - e0))
    return nearest if abs(K_EDGE_ENERGIES[nearest] - e0) <= XANES_DEFAULTS.e0_max_shift else None


def _nearest_k_edge(energy: float) -> str:
    symbol = min(K_EDGE_ENERGIES, key=lambda s: abs(K_EDGE_ENERGIES[s] - energy))
    return f"{symbol} K edge, {K_EDGE_ENERGIES[symbol]:.1f} eV"


def _noise_level(mu: np.ndarray) -> float:
    """Point-to-point noise: robust sigma of second differences (var = 6 sigma^2 for white noise)."""
    if len(mu) < 5:
        return 0.0
    second = np.diff(mu, 2)
    return float(1.4826 * np.median(np.abs(second - np.median(second))) / math.sqrt(6.0))


# ----------------------------------------------------------------------------- main entry


def preprocess_xanes(
    energy: Any,
    mu: Any = None,
    *,
    i0: Any = None,
    it: Any = None,
    ifluor: Any = None,
    iref: Any = None,
    absorber: str,
    edge: str = "K",
    energy_offset: float = 0.0,
    window: WindowDefinition = XANES_WINDOW,
    defaults: NormalizationDefaults = XANES_DEFAULTS,
    normalization: Literal["flat", "norm"] | None = None,
    pre1: float | None = None,
    pre2: float | None = None,
    norm1: float | None = None,
    norm2: float | None = None,
    nnorm: int | None = None,
) -> XanesWindow:
    """Normalise one K-edge spectrum and resample it onto the model window.

    Give ``mu`` or raw channels: ``i0`` with ``it`` (transmission, ln(i0/it)) or ``ifluor``
    (fluorescence, ifluor/i0; takes precedence when both are given). ``iref`` (with ``it``)
    is the reference foil after the sample, mu_ref = ln(it/iref); its first inflection point is
    aligned to the tabulated edge. Computed spectra pass ``energy_offset`` = E0(calculated metal) - E_tab,
    which is subtracted from their energies. Range parameters (eV, relative to E0) default to
    ``defaults``. Bad data give ``usable=False`` with a reason; this raises only
    :class:`XanesInputError` for wrong calls and ``UnknownEdgeError`` for an unknown absorber.
    """
    e_ref = edge_energy(absorber, edge)
    symbol = element_symbol(absorber)
    arrays = {name: _as_1d(name, value) for name, value in
              (("energy", energy), ("mu", mu), ("i0", i0), ("it", it), ("ifluor", ifluor), ("iref", iref))}
    energy_arr = arrays["energy"]
    if energy_arr is None:
        raise XanesInputError("energy is required")
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        raise XanesInputError(f"arrays must have equal lengths, got {lengths}")
    if not math.isfinite(float(energy_offset)):
        raise XanesInputError(f"energy_offset must be finite, got {energy_offset!r}")
    if energy_offset and arrays["iref"] is not None:
        raise XanesInputError("give energy_offset (computed spectra) or a reference channel iref, not both")
    signal, reference, mode = _absorption(arrays["mu"], arrays["i0"], arrays["it"], arrays["ifluor"], arrays["iref"])

    d = defaults
    choice = normalization or d.normalization
    if choice not in ("flat", "norm"):
        raise XanesInputError(f"normalization must be 'flat' or 'norm', got {choice!r}")
    ranges = dict(
        pre1=d.pre1 if pre1 is None else float(pre1),
        pre2=d.pre2 if pre2 is None else float(pre2),
        norm1=d.norm1 if norm1 is None else float(norm1),
        norm2=d.norm2 if norm2 is None else float(norm2),
        nnorm=d.nnorm if nnorm is None else int(nnorm),
    )
    grid = window.energies(e_ref)
    result = XanesWindow(
        absorber=symbol, edge=edge.strip().upper(), e_ref=e_ref, window=window, energy=grid,
        mu=np.full(window.n_points, np.nan), usable=False, reason=None, mode=mode, normalization=choice,
    )
    log = _Log()
    _run(result, energy_arr, signal, reference, float(energy_offset), ranges, d, log)
    result.flags, result.messages, result.reason = log.flags, log.messages, log.reason
    result.usable = log.reason is None
    return result


def _run(
    result: XanesWindow,
    energy: np.ndarray,
    mu: np.ndarray,
    reference: np.ndarray | None,
    energy_offset: float,
    ranges: dict[str, float],
    d: NormalizationDefaults,
    log: _Log,
) -> None:
    """The pipeline; stops at the first fatal condition, leaving what was found so far."""
    finite = energy[np.isfinite(energy)]
    if finite.size and finite.max() < KEV_BELOW:  # no hard-X-ray scan in eV ends below 100
        energy = energy * 1000.0
        log.warn("energy_converted_from_kev",
                 f"energies span {finite.min():.4g}-{finite.max():.4g}: read as keV and multiplied by 1000")
    elif finite.size and finite.max() < 1000.0:  # no tabulated K edge lies below 4 keV
        log.fatal(
            "energy_not_in_ev",
            f"energies span {finite.min():.4g}-{finite.max():.4g}: neither eV nor keV of a K edge",
        )
        return
    energy, mu, reference = _clean(energy, mu, reference, d.duplicate_tolerance, log)
    result.n_points = len(energy)
    if len(energy) < d.min_points:
        log.fatal("too_few_points", f"only {len(energy)} usable points; at least {d.min_points} are needed")
        return
    energy = _calibrate(result, energy, reference, energy_offset, d, log)
    result.energy_min, result.energy_max = float(energy[0]), float(energy[-1])
    e_ref = result.e_ref
    if energy[-1] <= e_ref or energy[0] >= e_ref + d.e0_warn_shift:
        steepest = find_e0(energy, mu)
        log.fatal(
            "edge_not_covered",
            f"the scan covers {energy[0]:.1f}-{energy[-1]:.1f} eV and does not contain the "
            f"{result.absorber} {result.edge} edge at {e_ref:.1f} eV (its steepest rise, "
            f"{steepest:.1f} eV, is nearest the {_nearest_k_edge(steepest)})",
        )
        return
    e0 = find_e0(energy, mu)
    result.e0, result.e0_shift = e0, e0 - e_ref
    if not _check_e0(result, energy, d, log):
        return
    pre_edge = _fit_pre_edge(result, energy, mu, ranges, d, log)
    coefs = _fit_post_edge(result, energy, mu - pre_edge, ranges, d, log)
    if coefs is None:
        return
    step = float(coefs[0])
    result.edge_step = step
    if not _check_step(result, mu, step, d, log):
        return
    norm = (mu - pre_edge) / step
    flat = norm - (np.polynomial.polynomial.polyval(energy - e0, coefs) - step) / step
    below = energy < e0
    flat[below] = norm[below]
    result.energy_full, result.norm_full, result.flat_full = energy, norm, flat
    if not _check_sharpness(energy, norm, e0, d, log):
        return
    _resample(result, energy, flat if result.normalization == "flat" else norm, d, log)


def _calibrate(
    result: XanesWindow,
    energy: np.ndarray,
    reference: np.ndarray | None,
    energy_offset: float,
    d: NormalizationDefaults,
    log: _Log,
) -> np.ndarray:
    if reference is not None:
        ref_e0 = find_first_inflection(energy, reference, d.reference_min_peak)
        shift = result.e_ref - ref_e0
        ref_step = np.median(reference[energy > ref_e0 + 10]) - np.median(reference[energy < ref_e0 - 10]) \
            if np.any(energy > ref_e0 + 10) and np.any(energy < ref_e0 - 10) else math.nan
        if abs(shift) <= d.reference_max_shift and ref_step > 0:
            result.calibration, result.energy_shift, result.reference_e0 = "reference_foil", shift, ref_e0
            return energy + shift
        log.warn(
            "reference_calibration_failed",
            f"reference foil edge found at {ref_e0:.1f} eV ({shift:+.1f} eV to reach {result.e_ref:.1f} eV, "
            f"rise {ref_step:.3g}): not a usable {result.absorber} foil; the scan is used as measured",
        )
        result.calibration = "as_measured"
        return energy
    if energy_offset:
        result.calibration, result.energy_shift = "computed_offset", -energy_offset
        return energy - energy_offset
    result.calibration = "as_measured"
    return energy


def _check_e0(result: XanesWindow, energy: np.ndarray, d: NormalizationDefaults, log: _Log) -> bool:
    e0, shift = result.e0, result.e0_shift
    where = f"{result.absorber} {result.edge} edge ({result.e_ref:.1f} eV)"
    if abs(shift) > d.e0_max_shift:
        log.fatal(
            "e0_inconsistent_with_absorber",
            f"E0 = {e0:.1f} eV is {shift:+.1f} eV from the tabulated {where}, beyond the "
            f"{d.e0_max_shift:.0f} eV limit: wrong absorber or uncalibrated monochromator "
            f"(E0 is nearest the {_nearest_k_edge(e0)})",
        )
        return False
    if abs(shift) > d.e0_warn_shift:
        log.warn(
            "e0_far_from_edge",
            f"E0 = {e0:.1f} eV is {shift:+.1f} eV from the tabulated {where}: a large chemical shift "
            f"or a calibration error (warning band {d.e0_warn_shift:.0f}-{d.e0_max_shift:.0f} eV)",
        )
    if e0 - energy[0] < d.min_below_e0:
        log.fatal(
            "edge_onset_not_covered",
            f"the scan starts at {energy[0]:.1f} eV, only {e0 - energy[0]:.1f} eV below E0 = {e0:.1f} eV: "
            "the rise of the edge is missing",
        )
        return False
    return True


def _fit_pre_edge(
    result: XanesWindow, energy: np.ndarray, mu: np.ndarray, ranges: dict[str, float],
    d: NormalizationDefaults, log: _Log,
) -> np.ndarray:
    """Pre-edge line over [E0+pre1, E0+pre2]; a constant from the lowest points if impossible."""
    e0 = result.e0
    rel = energy - e0
    lo, hi = max(ranges["pre1"], rel[0]), ranges["pre2"]
    inside = (rel >= lo) & (rel <= hi)
    if inside.sum() >= d.min_pre_points and hi > lo:
        slope, intercept = np.polyfit(rel[inside], mu[inside], 1)
        result.pre_edge_method = "line"
        result.pre1, result.pre2 = float(lo), float(hi)
    else:
        lowest = energy <= energy[0] + d.pre_fallback_span
        slope, intercept = 0.0, float(mu[lowest].mean())
        result.pre_edge_method = "constant_fallback"
        result.pre1, result.pre2 = float(rel[0]), float(rel[lowest][-1])
        log.warn(
            "pre_edge_fallback_constant",
            f"the spectrum starts only {-rel[0]:.1f} eV below E0 ({int(inside.sum())} points in "
            f"E0{ranges['pre1']:+.0f}..E0{ranges['pre2']:+.0f} eV): no pre-edge line can be fitted; "
            f"used a constant pre-edge, the mean of the {int(lowest.sum())} lowest-energy points",
        )
    result.pre_slope, result.pre_intercept = float(slope), float(intercept)
    return intercept + slope * rel


def _fit_post_edge(
    result: XanesWindow, energy: np.ndarray, above_pre: np.ndarray, ranges: dict[str, float],
    d: NormalizationDefaults, log: _Log,
) -> np.ndarray | None:
    """Polynomial in (E - E0) fitted to mu - pre_edge over [E0+norm1, E0+norm2] (clipped)."""
    rel = energy - result.e0
    lo, hi = ranges["norm1"], min(ranges["norm2"], float(rel[-1]))
    inside = (rel >= lo) & (rel <= hi)
    if hi - lo < d.min_post_span or inside.sum() < d.min_post_points:
        log.fatal(
            "post_edge_too_short",
            f"the scan ends {rel[-1]:.1f} eV above E0 ({int(inside.sum())} points from E0+{lo:.0f} eV): "
            f"the post-edge fit needs data from E0+{lo:.0f} to at least E0+{lo + d.min_post_span:.0f} eV",
        )
        return None
    degree = int(ranges["nnorm"]) if hi - lo >= 30.0 else 0
    if hi < ranges["norm2"]:
        log.warn(
            "post_edge_range_clipped",
            f"post-edge range clipped to E0+{lo:.0f}..E0+{hi:.1f} eV by the end of the scan "
            f"(default up to E0+{ranges['norm2']:.0f} eV); polynomial degree {degree}",
        )
    coefs = np.polynomial.polynomial.polyfit(rel[inside], above_pre[inside], degree)
    result.norm1, result.norm2, result.nnorm = float(lo), float(hi), degree
    result.norm_coefs = tuple(float(c) for c in coefs)
    return coefs


def _check_step(result: XanesWindow, mu: np.ndarray, step: float, d: NormalizationDefaults, log: _Log) -> bool:
    noise = _noise_level(mu)
    result.edge_snr = step / noise if noise > 0 else math.inf
    if not step > 0:
        log.fatal(
            "edge_step_not_positive",
            f"edge step {step:.3g} is not positive: the absorption does not rise across the edge "
            "(inverted data, swapped i0/it, or no edge)",
        )
        return False
    if result.edge_snr < d.min_edge_snr:
        log.fatal(
            "edge_step_too_small",
            f"edge step {step:.3g} is only {result.edge_snr:.1f} times the point-to-point noise "
            f"({noise:.3g}); at least {d.min_edge_snr:.0f} is needed",
        )
        return False
    return True


def _check_sharpness(energy: np.ndarray, norm: np.ndarray, e0: float, d: NormalizationDefaults, log: _Log) -> bool:
    """Reject a "edge" that rises faster than a core-hole-broadened K edge can: a glitch or spike."""
    near = np.abs(energy - e0) <= 3.0
    slope = float(np.max(np.gradient(norm)[near] / np.gradient(energy)[near])) if near.sum() else 0.0
    if slope > d.max_edge_slope:
        log.fatal(
            "edge_too_sharp",
            f"the rise at E0 = {e0:.1f} eV climbs {slope:.1f} edge steps per eV (limit {d.max_edge_slope:.0f}): "
            "a glitch or spike, not an absorption edge",
        )
        return False
    return True


def _resample(
    result: XanesWindow, energy: np.ndarray, values: np.ndarray, d: NormalizationDefaults, log: _Log
) -> None:
    """Interpolate onto the window; pad with the pre-edge level 0 below and the last value above."""
    grid = result.energy
    result.mu = np.interp(grid, energy, values, left=0.0, right=float(values[-1]))
    inside = (grid >= energy[0]) & (grid <= energy[-1])
    result.window_coverage = float(inside.mean())
    if energy[0] > grid[0]:
        log.warn(
            "window_padded_below",
            f"data start at {energy[0]:.1f} eV, {energy[0] - grid[0]:.1f} eV above the window start "
            f"{grid[0]:.1f} eV: padded with the pre-edge level 0",
        )
    if energy[-1] < grid[-1]:
        log.warn(
            "window_padded_above",
            f"data end at {energy[-1]:.1f} eV, {grid[-1] - energy[-1]:.1f} eV below the window end "
            f"{grid[-1]:.1f} eV: padded with the last value",
        )
    missing = 1.0 - result.window_coverage
    if missing > d.max_window_missing:
        log.fatal(
            "window_not_covered",
            f"{100 * missing:.0f}% of the model window {grid[0]:.1f}-{grid[-1]:.1f} eV has no data "
            f"(limit {100 * d.max_window_missing:.0f}%)",
        )

"""Powder XRD simulation: stick patterns from structures and augmented profiles on a Q grid.

Sticks come from pymatgen's ``XRDCalculator`` (kinematic structure factors with atomic
scattering factors). We store them *without* the Lorentz-polarisation factor, so that a
profile can be made at any wavelength: ``I(Q) = |F|^2 m * LP(theta(Q, lambda))``.
Profiles are made at training time with randomised instrument and sample effects
(augmentation), following the idea of Oviedo et al. 2019 (npj Comput. Mater. 5, 60) and
Szymanski et al. 2021 (XRD-AutoAnalyzer, Chem. Mater. 33, 4204).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Reference wavelength of the stick calculation (Cu K-alpha1); it only sets which Q are reachable
# (Q <= 4 pi / lambda = 8.16 1/A), the LP factor is divided out again.
STICK_WAVELENGTH = 1.5406
STICK_Q_RANGE = (0.3, 7.2)  # wider than the classifier grid: room for zero shift and strain


def q_to_two_theta(q: np.ndarray, wavelength: float) -> np.ndarray:
    """Q (1/A) -> 2theta (degrees); NaN where Q is out of reach (Bragg: Q = 4 pi sin(theta) / lambda)."""
    s = np.asarray(q, dtype=float) * wavelength / (4 * math.pi)
    with np.errstate(invalid="ignore"):
        return np.degrees(2 * np.arcsin(np.where(np.abs(s) <= 1, s, np.nan)))


def two_theta_to_q(two_theta: np.ndarray, wavelength: float) -> np.ndarray:
    return 4 * math.pi * np.sin(np.radians(np.asarray(two_theta, dtype=float) / 2)) / wavelength


def lorentz_polarization(q: np.ndarray, wavelength: float) -> np.ndarray:
    """Lorentz-polarisation factor for unpolarised radiation, as pymatgen applies it."""
    theta = np.radians(q_to_two_theta(q, wavelength) / 2)
    return (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))


@dataclass
class StickPattern:
    """Reflections of one structure: Q (1/A), LP-free intensity (max 1), one hkl per reflection."""

    q: np.ndarray
    intensity: np.ndarray
    hkl: np.ndarray  # (n, 3) int16; hexagonal (h, k, i, l) stored as (h, k, l)

    def __len__(self) -> int:
        return len(self.q)


def diffraction_calculator(name: str = "pymatgen", wavelength: float = STICK_WAVELENGTH):
    """pymatgen's ``XRDCalculator`` or the same calculation in Rust (``xrd-rust`` on PyPI, optional)."""
    if name == "pymatgen":
        from pymatgen.analysis.diffraction.xrd import XRDCalculator

        return XRDCalculator(wavelength=wavelength)
    if name == "rust":
        from xrd_rust_calculator import XRDCalculatorRust

        return XRDCalculatorRust(wavelength=wavelength)
    raise ValueError(f"unknown diffraction calculator {name!r} (pymatgen or rust)")


def stick_pattern(structure, *, q_range: tuple[float, float] = STICK_Q_RANGE, calculator: str = "pymatgen") -> StickPattern:
    """Stick pattern of a pymatgen ``Structure`` over ``q_range`` (1/A)."""
    tt_range = tuple(float(t) for t in q_to_two_theta(np.array(q_range), STICK_WAVELENGTH))
    pattern = diffraction_calculator(calculator).get_pattern(structure, scaled=False, two_theta_range=tt_range)
    q = 2 * math.pi / np.asarray(pattern.d_hkls, dtype=float)
    intensity = np.asarray(pattern.y, dtype=float) / lorentz_polarization(q, STICK_WAVELENGTH)
    if len(q) == 0 or not np.isfinite(intensity).all() or intensity.max() <= 0:
        return StickPattern(np.zeros(0), np.zeros(0), np.zeros((0, 3), dtype=np.int16))
    hkl = np.array([_first_hkl(fam) for fam in pattern.hkls], dtype=np.int16).reshape(-1, 3)
    return StickPattern(q, intensity / intensity.max(), hkl)


def _first_hkl(family: list[dict]) -> tuple[int, int, int]:
    hkl = family[0]["hkl"]
    return (hkl[0], hkl[1], hkl[3]) if len(hkl) == 4 else tuple(hkl)


@dataclass
class StickTable:
    """Stick patterns of many structures, stored flat with offsets (one compressed .npz)."""

    ids: np.ndarray  # str: "amcsd:<id>" or "<mp-id>"
    formulas: np.ndarray  # str, reduced formula
    spacegroups: np.ndarray  # int, pymatgen symprec 0.1
    crystal_systems: np.ndarray  # str
    offsets: np.ndarray  # int64, len = n + 1
    q: np.ndarray  # float32
    intensity: np.ndarray  # float32
    hkl: np.ndarray  # int16 (m, 3)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def sticks(self, index: int) -> StickPattern:
        a, b = self.offsets[index], self.offsets[index + 1]
        return StickPattern(self.q[a:b], self.intensity[a:b], self.hkl[a:b])

    def save(self, path: str | Path) -> Path:
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            ids=self.ids.astype(str),
            formulas=self.formulas.astype(str),
            spacegroups=self.spacegroups.astype(np.int16),
            crystal_systems=self.crystal_systems.astype(str),
            offsets=self.offsets.astype(np.int64),
            q=self.q.astype(np.float32),
            # half precision (3 digits) is ample for relative intensities that training perturbs by
            # +-30 %; int8 Miller indices whenever they fit: the table stays small enough to commit
            intensity=self.intensity.astype(np.float16),
            hkl=self.hkl.astype(np.int8 if np.abs(self.hkl).max(initial=0) <= 127 else np.int16),
            info=np.array(json.dumps(self.info)),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> StickTable:
        import json

        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        info = json.loads(str(arrays.pop("info"))) if "info" in arrays else {}
        arrays["intensity"] = arrays["intensity"].astype(np.float32)
        arrays["hkl"] = arrays["hkl"].astype(np.int16)
        return cls(**arrays, info=info)

    @classmethod
    def from_records(cls, records: list[dict], info: dict | None = None) -> StickTable:
        """Records with keys id, formula, spacegroup, crystal_system and a ``sticks`` StickPattern."""
        lengths = [len(r["sticks"]) for r in records]
        cat = lambda key, width: (
            np.concatenate([getattr(r["sticks"], key) for r in records])
            if records
            else np.zeros((0,) + width)
        )
        return cls(
            ids=np.array([r["id"] for r in records], dtype=str),
            formulas=np.array([r["formula"] for r in records], dtype=str),
            spacegroups=np.array([r["spacegroup"] for r in records], dtype=np.int16),
            crystal_systems=np.array([r["crystal_system"] for r in records], dtype=str),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            q=cat("q", ()).astype(np.float32),
            intensity=cat("intensity", ()).astype(np.float32),
            hkl=cat("hkl", (3,)).astype(np.int16).reshape(-1, 3),
            info=dict(info or {}),
        )


# --- augmented profiles ------------------------------------------------------------------------

# K-alpha1, K-alpha2 (A) of lab anodes (Hoelzer et al. 1997 for Cu/Co; Deslattes 2003 for Mo).
LAB_ANODES = {"Cu": (1.54059, 1.54443), "Co": (1.78897, 1.79285), "Mo": (0.70932, 0.71361)}

AUGMENTATION: dict[str, Any] = {
    "p_synchrotron": 0.35,
    "lab_anode_probabilities": {"Cu": 0.8, "Co": 0.1, "Mo": 0.1},
    "p_k_alpha2": 0.7,  # lab only; K-alpha2 / K-alpha1 intensity 0.5
    "synchrotron_wavelength": (0.4, 0.9),
    "lab_two_theta_start": (5.0, 20.0),
    "lab_two_theta_end": (60.0, 130.0),
    "synchrotron_two_theta_start": (1.0, 6.0),
    "synchrotron_two_theta_end": (25.0, 60.0),
    "p_short_range": 0.15,  # extra truncation to 30-70 % of the grid
    "instrument_fwhm_deg": {"lab": (0.03, 0.15), "synchrotron": (0.003, 0.03)},
    "crystallite_size_A": (80.0, 3000.0),  # Scherrer, log-uniform
    "microstrain": (0.0, 0.004),  # FWHM_Q = 2 * eps * Q
    "eta_lorentz": (0.0, 1.0),  # pseudo-Voigt mixing
    "zero_shift_deg": {"lab": 0.05, "synchrotron": 0.01},  # Gaussian sigma
    "sample_displacement_mm": 0.1,  # lab, goniometer radius 240 mm
    "lattice_strain": 0.01,  # isotropic scale of d, uniform +-
    "debye_waller_B": (0.0, 1.5),  # A^2
    "per_peak_log_sigma": (0.0, 0.3),  # random per-reflection intensity factor exp(N(0, s))
    "p_march_dollase": 0.3,
    "march_dollase_r": (0.7, 1.4),
    "background_fraction": (0.0, 0.6),  # of the tallest peak
    "peak_counts": (3.0, 5.5),  # log10 of the tallest peak's counts (Poisson noise)
    "gaussian_noise": (0.0, 0.01),  # sigma, fraction of the tallest peak
    "max_sticks": 300,  # strongest reflections kept per pattern (speed)
    # Share of patterns with no background and no noise (a clean simulated pattern, as the paper's clean
    # protocol and pattern-matching software produce). 0 by default: the draw is skipped, so the random
    # stream of every rendering made before this option is unchanged.
    "p_noise_free": 0.0,
}


def _uniform(rng, bounds):
    return rng.uniform(*bounds)


def _sample_conditions(rng: np.random.Generator, aug: dict) -> dict[str, Any]:
    """Instrument and sample conditions of one synthetic measurement."""
    synchrotron = rng.random() < aug["p_synchrotron"]
    source = "synchrotron" if synchrotron else "lab"
    if synchrotron:
        wavelength, wavelength2 = _uniform(rng, aug["synchrotron_wavelength"]), None
    else:
        anodes = list(aug["lab_anode_probabilities"])
        anode = anodes[rng.choice(len(anodes), p=list(aug["lab_anode_probabilities"].values()))]
        wavelength, wavelength2 = LAB_ANODES[anode]
        if rng.random() >= aug["p_k_alpha2"]:
            wavelength2 = None
    tt_start = _uniform(rng, aug[f"{source}_two_theta_start"])
    tt_end = _uniform(rng, aug[f"{source}_two_theta_end"])
    q_lo, q_hi = two_theta_to_q(np.array([tt_start, min(tt_end, 150.0)]), wavelength)
    if rng.random() < aug["p_short_range"]:
        span = rng.uniform(0.3, 0.7) * 6.0
        q_lo = rng.uniform(0.5, max(0.5, 6.5 - span))
        q_hi = q_lo + span
    conditions = {
        "source": source,
        "wavelength": wavelength,
        "wavelength2": wavelength2,
        "q_range": (float(q_lo), float(q_hi)),
        "instrument_fwhm_deg": _uniform(rng, aug["instrument_fwhm_deg"][source]),
        "crystallite_size_A": float(np.exp(rng.uniform(*np.log(aug["crystallite_size_A"])))),
        "microstrain": _uniform(rng, aug["microstrain"]),
        "eta": _uniform(rng, aug["eta_lorentz"]),
        "zero_shift_deg": rng.normal(0, aug["zero_shift_deg"][source]),
        "displacement_mm": rng.normal(0, aug["sample_displacement_mm"]) if not synchrotron else 0.0,
        "lattice_strain": rng.uniform(-aug["lattice_strain"], aug["lattice_strain"]),
        "debye_waller_B": _uniform(rng, aug["debye_waller_B"]),
        "per_peak_log_sigma": _uniform(rng, aug["per_peak_log_sigma"]),
        "march_dollase_r": _uniform(rng, aug["march_dollase_r"]) if rng.random() < aug["p_march_dollase"] else None,
        "background_fraction": _uniform(rng, aug["background_fraction"]),
        "peak_counts": 10 ** _uniform(rng, aug["peak_counts"]),
        "gaussian_noise": _uniform(rng, aug["gaussian_noise"]),
    }
    if aug.get("p_noise_free", 0.0) and rng.random() < aug["p_noise_free"]:
        conditions.update(background_fraction=0.0, gaussian_noise=0.0, peak_counts=None)
    return conditions


def _march_dollase(hkl: np.ndarray, r: float, rng) -> np.ndarray:
    """March-Dollase factor (Dollase 1986) for a random preferred direction.

    The angle is taken between hkl index vectors as if the reciprocal axes were orthonormal: a
    plausible texture perturbation, not the exact one for non-cubic cells.
    """
    direction = rng.integers(-1, 2, size=3)
    if not direction.any():
        direction[rng.integers(3)] = 1
    h = hkl.astype(float)
    norm = np.linalg.norm(h, axis=1) * np.linalg.norm(direction)
    cos2 = np.divide((h @ direction) ** 2, norm**2, out=np.ones(len(h)), where=norm > 0)
    return (r**2 * cos2 + (1 - cos2) / r) ** -1.5


def _profile_cdf(x: np.ndarray, fwhm: np.ndarray, eta: float) -> np.ndarray:
    """Pseudo-Voigt cumulative distribution at offsets ``x`` from the peak centre (rows: peaks)."""
    from scipy.special import erf

    sigma = (fwhm / (2 * math.sqrt(2 * math.log(2))))[:, None]
    gauss = 0.5 * erf(x / (sigma * math.sqrt(2)))
    if eta <= 0:
        return gauss
    return (1 - eta) * gauss + eta * np.arctan(x / (fwhm / 2)[:, None]) / math.pi


PROFILE_HALF_WIDTH_FWHM = 12.0  # profiles are cut at +-12 FWHM (a Lorentzian keeps 97 % of its area)


def render_peaks(q_grid: np.ndarray, centers: np.ndarray, intensity: np.ndarray, fwhm: np.ndarray, eta: float) -> np.ndarray:
    """Bin means of a sum of pseudo-Voigt peaks (areas ``intensity``) on a uniform ``q_grid``.

    Each peak is integrated exactly over the grid bins (CDF differences), so narrow synchrotron
    peaks come out as a measured scan rebinned onto the grid does, not aliased.
    """
    step = q_grid[1] - q_grid[0]
    first_edge = q_grid[0] - step / 2
    half = math.ceil(PROFILE_HALF_WIDTH_FWHM * fwhm.max() / step) + 1
    start = np.floor((centers - first_edge) / step).astype(np.int32) - half
    columns = start[:, None] + np.arange(2 * half + 2, dtype=np.int32)[None, :]  # edge indices of each window
    # float32 halves the time of erf/arctan; offsets are < 1 1/A, so 1e-7 relative precision is ample
    x = ((first_edge - centers[:, None]) + columns * step).astype(np.float32)
    cdf = _profile_cdf(x, np.asarray(fwhm, dtype=np.float32), eta)
    contrib = np.diff(cdf, axis=1) * np.asarray(intensity, dtype=np.float32)[:, None]
    bins = columns[:, :-1]
    inside = (bins >= 0) & (bins < len(q_grid))
    return np.bincount(bins[inside], weights=contrib[inside], minlength=len(q_grid)) / step


def synthesize_pattern(
    sticks: StickPattern,
    q_grid: np.ndarray,
    rng: np.random.Generator,
    *,
    augmentation: dict[str, Any] | None = None,
    conditions: dict[str, Any] | None = None,
    return_details: bool = False,
):
    """One augmented powder pattern of ``sticks`` on ``q_grid``, preprocessed as a measured one.

    The raw profile (counts with background and noise, zero outside the sampled range) goes through
    ``sfn_stream.core.spectra.finish_on_grid`` (SNIP background, normalisation), as live data does.
    Returns the pattern, or with ``return_details`` a dict with ``pattern``, ``raw``, ``covered``
    and the sampled ``conditions``.
    """
    from sfn_stream.core.spectra import finish_on_grid

    aug = {**AUGMENTATION, **(augmentation or {})}
    cond = conditions or _sample_conditions(rng, aug)
    q_grid = np.asarray(q_grid, dtype=float)
    step = q_grid[1] - q_grid[0]
    edges = np.concatenate([q_grid - step / 2, [q_grid[-1] + step / 2]])
    covered = (q_grid >= cond["q_range"][0]) & (q_grid <= cond["q_range"][1])

    q, intensity, _ = _observed_reflections(sticks, cond, rng, aug, (edges[0], edges[-1]))
    raw = np.zeros(len(q_grid))
    if len(q):
        lam = cond["wavelength"]
        cos_theta = np.sqrt(np.clip(1 - (q * lam / (4 * math.pi)) ** 2, 1e-6, 1))
        fwhm = np.sqrt(
            (2 * math.pi / lam * cos_theta * np.radians(cond["instrument_fwhm_deg"])) ** 2
            + (2 * math.pi * 0.9 / cond["crystallite_size_A"]) ** 2
            + (2 * cond["microstrain"] * q) ** 2
        )
        raw = render_peaks(q_grid, q, intensity, fwhm, cond["eta"])
    raw = raw / max(raw.max(), 1e-12)
    raw = raw + cond["background_fraction"] * _background_shape(q_grid, rng)
    if cond["peak_counts"] is None:  # noise-free (p_noise_free)
        noisy = raw.copy()
    else:
        counts = raw * cond["peak_counts"]
        noisy = rng.poisson(np.clip(counts, 0, None)).astype(float)
        noisy += rng.normal(0, cond["gaussian_noise"] * cond["peak_counts"], len(q_grid))
    noisy = np.where(covered, noisy, 0.0)
    pattern, _ = finish_on_grid(noisy, covered)
    if return_details:
        return {"pattern": pattern, "raw": noisy, "covered": covered, "conditions": cond}
    return pattern


def _observed_reflections(sticks, cond, rng, aug, q_window):
    """Reflection positions and intensities as the sampled instrument would record them (Q at lambda1)."""
    q, intensity, hkl = sticks.q.astype(float), sticks.intensity.astype(float), sticks.hkl
    lam = cond["wavelength"]
    q = q / (1 + cond["lattice_strain"])  # d scaled by (1 + strain)
    intensity = intensity * lorentz_polarization(q, lam) if cond["source"] == "lab" else intensity * _lorentz(q, lam)
    intensity = intensity * np.exp(-cond["debye_waller_B"] * (q / (4 * math.pi)) ** 2 * 2)
    intensity = intensity * np.exp(rng.normal(0, cond["per_peak_log_sigma"], len(q)))
    if cond["march_dollase_r"] is not None:
        intensity = intensity * _march_dollase(hkl, cond["march_dollase_r"], rng)
    if cond["wavelength2"] is not None:
        q = np.concatenate([q, q * cond["wavelength2"] / lam])  # same d, seen at lambda2
        intensity = np.concatenate([intensity, 0.5 * intensity])
    two_theta = q_to_two_theta(q, lam)
    shift = cond["zero_shift_deg"] - np.degrees(2 * cond["displacement_mm"] * np.cos(np.radians(two_theta / 2)) / 240.0)
    q = two_theta_to_q(two_theta + shift, lam)
    keep = np.isfinite(q) & np.isfinite(intensity) & (q > q_window[0] - 0.1) & (q < q_window[1] + 0.1)
    q, intensity = q[keep], intensity[keep]
    if len(q) > aug["max_sticks"]:
        strongest = np.argsort(intensity)[-aug["max_sticks"] :]
        q, intensity = q[strongest], intensity[strongest]
    return q, intensity, None


def _lorentz(q, wavelength):
    """Lorentz factor alone (polarised synchrotron beam, scattering in the vertical plane)."""
    theta = np.radians(q_to_two_theta(q, wavelength) / 2)
    return 1 / (np.sin(theta) ** 2 * np.cos(theta))


def _background_shape(q_grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth positive background with max 1: low-order polynomial + amorphous hump + air scatter."""
    t = (q_grid - q_grid[0]) / (q_grid[-1] - q_grid[0])
    poly = np.polynomial.chebyshev.chebval(2 * t - 1, rng.normal(0, 1, 4) * [1, 0.5, 0.3, 0.15])
    poly = poly - poly.min()
    hump = rng.uniform(0, 2) * np.exp(-0.5 * ((q_grid - rng.uniform(1.0, 3.0)) / rng.uniform(0.2, 0.8)) ** 2)
    air = rng.uniform(0, 2) * np.exp(-(q_grid - q_grid[0]) / rng.uniform(0.2, 1.0))
    shape = poly / max(poly.max(), 1e-12) + hump + air
    return shape / max(shape.max(), 1e-12)

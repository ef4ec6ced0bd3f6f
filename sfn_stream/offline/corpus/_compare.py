"""Agreement between two XANES spectra after E0 alignment (FEFF calibration, reproduction checks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sfn_stream.core.spectra import XANES_WINDOW, find_e0

# The model window relative to E0 (-10 .. +46 eV): agreement is judged where the model looks.
COMPARE_WINDOW = (XANES_WINDOW.start, XANES_WINDOW.stop)


@dataclass(frozen=True)
class SpectrumAgreement:
    pearson_r: float  # over the window, after shifting ``energy`` so that the E0s coincide
    e0: float  # E0 of the compared spectrum, on its own scale
    e0_reference: float
    e0_shift: float  # e0 - e0_reference (eV): how far the compared edge sits from the reference
    rmse: float  # of mu, both spectra divided by their mean over the window's top 20 eV
    n_points: int
    # secondary: the extra shift (eV, added to the E0 alignment) that maximises r, and that r; it
    # separates a misplaced E0 (edge shapes that differ at onset) from features that are wrong
    best_shift: float = float("nan")
    pearson_r_best_shift: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def aligned_agreement(
    energy: np.ndarray,
    mu: np.ndarray,
    ref_energy: np.ndarray,
    ref_mu: np.ndarray,
    window: tuple[float, float] = COMPARE_WINDOW,
) -> SpectrumAgreement:
    """Pearson r of ``mu`` against ``ref_mu`` on the reference grid within ``window`` (eV about E0).

    Each spectrum's E0 is :func:`sfn_stream.core.spectra.find_e0`; the compared spectrum is moved by the
    difference, so only shape is judged. Pearson r ignores scale and offset of mu.
    """
    energy, mu = np.asarray(energy, float), np.asarray(mu, float)
    ref_energy, ref_mu = np.asarray(ref_energy, float), np.asarray(ref_mu, float)
    e0, e0_ref = find_e0(energy, mu), find_e0(ref_energy, ref_mu)
    shifted = energy - (e0 - e0_ref)
    inside = (ref_energy >= e0_ref + window[0]) & (ref_energy <= e0_ref + window[1])
    inside &= (ref_energy >= shifted[0]) & (ref_energy <= shifted[-1])
    grid = ref_energy[inside]
    if len(grid) < 10:
        raise ValueError(f"only {len(grid)} reference points overlap the window {window} eV about E0")
    ours, theirs = np.interp(grid, shifted, mu), ref_mu[inside]
    top = grid >= grid[-1] - 20.0
    scaled = ours / ours[top].mean() - theirs / theirs[top].mean()
    best_shift, best_r = _best_shift(grid, shifted, mu, theirs)
    return SpectrumAgreement(
        pearson_r=float(np.corrcoef(ours, theirs)[0, 1]),
        e0=float(e0),
        e0_reference=float(e0_ref),
        e0_shift=float(e0 - e0_ref),
        rmse=float(np.sqrt(np.mean(scaled**2))),
        n_points=int(len(grid)),
        best_shift=best_shift,
        pearson_r_best_shift=best_r,
    )


def _best_shift(grid, energy, mu, reference, span: float = 8.0, step: float = 0.1) -> tuple[float, float]:
    """Shift within +-``span`` eV that maximises Pearson r (the grid is clipped to overlap at each shift)."""
    best = (0.0, -1.0)
    for shift in np.arange(-span, span + step / 2, step):
        moved = energy + shift
        inside = (grid >= moved[0]) & (grid <= moved[-1])
        if inside.sum() < 10:
            continue
        r = float(np.corrcoef(np.interp(grid[inside], moved, mu), reference[inside])[0, 1])
        if r > best[1]:
            best = (float(shift), r)
    return best

"""Material spectra from site spectra, and the energy scale of a FEFF calculation.

Averaging: site spectra of symmetry-inequivalent absorbers weighted by multiplicity, as Materials
Project reports one XANES per material (Mathew et al., Sci. Data 5, 180151 (2018)); the corpus and
the OmniXAS Cu training set both average with :func:`average_site_spectra`.

Energy scale: FEFF's absolute energies are off by several eV and the offset depends on the settings.
Experimenters calibrate the monochromator so that a metal foil's edge (its first inflection point)
sits at its tabulated energy; we do the same with FEFF's own metal spectrum computed at the campaign's
settings: ``energy_offset = E_first_inflection(FEFF metal) - E_K(tabulated)``, and a calibrated scale
is ``E - energy_offset``.
Spectra keep FEFF's native scale in the corpus; the offset goes with them (``preprocess_xanes(...,
energy_offset=...)`` applies it), so that the correction stays visible and replaceable.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sfn_stream.core.simulation import metal_energy_offset
from sfn_stream.core.spectra import find_e0, find_first_inflection, k_edge_energy


class IncompleteSpectrum(ValueError):
    """Some symmetry-inequivalent sites of the absorber have no computed spectrum."""


def average_site_spectra(
    groups: Sequence[Sequence[int]],
    site_spectra: Mapping[int, tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Multiplicity-weighted mean spectrum over the ``groups`` of equivalent absorber sites.

    ``site_spectra`` maps site index -> (energy, mu) for the sites that were computed. Every group
    needs at least one; several spectra within a group (near-equivalent sites computed separately)
    are averaged with equal weight. The grid is the native grid of the first spectrum, clipped to the
    energy range common to all spectra (no extrapolation). Returns the grid, the mean, the weights
    (group sizes) and the sites used per group.
    """
    if not groups:
        raise IncompleteSpectrum("no site spectra to average")
    used = []
    for group in groups:
        present = tuple(i for i in group if i in site_spectra)
        if not present:
            raise IncompleteSpectrum(f"no spectrum for any of the equivalent sites {list(group)}")
        used.append(present)
    all_spectra = [site_spectra[i] for present in used for i in present]
    low = max(float(np.min(energy)) for energy, _ in all_spectra)
    high = min(float(np.max(energy)) for energy, _ in all_spectra)
    reference = np.asarray(all_spectra[0][0], dtype=float)
    grid = reference[(reference >= low - 1e-9) & (reference <= high + 1e-9)]
    total = np.zeros_like(grid)
    weights = tuple(len(group) for group in groups)
    for weight, present in zip(weights, used):
        group_mu = np.mean([np.interp(grid, *site_spectra[i]) for i in present], axis=0)
        total += weight * group_mu
    return grid, total / sum(weights), weights, tuple(used)


def material_spectrum(groups: Sequence[Sequence[int]], site_results: Mapping[int, dict]) -> dict:
    """Average of the computed representative sites (``group[0]``) of every group of equivalent sites.

    ``site_results`` maps a site index to its FEFF result (``energy``, ``mu``, ``feff_seconds``).
    """
    missing = [group[0] for group in groups if group[0] not in site_results]
    if missing:
        raise IncompleteSpectrum(f"no spectrum for sites {missing}")
    representatives = {g[0]: (np.asarray(site_results[g[0]]["energy"]), np.asarray(site_results[g[0]]["mu"]))
                       for g in groups}
    energy, mu, multiplicities, _ = average_site_spectra(groups, representatives)
    return {
        "energy": energy,
        "mu": mu,
        "e0": float(find_e0(energy, mu)),
        "site_indices": [int(g[0]) for g in groups],
        "multiplicities": list(multiplicities),
        "feff_seconds": float(sum(site_results[g[0]].get("feff_seconds", 0.0) for g in groups)),
        # sites made with fallback settings after the campaign's own failed (see _items.compute_feff_site)
        "fallback_sites": sum(bool(site_results[g[0]].get("failed_attempts")) for g in groups),
    }


def energy_offset(energy: np.ndarray, mu: np.ndarray, element: str) -> dict:
    """Offset of a FEFF metal spectrum from the tabulated K edge.

    ``energy_offset`` uses the first inflection point (:func:`find_first_inflection`), the convention of
    the tabulated edges (Bearden & Burr 1967) and the point the preprocessing aligns measured reference
    foils on. The maximum of the smoothed derivative (:func:`find_e0`, ``offset_max_derivative``) is
    recorded too, but not used: on FEFF metal spectra the Fermi-level shoulder and the main rise have
    derivative peaks of similar height, and which one wins moves with the settings (fcc Cu: 8988.4 eV at
    FMS 4 A, 8995.1 eV at FMS 5 A without SCF; the first inflection stays at 8988.4 eV).
    """
    e_tab = k_edge_energy(element)
    e0 = float(find_e0(energy, mu))
    offset = metal_energy_offset(energy, mu, element)
    return {"element": element, "tabulated_edge": e_tab, "feff_first_inflection": e_tab + offset,
            "energy_offset": offset, "feff_e0": e0, "offset_max_derivative": e0 - e_tab}


def edge_positions(energy: np.ndarray, mu: np.ndarray) -> dict[str, float]:
    """Three definitions of the edge energy (eV, on the spectrum's own scale).

    ``half_height``: first energy where mu reaches 0.5 (FEFF normalises mu to the atomic edge step,
    so this is half the step). It is the most stable of the three for comparing compounds: the
    derivative-based points jump between peaks when the rise has structure (CuO: the maximum
    derivative sits 9 eV above the first inflection).
    """
    energy, mu = np.asarray(energy, float), np.asarray(mu, float)
    above = np.flatnonzero(mu >= 0.5)
    half = float("nan")
    if len(above) and above[0] > 0:
        i = above[0]
        half = float(np.interp(0.5, [mu[i - 1], mu[i]], [energy[i - 1], energy[i]]))
    return {"max_derivative": float(find_e0(energy, mu)), "first_inflection": float(find_first_inflection(energy, mu)),
            "half_height": half}

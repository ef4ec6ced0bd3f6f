"""Optional XANES check of the best candidates: FEFF10 spectra compared with the measured windows.

For each candidate and each element with a measured window, FEFF (the project's runner,
``sfn_stream.core.simulation.run_feff``) computes the K edge of up to ``MAX_SITES`` inequivalent
sites (multiplicity-weighted mean). Settings are a fast variant of the OmniXAS ones (no
self-consistent potentials, FMS 5 A, half the energy points): enough to tell coordination geometries apart, not for
absolute edge positions. The calculated spectrum is therefore aligned on the measured E0 before
both are compared on the model window: the check scores the shape (coordination, geometry), the
edge position having already entered through the oxidation states.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

XANES_TOP = 3
MAX_SITES = 2
XANES_TEMPERATURE = 0.05  # agreement difference of 0.05 = one e-fold
FAST_FEFF = dict(scf_radius=None, fms_radius=5.0, cluster_radius=6.0,
                 egrid=("k_grid -1 0 0.08", "k_grid 0 6 0.08"))


def xanes_agreement(measured, calculated) -> float:
    """1 - mean |difference| / mean |measured| over the window (1 = identical; clipped at 0)."""
    a, b = np.asarray(measured.mu, float), np.asarray(calculated.mu, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 10:
        return math.nan
    return float(max(0.0, 1 - np.mean(np.abs(a[ok] - b[ok])) / max(np.mean(np.abs(a[ok])), 1e-9)))


def _site_groups(structure, element: str) -> list[list[int]]:
    from sfn_stream.core.chemistry import equivalent_sites

    groups = equivalent_sites(structure, element)
    return sorted(groups, key=len, reverse=True)[:MAX_SITES]


def calculated_window(structure, element: str, measured, workdir: Path):
    """FEFF window of ``element`` in ``structure``, edge aligned on the measured E0."""
    from sfn_stream.core.simulation import FeffSettings, feff_input, run_feff
    from sfn_stream.core.spectra import find_e0, preprocess_xanes

    settings = FeffSettings(**FAST_FEFF)
    groups = _site_groups(structure, element)
    if not groups:
        raise ValueError(f"{element} is not in the candidate")
    grid, spectra, weights = None, [], []
    for k, group in enumerate(groups):
        spectrum = run_feff(feff_input(structure, group[0], settings), workdir / f"{element}_{k}", settings)
        if grid is None:
            grid = spectrum.energy
        spectra.append(np.interp(grid, spectrum.energy, spectrum.mu))
        weights.append(len(group))
    mu = np.average(spectra, axis=0, weights=weights)
    offset = find_e0(grid, mu) - measured.e0
    return preprocess_xanes(grid, mu, absorber=element, energy_offset=offset)


def add_xanes_agreement(candidates, request) -> list[str]:
    """Add ``xanes_agreement`` to the top candidates' components and re-rank them; returns notes."""
    from sfn_stream.core.simulation import FeffRunError

    notes = []
    measured = {el: w for el, w in (request.xanes or {}).items() if getattr(w, "usable", False)}
    if not measured:
        return ["--xanes-check: no usable measured XANES window given; check skipped"]
    for candidate in candidates[:XANES_TOP]:
        values = []
        with tempfile.TemporaryDirectory(prefix="sfn-xanes-check-") as tmp:
            for element, window in measured.items():
                try:
                    calc = calculated_window(candidate.structure, element, window, Path(tmp))
                    values.append(xanes_agreement(window, calc))
                except (FeffRunError, ValueError) as err:
                    notes.append(f"{candidate.formula} ({candidate.template_id}): XANES check of {element} failed: {err}")
        values = [v for v in values if math.isfinite(v)]
        if values:
            agreement = float(np.mean(values))
            candidate.components["xanes_agreement"] = agreement
            candidate.components["xanes_term"] = agreement / XANES_TEMPERATURE
            candidate.score += agreement / XANES_TEMPERATURE
    checked = candidates[:XANES_TOP]
    checked.sort(key=lambda c: -c.score)
    candidates[:XANES_TOP] = checked
    for rank, c in enumerate(candidates, 1):
        c.rank = rank
    notes.append(f"XANES check (FEFF, {FAST_FEFF}) on the top {min(XANES_TOP, len(candidates))} candidates")
    return notes

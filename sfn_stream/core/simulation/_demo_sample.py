"""Build the demo sample file: FEFF10 XANES and pymatgen PXRD of one structure, computed here."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from ._feff import OMNIXAS, FeffSettings, feff_input, read_xmu, run_feff
from ._xrd import stick_pattern
from .offsets import metal_energy_offset


def build_demo_sample(structure, *, name: str, absorber: str, workdir: str | Path, metal_xmu: str | Path,
                      truth: dict, settings: FeffSettings = OMNIXAS, wavelength: float = 1.5406,
                      reuse: bool = True) -> dict:
    """Everything the simulated beamline replays, as one JSON-ready dict.

    The spectrum is the multiplicity-weighted average over symmetry-inequivalent absorber sites.
    ``reuse`` takes an existing ``xmu.dat`` in a site's folder instead of running FEFF again.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    symmetrized = SpacegroupAnalyzer(structure, symprec=0.1).get_symmetrized_structure()
    groups = [g for g in symmetrized.equivalent_indices if structure[g[0]].specie.symbol == absorber]
    spectra, weights, seconds = [], [], []
    for group in groups:
        site_dir = Path(workdir) / f"site_{group[0]:03d}"
        if reuse and (site_dir / "xmu.dat").is_file():
            energy, mu, _ = read_xmu(site_dir / "xmu.dat")
        else:
            result = run_feff(feff_input(structure, group[0], settings), site_dir, settings)
            energy, mu, seconds_site = result.energy, result.mu, result.seconds
            seconds.append(seconds_site)
        spectra.append((energy, mu))
        weights.append(len(group))
    grid = spectra[0][0]
    mu = sum(w * np.interp(grid, e, m) for (e, m), w in zip(spectra, weights)) / sum(weights)
    sticks = stick_pattern(structure)
    return {
        "name": name,
        "formula": structure.composition.reduced_formula,
        "cif": structure.to(fmt="cif"),
        "truth": truth,
        "xanes": {"absorber": absorber, "edge": "K", "energy": grid.round(4).tolist(), "mu": mu.round(6).tolist(),
                  "energy_offset": round(metal_energy_offset(*read_xmu(metal_xmu)[:2], absorber), 4),
                  "sites": [g[0] for g in groups], "multiplicities": weights},
        "xrd": {"wavelength": wavelength, "q": sticks.q.round(5).tolist(),
                "intensity": sticks.intensity.round(5).tolist(), "hkl": sticks.hkl.tolist()},
        "provenance": {
            "xanes": f"FEFF10 via feff10-rs, settings {settings.to_dict()}; energy offset from FEFF's own fcc "
                     f"{absorber} metal with the same settings",
            "xrd": "pymatgen XRDCalculator stick pattern in Q (Lorentz-polarisation factor divided out); "
                   f"measured at {wavelength} A on the simulated beamline",
            "created": datetime.date.today().isoformat(),
            "feff_seconds": [round(s, 1) for s in seconds],
        },
    }

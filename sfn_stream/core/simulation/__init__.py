"""Simulation of spectra and diffraction patterns (pymatgen, FEFF); no Bluesky or Tiled."""

from ._demo_sample import build_demo_sample
from ._feff import (
    OMNIXAS,
    XANES_STAGES,
    FeffRunError,
    FeffSettings,
    FeffSpectrum,
    FeffTimeout,
    feff_input,
    read_xmu,
    run_feff,
)
from ._xrd import (
    AUGMENTATION,
    LAB_ANODES,
    StickPattern,
    StickTable,
    diffraction_calculator,
    lorentz_polarization,
    q_to_two_theta,
    render_peaks,
    stick_pattern,
    synthesize_pattern,
)
from .offsets import metal_energy_offset

__all__ = [
    "OMNIXAS",
    "XANES_STAGES",
    "FeffRunError",
    "FeffSettings",
    "FeffSpectrum",
    "FeffTimeout",
    "build_demo_sample",
    "feff_input",
    "metal_energy_offset",
    "read_xmu",
    "run_feff",
    "AUGMENTATION",
    "LAB_ANODES",
    "StickPattern",
    "StickTable",
    "diffraction_calculator",
    "lorentz_polarization",
    "q_to_two_theta",
    "render_peaks",
    "stick_pattern",
    "synthesize_pattern",
]

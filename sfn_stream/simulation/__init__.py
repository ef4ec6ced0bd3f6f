"""Simulation of spectra and diffraction patterns (pymatgen, FEFF); no Bluesky or Tiled."""

from ._xrd import (
    AUGMENTATION,
    LAB_ANODES,
    StickPattern,
    StickTable,
    lorentz_polarization,
    q_to_two_theta,
    render_peaks,
    stick_pattern,
    synthesize_pattern,
)

__all__ = [
    "AUGMENTATION",
    "LAB_ANODES",
    "StickPattern",
    "StickTable",
    "lorentz_polarization",
    "q_to_two_theta",
    "render_peaks",
    "stick_pattern",
    "synthesize_pattern",
]

"""The demo sample: spectra the project simulated itself (FEFF10 XANES, pymatgen PXRD), shipped as one file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core.spectra import preprocess_xanes

DEMO_SAMPLE_FILE = "demo_sample.json"


@dataclass
class DemoSample:
    name: str
    formula: str
    absorber: str
    cif: str
    feff_energy: np.ndarray  # FEFF's own absolute scale
    feff_mu: np.ndarray
    feff_energy_offset: float  # E0(FEFF metal) - tabulated edge, same settings
    wavelength: float
    sticks_q: np.ndarray  # 1/A
    sticks_intensity: np.ndarray  # Lorentz-polarisation factor divided out
    truth: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def replay_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised mu on the calibrated energy scale, as the XANES detector replays it."""
        window = preprocess_xanes(self.feff_energy, self.feff_mu, absorber=self.absorber,
                                  energy_offset=self.feff_energy_offset)
        return np.asarray(window.energy_full), np.asarray(window.norm_full)


def load_demo_sample(path: str | Path | None = None) -> DemoSample:
    if path is None:
        text = resources.files("sfn_stream.data").joinpath(DEMO_SAMPLE_FILE).read_text()
    else:
        text = Path(path).read_text()
    raw = json.loads(text)
    return DemoSample(
        name=raw["name"], formula=raw["formula"], absorber=raw["xanes"]["absorber"], cif=raw["cif"],
        feff_energy=np.asarray(raw["xanes"]["energy"]), feff_mu=np.asarray(raw["xanes"]["mu"]),
        feff_energy_offset=float(raw["xanes"]["energy_offset"]), wavelength=float(raw["xrd"]["wavelength"]),
        sticks_q=np.asarray(raw["xrd"]["q"]), sticks_intensity=np.asarray(raw["xrd"]["intensity"]),
        truth=raw.get("truth", {}), provenance=raw.get("provenance", {}),
    )

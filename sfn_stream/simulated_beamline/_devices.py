"""A simulated beamline built from ``ophyd.sim``: monochromator, XANES ion chambers, powder detector.

The XANES detector replays a normalised spectrum as a transmission measurement would see it:
I0 from the incident flux, It after the sample (pre-edge absorption falling as E^-3 plus the
edge jump times the normalised spectrum), Iref after a metal reference foil, with Poisson
counting noise. A monochromator calibration error (``mono_offset``) can be simulated; the
reference-foil channel lets the preprocessing correct it, as at a real beamline.
"""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis
from ophyd.status import DeviceStatus

from sfn_stream.core.spectra import k_edge_energy


def monochromator(name: str = "mono_energy", energy: float = 8979.0) -> SynAxis:
    """A simulated monochromator energy axis (eV); its data key is ``mono_energy``."""
    return SynAxis(name=name, value=energy, labels={"motors"})


def _metal_foil_mu(energy: np.ndarray, edge: float) -> np.ndarray:
    """A reference metal foil's normalised edge: an arctan step whose inflection is the tabulated edge."""
    return 0.5 + np.arctan((energy - edge) / 1.5) / np.pi


class XanesDetector(Device):
    """Ion chambers I0, It, Iref in transmission geometry, replaying a normalised spectrum."""

    i0 = Cpt(Signal, value=0.0, kind="hinted")
    it = Cpt(Signal, value=0.0, kind="hinted")
    iref = Cpt(Signal, value=0.0, kind="normal")
    exposure_time = Cpt(Signal, value=1.0, kind="config")

    def __init__(self, *args, energy_axis: SynAxis, flux: float = 2e5, edge_jump: float = 1.0,
                 pre_edge_absorption: float = 0.6, mono_offset: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._energy_axis = energy_axis
        self._flux, self._jump, self._background = flux, edge_jump, pre_edge_absorption
        self._mono_offset = mono_offset
        self._rng = np.random.default_rng(seed)
        self._spectrum: tuple[np.ndarray, np.ndarray] | None = None
        self._edge = None

    def load_spectrum(self, energy, mu_norm, absorber: str) -> None:
        """Replay ``mu_norm`` (normalised, calibrated energies in eV) for the given absorber."""
        order = np.argsort(energy)
        self._spectrum = (np.asarray(energy, float)[order], np.asarray(mu_norm, float)[order])
        self._edge = k_edge_energy(absorber)

    def trigger(self):
        if self._spectrum is None:
            raise RuntimeError("XanesDetector has no spectrum loaded: call load_spectrum() first")
        true_energy = float(self._energy_axis.readback.get()) + self._mono_offset
        energy, norm = self._spectrum
        mu_norm = np.interp(true_energy, energy, norm, left=0.0, right=norm[-1])
        mu_sample = self._background * (self._edge / true_energy) ** 3 + self._jump * mu_norm
        mu_foil = 0.3 * (self._edge / true_energy) ** 3 + 1.0 * _metal_foil_mu(np.array(true_energy), self._edge)
        counts_i0 = self._flux * self.exposure_time.get()
        i0 = self._rng.poisson(counts_i0)
        it = self._rng.poisson(i0 * np.exp(-mu_sample))
        iref = self._rng.poisson(max(it, 1) * np.exp(-float(mu_foil)))
        self.i0.put(float(i0))
        self.it.put(float(max(it, 1)))
        self.iref.put(float(max(iref, 1)))
        status = DeviceStatus(self)
        status.set_finished()
        return status


class PowderDetector(Device):
    """A 1D powder detector (counts on a fixed 2theta grid) replaying a stick pattern."""

    pattern = Cpt(Signal, value=np.zeros(1), kind="hinted")
    tth = Cpt(Signal, value=np.zeros(1), kind="config")
    wavelength = Cpt(Signal, value=1.5406, kind="config")

    def __init__(self, *args, two_theta=None, wavelength: float = 1.5406, fwhm_deg: float = 0.12,
                 peak_counts: float = 2e4, background_counts: float = 300.0, seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        grid = np.arange(10.0, 100.0, 0.02) if two_theta is None else np.asarray(two_theta, float)
        self.tth.put(grid)
        self.wavelength.put(float(wavelength))
        self._fwhm, self._peak, self._background = fwhm_deg, peak_counts, background_counts
        self._rng = np.random.default_rng(seed)
        self._profile = None

    def load_sticks(self, q, intensity) -> None:
        """Replay a stick pattern: Q (1/A) and intensities without the Lorentz-polarisation factor,
        which is applied here at this detector's wavelength."""
        from sfn_stream.core.simulation import lorentz_polarization, q_to_two_theta

        q = np.asarray(q, float)
        two_theta = q_to_two_theta(q, self.wavelength.get())
        reachable = np.isfinite(two_theta)
        two_theta = two_theta[reachable]
        sticks = np.asarray(intensity, float)[reachable] * lorentz_polarization(q[reachable], self.wavelength.get())
        grid = self.tth.get()
        offsets = grid[:, None] - two_theta[None, :]
        gamma, sigma = self._fwhm / 2, self._fwhm / 2.3548
        profile = 0.5 * gamma**2 / (offsets**2 + gamma**2) + 0.5 * np.exp(-0.5 * (offsets / sigma) ** 2)
        self._profile = profile @ (sticks / sticks.max())  # pseudo-Voigt, eta = 0.5

    def trigger(self):
        if self._profile is None:
            raise RuntimeError("PowderDetector has no pattern loaded: call load_sticks() first")
        grid = self.tth.get()
        background = self._background * (1.0 + 0.6 * np.exp(-(grid - 10.0) / 25.0))  # air scatter at low angle
        expected = background + self._peak * self._profile
        self.pattern.put(self._rng.poisson(expected).astype(float))
        status = DeviceStatus(self)
        status.set_finished()
        return status

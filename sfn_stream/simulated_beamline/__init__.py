"""A simulated beamline (ophyd.sim) and plans that follow sfn-stream's metadata convention."""

from ._corpus_sample import (
    CorpusSample,
    corpus_beamline,
    edge_acquisition,
    load_corpus_sample,
    load_demo_agent_sample,
    measure_edge,
    measure_sample,
    multi_metal_materials,
)
from ._devices import PowderDetector, XanesDetector, monochromator
from ._plans import DEFAULT_REGIONS, powder_scan, xanes_energies, xanes_scan
from ._sample import DemoSample, load_demo_sample

__all__ = [
    "DEFAULT_REGIONS",
    "CorpusSample",
    "DemoSample",
    "PowderDetector",
    "XanesDetector",
    "corpus_beamline",
    "edge_acquisition",
    "load_corpus_sample",
    "load_demo_agent_sample",
    "load_demo_sample",
    "measure_edge",
    "measure_sample",
    "monochromator",
    "multi_metal_materials",
    "powder_scan",
    "xanes_energies",
    "xanes_scan",
]


def simulated_beamline(sample: DemoSample, *, seed: int = 0, mono_offset: float = 0.0):
    """Monochromator, XANES detector and powder detector loaded with ``sample``'s spectra."""
    from sfn_stream.core.spectra import k_edge_energy

    mono = monochromator(energy=k_edge_energy(sample.absorber))
    xanes_det = XanesDetector(name="xas", energy_axis=mono, mono_offset=mono_offset, seed=seed)
    xanes_det.load_spectrum(*sample.replay_spectrum(), absorber=sample.absorber)
    powder = PowderDetector(name="powder", wavelength=sample.wavelength, seed=seed + 1)
    powder.load_sticks(sample.sticks_q, sample.sticks_intensity)
    return mono, xanes_det, powder

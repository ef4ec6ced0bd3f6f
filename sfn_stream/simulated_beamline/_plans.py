"""Plans that carry sfn-stream's metadata convention (``md['sfn']``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from bluesky import plans as bp

from sfn_stream.core.spectra import k_edge_energy

# (start, stop, step) in eV relative to the tabulated edge: a 200-point step-scan XANES.
DEFAULT_REGIONS: tuple[tuple[float, float, float], ...] = ((-150.0, -20.0, 5.0), (-20.0, 30.0, 0.35),
                                                           (30.0, 150.0, 3.9))


def xanes_energies(element: str, regions: Sequence[tuple[float, float, float]] = DEFAULT_REGIONS) -> np.ndarray:
    """Absolute energies (eV) of a region scan around ``element``'s K edge."""
    edge = k_edge_energy(element)
    points = [np.arange(start, stop, step) for start, stop, step in regions]
    return edge + np.concatenate(points)


def xanes_scan(detector, energy_axis, element: str, *, composition: str | None = None,
               sample: str | None = None, regions=DEFAULT_REGIONS, md: dict | None = None):
    """Step scan across ``element``'s K edge, announcing itself to sfn-stream."""
    sfn = {"kind": "xanes", "element": element, "edge": "K"}
    if composition:
        sfn["composition"] = composition
    if sample:
        sfn["sample"] = sample
    metadata = {"plan_name": "xanes_scan", "sfn": sfn, **(md or {})}
    return (yield from bp.list_scan([detector], energy_axis, list(xanes_energies(element, regions)), md=metadata))


def powder_scan(detector, *, num: int = 1, sample: str | None = None, composition: str | None = None,
                md: dict | None = None):
    """Count ``num`` powder frames, announcing a PXRD run (wavelength from the detector)."""
    sfn = {"kind": "xrd", "axis": "2theta", "wavelength": float(detector.wavelength.get())}
    if sample:
        sfn["sample"] = sample
    if composition:
        sfn["composition"] = composition
    metadata = {"plan_name": "powder_scan", "sfn": sfn, **(md or {})}
    return (yield from bp.count([detector], num=num, md=metadata))

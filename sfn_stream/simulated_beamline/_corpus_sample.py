"""Corpus materials as samples of the simulated beamline: every computed 3d-metal edge (FEFF10) and the
stick pattern of one material of ``data/corpus``, and plans that measure them edge by edge.

    sample = load_corpus_sample("amcsd-01234")
    mono, xas, powder = corpus_beamline(sample)
    RE(measure_edge(sample, xas, mono, "Fe"))            # loads Fe's spectrum, scans across the Fe K edge
    RE(measure_sample(sample, mono, xas, powder, optimizer))   # PXRD, then the agent's edges until done

Reading the corpus needs pandas with pyarrow (the ``data`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bluesky import preprocessors as bpp

from sfn_stream.core import paths
from sfn_stream.core.spectra import k_edge_energy, preprocess_xanes

from ._devices import PowderDetector, XanesDetector, monochromator
from ._plans import powder_scan, xanes_scan

METALS_3D = ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn")
WAVELENGTH = 1.5406  # Cu K-alpha: the stick patterns are LP-free, so any wavelength replays
DEMO_AGENT_SAMPLE_FILE = "demo_agent_sample.json"


@dataclass
class CorpusSample:
    """One corpus material: its FEFF10 spectra per 3d-metal edge, its sticks and its labels."""

    material_id: str
    formula: str
    elements: list[str]
    spectra: dict[str, tuple[np.ndarray, np.ndarray, float]]  # metal -> (FEFF energy, mu, energy offset)
    sticks_q: np.ndarray
    sticks_intensity: np.ndarray
    wavelength: float = WAVELENGTH
    truth: dict[str, Any] = field(default_factory=dict)
    elements_only: bool = False  # tell the plugin the elements, not the formula (the usual case at a beamline)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def metals(self) -> list[str]:
        return sorted(self.spectra, key=METALS_3D.index)

    @property
    def composition(self) -> str:
        """What the runs tell the plugin of the sample: its formula, or its element list (``elements_only``)."""
        return ",".join(self.elements) if self.elements_only else self.formula

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every edge's FEFF spectrum, the sticks, the labels and where they came from."""
        return {"material_id": self.material_id, "formula": self.formula, "elements": list(self.elements),
                "spectra": {m: {"energy": e.tolist(), "mu": mu.tolist(), "energy_offset": offset}
                            for m, (e, mu, offset) in self.spectra.items()},
                "xrd": {"wavelength": self.wavelength, "q": self.sticks_q.tolist(),
                        "intensity": self.sticks_intensity.tolist()},
                "truth": self.truth, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, elements_only: bool = False) -> CorpusSample:
        spectra = {m: (np.asarray(v["energy"], float), np.asarray(v["mu"], float), float(v["energy_offset"]))
                   for m, v in raw["spectra"].items()}
        return cls(material_id=raw["material_id"], formula=raw["formula"], elements=list(raw["elements"]),
                   spectra=spectra, sticks_q=np.asarray(raw["xrd"]["q"], float),
                   sticks_intensity=np.asarray(raw["xrd"]["intensity"], float),
                   wavelength=float(raw["xrd"]["wavelength"]), truth=raw.get("truth", {}),
                   elements_only=elements_only, provenance=raw.get("provenance", {}))

    def replay_spectrum(self, metal: str) -> tuple[np.ndarray, np.ndarray]:
        """Normalised mu of ``metal``'s edge on the calibrated energy scale, as the XANES detector replays it."""
        energy, mu, offset = self.spectra[metal]
        window = preprocess_xanes(energy, mu, absorber=metal, energy_offset=offset)
        return np.asarray(window.energy_full), np.asarray(window.norm_full)


def multi_metal_materials(among=None, corpus_dir: str | Path = paths.CORPUS_DIR, min_metals: int = 2) -> list[str]:
    """Material ids with a FEFF10 spectrum at every one of their (at least ``min_metals``) 3d-metal edges
    (``among``: only those of these ids, e.g. a model's test split)."""
    import pandas as pd

    corpus_dir = Path(corpus_dir)
    materials = pd.read_parquet(corpus_dir / "materials.parquet", columns=["material_id", "metals"])
    absorbers = pd.read_parquet(corpus_dir / "absorbers.parquet", columns=["material_id", "element",
                                                                            "spectrum_source", "mu"])
    computed = absorbers[(absorbers.spectrum_source == "feff10") & absorbers.mu.map(lambda m: m is not None
                                                                                     and len(m) > 0)]
    edges = computed.groupby("material_id").element.apply(set).to_dict()
    out = []
    for row in materials.itertuples(index=False):
        metals = set(row.metals)
        if len(metals) >= min_metals and metals <= edges.get(row.material_id, set()) and (among is None or row.material_id in among):
            out.append(row.material_id)
    return out


def load_corpus_sample(material_id: str, corpus_dir: str | Path = paths.CORPUS_DIR) -> CorpusSample:
    """A corpus material as a sample (KeyError when the corpus has no such material)."""
    import pandas as pd

    from sfn_stream.core.predict import parse_elements
    from sfn_stream.core.simulation import StickTable

    corpus_dir = Path(corpus_dir)
    materials = pd.read_parquet(corpus_dir / "materials.parquet")
    rows = materials[materials.material_id == material_id]
    if rows.empty:
        raise KeyError(f"no material {material_id!r} in {corpus_dir}")
    material = rows.iloc[0]
    absorbers = pd.read_parquet(corpus_dir / "absorbers.parquet")
    spectra, truth = {}, {"crystal_system": material.crystal_system, "metals": {}}
    for row in absorbers[absorbers.material_id == material_id].itertuples(index=False):
        truth["metals"][row.element] = {"oxidation_state": _int_or_none(row.oxidation_state_class),
                                        "coordination_number": _int_or_none(row.cn_class)}
        if row.spectrum_source == "feff10" and row.mu is not None and len(row.mu):
            spectra[row.element] = (np.asarray(row.energy, float), np.asarray(row.mu, float), float(row.energy_offset))
    table = StickTable.load(corpus_dir / "sticks.npz")
    index = int(np.flatnonzero(table.ids == material_id)[0]) if material_id in set(table.ids) else None
    sticks = table.sticks(index) if index is not None else None
    return CorpusSample(material_id=material_id, formula=str(material.formula),
                        elements=list(parse_elements(str(material.formula))[0]), spectra=spectra,
                        sticks_q=np.asarray(sticks.q if sticks is not None else [], float),
                        sticks_intensity=np.asarray(sticks.intensity if sticks is not None else [], float),
                        truth=truth)


def load_demo_agent_sample(*, elements_only: bool = True) -> CorpusSample:
    """The demo's multi-metal sample, shipped with the package (``sfn_stream/data/demo_agent_sample.json``: a
    test-split corpus material, exported with :meth:`CorpusSample.to_dict`), so the demo needs no corpus."""
    import json
    from importlib import resources

    raw = json.loads(resources.files("sfn_stream.data").joinpath(DEMO_AGENT_SAMPLE_FILE).read_text())
    return CorpusSample.from_dict(raw, elements_only=elements_only)


def corpus_beamline(sample: CorpusSample, *, seed: int = 0):
    """Monochromator, XANES detector (loaded with the sample's first edge) and powder detector."""
    first = sample.metals[0]
    mono = monochromator(energy=k_edge_energy(first))
    xas = XanesDetector(name="xas", energy_axis=mono, seed=seed)
    xas.load_spectrum(*sample.replay_spectrum(first), absorber=first)
    powder = PowderDetector(name="powder", wavelength=sample.wavelength, seed=seed + 1)
    if len(sample.sticks_q):
        powder.load_sticks(sample.sticks_q, sample.sticks_intensity)
    return mono, xas, powder


def measure_edge(sample: CorpusSample, xas: XanesDetector, mono, metal: str, *, name: str | None = None):
    """Put ``metal``'s edge of the sample in the beam and scan across it; returns the run's uid."""
    xas.load_spectrum(*sample.replay_spectrum(metal), absorber=metal)
    plan = xanes_scan(xas, mono, metal, composition=sample.composition, sample=name or sample.material_id)
    return (yield from bpp.set_run_key_wrapper(plan, f"sfn_edge_{metal}"))


def edge_acquisition(sample: CorpusSample, xas: XanesDetector, *, name: str | None = None) -> Callable:
    """A bluesky-adaptive acquisition plan: one XANES run per suggested edge (``{"edge": "Fe"}``); returns
    the uids of the runs, in the suggestions' order."""

    def acquire_edges(suggestions, actuators, sensors=None, md=None):
        mono = actuators[0]
        uids = []
        for suggestion in suggestions:
            uids.append((yield from measure_edge(sample, xas, mono, suggestion["edge"], name=name)))
        return uids

    return acquire_edges


def measure_sample(sample: CorpusSample, mono, xas: XanesDetector, powder: PowderDetector, optimizer, *,
                   name: str | None = None, pxrd: bool = True):
    """End to end: a PXRD run, then the edges the optimizer (a ``NextEdgeOptimizer``) suggests until it says
    done, through bluesky-adaptive's ``optimize`` plan (its first edge: the optimizer's ``first_edge`` or its
    own choice)."""
    from bluesky_adaptive.plans import optimize
    from bluesky_adaptive.protocols import OptimizationProblem

    name = name or sample.material_id
    if pxrd and len(sample.sticks_q):
        yield from powder_scan(powder, num=1, sample=name, composition=sample.composition)
    problem = OptimizationProblem(optimizer=optimizer, actuators=[mono], sensors=[xas],
                                  evaluation_function=optimizer.evaluate,
                                  acquisition_plan=edge_acquisition(sample, xas, name=name))
    yield from optimize(problem, iterations=None)


def _int_or_none(value) -> int | None:
    try:
        return None if value is None or not np.isfinite(value) else int(value)
    except TypeError:
        return None

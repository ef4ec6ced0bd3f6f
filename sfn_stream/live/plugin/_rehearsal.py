"""A rehearsal at start-up: made-up XANES and PXRD runs through the plugin's own run processor, output dropped.

A process's first run of each kind pays one-off costs on the path a beamline waits on between a run's stop and
the next-edge suggestion: each new derived-stream shape is schema-checked (jsonschema, ~25 ms of CPU per
descriptor on a busy machine), and torch and the analysis code run for the first time. On 4 December the first
decision of a process came 186-198 ms after its XANES run's stop, later ones 35-100 ms. The rehearsal pays these
costs while the plugin starts: one run per XANES bundle (its first absorber, with a formula), two edges of a
made-up two-metal sample given by its elements only (the sample-level stream of the multi-edge bundle) and one
powder frame.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from event_model import compose_run

from sfn_stream.core.spectra import k_edge_energy
from sfn_stream.live.analyses import RunConvention, SampleMemory

from ._processor import RunProcessor

logger = logging.getLogger(__name__)
REHEARSAL_SAMPLE = "sfn-rehearsal"


def rehearse(convention: RunConvention, models) -> list[str]:
    """Analyse the made-up runs; return what failed (a failure only means the first real run pays the costs)."""
    started, problems, memory = time.perf_counter(), [], SampleMemory()
    runs = [*(_xanes_run(*args) for args in _xanes_runs(models)), _powder_run()]
    for what, metadata, columns in runs:
        try:
            _analyse(metadata, columns, convention, models, memory)
        except Exception as err:
            problems.append(f"rehearsal of a {what} run failed: {type(err).__name__}: {err}")
    logger.debug("sfn-stream: rehearsal took %.0f ms", 1000 * (time.perf_counter() - started))
    return problems


def _xanes_runs(models) -> list[tuple[str, object, str | None]]:
    """(absorber, composition, sample) of each made-up XANES run."""
    cards = [card for card in models.cards() if card.kind == "xanes" and card.supported_absorbers]
    runs = [(card.supported_absorbers[0], f"{card.supported_absorbers[0]}O", None) for card in cards]
    multi = next((card for card in cards if len(card.preferred_for_elements_only) > 1), None)
    if multi is not None:
        first, second = multi.preferred_for_elements_only[:2]
        runs += [(metal, [first, second, "O"], REHEARSAL_SAMPLE) for metal in (first, second)]
    return runs


def _xanes_run(absorber: str, composition, sample: str | None):
    """A K-edge scan of made-up data: a smooth edge with a white line, one event per energy."""
    e0 = k_edge_energy(absorber)
    energy = e0 + np.concatenate([np.arange(-150, -20, 5.0), np.arange(-20, 40, 0.5), np.arange(40, 400, 4.0)])
    mu = 1 / (1 + np.exp(-(energy - e0) / 2)) + 0.4 * np.exp(-(((energy - e0 - 8) / 5) ** 2))
    metadata = {"kind": "xanes", "element": absorber, "composition": composition}
    if sample is not None:
        metadata["sample"] = sample
    return f"{absorber} K-edge", metadata, {"energy": energy, "mu": mu}


def _powder_run():
    """One powder frame of made-up peaks (Cu K-alpha, 2theta 10-90 deg), as one event of two arrays."""
    tth = np.linspace(10, 90, 4001)
    pattern = 5 + sum(h * np.exp(-(((tth - c) / 0.08) ** 2)) for c, h in ((24.1, 30), (33.2, 100), (35.6, 70),
                                                                           (49.5, 40), (54.1, 45), (64.0, 30)))
    metadata = {"kind": "xrd", "axis": "2theta", "wavelength": 1.5406, "composition": "Fe2O3"}
    return "PXRD", metadata, {"tth": tth[np.newaxis], "pattern": pattern[np.newaxis]}


def _analyse(metadata: dict, columns: dict[str, np.ndarray], convention: RunConvention, models,
             memory: SampleMemory) -> None:
    """One run of ``columns`` (key -> values, one per event) through a RunProcessor that drops its output."""
    bundle = compose_run(metadata={convention.metadata_key: metadata, "plan_name": "sfn_rehearsal"})
    processor = RunProcessor(bundle.start_doc, emit=lambda name, doc: None, convention=convention, models=models,
                             samples=memory)
    data_keys = {key: {"source": "sfn-rehearsal", "dtype": "array" if values.ndim > 1 else "number",
                       "shape": list(values.shape[1:])} for key, values in columns.items()}
    stream = bundle.compose_descriptor(name=convention.stream, data_keys=data_keys)
    processor("descriptor", stream.descriptor_doc)
    now, n = time.time(), len(next(iter(columns.values())))
    processor("event_page", stream.compose_event_page(
        data={key: values.tolist() for key, values in columns.items()},
        timestamps={key: [now] * n for key in columns}, seq_num=list(range(1, n + 1)), time=[now] * n))
    processor("stop", bundle.compose_stop(exit_status="success"))
    status = (processor.summary or {}).get("status")
    if status not in ("ok", "flagged"):
        raise RuntimeError(f"status {status!r}: {(processor.summary or {}).get('reason')}")

"""What a plugin remembers of each sample's measured edges, so that a new XANES run is fused with the
sample's earlier ones (the multi-edge model's partial-measurement input).

Runs of one sample share ``sfn.sample``. After each usable XANES run the memory keeps that run's model
window per absorber (the latest run of an edge replaces an earlier one); the next XANES run of the sample
predicts from its own window plus these, and writes the sample-level result into its own derived stream
``sfn_sample_predictions``; the run's analysis keeps that result (:class:`SampleFusion`) for the after-stop
consumers, so that the next-edge agent does not run the same model on the same edges again. The memory
lives in the plugin's process: a restarted plugin starts empty and
fuses from the runs it sees after the restart (the next-edge agent's decision runs say the same).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

SAMPLE_STREAM = "sfn_sample_predictions"


@dataclass(frozen=True)
class MeasuredEdge:
    """One usable XANES run of a sample: its run uid and preprocessed window."""

    run_uid: str
    absorber: str
    window: Any  # a sfn_stream.core.spectra.XanesWindow


@dataclass(frozen=True)
class SampleFusion:
    """The sample-level result of one XANES run: the multi-edge model's prediction from ``edges`` (the run's
    own first, then the sample's earlier ones), for a sample whose 3d metals are ``metals``."""

    prediction: Any  # a sfn_stream.core.predict.Prediction (its ``inputs``: elements and fractions given)
    metals: list[str]
    edges: list[MeasuredEdge]
    classes: dict[str, tuple]  # task -> class labels of the bundle (the rows' columns)


class SampleMemory:
    """Sample -> absorber -> latest usable :class:`MeasuredEdge`, for the last ``keep`` samples (thread-safe:
    the plugin's analysis thread writes, tests and consumers read)."""

    def __init__(self, keep: int = 1000):
        self.keep = keep
        self._samples: OrderedDict[str, dict[str, MeasuredEdge]] = OrderedDict()
        self._lock = threading.Lock()

    def edges(self, sample: str, *, besides: str | None = None) -> list[MeasuredEdge]:
        """The sample's remembered edges (all but ``besides``), in the order they were measured."""
        with self._lock:
            known = self._samples.get(str(sample), {})
            return [edge for absorber, edge in known.items() if absorber != besides]

    def remember(self, sample: str, edge: MeasuredEdge) -> None:
        with self._lock:
            known = self._samples.pop(str(sample), {})
            known.pop(edge.absorber, None)  # re-inserted last: dicts keep measuring order
            known[edge.absorber] = edge
            self._samples[str(sample)] = known
            while len(self._samples) > self.keep:
                self._samples.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)

"""Derived streams: a descriptor at the first row, then one event per row.

The one place that composes them, whether into a run being measured (the derived streams beside
``primary``) or into a run sfn-stream writes itself (structure candidates)::

    streams = DerivedStreams.for_run(start, emit)     # a run someone else started
    streams.note_descriptor(raw_descriptor)           # its own streams, so names and counts stay consistent
    streams.write("sfn_xrd_predictions", row)         # descriptor (first time), then the event
    stop["num_events"].update(streams.event_counts())
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping

import numpy as np
from event_model import ComposeDescriptor

SOURCE = "sfn-stream"

Emit = Callable[[str, dict], None]


class DerivedStreams:
    """Compose and emit the rows of a run's derived streams (``compose`` makes the descriptors)."""

    def __init__(self, compose: ComposeDescriptor, emit: Emit, *, validate: bool = False):
        self._compose = compose
        self._emit = emit
        self._validate = validate  # off for live rows: every row of a stream has the same fields by design
        self._bundles: dict[str, Any] = {}  # stream name -> ComposeDescriptorBundle

    @classmethod
    def for_run(cls, start: dict, emit: Emit) -> DerivedStreams:
        """Derived streams added to a run whose start document is ``start``."""
        return cls(ComposeDescriptor(start=start, streams={}, event_counters={}), emit)

    def note_descriptor(self, descriptor: dict) -> None:
        """Register one of the run's own descriptors (its stream's keys and event count)."""
        self._compose.streams.setdefault(descriptor["name"], set(descriptor["data_keys"]))
        self._compose.event_counters.setdefault(descriptor["name"], 1)

    def write(self, stream: str, row: Mapping[str, Any]) -> None:
        """Emit one row as an event of ``stream`` (its descriptor first, on the stream's first row)."""
        if stream not in self._bundles:
            self._bundles[stream] = self._compose_descriptor(stream, data_keys_for(row))
            self._emit("descriptor", self._bundles[stream].descriptor_doc)
        now = time.time()
        data = {key: _plain(value) for key, value in row.items()}  # JSON-ready wherever the event goes
        event = self._bundles[stream].compose_event(data=data, timestamps={k: now for k in row},
                                                    validate=self._validate)
        self._emit("event", event)

    def _compose_descriptor(self, stream: str, data_keys: dict[str, dict]):
        shape = _descriptor_shape(stream, data_keys)
        # A run that already has a stream of this name keeps event_model's check that the keys agree.
        validate = shape not in _VALIDATED_SHAPES or stream in self._compose.streams
        bundle = self._compose(stream, data_keys, configuration={}, validate=validate)
        _VALIDATED_SHAPES.add(shape)  # reached only when valid: a failed validation raised above
        return bundle

    def event_counts(self) -> dict[str, int]:
        """Events written per derived stream (what the stop's ``num_events`` must say)."""
        return {name: self._compose.event_counters[name] - 1 for name in self._bundles}


# Schema-validating a descriptor takes ~5 ms of CPU (jsonschema), two of them between a XANES run's stop and
# its predictions. A derived descriptor differs from one run to the next only in the uid, run_start and time
# that event_model fills in itself, so each distinct stream name + data keys is validated once per process.
_VALIDATED_SHAPES: set[str] = set()


def _descriptor_shape(stream: str, data_keys: Mapping[str, dict]) -> str:
    return json.dumps([stream, data_keys], sort_keys=True)


def _plain(value):
    """Arrays as lists and numpy scalars as Python numbers (the data keys keep shape and dtype); NaN stays."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def data_keys_for(row: Mapping[str, Any]) -> dict[str, dict]:
    """Event-model data keys describing a row (dtype, shape, source)."""
    keys = {}
    for name, value in row.items():
        if isinstance(value, np.ndarray):
            spec = {"dtype": "array", "shape": list(value.shape), "dtype_numpy": value.dtype.str}
        elif isinstance(value, str):
            spec = {"dtype": "string", "shape": []}
        elif isinstance(value, (bool, np.bool_)):
            spec = {"dtype": "boolean", "shape": []}
        elif isinstance(value, (int, np.integer)):
            spec = {"dtype": "integer", "shape": []}
        else:
            spec = {"dtype": "number", "shape": []}
        keys[name] = {"source": SOURCE, **spec}
    return keys

"""The analysis of one kind of scan, and the registry the plugin looks kinds up in.

An analysis recognises its runs (``sfn.kind`` in the start document, or the data roles it finds in the
primary descriptor), names the data roles it reads, keeps what it needs as events or external frames
arrive, writes rows of its derived stream, and summarises the run at the stop. The plugin makes one
per run and knows no kind by name; after the stop, consumers read what the analysis kept. A new kind
is one module::

    @register_analysis
    class XrfAnalysis(BaseAnalysis):
        kind, roles, stream = "xrf", ("energy", "counts"), "sfn_xrf_predictions"
        candidates = {"energy": ("energy", "mono_energy"), "counts": ("mca", "counts")}

        @classmethod
        def recognises(cls, keys, data_keys):
            return {"energy", "counts"} <= keys.keys()

        def add_event(self, values, seq_num):
            self.spectra.append(values.get("counts"))

        def finish(self, stop):
            prediction = self.models.predictor("xrf").predict(self.spectra)
            self.write_row({"frame": 1, **status_fields(prediction, as_text=True)})
            return run_summary(self.kind, self.sample, derived_stream=self.stream, **summary_fields(prediction))

imported once (a line in ``sfn_stream/live/analyses/__init__.py``, or a beamline profile's import).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

logger = logging.getLogger(__name__)

WriteRow = Callable[[str, Mapping[str, Any]], None]
FindKeys = Callable[[Mapping[str, Any], Sequence[str]], dict[str, str]]


@dataclass(frozen=True)
class RunContext:
    """What an analysis gets from the plugin for one run."""

    start: dict
    metadata: dict  # the run's ``sfn`` metadata (start[metadata_key]), {} if none; ``.flags``: what broke the convention
    models: Any  # a sfn_stream.core.predict.ModelRegistry
    write_row: WriteRow  # (stream, row): one event of a derived stream
    find_keys: FindKeys  # (data_keys, roles) -> role -> data key, as the run convention matches them
    samples: Any = None  # a SampleMemory shared by the plugin's runs (None: no cross-run fusion)


class Analysis(Protocol):
    """What the plugin's RunProcessor asks of an analysis (made with ``cls(context)``)."""

    kind: ClassVar[str]  # sfn.kind of its runs, and the summary's kind
    roles: ClassVar[tuple[str, ...]]  # data roles it reads (energy, i0, pattern ...)
    candidates: ClassVar[Mapping[str, tuple[str, ...]]]  # role -> data-key names tried (RunConvention's default)
    stream: ClassVar[str]  # the derived stream it writes
    prediction_seconds: float | None  # model time at the stop (the benchmark reads it), if any

    @classmethod
    def recognises(cls, keys: Mapping[str, str], data_keys: Mapping[str, Any]) -> bool:
        """Whether a descriptor whose roles were found as ``keys`` is a run of this kind."""

    def on_descriptor(self, descriptor: dict, keys: Mapping[str, str]) -> None:
        """The analysed stream's descriptor, with the roles found in it."""

    def add_event(self, values: Mapping[str, Any], seq_num: int) -> None:
        """One event's values by role."""

    def add_external(self, rows: Mapping[str, list], first_seq_num: int) -> None:
        """Rows read from external files (StreamDatum), by role, the first one numbered ``first_seq_num``."""

    def finish(self, stop: dict) -> dict:
        """The run's stop summary (written into ``stop[metadata_key]``)."""


class BaseAnalysis:
    """Defaults for an analysis: keeps the context, checks the descriptor against the explicit ``keys`` of the
    metadata, takes external rows one by one.

    ``metadata_flags`` are the quality flags of metadata that broke the convention (the metadata itself, or an
    explicit key the descriptor lacks); an analysis adds them to every prediction it makes, so that a
    misconfigured run is flagged, never silently analysed as if all were well. An analysis that overrides
    :meth:`on_descriptor` calls ``super().on_descriptor`` first.
    """

    kind: ClassVar[str]
    roles: ClassVar[tuple[str, ...]] = ()
    candidates: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    stream: ClassVar[str]

    def __init__(self, context: RunContext):
        self.context = context
        self.md = context.metadata
        self.models = context.models
        self.prediction_seconds: float | None = None
        self.metadata_flags: list[str] = list(getattr(context.metadata, "flags", ()))

    @property
    def sample(self):
        return self.md.get("sample")

    def write_row(self, row: Mapping[str, Any]) -> None:
        self.context.write_row(self.stream, row)

    def on_descriptor(self, descriptor: dict, keys: Mapping[str, str]) -> None:
        for flag in explicit_key_flags(self.md.get("keys"), descriptor, self.roles):
            if flag not in self.metadata_flags:
                logger.warning("sfn-stream: run %s: the explicit keys of the %s metadata do not fit the run (%s); "
                               "data keys are looked for by name instead", self.context.start.get("uid"),
                               self.kind, flag)
                self.metadata_flags.append(flag)

    def add_event(self, values: Mapping[str, Any], seq_num: int) -> None:
        raise NotImplementedError

    def add_external(self, rows: Mapping[str, list], first_seq_num: int) -> None:
        for i in range(max((len(v) for v in rows.values()), default=0)):
            self.add_event({role: v[i] for role, v in rows.items() if i < len(v)}, first_seq_num + i)

    def finish(self, stop: dict) -> dict:
        raise NotImplementedError


def explicit_key_flags(explicit: Mapping[str, Any] | None, descriptor: Mapping[str, Any],
                       roles: Sequence[str]) -> list[str]:
    """Quality flags for the explicit ``keys`` of the metadata that cannot be used with this descriptor: a
    role the analysis does not read (``sfn_key_unknown_role:enrgy``) or a data key found neither in the
    events nor in a device's configuration (``sfn_key_missing:energy=no_such_channel``)."""
    if not isinstance(explicit, Mapping):
        return []
    present = set(descriptor.get("data_keys") or {})
    for device in (descriptor.get("configuration") or {}).values():
        present.update((device or {}).get("data_keys") or {})
    flags = []
    for role, name in explicit.items():
        if role not in roles:
            flags.append(f"sfn_key_unknown_role:{role}")
        elif not isinstance(name, str) or name not in present:
            flags.append(f"sfn_key_missing:{role}={name}")
    return flags


class Insufficient(Exception):
    """The run does not hold what a prediction needs (the reason is recorded, status insufficient_data)."""


def bundle_classes(predictor, task: str, default: Sequence) -> tuple:
    """Class labels of a task as the predictor's bundle card names them (``default`` without a bundle,
    so that a failure row still has its fields)."""
    try:
        return tuple(predictor.bundle.card["tasks"][task]["classes"])
    except (AttributeError, KeyError, TypeError):
        return tuple(default)


def bundle_id(predictor) -> str | None:
    return getattr(getattr(predictor, "bundle", None), "id", None)


_ANALYSES: dict[str, type] = {}


def register_analysis(cls: type) -> type:
    """Make an analysis class known by its ``kind`` (usable as a class decorator)."""
    _ANALYSES[cls.kind] = cls
    return cls


def analysis_for(kind: str | None) -> type | None:
    """The analysis class registered for ``kind``, or None."""
    return _ANALYSES.get(kind) if kind is not None else None


def registered_analyses() -> tuple[type, ...]:
    """Every analysis class, in registration order (the order in which data keys are tried)."""
    return tuple(_ANALYSES.values())

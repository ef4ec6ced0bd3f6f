"""How the plugin recognises a run's kind and finds its data keys.

The metadata convention (start document)::

    RE(plan, sfn={"kind": "xanes", "element": "Fe", "edge": "K", "composition": "Fe2O3",
                  "sample": "S-042"})
    RE(plan, sfn={"kind": "xrd", "wavelength": 1.5406, "axis": "2theta", "sample": "S-042",
                  "composition": "Fe2O3"})   # PXRD uses only the element set of a composition

``keys`` inside ``sfn`` may name the data keys explicitly (``energy``, ``mu``, ``i0``, ``it``,
``if``, ``iref``, ``pattern``, ``x``); otherwise they are found by name in the descriptor
(``mono_energy`` matches ``energy``, ``det_i0`` matches ``i0`` ...). A run without ``sfn``
metadata is still recognised from its data keys when ``RunConvention.detect_from_keys`` is on: each
registered analysis (``analyses.base``) says which roles make a run of its kind.

Metadata that breaks the convention (``sfn="xanes"``, ``keys`` that is not a mapping, an unknown kind)
is never silently ignored: the run is analysed as well as it can be, a warning is logged and the
problem becomes a quality flag of the run (``RunMetadata.flags``, which the analyses report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from sfn_stream.live.documents import METADATA_KEY
from .base import analysis_for, registered_analyses

logger = logging.getLogger(__name__)


class RunMetadata(dict):
    """A run's ``sfn`` metadata, and the quality flags of what in it could not be used."""

    def __init__(self, fields: Mapping[str, Any] | None = None, flags: list[str] | None = None):
        super().__init__(fields or {})
        self.flags: list[str] = list(flags or [])


def default_candidates() -> dict[str, tuple[str, ...]]:
    """Every registered analysis's data-key names per role (merged where two analyses share a role)."""
    merged: dict[str, tuple[str, ...]] = {}
    for analysis in registered_analyses():
        for role, names in getattr(analysis, "candidates", {}).items():
            merged[role] = (*merged.get(role, ()), *(n for n in names if n not in merged.get(role, ())))
    return merged


@dataclass(frozen=True)
class RunConvention:
    """Names the plugin looks for; a beamline overrides these once, in its profile."""

    metadata_key: str = METADATA_KEY
    stream: str = "primary"
    detect_from_keys: bool = True
    # role -> data-key names tried in order; by default those the registered analyses declare
    candidates: Mapping[str, tuple[str, ...]] = field(default_factory=default_candidates)

    def run_metadata(self, start: Mapping[str, Any]) -> RunMetadata:
        """The start document's ``sfn`` metadata; what breaks the convention is left out, flagged and
        logged (``uid`` names the run in the log)."""
        md = self._checked_metadata(start)
        for flag in md.flags:
            logger.warning("sfn-stream: run %s: %s metadata does not follow the convention (%s); "
                           "analysed as well as it can be", start.get("uid"), self.metadata_key, flag)
        return md

    def _checked_metadata(self, start: Mapping[str, Any]) -> RunMetadata:
        if self.metadata_key not in start:
            return RunMetadata()
        md = start[self.metadata_key]
        if not isinstance(md, Mapping):
            return RunMetadata(flags=["sfn_metadata_not_a_mapping"])
        md, flags = dict(md), []
        if "keys" in md and not isinstance(md["keys"], Mapping):
            del md["keys"]
            flags.append("sfn_keys_not_a_mapping")
        kind = md.get("kind")
        if kind is not None and not (isinstance(kind, str) and analysis_for(kind)):
            flags.append(f"sfn_kind_unknown:{kind}")
        return RunMetadata(md, flags)

    def find_keys(self, data_keys: Mapping[str, Any], roles, explicit: Mapping[str, str] | None = None) -> dict:
        """Map roles (energy, i0 ...) to the descriptor's data keys; explicit names win (an explicit name
        the descriptor lacks is ignored here, and flagged by the analysis)."""
        explicit = explicit or {}
        found = {}
        for role in roles:
            name = explicit.get(role)
            if isinstance(name, str) and name in data_keys:
                found[role] = name
                continue
            for candidate in self.candidates.get(role, ()):
                match = _match(data_keys, candidate)
                if match:
                    found[role] = match
                    break
        return found

    def detect_kind(self, start: Mapping[str, Any], data_keys: Mapping[str, Any] | None = None) -> str | None:
        """The kind of a registered analysis ('xanes', 'xrd' ...) from the start metadata or (if allowed)
        the data keys, or None."""
        analyses = registered_analyses()
        kind = self._checked_metadata(start).get("kind")  # run_metadata has warned already
        if any(kind == analysis.kind for analysis in analyses):
            return kind
        if not (self.detect_from_keys and data_keys):
            return None
        for analysis in analyses:
            if analysis.recognises(self.find_keys(data_keys, analysis.roles), data_keys):
                return analysis.kind
        return None


def _match(data_keys: Mapping[str, Any], candidate: str) -> str | None:
    """Exact name first, then an ophyd-style device prefix (``det_i0`` for ``i0``)."""
    if candidate in data_keys:
        return candidate
    suffix = "_" + candidate
    matches = sorted(k for k in data_keys if k.lower().endswith(suffix))
    return matches[0] if matches else None

"""How the plugin recognises a run's kind and finds its data keys.

The metadata convention (start document)::

    RE(plan, sfn={"kind": "xanes", "element": "Fe", "edge": "K", "composition": "Fe2O3",
                  "sample": "S-042"})
    RE(plan, sfn={"kind": "xrd", "wavelength": 1.5406, "axis": "2theta", "sample": "S-042"})

``keys`` inside ``sfn`` may name the data keys explicitly (``energy``, ``mu``, ``i0``, ``it``,
``if``, ``iref``, ``pattern``, ``x``); otherwise they are found by name in the descriptor
(``mono_energy`` matches ``energy``, ``det_i0`` matches ``i0`` ...). A run without ``sfn``
metadata is still recognised from its data keys when ``RunConvention.detect_from_keys`` is on: each
registered analysis (``analyses.base``) says which roles make a run of its kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from sfn_stream.live.documents import METADATA_KEY
from .base import registered_analyses


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

    def run_metadata(self, start: Mapping[str, Any]) -> dict[str, Any]:
        md = start.get(self.metadata_key)
        return dict(md) if isinstance(md, Mapping) else {}

    def find_keys(self, data_keys: Mapping[str, Any], roles, explicit: Mapping[str, str] | None = None) -> dict:
        """Map roles (energy, i0 ...) to the descriptor's data keys; explicit names win."""
        explicit = explicit or {}
        found = {}
        for role in roles:
            if role in explicit and explicit[role] in data_keys:
                found[role] = explicit[role]
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
        kind = self.run_metadata(start).get("kind")
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

"""How the plugin recognises XANES and PXRD runs and finds their data keys.

The metadata convention (start document)::

    RE(plan, sfn={"kind": "xanes", "element": "Fe", "edge": "K", "composition": "Fe2O3",
                  "sample": "S-042"})
    RE(plan, sfn={"kind": "xrd", "wavelength": 1.5406, "axis": "2theta", "sample": "S-042"})

``keys`` inside ``sfn`` may name the data keys explicitly (``energy``, ``mu``, ``i0``, ``it``,
``if``, ``iref``, ``pattern``, ``x``); otherwise they are found by name in the descriptor
(``mono_energy`` matches ``energy``, ``det_i0`` matches ``i0`` ...). A run without ``sfn``
metadata is still recognised from its data keys when ``RunConvention.detect_from_keys`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

METADATA_KEY = "sfn"

XANES_ROLES = ("energy", "mu", "i0", "it", "if", "iref")
XRD_ROLES = ("pattern", "x")


@dataclass(frozen=True)
class RunConvention:
    """Names the plugin looks for; a beamline overrides these once, in its profile."""

    metadata_key: str = METADATA_KEY
    stream: str = "primary"
    detect_from_keys: bool = True
    candidates: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {
        "energy": ("energy", "mono_energy", "dcm_energy", "energy_readback", "energy_setpoint"),
        "mu": ("mu", "xmu", "mutrans", "mu_trans", "mufluor"),
        "i0": ("i0", "io"),
        "it": ("it", "itrans", "i1"),
        "if": ("if", "ifluor", "ifl", "fluor"),
        "iref": ("iref", "irefer", "i2"),
        "pattern": ("pattern", "powder_pattern", "xrd_pattern", "intensity"),
        "x": ("tth", "two_theta", "2theta", "q"),
    })

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
        """'xanes', 'xrd' or None, from the start metadata or (if allowed) the data keys."""
        kind = self.run_metadata(start).get("kind")
        if kind in ("xanes", "xrd"):
            return kind
        if not (self.detect_from_keys and data_keys):
            return None
        keys = self.find_keys(data_keys, XANES_ROLES + XRD_ROLES)
        if "energy" in keys and ("mu" in keys or ("i0" in keys and ({"it", "if"} & keys.keys()))):
            return "xanes"
        if "pattern" in keys and data_keys[keys["pattern"]].get("dtype") == "array":
            return "xrd"
        return None


def _match(data_keys: Mapping[str, Any], candidate: str) -> str | None:
    """Exact name first, then an ophyd-style device prefix (``det_i0`` for ``i0``)."""
    if candidate in data_keys:
        return candidate
    suffix = "_" + candidate
    matches = sorted(k for k in data_keys if k.lower().endswith(suffix))
    return matches[0] if matches else None

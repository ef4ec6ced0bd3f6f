"""Serialisable prediction results: every value travels with its confidence and provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "flagged", "insufficient_data", "error"]


@dataclass
class ClassPrediction:
    """A categorical prediction: the most probable class, its calibrated probability, all probabilities."""

    value: Any
    confidence: float
    probabilities: dict[str, float]

    @classmethod
    def from_probabilities(cls, classes, probabilities) -> ClassPrediction:
        pairs = [(c, float(p)) for c, p in zip(classes, probabilities)]
        best_class, best_p = max(pairs, key=lambda pair: pair[1])
        return cls(value=best_class, confidence=best_p, probabilities={str(c): p for c, p in pairs})


@dataclass
class ValuePrediction:
    """A regression prediction with its standard deviation (ensemble spread, calibrated on validation)."""

    value: float
    std: float
    unit: str


@dataclass
class Prediction:
    """What a predictor says about one scan (XANES) or one frame (PXRD).

    ``properties`` holds compound-level predictions (density, crystal system ...);
    ``per_element`` holds absorber-level ones (oxidation state, coordination number).
    """

    kind: Literal["xanes", "xrd"]
    status: Status
    bundle_id: str | None
    properties: dict[str, ClassPrediction | ValuePrediction] = field(default_factory=dict)
    per_element: dict[str, dict[str, ClassPrediction]] = field(default_factory=dict)
    quality_flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    reason: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.status in ("ok", "flagged")

    def to_dict(self) -> dict[str, Any]:
        """Everything, as nested plain types."""
        return asdict(self)

    def plain(self, absorber: str | None = None) -> dict[str, Any]:
        """What users read: ``predictions`` named plainly (``oxidation_state``, ``density`` ...), each with its
        confidence, beside the status, quality flags, bundle id and preprocessing parameters."""
        predictions = {name: asdict(value) for name, value in self.properties.items()}
        if absorber and absorber in self.per_element:
            predictions.update({name: asdict(value) for name, value in self.per_element[absorber].items()})
        out = {"kind": self.kind, "status": self.status, "reason": self.reason, "predictions": predictions,
               "quality_flags": self.quality_flags, "messages": self.messages, "bundle_id": self.bundle_id,
               "preprocessing": self.preprocessing}
        if absorber:
            out["absorber"] = absorber
        if self.inputs:
            out["inputs"] = self.inputs
        return out

    @classmethod
    def failed(cls, kind, status: Status, reason: str, *, bundle_id=None, flags=(), preprocessing=None,
               inputs=None) -> Prediction:
        return cls(kind=kind, status=status, bundle_id=bundle_id, quality_flags=list(flags), reason=reason,
                   preprocessing=preprocessing or {}, inputs=inputs or {})

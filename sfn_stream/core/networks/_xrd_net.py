"""Crystal-system classifier for powder XRD: 1D CNN front end + Transformer encoder.

The CNN (three strided Conv1d blocks, x16 downsampling) turns the 1200-point Q-grid pattern into
75 tokens of local peak shape; a learned positional embedding tells the encoder where in Q each
token sits; two Transformer encoder layers relate peaks across the pattern (d-spacing ratios are
what separates crystal systems); mean + max pooling and a small MLP give the 7 logits. As in the
paper's CNN-Transformer (SpecFusionNet PXRD branch), sizes here are ours and small enough for CPU.
Probabilities are calibrated by a temperature fitted on the validation split (Guo et al. 2017).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.spectra import XRD_Q_POINTS, XrdInputError

from ._bundle import ModelBundle


class XrdCnnTransformer(nn.Module):
    def __init__(
        self,
        n_points: int = XRD_Q_POINTS,
        n_classes: int = len(CRYSTAL_SYSTEMS),
        channels: tuple[int, ...] = (24, 48, 64),
        kernels: tuple[int, ...] = (9, 5, 5),
        strides: tuple[int, ...] = (4, 2, 2),
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        layers, c_in, length = [], 2, n_points
        for c_out, k, s in zip(channels, kernels, strides):
            layers += [nn.Conv1d(c_in, c_out, k, stride=s, padding=k // 2), nn.BatchNorm1d(c_out), nn.GELU()]
            c_in, length = c_out, (length + 2 * (k // 2) - k) // s + 1
        self.cnn = nn.Sequential(*layers)
        self.project = nn.Linear(c_in, d_model)
        self.position = nn.Parameter(torch.zeros(1, length, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(2 * d_model)
        self.head = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, n_classes))

    def forward(self, pattern: torch.Tensor) -> torch.Tensor:
        """(batch, n_points) patterns (max 1, zero outside coverage) -> (batch, n_classes) logits."""
        x = pattern.clamp(min=0).unsqueeze(1)
        x = torch.cat([x, x.sqrt()], dim=1)  # sqrt channel lifts weak reflections
        tokens = self.project(self.cnn(x).transpose(1, 2)) + self.position
        tokens = self.encoder(tokens)
        pooled = torch.cat([tokens.mean(dim=1), tokens.amax(dim=1)], dim=1)
        return self.head(self.norm(pooled))


def architecture_of(model: nn.Module, **kwargs: Any) -> dict[str, Any]:
    return {"class": type(model).__name__, "kwargs": kwargs, "n_parameters": sum(p.numel() for p in model.parameters())}


def _architectures() -> dict[str, type[nn.Module]]:
    from ._xrd_peaks import XrdPeakTransformer

    return {"XrdCnnTransformer": XrdCnnTransformer, "XrdPeakTransformer": XrdPeakTransformer}


_CLASSIFIERS: dict[tuple[str, str], XrdClassifier] = {}


class XrdClassifier:
    """Inference on patterns preprocessed onto ``XRD_Q_GRID``; load with :meth:`from_bundle`."""

    def __init__(self, model: nn.Module, temperature: float, classes: tuple[str, ...], bundle_id: str = "",
                 space_group_temperature: float = 1.0):
        self.model = model.eval()
        self.temperature = float(temperature)
        self.space_group_temperature = float(space_group_temperature)
        self.classes = tuple(classes)
        self.bundle_id = bundle_id

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> XrdClassifier:
        """Build once per bundle (cached by path and weights hash)."""
        key = (str(bundle.path), bundle.weights_sha256)
        if key not in _CLASSIFIERS:
            weights = bundle.load_weights()
            architecture = bundle.card["architecture"]
            model = _architectures()[architecture.get("class", "XrdCnnTransformer")](**architecture["kwargs"])
            model.load_state_dict(weights["model"])
            temperature = float(weights.get("temperature", torch.tensor(1.0)))
            sg_temperature = float(weights.get("space_group_temperature", torch.tensor(1.0)))
            classes = tuple(bundle.card["tasks"]["crystal_system"]["classes"])
            _CLASSIFIERS[key] = cls(model, temperature, classes, bundle.id, sg_temperature)
        return _CLASSIFIERS[key]

    @property
    def has_space_group(self) -> bool:
        return hasattr(self.model, "space_group_head")

    def space_group_probabilities(self, patterns: np.ndarray) -> np.ndarray:
        """(n, XRD_Q_POINTS) -> (n, 230) calibrated probabilities; column k is space group k + 1."""
        if not self.has_space_group:
            raise XrdInputError(f"bundle {self.bundle_id or '?'} has no space-group head")
        patterns = self._checked(patterns)
        with torch.inference_mode():
            _, logits = self.model.both(torch.from_numpy(patterns))
            return torch.softmax(logits / self.space_group_temperature, dim=1).numpy().astype(float)

    def probabilities(self, patterns: np.ndarray) -> np.ndarray:
        """(n, XRD_Q_POINTS) -> (n, 7) calibrated probabilities."""
        patterns = self._checked(patterns)
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(patterns))
            return torch.softmax(logits / self.temperature, dim=1).numpy().astype(float)

    @staticmethod
    def _checked(patterns: np.ndarray) -> np.ndarray:
        patterns = np.asarray(patterns, dtype=np.float32)
        if patterns.ndim != 2 or patterns.shape[1] != XRD_Q_POINTS:
            raise XrdInputError(
                f"expected pattern(s) on XRD_Q_GRID ({XRD_Q_POINTS} points), got shape {patterns.shape}; "
                "run sfn_stream.core.spectra.preprocess_xrd first"
            )
        if not np.isfinite(patterns).all():
            raise XrdInputError("pattern contains NaN or inf; preprocess_xrd output is always finite")
        return patterns

    def predict(self, pattern: np.ndarray) -> dict[str, Any]:
        return self.predict_batch(np.asarray(pattern)[None, :])[0]

    def predict_batch(self, patterns: np.ndarray) -> list[dict[str, Any]]:
        probs = self.probabilities(patterns)
        return [{"crystal_system": {"classes": list(self.classes), "probabilities": p.tolist()}} for p in probs]

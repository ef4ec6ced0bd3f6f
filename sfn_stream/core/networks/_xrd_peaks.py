"""PXRD classifier by attention over peak tokens, at sub-grid resolution.

The shipped ``XrdCnnTransformer`` strides by 4 in its first convolution: a token spans 0.08 1/A
and the splittings that separate cubic from tetragonal, or orthorhombic from monoclinic, blur away.
Crystal systems are told apart by the *positions* of reflections (ratios of 1/d^2), so here the
pattern is reduced to its K strongest peaks, each located to a fraction of the 0.005 1/A grid
step by a parabola through the smoothed maximum; a token carries the peak's height, width and
Fourier features of Q and Q^2 (periods 0.02 ... 10 1/A). A Transformer relates all peaks to each
other and a class token feeds two heads: crystal system (7) and space group (230). Work per
pattern is K tokens instead of 1,200 points, which is what lets it train on a CPU.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.spectra import XRD_Q_MIN, XRD_Q_POINTS, XRD_Q_STEP

N_SPACE_GROUPS = 230
_SMOOTH_SIGMA_POINTS = 1.0  # light smoothing so noise does not split one peak in two
_LOCAL_MAX_WINDOW = 7  # a peak is the maximum of +-3 points (0.015 1/A)
_PROMINENCE_WINDOW = 31  # ... and stands this far above the lowest point within +-15 points
_MIN_PROMINENCE = 0.01  # of the tallest peak (patterns are normalised to max 1)


def find_peaks(pattern: torch.Tensor, n_peaks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, points) patterns -> Q (1/A), height, width (grid points) and validity of the K strongest peaks."""
    x = pattern.clamp(min=0).unsqueeze(1)
    offsets = torch.arange(-3, 4, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / _SMOOTH_SIGMA_POINTS) ** 2)
    smooth = F.conv1d(F.pad(x, (3, 3), mode="replicate"), (kernel / kernel.sum()).view(1, 1, -1))
    local_max = smooth == F.max_pool1d(smooth, _LOCAL_MAX_WINDOW, 1, _LOCAL_MAX_WINDOW // 2)
    floor = -F.max_pool1d(-smooth, _PROMINENCE_WINDOW, 1, _PROMINENCE_WINDOW // 2)
    score = torch.where(local_max & (smooth - floor > _MIN_PROMINENCE), smooth, torch.zeros_like(smooth)).squeeze(1)
    score[:, 0] = score[:, -1] = 0  # edges have no neighbour for the parabola
    height, index = score.topk(n_peaks, dim=1)
    s = smooth.squeeze(1)
    left, centre, right = (s.gather(1, (index + k).clamp(0, s.shape[1] - 1)) for k in (-1, 0, 1))
    curvature = left - 2 * centre + right
    delta = torch.where(curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-1e-6), torch.zeros_like(centre))
    q = XRD_Q_MIN + (index + delta.clamp(-0.5, 0.5)) * XRD_Q_STEP
    width = (centre / (-curvature).clamp(min=1e-4)).sqrt().clamp(0.3, 50.0)
    valid = height > 0
    valid[:, 0] = True  # a flat pattern still gives one (empty) token: attention needs one key
    return q, height, width, valid


class XrdPeakTransformer(nn.Module):
    def __init__(
        self,
        n_points: int = XRD_Q_POINTS,
        n_classes: int = len(CRYSTAL_SYSTEMS),
        n_space_groups: int = N_SPACE_GROUPS,
        n_peaks: int = 48,
        n_frequencies: int = 24,
        d_model: int = 96,
        n_heads: int = 4,
        n_layers: int = 3,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.n_points, self.n_peaks = n_points, n_peaks
        periods = torch.logspace(math.log10(0.02), 1.0, n_frequencies)
        self.register_buffer("angular", 2 * math.pi / periods, persistent=False)
        self.embed = nn.Sequential(nn.Linear(4 * n_frequencies + 4, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.crystal_system_head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Dropout(dropout),
                                                 nn.Linear(d_model, n_classes))
        self.space_group_head = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout),
                                              nn.Linear(2 * d_model, n_space_groups))

    def tokens(self, pattern: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, height, width, valid = find_peaks(pattern, self.n_peaks)
        phase = torch.cat([q.unsqueeze(-1) * self.angular, (q**2 / 6).unsqueeze(-1) * self.angular], dim=-1)
        features = torch.cat([
            phase.sin(), phase.cos(),
            torch.stack([height, height.sqrt(), width.log() / 3, (q - 3.5) / 3], dim=-1),
        ], dim=-1) * valid.unsqueeze(-1)
        return self.embed(features), valid

    def features(self, pattern: torch.Tensor) -> torch.Tensor:
        tokens, valid = self.tokens(pattern)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        keep = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        return self.norm(self.encoder(tokens, src_key_padding_mask=~keep)[:, 0])

    def forward(self, pattern: torch.Tensor) -> torch.Tensor:
        """(batch, n_points) -> (batch, 7) crystal-system logits (the interface of XrdCnnTransformer)."""
        return self.crystal_system_head(self.features(pattern))

    def both(self, pattern: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crystal-system and space-group logits (column k is space group k + 1)."""
        h = self.features(pattern)
        return self.crystal_system_head(h), self.space_group_head(h)

"""SpecFusionNet-style multi-task network on XANES windows + element descriptors, and its ensemble.

Architecture (after the SpecFusionNet paper, Chem. Sci. 2026; see shared/paper/NOTES.md):

* each measured transition-metal (TM) spectrum -> multi-scale 1D CNN (kernel 3/5/7 branches,
  adaptive average pooling, linear) -> spectral embedding; the edge shift E0 - E_ref enters here;
* element descriptors (+ atomic fraction) -> TM encoder or non-TM encoder -> element embedding;
* TM tokens: element embedding fused with the spectral embedding (a learned "not measured"
  embedding stands in where the TM's spectrum is absent); non-TM tokens: element embedding only;
* multi-head self-attention over the compound's element tokens (key padding mask, no positional
  encoding: the model is invariant to element order);
* compound heads on the masked mean of the tokens; per-element heads on each token.

Uncertainty: a deep ensemble (Lakshminarayanan et al., NeurIPS 2017): members predict a Gaussian
mean and variance for regressions; classification logits are temperature-scaled (Guo et al.,
ICML 2017) with one temperature per task fitted on the validation split.
"""

from __future__ import annotations

import copy
import json
import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from sfn_stream.core.chemistry import MAX_Z, TRANSITION_METAL_Z, UnknownElementError, element_z
from ._bundle import CARD_KEYS, BundleError, ModelBundle

# Per-element classification tasks: name -> class values (index i <-> class value).
ELEMENT_TASK_CLASSES: dict[str, tuple[int, ...]] = {
    "oxidation_state": tuple(range(0, 8)),
    "coordination_number": tuple(range(1, 13)),
}
# Compound-level regressions (Gaussian mean + variance); more can be added with masked losses.
COMPOUND_REGRESSION_UNITS: dict[str, str] = {
    "density": "g/cm3",
    "band_gap": "eV",
    "formation_energy_per_atom": "eV/atom",
    "fermi_level": "eV",
}
# A XANES bundle's card has the common keys plus these.
XANES_CARD_KEYS = CARD_KEYS + ("supported_absorbers", "calibration")
E0_SHIFT_SCALE = 5.0  # eV; e0_shift enters the network divided by this


class UnsupportedAbsorberError(ValueError):
    """A spectrum was given for an absorber the model bundle was not trained on."""


class MultiScaleSpectrumEncoder(nn.Module):
    """Parallel conv branches (kernel 3, 5, 7), adaptive average pooling, linear to ``d_out``.

    Each branch is conv(1 -> C, k) -> GELU -> conv(C -> C, k, stride 2) -> GELU -> pool. For speed the
    branches run as one convolution per layer: smaller kernels are zero-padded to the largest one
    (centred, so the result is identical) and the second layer is a grouped convolution.
    """

    def __init__(self, channels: int = 16, pool_size: int = 8, d_out: int = 64, kernels=(3, 5, 7)):
        super().__init__()
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels must be odd, got {kernels}")
        self.kernels = tuple(kernels)
        self.width = max(self.kernels)
        self.pool_size = pool_size
        self.first = nn.ModuleList(nn.Conv1d(1, channels, k) for k in self.kernels)
        self.second = nn.ModuleList(nn.Conv1d(channels, channels, k) for k in self.kernels)
        self.project = nn.Sequential(nn.Linear(len(kernels) * channels * pool_size, d_out), nn.GELU())
        self.with_shift = nn.Linear(d_out + 1, d_out)

    def _stacked(self, convs: nn.ModuleList) -> tuple[torch.Tensor, torch.Tensor]:
        weights = []
        for conv, k in zip(convs, self.kernels):
            side = (self.width - k) // 2
            weights.append(nn.functional.pad(conv.weight, (side, side)))
        return torch.cat(weights), torch.cat([conv.bias for conv in convs])

    def forward(self, spectra: torch.Tensor, e0_shift: torch.Tensor) -> torch.Tensor:
        x = spectra.unsqueeze(1)  # (M, 1, L)
        pad = self.width // 2
        w1, b1 = self._stacked(self.first)
        x = nn.functional.gelu(nn.functional.conv1d(x, w1, b1, padding=pad))
        w2, b2 = self._stacked(self.second)
        x = nn.functional.gelu(nn.functional.conv1d(x, w2, b2, padding=pad, stride=2, groups=len(self.kernels)))
        x = nn.functional.adaptive_avg_pool1d(x, self.pool_size).flatten(1)
        features = self.project(x)
        return self.with_shift(torch.cat([features, (e0_shift / E0_SHIFT_SCALE).unsqueeze(-1)], dim=-1))


class AttentionBlock(nn.Module):
    """Pre-norm transformer encoder block (multi-head self-attention + feed-forward).

    Written out (rather than nn.TransformerEncoderLayer) so that it vectorises over ensemble members
    with torch.func.vmap; ``padding`` (B, N) is True for empty token slots, which no token attends to.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.dropout = n_heads, dropout
        self.norm_attention = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm_feed_forward = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        # Plain softmax attention (SDPA has no vmap batching rule on CPU); padded keys get -inf.
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.n_heads)
        scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
        weights = nn.functional.dropout(scores.softmax(-1), self.dropout, self.training)
        attended = weights @ v
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.feed_forward(self.norm_feed_forward(x)))


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


class SpecFusionNet(nn.Module):
    """One multi-task network: compound regressions + per-element classifications.

    Inputs are padded per compound to ``N`` element tokens: ``z`` (B, N) atomic numbers (0 = padding),
    ``fractions`` (B, N), ``spectra`` (B, N, L), ``e0_shift`` (B, N), ``has_spectrum`` (B, N) bool.
    Slots without a spectrum are never read, so their contents (even NaN) do not matter.
    """

    def __init__(
        self,
        descriptor_table: np.ndarray | torch.Tensor,
        *,
        spectrum_length: int = 200,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        cnn_channels: int = 16,
        pool_size: int = 8,
        dropout: float = 0.1,
        blank_below: int = 0,
        compound_regressions: Sequence[str] = ("density",),
        element_tasks: Mapping[str, int] | None = None,
        compound_classifications: Sequence[str] = (),
        unknown_fractions: str = "equal",
        unknown_composition: bool = False,
    ):
        super().__init__()
        self.config = {
            "spectrum_length": spectrum_length,
            "d_model": d_model,
            "n_heads": n_heads,
            "n_layers": n_layers,
            "cnn_channels": cnn_channels,
            "pool_size": pool_size,
            "dropout": dropout,
            "blank_below": blank_below,
            "compound_regressions": list(compound_regressions),
            "element_tasks": dict(element_tasks or {k: len(v) for k, v in ELEMENT_TASK_CLASSES.items()}),
        }
        # Bundles before the 3d-metal one have neither key in their card: leave their config as it was.
        if compound_classifications:
            self.config["compound_classifications"] = list(compound_classifications)
        if unknown_fractions != "equal":
            self.config["unknown_fractions"] = unknown_fractions
        if unknown_fractions not in UNKNOWN_FRACTIONS:
            raise ValueError(f"unknown_fractions must be one of {UNKNOWN_FRACTIONS}, got {unknown_fractions!r}")
        self.unknown_fractions = unknown_fractions
        # Trained with examples whose composition was withheld (:data:`COMPOSITION_UNKNOWN`); absent from the
        # cards of bundles before, which read such a request as the pure metal.
        if unknown_composition:
            self.config["unknown_composition"] = True
        self.unknown_composition = unknown_composition
        self.compound_classifications = tuple(compound_classifications)
        table = torch.as_tensor(np.asarray(descriptor_table), dtype=torch.float32)
        self.register_buffer("descriptors", table)
        is_tm = torch.zeros(table.shape[0], dtype=torch.bool)
        is_tm[[z for z in TRANSITION_METAL_Z if z < table.shape[0]]] = True
        self.register_buffer("is_tm", is_tm)
        self.spectrum_length = spectrum_length
        # The first ``blank_below`` window points are zeroed for every input: FEFF spectra start at the
        # Fermi level, so computed windows have no data there while measured ones do.
        if not 0 <= blank_below < spectrum_length:
            raise ValueError(f"blank_below must be in [0, {spectrum_length}), got {blank_below}")
        input_mask = torch.ones(spectrum_length)
        input_mask[:blank_below] = 0.0
        self.register_buffer("input_mask", input_mask)
        self.compound_regressions = tuple(compound_regressions)
        self.element_tasks = dict(element_tasks or {k: len(v) for k, v in ELEMENT_TASK_CLASSES.items()})
        # Target standardisation of the regressions (set from the training split).
        self.register_buffer("target_mean", torch.zeros(len(self.compound_regressions)))
        self.register_buffer("target_std", torch.ones(len(self.compound_regressions)))

        d_desc = table.shape[1] + 1  # + atomic fraction
        self.tm_encoder = _mlp(d_desc, d_model, d_model)
        self.other_encoder = _mlp(d_desc, d_model, d_model)
        self.spectrum_encoder = MultiScaleSpectrumEncoder(cnn_channels, pool_size, d_model)
        self.no_spectrum = nn.Parameter(torch.zeros(d_model))
        self.fuse = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.attention = nn.ModuleList(AttentionBlock(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.compound_head = _mlp(d_model, d_model, 2 * len(self.compound_regressions), dropout)
        self.element_heads = nn.ModuleDict({name: _mlp(d_model, d_model, n, dropout) for name, n in self.element_tasks.items()})
        if self.compound_classifications:
            self.compound_class_head = _mlp(d_model, d_model, len(self.compound_classifications), dropout)

    def forward(
        self,
        z: torch.Tensor,
        fractions: torch.Tensor,
        spectra: torch.Tensor,
        e0_shift: torch.Tensor,
        has_spectrum: torch.Tensor,
    ) -> dict[str, Any]:
        present = z > 0
        has_spectrum = has_spectrum & present
        tokens_in = torch.cat([self.descriptors[z], fractions.unsqueeze(-1)], dim=-1)
        is_tm = (self.is_tm[z] & present).unsqueeze(-1)
        element = torch.where(is_tm, self.tm_encoder(tokens_in), self.other_encoder(tokens_in))

        spectral = self.no_spectrum.expand_as(element).clone()
        if bool(has_spectrum.any()):
            encoded = self.spectrum_encoder(spectra[has_spectrum] * self.input_mask, e0_shift[has_spectrum])
            spectral[has_spectrum] = encoded.to(spectral.dtype)
        fused = element + self.fuse(torch.cat([element, spectral], dim=-1))
        tokens = torch.where(is_tm, fused, element)
        tokens = torch.where(present.unsqueeze(-1), tokens, torch.zeros_like(tokens))

        for block in self.attention:
            tokens = block(tokens, ~present)
        tokens = self.norm(tokens)
        weights = present.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)

        raw = self.compound_head(pooled).view(-1, len(self.compound_regressions), 2)
        out: dict[str, Any] = {
            "compound_mean": raw[..., 0],  # standardised units
            "compound_log_var": raw[..., 1].clamp(-10.0, 6.0),
            "element_logits": {name: head(tokens) for name, head in self.element_heads.items()},
        }
        if self.compound_classifications:
            out["compound_logits"] = self.compound_class_head(pooled)  # (B, K): one yes/no logit per property
        return out

    def constructor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this network (besides the descriptor table); JSON-safe."""
        return dict(self.config)


# --- input encoding ------------------------------------------------------------------------------


@dataclass
class EncodedBatch:
    z: torch.Tensor
    fractions: torch.Tensor
    spectra: torch.Tensor
    e0_shift: torch.Tensor
    has_spectrum: torch.Tensor

    def as_args(self) -> tuple[torch.Tensor, ...]:
        return self.z, self.fractions, self.spectra, self.e0_shift, self.has_spectrum


# How an element list without stoichiometry enters the network: "equal" fractions (the Cu bundle,
# which never trained without stoichiometry) or all "zero" (bundles trained with stoichiometry
# dropout: a zero fraction never occurs in a known composition, so it means "unknown").
UNKNOWN_FRACTIONS = ("equal", "zero")

# ``fractions`` of a compound whose composition is not known at all, only the absorbers measured (a scan
# without ``sfn.composition``): their tokens alone, each with this fraction, which no real composition has.
# Only bundles trained with such examples (``unknown_composition`` in their config) accept it.
COMPOSITION_UNKNOWN = "unknown"
UNKNOWN_COMPOSITION_FRACTION = -1.0


def _fractions_for(elements: Sequence[str], fractions: Mapping[str, float] | None,
                   unknown_as: str = "equal") -> list[float]:
    if fractions == COMPOSITION_UNKNOWN:
        return [UNKNOWN_COMPOSITION_FRACTION] * len(elements)
    if fractions is None:
        return [0.0 if unknown_as == "zero" else 1.0 / len(elements)] * len(elements)
    unknown = set(fractions) - set(elements)
    if unknown:
        raise ValueError(f"fractions given for {sorted(unknown)}, which are not among the elements {list(elements)}")
    values = [float(fractions.get(symbol, 0.0)) for symbol in elements]
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"fractions must be non-negative numbers with a positive sum, got {dict(fractions)}")
    total = sum(values)
    return [v / total for v in values]


def encode_compounds(
    compounds: Sequence[tuple[Sequence[str], Mapping[str, tuple[np.ndarray, float]], Mapping[str, float] | None]],
    *,
    spectrum_length: int,
    supported_absorbers: Sequence[str] | None = None,
    unknown_fractions: str = "equal",
) -> EncodedBatch:
    """Pad a list of (elements, spectra, fractions) into network inputs, validating every part."""
    n_max = max(len(elements) for elements, _, _ in compounds)
    b = len(compounds)
    z = torch.zeros(b, n_max, dtype=torch.long)
    frac = torch.zeros(b, n_max)
    spectra_t = torch.zeros(b, n_max, spectrum_length)
    shift = torch.zeros(b, n_max)
    has = torch.zeros(b, n_max, dtype=torch.bool)
    for i, (elements, spectra, fractions) in enumerate(compounds):
        elements = [str(symbol).strip() for symbol in elements]
        if not elements:
            raise ValueError("a compound needs at least one element")
        if len(set(elements)) != len(elements):
            raise ValueError(f"elements must be distinct, got {elements}")
        for symbol in spectra:
            if symbol not in elements:
                raise ValueError(f"a spectrum was given for {symbol!r}, which is not among the elements {elements}")
            if supported_absorbers is not None and symbol not in supported_absorbers:
                raise UnsupportedAbsorberError(
                    f"this model was trained on {', '.join(supported_absorbers)} K-edge spectra only; "
                    f"it cannot use a {symbol} spectrum (leave it out or use a bundle trained on {symbol})"
                )
        for j, (symbol, value) in enumerate(zip(elements, _fractions_for(elements, fractions, unknown_fractions))):
            z_value = element_z(symbol)  # UnknownElementError for bad symbols
            if z_value > MAX_Z:
                raise UnknownElementError(f"element {symbol} is outside the supported range H..Pu")
            z[i, j], frac[i, j] = z_value, value
            if symbol in spectra:
                window, e0_shift = spectra[symbol]
                window = np.asarray(window, dtype=np.float32)
                if window.shape != (spectrum_length,):
                    raise ValueError(
                        f"the {symbol} spectrum must be a {spectrum_length}-point XANES window "
                        f"(sfn_stream.core.spectra.preprocess_xanes(...).mu), got shape {window.shape}"
                    )
                if not np.all(np.isfinite(window)) or not math.isfinite(float(e0_shift)):
                    raise ValueError(f"the {symbol} window or e0_shift contains NaN or infinite values")
                spectra_t[i, j] = torch.from_numpy(window)
                shift[i, j] = float(e0_shift)
                has[i, j] = True
    return EncodedBatch(z, frac, spectra_t, shift, has)


# --- ensemble ------------------------------------------------------------------------------------


class StackedEnsemble:
    """The ensemble members evaluated in one vectorised pass (inference only).

    ``SpecFusionNet.forward`` runs once under ``torch.vmap`` over the members' stacked weights, so
    there is one forward pass to maintain and a pass costs about as many operations as one member.
    Outputs carry a leading member dimension; dropout is off (the template member is in eval mode).
    """

    def __init__(self, members: Sequence[SpecFusionNet]):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        configs = {json.dumps(m.config, sort_keys=True) for m in members}
        if len(configs) != 1:
            raise ValueError("ensemble members must share one architecture")
        self._template = copy.deepcopy(members[0]).eval()
        # functional_call swaps the template's tensors in place: one call at a time (the ensemble is shared).
        self._template_lock = threading.Lock()
        self.n_members = len(members)
        self.config = dict(self._template.config)
        self.compound_regressions = self._template.compound_regressions
        self.element_tasks = dict(self._template.element_tasks)
        params, buffers = torch.func.stack_module_state(members)
        self._weights = {name: tensor.detach() for name, tensor in {**params, **buffers}.items()}
        # Linear weights are stored (in, out) and handed over as transposed views, so that x @ W^T
        # multiplies a contiguous matrix: with the (out, in) layout the small-batch matmul kernels round
        # rows differently, and identical compounds in one batch would get slightly different results.
        for name, module in self._template.named_modules():
            if isinstance(module, nn.Linear):
                weight = self._weights[f"{name}.weight"]
                self._weights[f"{name}.weight"] = weight.transpose(1, 2).contiguous().transpose(1, 2)
        self.target_mean = self._weights["target_mean"]  # (E, R)
        self.target_std = self._weights["target_std"]

    def _member_forward(self, weights: dict[str, torch.Tensor], *inputs: torch.Tensor) -> dict[str, Any]:
        return torch.func.functional_call(self._template, weights, inputs)

    def __call__(self, z, fractions, spectra, e0_shift, has_spectrum) -> dict[str, Any]:
        members_forward = torch.vmap(self._member_forward, in_dims=(0, None, None, None, None, None))
        # inference_mode rather than no_grad: no version counters or views tracked (the same numbers, less work)
        with torch.inference_mode(), self._template_lock:
            return members_forward(self._weights, z, fractions, spectra, e0_shift, has_spectrum)


def ensemble_outputs(
    members: Sequence[SpecFusionNet] | StackedEnsemble,
    batch: EncodedBatch,
    temperatures: Mapping[str, float] | None = None,
    regression_scale: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Ensemble predictions in physical units: regression mean/std, calibrated class probabilities.

    Returns numpy arrays: ``{"<reg>": {"mean": (B,), "std": (B,)}, "<task>": (B, N, C) probabilities}``.
    """
    stacked = members if isinstance(members, StackedEnsemble) else StackedEnsemble(members)
    temperatures = temperatures or {}
    regression_scale = regression_scale or {}
    out = stacked(*batch.as_args())  # every tensor has a leading member dimension
    target_mean = stacked.target_mean.unsqueeze(1)  # (M, 1, R)
    target_std = stacked.target_std.unsqueeze(1)
    means = out["compound_mean"] * target_std + target_mean  # (M, B, R)
    variances = out["compound_log_var"].exp() * target_std**2
    # Mixture of the members' Gaussians: mean aleatoric variance + spread of the member means.
    mixture_mean = means.mean(0)
    mixture_var = variances.mean(0) + means.var(0, unbiased=False)
    result: dict[str, Any] = {}
    for k, name in enumerate(stacked.compound_regressions):
        scale = float(regression_scale.get(name, 1.0))
        result[name] = {"mean": mixture_mean[:, k].numpy(), "std": (mixture_var[:, k].sqrt() * scale).numpy()}
    for name, logits in out["element_logits"].items():
        t = float(temperatures.get(name, 1.0))
        result[name] = torch.softmax(logits / t, dim=-1).mean(0).numpy()
    if "compound_logits" in out:  # (M, B, K) -> P(yes) per property, temperature-scaled, member mean
        for k, name in enumerate(stacked.config.get("compound_classifications", ())):
            t = float(temperatures.get(name, 1.0))
            result[name] = torch.sigmoid(out["compound_logits"][..., k] / t).mean(0).numpy()
    return result


_CACHE: dict[str, "XanesEnsemble"] = {}
_CACHE_LOCK = threading.Lock()


class XanesEnsemble:
    """A loaded XANES model bundle: the ensemble members plus calibration, ready to predict."""

    def __init__(self, members: Sequence[SpecFusionNet], card: Mapping[str, Any], calibration: Mapping[str, Any], bundle_id: str = ""):
        self.members = list(members)
        self.stacked = StackedEnsemble(self.members)
        self.card = dict(card)
        self.bundle_id = bundle_id
        self.temperatures = {k: float(v) for k, v in calibration.get("temperatures", {}).items()}
        self.regression_scale = {k: float(v) for k, v in calibration.get("regression_std_scale", {}).items()}
        self.supported_absorbers: tuple[str, ...] = tuple(card["supported_absorbers"])
        self.spectrum_length = self.members[0].spectrum_length
        self.unknown_fractions = self.members[0].unknown_fractions
        self.unknown_composition = bool(getattr(self.members[0], "unknown_composition", False))
        # Bundles trained with edge dropout also answer for 3d metals of the sample whose edge was not given.
        self.predicts_unmeasured = bool(card.get("predicts_unmeasured_metals", False))
        self._warm = False
        self.task_classes = {
            name: tuple(int(c) for c in spec["classes"])
            for name, spec in card["tasks"].items()
            if spec.get("type") == "classification" and spec.get("level", "element") == "element"
        }

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> "XanesEnsemble":
        """Load once per bundle id (name, version and weights hash); later calls return the same object."""
        with _CACHE_LOCK:
            if bundle.id not in _CACHE:
                _CACHE[bundle.id] = cls._load(bundle)
            return _CACHE[bundle.id]

    @classmethod
    def _load(cls, bundle: ModelBundle) -> "XanesEnsemble":
        if bundle.card.get("kind") != "xanes":
            raise BundleError(f"bundle {bundle.id} is of kind {bundle.card.get('kind')!r}, not 'xanes'")
        if "supported_absorbers" not in bundle.card:
            raise BundleError(f"bundle {bundle.id} does not list its supported_absorbers")
        weights = bundle.load_weights()
        kwargs = dict(bundle.card["architecture"]["kwargs"])
        table = weights["descriptor_table"]
        members = []
        for state in weights["members"]:
            member = SpecFusionNet(table, **kwargs)
            member.load_state_dict(state)
            members.append(member)
        return cls(members, bundle.card, weights.get("calibration", {}), bundle.id)

    def warm_up(self) -> None:
        """One forward pass on a made-up compound (once): the process's first pass costs tens of ms of CPU more
        than the next ones (torch's lazy set-up), which would otherwise fall on the first run's stop."""
        if self._warm:
            return
        absorber = self.supported_absorbers[0]
        self.predict([absorber, "O"], {absorber: (np.zeros(self.spectrum_length, np.float32), 0.0)})
        self._warm = True

    def predict(
        self,
        elements: Sequence[str],
        spectra: Mapping[str, tuple[np.ndarray, float]],
        fractions: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Predictions for one compound; ``spectra`` maps absorber -> (200-point window, e0_shift)."""
        return self.predict_batch([(elements, spectra, fractions)])[0]

    def predict_batch(
        self,
        compounds: Sequence[tuple[Sequence[str], Mapping[str, tuple[np.ndarray, float]], Mapping[str, float] | None]],
    ) -> list[dict[str, Any]]:
        """Predictions for several compounds, each given as (elements, spectra, fractions)."""
        if not compounds:
            return []
        if not self.unknown_composition and any(f == COMPOSITION_UNKNOWN for _, _, f in compounds):
            raise ValueError(f"bundle {self.bundle_id} was not trained without a composition: give the sample's elements")
        batch = encode_compounds(compounds, spectrum_length=self.spectrum_length, supported_absorbers=self.supported_absorbers,
                                 unknown_fractions=self.unknown_fractions)
        raw = ensemble_outputs(self.stacked, batch, self.temperatures, self.regression_scale)
        results = []
        for i, (elements, spectra, _) in enumerate(compounds):
            compound = {
                name: {"mean": float(raw[name]["mean"][i]), "std": float(raw[name]["std"][i]), "unit": unit}
                for name, unit in COMPOUND_REGRESSION_UNITS.items()
                if name in raw
            }
            compound_classes = {
                name: {"classes": [False, True], "probabilities": [1.0 - float(raw[name][i]), float(raw[name][i])]}
                for name in self.stacked.config.get("compound_classifications", ())
            }
            per_element = {}
            for j, symbol in enumerate(str(s).strip() for s in elements):
                unmeasured_ok = self.predicts_unmeasured and symbol in self.supported_absorbers
                if symbol not in spectra and not unmeasured_ok:
                    continue
                per_element[symbol] = {
                    name: {"classes": list(classes), "probabilities": [float(p) for p in raw[name][i, j]]}
                    for name, classes in self.task_classes.items()
                }
            results.append({"compound": compound, "compound_classes": compound_classes, "per_element": per_element,
                            "measured": [symbol for symbol in spectra]})
        return results

"""One SpecFusionNet for the K edges of all nine 3d metals (Ti..Zn), trained from ``data/corpus``.

Input: the sample's elements, its stoichiometry when known, and the spectra of any subset of its
3d-metal edges. Training draws, per example, a random subset of the material's edges (edge dropout:
partial measurement) and drops the stoichiometry half of the time (fractions all zero: the
beamline's elements-only mode). Windows come from :func:`sfn_stream.core.spectra.preprocess_xanes`
with each row's energy offset, as beamline scans do. Splits: ``data/splits/xanes_3d_splits.json``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core.chemistry import (
    DESCRIPTOR_NAMES,
    descriptor_stats,
    descriptor_table,
)
from sfn_stream.core.spectra import XANES_DEFAULTS, XANES_WINDOW, preprocess_xanes
from sfn_stream.offline.corpus import snapshot_hash
from sfn_stream.offline.metrics import fit_temperature

from ._corpus_xanes import (
    MATERIAL_CLASSIFICATIONS,
    MATERIAL_REGRESSIONS,
    METALS_3D,
    OMNIXAS,
    REFERENCE,
    CorpusMaterial,
    read_corpus_materials,
    read_metal_references,
)
from ._xanes import TrainingDataError, gaussian_broaden
from ._xanes_splits import (
    UNIFIED_SPLITS_FILE,
    read_unified_splits,
    split_of,
    write_unified_splits,
)

BUNDLE_NAME = "xanes-specfusion-3d"
BUNDLE_VERSION = "0.1.0"
# Which Cu requests this bundle answers, and why (written into the card; the figures are in its metrics).
REGISTRY_NOTE = (
    "the model registry picks the narrowest card covering an absorber, except that a request listing the "
    "sample's elements without their amounts, or naming the absorber alone (the metal), goes to a card listing "
    "the absorber under preferred_for_elements_only, and a request with no composition to one listing it under "
    "preferred_without_composition. This bundle lists all nine metals in both, so Cu scans with an element "
    "list, of the metal, or with no composition come here, and Cu scans with a formula go to "
    "models/xanes-specfusion (Cu only; it never saw a metal, and it has no mode for an unknown composition). "
    "The figures behind the choice (`sfn-stream evaluate xanes --write-card`): "
    "metrics['test/elements'] and metrics['test/unknown'], per_absorber 'Cu' and 'Cu/omnixas', model_accuracy "
    "against cu_bundle_accuracy, favour this bundle with an element list and with no composition; "
    "metrics['test/formula'] the same pair with the formula, where the two are within a few points and the Cu "
    "bundle keeps the request; metrics['measured_dev_elements_only'] and metrics['measured_dev_without_composition'], "
    "model against registry, on the measured files."
)
MAX_TOKENS = 5  # the corpus holds 2-5 element compounds
OX_CLASSES = tuple(range(8))
MIXED_VALENCE_MIN = 0.05  # a site-averaged oxidation state further than this from an integer is mixed valence
CN_CLASSES = tuple(range(1, 13))


@dataclass(frozen=True)
class Augmentation3d:
    """What measured scans have and FEFF windows lack, applied per training view / batch."""

    views: int = 5  # augmented views per edge besides the clean one
    # eV, Gaussian, clipped at 3 sigma: calibration error without a foil, and the 3-9 eV by which measured compound
    # edges sit above FEFF10's at one valence (docs/feff-edge-positions.md). 4 eV rather than 1.5: on simulated
    # validation 1.5 is 1-2 points better (oxidation state 0.853 vs 0.843, CN 0.830 vs 0.812, three members, 180
    # epochs), on the measured development set 4 eV is better (33/39 vs 28/39 oxidation states, 27/37 vs 23/37 CN):
    # the one choice made with the measured files, in favour of leaning less on absolute edge position
    energy_shift_sigma: float = 4.0
    broadening: tuple[float, float] = (0.3, 2.5)  # eV FWHM, extra Gaussian broadening
    noise: float = 0.015  # max sigma of white noise, in edge steps
    scale_error: float = 0.04  # normalisation: 1 + N(0, s)
    tilt_error: float = 0.03  # normalisation: linear tilt across the window
    self_absorption: float = 0.35  # max beta of the damping mu -> mu (1 + beta) / (1 + beta mu)
    self_absorption_probability: float = 0.3
    # HERFD (high-energy-resolution fluorescence) scans are sharper than FEFF's lifetime-broadened spectra:
    # unsharp masking mu + a (mu - G_sigma * mu), a up to ``sharpen``, on ``sharpen_probability`` of the views.
    # Off by default: the shipped bundle, trained without it, changes none of 271 validation oxidation states
    # under sharpening (a 0.6, sigma 1 eV) and keeps its accuracy at a 1.5-3, sigma 0.6 eV (ox 0.858-0.860, CN
    # 0.822-0.826). With it (probability 0.3, 5 members, snapshot 7377f0b6) validation read ox 0.853 vs 0.858,
    # CN 0.838 vs 0.826, NLL 0.415 / 0.716 vs 0.436 / 0.743 (a wash on the headline task); test ox 0.786 vs
    # 0.807, CN 0.814 vs 0.803; measured dev 31/39 and 29/37 vs 33/39 and 30/37. Not shipped.
    sharpen: float = 0.6
    sharpen_sigma_ev: float = 1.0
    sharpen_probability: float = 0.0
    # Shifted views may leave more of the window without FEFF data than a measured scan may (the 25 %
    # rule): FEFF spectra start 5-10 eV above the window start, so with the limit (None) views shifted up
    # by more than ~3 eV are dropped, the direction in which measured compound edges lie
    # (docs/feff-edge-positions.md).
    view_max_window_missing: float | None = None
    # Measured compound edges sit 1.5-9 eV *above* FEFF10's at the same valence on the metal-calibrated scale (all
    # eleven metal/valence groups of docs/feff-edge-positions.md), while metals line up. With
    # ``compound_shift_up`` > 0, each augmented view of an oxidised absorber (labelled oxidation state > 0) is
    # moved up by a further U(0, compound_shift_up) eV with probability ``compound_shift_probability``, and kept
    # even when that leaves up to half the window without FEFF data, so that shape, not FEFF's absolute edge
    # position, has to carry the valence. Off by default: measured (session 19, 8 eV, probability 0.5, ten members
    # = seeds 0 and 1 on snapshot ac66db00, paired with the shipped 5a55944dc88d, same recipe otherwise): measured
    # dev elements-only ox 34/39 vs 33/39 (vivianite and cuprite right, NiS read Ni+), CN 29/37 both, without
    # composition ox 31/39 vs 27/39; test ox 0.841 vs 0.847, CN 0.801 vs 0.810, density MAE 0.531 vs 0.543;
    # validation ox 0.814 vs 0.844. Below the bar set before the run (+3 measured files, <= 1.5 points on test)
    compound_shift_up: float = 0.0
    compound_shift_probability: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "note": "shift and broadening go through preprocess_xanes (window and e0_shift move "
                "together); noise, normalisation errors and self-absorption damping act on the windows per batch; "
                "view 0 is the clean window; sharpening (HERFD) by unsharp masking per batch when sharpen_probability > 0."}


@dataclass(frozen=True)
class Train3dConfig:
    # chosen on the validation split (one member, elements only, one edge; corpus 21322c7a): 45 / 90 / 180 / 360
    # epochs gave oxidation state 0.794 / 0.809 / 0.851 / 0.830 and CN 0.784 / 0.817 / 0.817 / 0.824; a wider
    # network (d_model 96, 3 layers) 0.823 / 0.825 and 0.800 / 0.804 at 90 / 180 epochs. A window reaching
    # +90 eV (360 points; the FEFF10 spectra end near +131 eV, every measured dev scan beyond +135 eV) instead of
    # +46 eV, one member, 90 epochs, corpus b4e72757: last-20-epoch means oxidation state 0.816 vs 0.831, CN 0.846
    # vs 0.850, density MAE 0.546 vs 0.557 g/cm3: no gain, so the paper's window stays
    # With the last epoch kept, 360 epochs against 180 (one member, seed 0, corpus f80ad9d0, last-20-epoch means on
    # validation FEFF10 units): ox 0.823 vs 0.853, CN 0.849 vs 0.845, density MAE 0.433 vs 0.455, classification
    # CE 1.116 vs 1.050: the classification heads overfit, so 180 stays
    epochs: int = 180
    examples_per_epoch: int = 2400
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Which weights a member keeps: "last" (the end of the one-cycle schedule) or "best_total" (the epoch of lowest
    # total validation loss, stopping after ``patience`` epochs without a new best). The total loss swings after
    # epoch 70 with the regressions' Gaussian NLL (up to 10: variances collapse on a few validation materials)
    # while accuracy and density MAE still improve, so "best_total" kept epochs 61-109 of 180. Measured on one
    # member per seed (corpus f80ad9d0, every epoch logged, /work/scratch/s18/ckpt_exp.py), validation FEFF10
    # units, elements only: seed 0 best_total (epoch 70) ox 0.820 CN 0.792 density MAE 0.539 against the last 20
    # epochs' mean 0.853 / 0.845 / 0.455; seed 1 (epoch 100) 0.835 / 0.804 / 0.538 against 0.851 / 0.831 / 0.484.
    # (Session 10 found the two choices equal on an earlier corpus and recipe.) "last" also leaves validation
    # to calibration and to the decision to ship
    checkpoint: str = "last"
    patience: int = 100
    omnixas_share: float = 0.3  # share of each epoch's examples drawn from the OmniXAS Cu materials
    # share of each epoch's examples drawn from the nine metal references (foils). Drawn like any FEFF10 material
    # (0.27 % of examples, 9 of ~3,400), the shipped bundle named the CN of the V, Fe and Zn foils of the measured
    # development set wrong (12, 12, 8 for 8, 8, 12): the only single-element inputs it sees were too rare to learn.
    # A foil is what every beamline measures first, so its facts are worth a fixed share. Measured (5 members, seed
    # 0, corpus 32c8526f, /work/scratch/s17): with 0.03 the six measured foils get oxidation state 0 and their CN
    # right (p 0.51-0.95), against 6/6 and 3/6 for the shipped bundle and 0/6 and 6/6 for the same recipe retrained
    # with 0 (foil answers swing from run to run when they are this rare); validation (elements only, mean over
    # the metals) ox 0.849 vs 0.843 for 0 and 0.844 for the bundle before, CN 0.808 vs 0.799 and 0.816, so shipped.
    # A second seed with 0.03: foils right again, validation ox 0.830 (the seed spread of this recipe)
    reference_share: float = 0.03
    edge_keep: float = 0.5  # each further edge of a multi-edge material is kept with this probability
    stoichiometry_dropout: float = 0.5
    # Share of examples with the composition withheld: only the tokens of the edges drawn, each with fraction -1
    # (COMPOSITION_UNKNOWN), the other elements gone. A scan whose start document names no composition is asked
    # in this mode; a bundle trained without it reads the absorber alone as the pure metal
    composition_unknown_share: float = 0.1
    # oxidation-state targets of mixed-valence sites (261 of ~4,500 labelled training tokens) split between the two
    # neighbouring states (:func:`mixed_valence_target`). Validation, one member, 90 epochs, seeds 0 / 1, last-20-
    # epoch means, corpus b4e72757: oxidation-state NLL 0.523 / 0.561 vs 0.557 / 0.574 with one-hot classes,
    # accuracy 0.848 / 0.802 vs 0.831 / 0.808 (CN 0.834 / 0.832 vs 0.850 / 0.837, untouched by the change: the
    # seed noise). The full recipe with it (5 members, 180 epochs, corpus 4671c181) against the shipped bundle on
    # the same validation units (269): oxidation state 0.843 vs 0.851, NLL 0.434 vs 0.424; CN 0.818 vs 0.814, NLL
    # 0.740 vs 0.773; density MAE 0.501 vs 0.515. No gain for the oxidation state it targets, so off by default
    mixed_valence_targets: bool = False
    # beta-NLL for the regressions (Seitzer et al. 2022, ICLR: the Gaussian NLL's terms weighted by variance**beta,
    # so that a collapsed variance no longer dominates the mean's fit); 0 is the plain Gaussian NLL. Validation
    # (311 FEFF10 units, elements only, one member, 180 epochs, corpus 046e7113, /work/scratch/s11/beta_nll.py),
    # seeds 0 / 1: density MAE 0.552 / 0.544 with beta 0, 0.568 / 0.533 with 0.5, 0.689 with 1.0 (seed 0);
    # oxidation state 0.801 / 0.813 vs 0.815 / 0.801, CN 0.826 / 0.834 vs 0.813 / 0.796. No gain, so off
    regression_beta: float = 0.0
    # The shipped bundle has 10: two runs of 5 (--members 5, seeds 0 and 1) combined with `--combine`. Twenty (seeds
    # 0-3, snapshot ac66db00, session 19) against those ten, validation: oxidation state 0.838 vs 0.844, CN 0.839 vs
    # 0.839, NLL 0.393 vs 0.389; test ox 0.841 vs 0.847, CN 0.803 vs 0.810; measured 33/39 and 29/37 both. The
    # ensemble is saturated at ten: not shipped (the bar, set before the run: no loss on validation ox, CN or NLL).
    # Earlier: ten (the then shipped five + the five of the sharpening run, combined with
    # `sfn-stream train xanes-3d --combine`, recalibrated on validation) against five, validation (271 units):
    # oxidation state 0.855 vs 0.858 (pooled 0.856 vs 0.851), CN 0.839 vs 0.826, density MAE 0.500 vs 0.504, NLL
    # 0.415 / 0.717 vs 0.436 / 0.743. Not better on the headline task, so not shipped (the rule the sharpening run
    # met too); on test it read ox 0.809 vs 0.807, CN 0.810 vs 0.803, pooled ox ECE 0.096 vs 0.060, measured 32/39
    # vs 33/39 oxidation states: seed-to-seed differences, not a change worth a bundle twice the size
    members: int = 3
    wall_budget_s: float = 3600.0  # all members together; a member stops early when its share is spent
    model: dict[str, Any] = field(default_factory=lambda: {
        "d_model": 64, "n_heads": 4, "n_layers": 2, "cnn_channels": 16, "pool_size": 8, "dropout": 0.1})


# --- windows and tensors ---------------------------------------------------------------------------


@dataclass
class EdgeViews:
    windows: np.ndarray  # (V, L) float32, view 0 clean
    shifts: np.ndarray  # (V,) e0 shift
    source: str


def edge_window(edge, *, shift: float = 0.0, broadening: float = 0.0, max_window_missing: float | None = None):
    """The model window of one corpus edge (optionally shifted / broadened first), or None if unusable."""
    energy, mu = edge.energy, edge.mu
    if broadening > 0:
        energy, mu = gaussian_broaden(energy, mu, broadening)
    defaults = XANES_DEFAULTS if max_window_missing is None else replace(XANES_DEFAULTS, max_window_missing=max_window_missing)
    window = preprocess_xanes(energy + shift, mu, absorber=edge.absorber, energy_offset=edge.energy_offset,
                              defaults=defaults)
    return window if window.usable else None


def material_views(material: CorpusMaterial, aug: Augmentation3d | None, rng: np.random.Generator) -> dict[str, EdgeViews]:
    """absorber -> views of each usable edge (only the clean one when ``aug`` is None)."""
    out = {}
    for absorber, edge in material.edges.items():
        clean = edge_window(edge)
        if clean is None:
            continue
        windows, shifts = [clean.mu.astype(np.float32)], [float(clean.e0_shift)]
        oxidised = (material.metal_labels.get(absorber, {}).get("oxidation_state") or 0) > 0
        for _ in range(aug.views if aug else 0):
            shift = float(np.clip(rng.normal(0, aug.energy_shift_sigma), -3 * aug.energy_shift_sigma, 3 * aug.energy_shift_sigma))
            missing = aug.view_max_window_missing
            if oxidised and aug.compound_shift_up > 0 and rng.random() < aug.compound_shift_probability:
                shift += float(rng.uniform(0.0, aug.compound_shift_up))
                missing = max(missing or 0.0, 0.5)
            view = edge_window(edge, shift=shift, broadening=rng.uniform(*aug.broadening), max_window_missing=missing)
            if view is not None:
                windows.append(view.mu.astype(np.float32))
                shifts.append(float(view.e0_shift))
        out[absorber] = EdgeViews(np.stack(windows), np.asarray(shifts, np.float32), edge.source)
    return out


class MaterialTable:
    """Padded per-material arrays (tokens, labels) and a table of edge views, for fast batches."""

    def __init__(self, materials: Sequence[CorpusMaterial], views: Sequence[dict[str, EdgeViews]], n_views: int):
        import torch

        from sfn_stream.core.chemistry import element_z

        m, length = len(materials), XANES_WINDOW.n_points
        self.materials = list(materials)
        self.z = torch.zeros(m, MAX_TOKENS, dtype=torch.long)
        self.fractions = torch.zeros(m, MAX_TOKENS)
        self.ox = torch.full((m, MAX_TOKENS), -1, dtype=torch.long)
        self.ox_soft = torch.zeros(m, MAX_TOKENS, len(OX_CLASSES))  # training targets, mixed valence split
        self.cn = torch.full((m, MAX_TOKENS), -1, dtype=torch.long)
        self.edge = torch.full((m, MAX_TOKENS), -1, dtype=torch.long)
        self.regressions = torch.full((m, len(MATERIAL_REGRESSIONS)), float("nan"))
        self.flags = torch.full((m, len(MATERIAL_CLASSIFICATIONS)), -1.0)
        windows, shifts, counts = [], [], []
        for i, (material, edge_views) in enumerate(zip(materials, views)):
            for j, (symbol, fraction) in enumerate(zip(material.elements, material.fractions)):
                self.z[i, j], self.fractions[i, j] = element_z(symbol), fraction
                labels = material.metal_labels.get(symbol, {})
                self.ox[i, j] = _class_index(labels.get("oxidation_state"), OX_CLASSES)
                self.ox_soft[i, j] = torch.from_numpy(mixed_valence_target(int(self.ox[i, j]),
                                                                           labels.get("oxidation_state_mean")))
                self.cn[i, j] = _class_index(labels.get("coordination_number"), CN_CLASSES)
                if symbol in edge_views:
                    ev = edge_views[symbol]
                    pad = n_views - len(ev.shifts)  # repeat the clean view where augmentation failed
                    windows.append(np.concatenate([ev.windows, np.repeat(ev.windows[:1], pad, 0)]))
                    shifts.append(np.concatenate([ev.shifts, np.repeat(ev.shifts[:1], pad)]))
                    counts.append(len(ev.shifts))
                    self.edge[i, j] = len(windows) - 1
            for k, name in enumerate(MATERIAL_REGRESSIONS):
                value = material.labels.get(name)
                if value is not None:
                    self.regressions[i, k] = value
            for k, name in enumerate(MATERIAL_CLASSIFICATIONS):
                value = material.labels.get(name)
                if value is not None:
                    self.flags[i, k] = float(value)
        self.windows = torch.from_numpy(np.stack(windows)) if windows else torch.zeros(0, n_views, length)
        self.shifts = torch.from_numpy(np.stack(shifts)) if shifts else torch.zeros(0, n_views)
        self.view_counts = torch.tensor(counts or [1])

    def __len__(self) -> int:
        return len(self.materials)

    def batch(self, index, generator, *, edge_keep: float, stoichiometry_dropout: float, augmented: bool,
              composition_unknown: float = 0.0):
        """Network inputs for materials ``index``: random edge subset (>= 1 edge), random views; a share
        ``composition_unknown`` of them with only the drawn edges' tokens, at the unknown-composition fraction."""
        import torch

        available = self.edge[index] >= 0
        score = torch.rand(available.shape, generator=generator).masked_fill(~available, -1.0)
        first = score.argmax(1, keepdim=True)
        keep = (torch.rand(available.shape, generator=generator) < edge_keep) & available
        keep.scatter_(1, first, available.gather(1, first))
        edge = self.edge[index].clamp(min=0)
        if augmented:
            view = (torch.rand(edge.shape, generator=generator) * self.view_counts[edge]).long()
        else:
            view = torch.zeros_like(edge)
        spectra = self.windows[edge, view]
        shifts = self.shifts[edge, view]
        fractions = self.fractions[index].clone()
        drop = torch.rand(len(index), generator=generator) < stoichiometry_dropout
        fractions[drop] = 0.0
        from sfn_stream.core.networks import UNKNOWN_COMPOSITION_FRACTION

        z = self.z[index]
        hidden = torch.rand(len(index), generator=generator) < composition_unknown
        if hidden.any():
            z = z.clone()
            z[hidden] = torch.where(keep[hidden], z[hidden], torch.zeros_like(z[hidden]))
            fractions[hidden] = torch.where(keep[hidden], UNKNOWN_COMPOSITION_FRACTION, 0.0)
        return z, fractions, spectra, shifts, keep

    def one_edge_rows(self) -> list[tuple[int, int]]:
        """(material row, token) of every edge: the one-edge evaluation / calibration units."""
        rows, tokens = (self.edge >= 0).nonzero(as_tuple=True)
        return list(zip(rows.tolist(), tokens.tolist()))


def mixed_valence_target(index: int, mean: float | None) -> np.ndarray:
    """Oxidation-state target over ``OX_CLASSES``: one-hot at the class ``index``, except for a mixed-valence
    site average (Fe3O4's 2.67) whose class is one of its two neighbours: then split between them in
    proportion (2.67 -> 1/3 on 2, 2/3 on 3), what the spectrum of such a material is a mixture of. All zero
    for an unlabelled token."""
    target = np.zeros(len(OX_CLASSES), dtype=np.float32)
    if index < 0:
        return target
    if mean is not None and abs(mean - round(mean)) > MIXED_VALENCE_MIN:
        low = math.floor(mean)
        if 0 <= low < len(OX_CLASSES) - 1 and index in (low, low + 1):
            target[low], target[low + 1] = low + 1 - mean, mean - low
            return target
    target[index] = 1.0
    return target


def _class_index(value, classes) -> int:
    return classes.index(value) if value is not None and value in classes else -1


# --- training --------------------------------------------------------------------------------------


def regression_nll(mean, target, variance, beta: float = 0.0):
    """The Gaussian NLL (torch's, eps 1e-6); with ``beta`` > 0 the beta-NLL of Seitzer et al. 2022 (ICLR): each
    term weighted by its own variance**beta, held constant, so low-variance examples stop dominating the mean."""
    import torch.nn.functional as F

    if beta <= 0:
        return F.gaussian_nll_loss(mean, target, variance)
    clamped = variance.clamp(min=1e-6)
    nll = 0.5 * (clamped.log() + (mean - target) ** 2 / clamped)
    return (nll * clamped.detach() ** beta).mean()


def _loss(out, table: MaterialTable, index, target_mean, target_std, *, mixed_valence: bool = False,
          regression_beta: float = 0.0, present=None):
    import torch
    import torch.nn.functional as F

    loss = torch.zeros(())
    for name, target in (("oxidation_state", table.ox[index]), ("coordination_number", table.cn[index])):
        logits = out["element_logits"][name]
        if present is not None:  # tokens withheld from the input (composition unknown) are not asked for
            target = target.masked_fill(~present, -1)
        labelled = target >= 0
        if not labelled.any():
            continue
        if name == "oxidation_state" and mixed_valence:
            soft = table.ox_soft[index][labelled]
            loss = loss - (soft * F.log_softmax(logits[labelled], -1)).sum(-1).mean()
        else:
            loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-1)
    values = (table.regressions[index] - target_mean) / target_std
    ok = torch.isfinite(values)
    if ok.any():
        mean, variance = out["compound_mean"][ok], out["compound_log_var"][ok].exp()
        loss = loss + regression_nll(mean, values[ok], variance, regression_beta)
    flags = table.flags[index]
    known = flags >= 0
    if known.any():
        loss = loss + 0.5 * F.binary_cross_entropy_with_logits(out["compound_logits"][known], flags[known])
    return loss


def _augment(spectra, has, generator, aug: Augmentation3d):
    import torch

    b, n, length = spectra.shape
    spectra_in = spectra
    spectra = _sharpen(spectra, generator, aug)
    beta = torch.rand(b, n, 1, generator=generator) * aug.self_absorption
    beta = beta * (torch.rand(b, n, 1, generator=generator) < aug.self_absorption_probability)
    damped = spectra * (1 + beta) / (1 + beta * spectra.clamp(min=0))
    sigma = torch.rand(b, n, 1, generator=generator) * aug.noise
    scale = 1 + torch.randn(b, n, 1, generator=generator) * aug.scale_error
    tilt = torch.randn(b, n, 1, generator=generator) * aug.tilt_error
    x = torch.linspace(-0.5, 0.5, length)
    noisy = damped * scale + tilt * x + sigma * torch.randn(b, n, length, generator=generator)
    return torch.where(has.unsqueeze(-1), noisy, spectra_in)


def _sharpen(spectra, generator, aug: Augmentation3d):
    """Unsharp masking of a random share of the windows (HERFD-like); the others pass unchanged."""
    import torch

    if aug.sharpen <= 0 or aug.sharpen_probability <= 0:
        return spectra
    b, n, length = spectra.shape
    step = (XANES_WINDOW.stop - XANES_WINDOW.start) / (XANES_WINDOW.n_points - 1)
    sigma = aug.sharpen_sigma_ev / step
    half = int(math.ceil(3 * sigma))
    offsets = torch.arange(-half, half + 1, dtype=spectra.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    flat = spectra.reshape(b * n, 1, length)
    blurred = torch.nn.functional.conv1d(torch.nn.functional.pad(flat, (half, half), mode="replicate"), kernel)
    alpha = torch.rand(b, n, 1, generator=generator) * aug.sharpen
    alpha = alpha * (torch.rand(b, n, 1, generator=generator) < aug.sharpen_probability)
    return spectra + alpha * (spectra - blurred.reshape(b, n, length))


def _one_edge_inputs(table: MaterialTable, rows, *, elements_only: bool):
    """Inputs with only one edge given per row (``rows`` from :meth:`MaterialTable.one_edge_rows`)."""
    import torch

    index = torch.tensor([r for r, _ in rows], dtype=torch.long)
    token = torch.tensor([t for _, t in rows], dtype=torch.long)
    has = torch.zeros(len(rows), MAX_TOKENS, dtype=torch.bool)
    has[torch.arange(len(rows)), token] = True
    edge = table.edge[index].clamp(min=0)
    fractions = torch.zeros_like(table.fractions[index]) if elements_only else table.fractions[index]
    return index, token, (table.z[index], fractions, table.windows[edge, 0], table.shifts[edge, 0], has)


def train_member(train: MaterialTable, val: MaterialTable, *, table, config: Train3dConfig, aug: Augmentation3d,
                 seed: int, target_mean, target_std, deadline: float, progress_bar=None):
    import torch

    from sfn_stream.core.networks import SpecFusionNet

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = SpecFusionNet(table, spectrum_length=XANES_WINDOW.n_points, compound_regressions=tuple(MATERIAL_REGRESSIONS),
                          compound_classifications=tuple(MATERIAL_CLASSIFICATIONS), unknown_fractions="zero",
                          unknown_composition=config.composition_unknown_share > 0, **config.model)
    model.target_mean.copy_(target_mean)
    model.target_std.copy_(target_std)
    weights = torch.tensor(draw_weights(train.materials, omnixas_share=config.omnixas_share,
                                        reference_share=config.reference_share))
    steps_per_epoch = math.ceil(config.examples_per_epoch / config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.1)
    val_rows = val.one_edge_rows()
    val_index, _, val_inputs = _one_edge_inputs(val, val_rows, elements_only=True)
    best, best_loss, since_best, history = None, math.inf, 0, []
    if config.checkpoint not in ("last", "best_total"):
        raise ValueError(f"checkpoint must be 'last' or 'best_total', got {config.checkpoint!r}")
    for epoch in range(config.epochs):
        model.train()
        drawn = torch.multinomial(weights, steps_per_epoch * config.batch_size, replacement=True, generator=generator)
        for step in range(steps_per_epoch):
            index = drawn[step * config.batch_size:(step + 1) * config.batch_size]
            z, fractions, spectra, shifts, has = train.batch(index, generator, edge_keep=config.edge_keep,
                                                             stoichiometry_dropout=config.stoichiometry_dropout, augmented=True,
                                                             composition_unknown=config.composition_unknown_share)
            out = model(z, fractions, _augment(spectra, has, generator, aug), shifts, has)
            loss = _loss(out, train, index, target_mean, target_std, mixed_valence=config.mixed_valence_targets,
                         regression_beta=config.regression_beta, present=z > 0)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(_loss(model(*val_inputs), val, val_index, target_mean, target_std,
                                   mixed_valence=config.mixed_valence_targets, regression_beta=config.regression_beta))
        history.append(round(val_loss, 4))
        if progress_bar is not None:
            progress_bar.update(1)
            progress_bar.set_postfix(member=seed, val_loss=f"{val_loss:.3f}")
        if val_loss < best_loss - 1e-4:
            best_loss, since_best = val_loss, 0
            if config.checkpoint == "best_total":
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if config.checkpoint == "best_total" and since_best >= config.patience and epoch >= config.epochs // 3:
                break
        if time.monotonic() > deadline:
            break
    if progress_bar is not None:
        progress_bar.update(config.epochs - len(history))
    if config.checkpoint == "best_total":
        model.load_state_dict(best)
    model.eval()
    return model, {"best_val_loss": round(best_loss, 4), "epochs_run": len(history), "val_loss": history,
                   "checkpoint": config.checkpoint, "stopped_by_wall_budget": time.monotonic() > deadline}


def _is_omnixas(material: CorpusMaterial) -> bool:
    return any(e.source == OMNIXAS for e in material.edges.values())


def _validation_table(materials: Sequence[CorpusMaterial], rng: np.random.Generator) -> MaterialTable:
    """The validation materials' clean views (OmniXAS-only Cu capped) as training and calibration see them."""
    pairs = [(m, material_views(m, None, rng)) for m in _cap_omnixas(materials, rng)]
    return MaterialTable([m for m, v in pairs if v], [v for _, v in pairs if v], 1)


def _cap_omnixas(materials: Sequence[CorpusMaterial], rng: np.random.Generator) -> list[CorpusMaterial]:
    """At most as many OmniXAS materials as FEFF10 ones (a fixed random subset), so that early stopping and
    calibration on validation are not decided by the Cu edge alone."""
    omni = [m for m in materials if _is_omnixas(m)]
    others = [m for m in materials if not _is_omnixas(m)]
    if len(omni) > len(others):
        omni = [omni[i] for i in sorted(rng.choice(len(omni), len(others), replace=False))]
    return others + omni


def draw_weights(materials: Sequence[CorpusMaterial], *, omnixas_share: float, reference_share: float) -> list[float]:
    """Each training material's chance of being drawn: the OmniXAS Cu materials share ``omnixas_share`` of an
    epoch, the metal references ``reference_share`` (when there are any), the FEFF10 materials the rest."""
    kinds = ["reference" if m.source == REFERENCE else "omnixas" if _is_omnixas(m) else "feff10" for m in materials]
    counts = Counter(kinds)
    shares = {"omnixas": omnixas_share, "reference": reference_share if counts["reference"] else 0.0}
    shares["feff10"] = 1.0 - sum(shares.values())
    return [shares[kind] / counts[kind] for kind in kinds]


# --- calibration ----------------------------------------------------------------------------------


def fit_calibration(members, val: MaterialTable) -> dict[str, Any]:
    """Temperatures (per classification head) and regression std scales, fitted on the validation split
    in the beamline's mode: one edge per example, elements only. The per-metal heads weight every (absorber,
    calculation) group alike, as ``evaluate xanes`` averages over metals: unweighted, the OmniXAS Cu edges
    (half the capped validation set) would set the temperature of the other eight metals."""
    import torch

    rows = val.one_edge_rows()
    index, token, inputs = _one_edge_inputs(val, rows, elements_only=True)
    groups = _edge_groups(val, rows)
    with torch.no_grad():
        outs = [member(*inputs) for member in members]
    temperatures, scales = {}, {}
    for name, labels in (("oxidation_state", val.ox[index, token]), ("coordination_number", val.cn[index, token])):
        keep = (labels >= 0).numpy()
        logits = np.stack([o["element_logits"][name][torch.arange(len(rows)), token].numpy() for o in outs])[:, keep]
        y = labels.numpy()[keep]
        weights = _balanced_weights([g for g, k in zip(groups, keep) if k])
        temperatures[name] = (fit_temperature(y, probabilities_at=lambda t, logits=logits: _softmax(logits / t).mean(0),
                                              weights=weights) if len(y) else 1.0)
    for k, name in enumerate(MATERIAL_CLASSIFICATIONS):
        flags = val.flags[index, k].numpy()
        keep = flags >= 0
        logits = np.stack([o["compound_logits"][:, k].numpy() for o in outs])[:, keep]
        y = flags[keep].astype(int)

        def binary(t, logits=logits):
            p = (1 / (1 + np.exp(-logits / t))).mean(0)
            return np.stack([1 - p, p], axis=1)

        temperatures[name] = fit_temperature(y, probabilities_at=binary) if len(y) else 1.0
    for k, name in enumerate(MATERIAL_REGRESSIONS):
        truth = val.regressions[index, k].numpy()
        std_t = members[0].target_std[k].item()
        means = np.stack([o["compound_mean"][:, k].numpy() for o in outs]) * std_t + members[0].target_mean[k].item()
        variances = np.stack([o["compound_log_var"][:, k].exp().numpy() for o in outs]) * std_t**2
        mixture_std = np.sqrt(variances.mean(0) + means.var(0))
        ok = np.isfinite(truth)
        z = (means.mean(0)[ok] - truth[ok]) / mixture_std[ok]
        scales[name] = float(np.sqrt(np.mean(z**2))) if ok.any() else 1.0
    return {"temperatures": {k: float(v) for k, v in temperatures.items()}, "regression_std_scale": scales,
            "fitted_on": "validation split, one edge per example, elements only (no stoichiometry); oxidation state "
                         "and CN with every (absorber, calculation) group weighted alike"}


def _edge_groups(table: MaterialTable, rows) -> list[tuple[str, str]]:
    """(absorber, calculation source) of each one-edge unit."""
    out = []
    for i, j in rows:
        material = table.materials[i]
        absorber = material.elements[j]
        out.append((absorber, material.edges[absorber].source))
    return out


def _balanced_weights(groups) -> np.ndarray:
    """Weights giving every group the same total (1 / group size each)."""
    counts = Counter(groups)
    return np.asarray([1.0 / counts[g] for g in groups], dtype=float)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


# --- the bundle ------------------------------------------------------------------------------------


def load_training_materials(progress: bool = True) -> tuple[list[CorpusMaterial], dict[str, list[str]]]:
    """The corpus materials and the committed unified splits (written first if the file is absent)."""
    materials = read_corpus_materials(progress=progress)
    if not UNIFIED_SPLITS_FILE.is_file():
        write_unified_splits(materials)
    return materials, read_unified_splits()


def train_xanes3d_bundle(out_dir: str | Path, *, seed: int = 0, config: Train3dConfig | None = None,
                         augmentation: Augmentation3d = Augmentation3d(), progress: bool = True,
                         materials: Sequence[CorpusMaterial] | None = None,
                         splits: Mapping[str, Sequence[str]] | None = None, epochs: int | None = None,
                         members: int | None = None, wall_budget_s: float | None = None):
    """Train, calibrate on validation, save the bundle; figures come from ``sfn-stream evaluate xanes``."""
    import torch
    from tqdm import tqdm

    from sfn_stream.core.networks import save_bundle

    torch.set_num_threads(1)
    started = time.monotonic()
    config = config or Train3dConfig()
    overrides = {k: v for k, v in (("epochs", epochs), ("members", members), ("wall_budget_s", wall_budget_s)) if v}
    if overrides:
        config = Train3dConfig(**{**asdict(config), **overrides})
    references: list[CorpusMaterial] = []
    if materials is None:
        materials, splits = load_training_materials(progress)
        references = read_metal_references()  # foils: training only, never in a test split
    assignment = split_of(splits)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[CorpusMaterial]] = {"train": list(references), "val": []}
    for material in materials:
        split = assignment.get(material.material_id)
        if split in parts and any(a in METALS_3D for a in material.edges):
            parts[split].append(material)
    if not parts["train"] or not parts["val"]:
        raise TrainingDataError("the train or val split has no material with a spectrum")
    train_views = [material_views(m, augmentation, rng) for m in tqdm(parts["train"], disable=not progress,
                                                                        desc="augmented views", mininterval=5)]
    train_pairs = [(m, v) for m, v in zip(parts["train"], train_views) if v]
    train = MaterialTable([m for m, _ in train_pairs], [v for _, v in train_pairs], augmentation.views + 1)
    val = _validation_table(parts["val"], rng)
    finite = torch.isfinite(train.regressions)
    target_mean = torch.tensor([float(train.regressions[finite[:, k], k].mean()) for k in range(finite.shape[1])])
    target_std = torch.tensor([float(train.regressions[finite[:, k], k].std()) or 1.0 for k in range(finite.shape[1])])
    stats = descriptor_stats()
    table = descriptor_table(stats)
    trained, info = [], []
    deadline = started + config.wall_budget_s
    with tqdm(total=config.members * config.epochs, disable=not progress, desc="training", mininterval=2) as bar:
        for k in range(config.members):
            member_deadline = time.monotonic() + (deadline - time.monotonic()) / (config.members - k)
            model, member_info = train_member(train, val, table=table, config=config, aug=augmentation, seed=seed * 100 + k,
                                              target_mean=target_mean, target_std=target_std, deadline=member_deadline,
                                              progress_bar=bar)
            trained.append(model)
            info.append(member_info)
    calibration = fit_calibration(trained, val)
    training_seconds = time.monotonic() - started
    card = _card(trained, config, augmentation, calibration, train, val, info, seed, training_seconds)
    weights = {"descriptor_table": torch.from_numpy(table), "members": [m.state_dict() for m in trained],
               "calibration": calibration}
    return save_bundle(out_dir, card, weights)


def combine_xanes3d_bundles(sources: Sequence[str | Path], out_dir: str | Path, *, progress: bool = True):
    """One deep ensemble from the members of several ``xanes-3d`` bundles of one architecture (runs with other
    seeds or recipes: Lakshminarayanan et al. 2017 ensemble independently trained members), calibrated afresh on
    the validation split as training does. The card is the first source's, with every source named (its id,
    corpus and augmentation) and every member's training record."""
    import torch

    from sfn_stream.core.networks import XanesEnsemble, load_bundle, save_bundle

    bundles = [load_bundle(path) for path in sources]
    if len(bundles) < 2:
        raise TrainingDataError("combining needs two or more bundles")
    first = bundles[0]
    weights = [b.load_weights() for b in bundles]
    for bundle, w in zip(bundles[1:], weights[1:]):
        if bundle.card.get("name") != first.card.get("name") or \
                bundle.card["architecture"]["kwargs"] != first.card["architecture"]["kwargs"]:
            raise TrainingDataError(f"{bundle.id} is not of {first.id}'s architecture: they cannot share an ensemble")
        if not torch.equal(w["descriptor_table"], weights[0]["descriptor_table"]):
            raise TrainingDataError(f"{bundle.id} was trained on other element descriptors than {first.id}")
    states = [state for w in weights for state in w["members"]]
    members = [member.eval() for b in bundles for member in XanesEnsemble.from_bundle(b).members]
    materials, splits = load_training_materials(progress)
    assignment = split_of(splits)
    val_materials = [m for m in materials if assignment.get(m.material_id) == "val"
                     and any(a in METALS_3D for a in m.edges)]
    calibration = fit_calibration(members, _validation_table(val_materials, np.random.default_rng(0)))
    card = copy.deepcopy(first.card)
    card.pop("weights_sha256", None)
    card["created"] = _dt.date.today().isoformat()
    card["calibration"] = calibration
    for name, task in card["tasks"].items():
        if "temperature" in task:
            task["temperature"] = calibration["temperatures"][name]
    card["architecture"]["ensemble_members"] = len(members)
    card["architecture"]["training"]["members"] = [
        info for b in bundles for info in b.card["architecture"]["training"]["members"]]
    card["architecture"]["combined_from"] = [
        {"bundle_id": b.id, "members": len(w["members"]),
         "corpus_content_hash": b.card["training_data"].get("corpus_content_hash"),
         "seed": b.card["architecture"]["training"].get("seed"),
         "augmentation": b.card["training_data"].get("augmentation")} for b, w in zip(bundles, weights)]
    card["training_data"]["note_combined"] = ("members from several training runs (architecture.combined_from); "
                                              "this section describes the first run's data")
    card["metrics"] = {"note": "see sfn-stream evaluate xanes (filled in by the evaluation when run with --write-card)"}
    return save_bundle(out_dir, card, {"descriptor_table": weights[0]["descriptor_table"],
                                       "members": states, "calibration": calibration})


def _card(trained, config, augmentation, calibration, train: MaterialTable, val: MaterialTable, info, seed, seconds):
    from sfn_stream.core.networks import ELEMENT_TASK_CLASSES, UNKNOWN_COMPOSITION_FRACTION

    edges = Counter((e.absorber, e.source) for m in train.materials for e in m.edges.values()
                    if m.source != REFERENCE)
    metal_references = sorted(m.elements[0] for m in train.materials if m.source == REFERENCE)
    return {
        "name": BUNDLE_NAME,
        "version": BUNDLE_VERSION,
        "kind": "xanes",
        "created": _dt.date.today().isoformat(),
        "supported_absorbers": list(METALS_3D),
        "predicts_unmeasured_metals": True,
        "registry": REGISTRY_NOTE,
        "preferred_for_elements_only": list(METALS_3D),
        **({"preferred_without_composition": list(METALS_3D)} if config.composition_unknown_share > 0 else {}),
        "covers": "K-edge XANES of Ti, V, Cr, Mn, Fe, Co, Ni, Cu, Zn in 2-5 element compounds, and the "
        "metals themselves (foils: one FEFF10 spectrum per metal, listed under training_data.metal_references; "
        "intermetallics carry no oxidation-state label). Input: the sample's "
        "elements, stoichiometry when known, the spectra of any subset of its 3d-metal edges. Output: per 3d "
        "metal of the sample oxidation state and CN (also for metals whose edge was not given), per sample "
        "density, band gap, formation energy, Fermi level, is-metal, is-magnetic. Not predicted: direct/indirect "
        "gap and magnetic ordering (no label source).",
        "training_data": {
            "description": "data/corpus: this corpus's FEFF10 spectra of all nine 3d metals (AMCSD structures) and "
            "the OmniXAS Cu FEFF 9.9.1 spectra of Materials Project structures (a second calculation setting, read "
            "from ../shared, aligned with its own energy offset and drawn for omnixas_share of each epoch)",
            "corpus_content_hash": snapshot_hash(),
            "splits": str(UNIFIED_SPLITS_FILE.relative_to(UNIFIED_SPLITS_FILE.parents[2])),
            "n_train_materials": len(train),
            "n_val_materials": len(val),
            "train_edges": {f"{a}/{s}": n for (a, s), n in sorted(edges.items())},
            "metal_references": {
                "metals": metal_references,
                "labels": "facts of the pure element (sfn_stream.offline.corpus._metal_references): oxidation state "
                          "0, first-shell CN of bcc/fcc/hcp (none for alpha-Mn), structure density, band gap 0, "
                          "is-metal, formation energy 0, is-magnetic for Fe/Co/Ni (none for Cr, Mn), no Fermi level",
                "split": "training only (no foil is in a validation or test split)"},
            "augmentation": augmentation.to_dict(),
            "stoichiometry_dropout": config.stoichiometry_dropout,
            "composition_unknown_share": config.composition_unknown_share,
            "edge_dropout": f"every edge of a material but one random one kept with probability {config.edge_keep}",
            "wall_seconds": round(seconds, 1),
            "cpu": "nice -n 5, one torch thread, on a 2-core machine shared with a FEFF campaign",
        },
        "label_sources": {
            "oxidation_state": "data/corpus absorbers: pymatgen BVAnalyzer, else Composition.oxi_state_guesses; "
            "multiplicity-weighted mean over sites rounded to the class (oxidation_method per row)",
            "coordination_number": "data/corpus absorbers: CrystalNN, multiplicity-weighted mean rounded to the class",
            **{name: source for name, (_, source) in MATERIAL_REGRESSIONS.items()},
            **MATERIAL_CLASSIFICATIONS,
            "not_predicted": {"gap_type": "no label source (empty in data/corpus)",
                              "magnetic_ordering": "no label source (empty in data/corpus)"},
        },
        "preprocessing": {
            "function": "sfn_stream.core.spectra.preprocess_xanes",
            "window": XANES_WINDOW.to_dict(),
            "energy_offset": "per corpus row (FEFF metal first inflection - tabulated edge at that row's settings); "
            "beamline scans are taken as foil-calibrated",
            "unknown_stoichiometry": "fractions all zero (trained with stoichiometry dropout)",
            **({"unknown_composition": "only the measured absorbers' tokens, each at fraction "
                f"{UNKNOWN_COMPOSITION_FRACTION} (trained on {config.composition_unknown_share:.0%} of the examples)"}
               if config.composition_unknown_share > 0 else {}),
        },
        "architecture": {
            "class": "sfn_stream.core.networks.SpecFusionNet",
            "kwargs": trained[0].constructor_kwargs(),
            "n_parameters_per_member": int(sum(p.numel() for p in trained[0].parameters())),
            "ensemble_members": len(trained),
            "absorber_identity": "through the element descriptors of the metal's token (one network, shared heads)",
            "descriptors": {"names": list(DESCRIPTOR_NAMES)},
            "training": {**asdict(config), "seed": seed, "members": info},
        },
        "tasks": {
            **{name: {"type": "classification", "level": "element", "classes": list(classes),
                      "temperature": calibration["temperatures"][name]}
               for name, classes in ELEMENT_TASK_CLASSES.items()},
            **{name: {"type": "regression", "level": "compound", "unit": unit, "label_source": source}
               for name, (unit, source) in MATERIAL_REGRESSIONS.items()},
            **{name: {"type": "classification", "level": "compound", "classes": [False, True], "label_source": source,
                      "temperature": calibration["temperatures"][name]}
               for name, source in MATERIAL_CLASSIFICATIONS.items()},
        },
        "calibration": calibration,
        "metrics": {"note": "see sfn-stream evaluate xanes (filled in below by the evaluation when run with --write-card)"},
    }




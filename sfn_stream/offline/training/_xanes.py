"""Training the XANES SpecFusionNet ensemble on the OmniXAS Cu set, and its model bundle.

Windows are made by :func:`sfn_stream.core.spectra.preprocess_xanes`, the same function that preprocesses
beamline scans; FEFF energies are moved onto the calibrated scale with ``energy_offset`` =
E0(FEFF Cu metal, same settings) - E(Cu K, tabulated).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.files import file_sha256
from sfn_stream.core.chemistry import DESCRIPTOR_NAMES, descriptor_stats, descriptor_table
from sfn_stream.core.simulation import metal_energy_offset, read_xmu
from sfn_stream.core.spectra import XANES_WINDOW, find_e0, k_edge_energy, preprocess_xanes
from sfn_stream.offline.corpus import IncompleteSpectrum
from sfn_stream.offline.metrics import (
    expected_calibration_error,
    fit_temperature,
    label_metrics,
    negative_log_likelihood,
    regression_metrics,
)
from sfn_stream.offline.splits import SPLITS, balanced_splits
from ._omnixas import LABELS_FILE

ENERGY_OFFSET_FILE = paths.LABELS_DIR / "feff_cu_metal_e0.json"
BUNDLE_NAME = "xanes-specfusion"
BUNDLE_VERSION = "0.2.0"


class TrainingDataError(ValueError):
    """The training inputs are missing or inconsistent (say which and how to make them)."""


# --- energy offset ------------------------------------------------------------------------------


def measure_feff_energy_offset(xmu_path: str | Path, absorber: str = "Cu") -> dict[str, Any]:
    """First inflection of FEFF's metal spectrum (xmu.dat: omega e k mu mu0 chi) minus the tabulated K edge.

    The first inflection, because measured scans are calibrated by putting their reference foil's
    first inflection on the tabulated edge (which is the metals' first inflection point).
    """
    energy, mu, _ = read_xmu(xmu_path)
    offset = metal_energy_offset(energy, mu, absorber)
    e_ref = float(k_edge_energy(absorber))
    return {
        "absorber": absorber,
        "energy_offset": offset,
        "feff_metal_e0": e_ref + offset,
        "feff_metal_max_derivative": float(find_e0(energy, mu)),
        "tabulated_edge": e_ref,
        "method": "first inflection of FEFF's own metal spectrum (sfn_stream.core.spectra.find_first_inflection, "
        "as reference foils are aligned) minus the tabulated K edge",
        "source": str(xmu_path),
    }


def recorded_energy_offset(path: str | Path = ENERGY_OFFSET_FILE) -> dict[str, Any]:
    """The committed measurement of the FEFF energy offset (see :func:`measure_feff_energy_offset`)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(
            f"{path} is missing: measure the offset with measure_feff_energy_offset(<FEFF Cu metal xmu.dat>) "
            "and write it there"
        )
    return json.loads(path.read_text())


# --- dataset ------------------------------------------------------------------------------------


@dataclass
class XanesSample:
    """One material: its absorber window, elements and labels (None = missing, masked in the loss)."""

    material_id: str
    formula: str
    elements: tuple[str, ...]
    fractions: tuple[float, ...]
    absorber: str
    window: np.ndarray  # (n_points,) float32
    e0_shift: float
    density: float | None
    oxidation_state: int | None
    coordination_number: int | None
    energy: np.ndarray | None = None  # native spectrum on FEFF's scale, for augmentation
    mu: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class XanesDataset:
    samples: list[XanesSample]
    energy_offset: float
    excluded: Counter = field(default_factory=Counter)
    description: str = ""

    def by_id(self) -> dict[str, XanesSample]:
        return {s.material_id: s for s in self.samples}


def composition_fractions(formula: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    from pymatgen.core import Composition

    composition = Composition(formula)
    elements = tuple(el.symbol for el in composition.elements)
    return elements, tuple(float(composition.get_atomic_fraction(el)) for el in elements)


def window_sample(
    material_id: str,
    formula: str,
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    absorber: str,
    energy_offset: float,
    labels: Mapping[str, Any],
    keep_native: bool = True,
):
    """A :class:`XanesSample` from a native spectrum, or the reason it is not usable (a string)."""
    window = preprocess_xanes(energy, mu, absorber=absorber, energy_offset=energy_offset)
    if not window.usable:
        return (window.flags[-1] if window.flags else "not_usable") + ""
    elements, fractions = composition_fractions(formula)
    return XanesSample(
        material_id=material_id,
        formula=formula,
        elements=elements,
        fractions=fractions,
        absorber=absorber,
        window=window.mu.astype(np.float32),
        e0_shift=float(window.e0_shift),
        density=labels.get("density"),
        oxidation_state=labels.get("oxidation_state"),
        coordination_number=labels.get("coordination_number"),
        energy=np.asarray(energy, float) if keep_native else None,
        mu=np.asarray(mu, float) if keep_native else None,
        extra={"flags": list(window.flags), "data_start": float(window.energy_min - window.e_ref)},
    )


def build_xanes_dataset(
    *,
    energy_offset: float | None = None,
    material_ids: Iterable[str] | None = None,
    progress: bool = True,
) -> XanesDataset:
    """Site-averaged OmniXAS Cu spectra -> windows + labels from the committed label table.

    Materials are excluded (and counted by reason) when their label row failed, when some Cu sites
    have no spectrum, or when ``preprocess_xanes`` marks the window unusable.
    """
    from pymatgen.core import Structure
    from tqdm import tqdm

    from ._omnixas import material_spectrum, read_omnixas_labels
    from sfn_stream.offline.shared import omnixas_poscars

    if energy_offset is None:
        energy_offset = float(recorded_energy_offset()["energy_offset"])
    labels = read_omnixas_labels()
    poscars = omnixas_poscars()
    ids = sorted(material_ids if material_ids is not None else labels)
    samples, excluded = [], Counter()
    for material_id in tqdm(ids, disable=not progress, desc="windows", mininterval=5):
        row = labels.get(material_id)
        if row is None or row["density"] is None:
            excluded["no_labels"] += 1
            continue
        structure = Structure.from_str(poscars[material_id], fmt="poscar")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spectrum = material_spectrum(material_id, structure)
        except IncompleteSpectrum:
            excluded["cu_sites_without_spectrum"] += 1
            continue
        sample = window_sample(
            material_id,
            row["formula"],
            spectrum.energy,
            spectrum.mu,
            absorber="Cu",
            energy_offset=energy_offset,
            labels={
                "density": row["density"],
                "oxidation_state": row["cu_oxidation_class"],
                "coordination_number": row["cu_cn_class"],
            },
        )
        if isinstance(sample, str):
            excluded[f"window_{sample}"] += 1
            continue
        sample.extra.update(
            oxidation_mean=row["cu_oxidation_mean"],
            oxidation_method=row["cu_oxidation_method"],
            cn_mean=row["cu_cn_mean"],
            cn_mixed=row["cu_cn_mixed"],
            crystal_system=row["crystal_system"],
        )
        samples.append(sample)
    return XanesDataset(
        samples,
        energy_offset,
        excluded,
        "OmniXAS Cu K-edge FEFF 9.9.1 site spectra (Materials Project structures), site-averaged with "
        "multiplicity weights; labels derived from the structures (data/labels/omnixas_cu_labels.csv.gz)",
    )


# --- splits -------------------------------------------------------------------------------------


def split_paths(directory: str | Path = paths.SPLITS_DIR, prefix: str = "xanes_cu") -> dict[str, Path]:
    return {name: Path(directory) / f"{prefix}_{name}_ids.txt" for name in SPLITS}


def write_splits(splits: Mapping[str, Sequence[str]], directory: str | Path = paths.SPLITS_DIR) -> None:
    for name, path in split_paths(directory).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{material_id}\n" for material_id in splits[name]))


def read_splits(directory: str | Path = paths.SPLITS_DIR) -> dict[str, list[str]]:
    out = {}
    for name, path in split_paths(directory).items():
        if not path.is_file():
            raise TrainingDataError(f"split file {path} is missing; make it with balanced_splits + write_splits")
        out[name] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return out


# --- augmentation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Make FEFF windows look like measured scans.

    Through ``preprocess_xanes`` (so that window and e0_shift move together): a rigid energy shift
    (uniform +-``energy_jitter`` eV) and extra Gaussian broadening (FWHM uniform in ``broadening``,
    monochromator + sample effects beyond FEFF's core-hole width). On the window, per batch:
    Gaussian noise (sigma uniform up to ``noise`` of the edge step) and normalisation errors
    (scale 1 + N(0, ``scale_error``), a linear tilt N(0, ``tilt_error``) across the window).
    """

    views: int = 6
    energy_jitter: float = 1.0
    broadening: tuple[float, float] = (0.5, 2.0)
    noise: float = 0.01
    scale_error: float = 0.03
    tilt_error: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        return {
            "views_per_material": self.views,
            "energy_jitter_ev": f"uniform +-{self.energy_jitter} (shifts window and e0_shift together)",
            "extra_gaussian_broadening_fwhm_ev": list(self.broadening),
            "noise_sigma_max_of_edge_step": self.noise,
            "scale_error_sigma": self.scale_error,
            "tilt_error_sigma_over_window": self.tilt_error,
            "clean_view_kept": True,
        }


def gaussian_broaden(energy: np.ndarray, mu: np.ndarray, fwhm: float, step: float = 0.05):
    """Convolve with a Gaussian of ``fwhm`` eV on a uniform grid; returns (grid, mu)."""
    grid = np.arange(energy[0], energy[-1], step)
    values = np.interp(grid, energy, mu)
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / step
    half = int(math.ceil(4 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.full(half, values[0]), values, np.full(half, values[-1])])
    return grid, np.convolve(padded, kernel, mode="valid")


def augmented_views(sample: XanesSample, energy_offset: float, aug: Augmentation, rng: np.random.Generator):
    """``aug.views`` (window, e0_shift) pairs from the sample's native spectrum (unusable ones skipped)."""
    views = []
    for _ in range(aug.views):
        shift = rng.uniform(-aug.energy_jitter, aug.energy_jitter)
        grid, mu = gaussian_broaden(sample.energy, sample.mu, rng.uniform(*aug.broadening))
        window = preprocess_xanes(grid + shift, mu, absorber=sample.absorber, energy_offset=energy_offset)
        if window.usable:
            views.append((window.mu.astype(np.float32), float(window.e0_shift)))
    return views


# --- tensors ------------------------------------------------------------------------------------


def _class_index(value: int | None, classes: Sequence[int]) -> int:
    return classes.index(value) if value is not None and value in classes else -1


def sample_tensors(samples: Sequence[XanesSample], windows=None, shifts=None):
    """Padded network inputs + targets for ``samples`` (optionally with replacement windows)."""
    import torch

    from sfn_stream.core.chemistry import element_z
    from sfn_stream.core.networks import ELEMENT_TASK_CLASSES

    n_max = max(len(s.elements) for s in samples)
    b, length = len(samples), len(samples[0].window)
    z = torch.zeros(b, n_max, dtype=torch.long)
    frac = torch.zeros(b, n_max)
    spectra = torch.zeros(b, n_max, length)
    e0 = torch.zeros(b, n_max)
    has = torch.zeros(b, n_max, dtype=torch.bool)
    density = torch.full((b, 1), float("nan"))
    targets = {name: torch.full((b, n_max), -1, dtype=torch.long) for name in ELEMENT_TASK_CLASSES}
    for i, s in enumerate(samples):
        for j, (symbol, f) in enumerate(zip(s.elements, s.fractions)):
            z[i, j], frac[i, j] = element_z(symbol), f
            if symbol == s.absorber:
                spectra[i, j] = torch.from_numpy(np.asarray(windows[i] if windows is not None else s.window))
                e0[i, j] = float(shifts[i] if shifts is not None else s.e0_shift)
                has[i, j] = True
                targets["oxidation_state"][i, j] = _class_index(s.oxidation_state, ELEMENT_TASK_CLASSES["oxidation_state"])
                targets["coordination_number"][i, j] = _class_index(
                    s.coordination_number, ELEMENT_TASK_CLASSES["coordination_number"]
                )
        if s.density is not None:
            density[i, 0] = float(s.density)
    return (z, frac, spectra, e0, has), {"density": density, **targets}


# --- training -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 15
    model: dict[str, Any] = field(
        default_factory=lambda: {"d_model": 64, "n_heads": 4, "n_layers": 2, "cnn_channels": 16, "pool_size": 8, "dropout": 0.1}
    )


def _loss(out, targets, index=None):
    import torch
    import torch.nn.functional as F

    mean, log_var = out["compound_mean"][:, 0], out["compound_log_var"][:, 0]
    density = targets["density_std"] if index is None else targets["density_std"][index]
    ok = torch.isfinite(density)
    loss = torch.zeros(())
    if ok.any():
        loss = loss + F.gaussian_nll_loss(mean[ok], density[ok], log_var[ok].exp(), full=False)
    for name, logits in out["element_logits"].items():
        t = targets[name] if index is None else targets[name][index]
        if (t >= 0).any():
            loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1), ignore_index=-1)
    return loss


def _augment_windows(spectra, has, rng_t, aug: Augmentation):
    """Per-batch noise and normalisation errors on the windows (in place on a copy)."""
    import torch

    spectra = spectra.clone()
    b, n, length = spectra.shape
    sigma = torch.rand(b, n, 1, generator=rng_t) * aug.noise
    scale = 1 + torch.randn(b, n, 1, generator=rng_t) * aug.scale_error
    tilt = torch.randn(b, n, 1, generator=rng_t) * aug.tilt_error
    x = torch.linspace(-0.5, 0.5, length)
    noisy = spectra * scale + tilt * x + sigma * torch.randn(b, n, length, generator=rng_t)
    return torch.where(has.unsqueeze(-1), noisy, spectra)


def train_member(
    train_views: tuple,
    val_data: tuple,
    *,
    table: np.ndarray,
    config: TrainConfig,
    aug: Augmentation,
    seed: int,
    target_mean: float,
    target_std: float,
    progress_bar=None,
):
    """Train one ensemble member; keeps the state with the lowest validation loss."""
    import torch

    from sfn_stream.core.networks import SpecFusionNet

    torch.manual_seed(seed)
    rng_t = torch.Generator().manual_seed(seed)
    model = SpecFusionNet(table, spectrum_length=train_views[0][2].shape[-1], **config.model)
    model.target_mean.fill_(target_mean)
    model.target_std.fill_(target_std)
    inputs, targets, view_of = train_views
    (z, frac, spectra_views, e0_views, has) = inputs
    n = z.shape[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(n / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps, pct_start=0.1)
    val_inputs, val_targets = val_data
    best, best_loss, since_best = None, math.inf, 0
    history = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=rng_t)
        # One view per material per epoch: view 0 is clean, the others are augmented.
        choice = torch.randint(0, view_of.shape[1], (n,), generator=rng_t)
        view = torch.gather(view_of, 1, choice.unsqueeze(1)).squeeze(1)
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            spectra = spectra_views[view[index]]  # (b, n_tokens, L)
            e0 = e0_views[view[index]]
            spectra = _augment_windows(spectra, has[index], rng_t, aug)
            out = model(z[index], frac[index], spectra, e0, has[index])
            loss = _loss(out, targets, index)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(_loss(model(*val_inputs), val_targets))
        history.append(val_loss)
        if progress_bar is not None:
            progress_bar.update(1)
            progress_bar.set_postfix(member=seed, val_loss=f"{val_loss:.3f}")
        if val_loss < best_loss - 1e-4:
            best_loss, since_best = val_loss, 0
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= config.patience and epoch >= config.epochs // 3:
                if progress_bar is not None:
                    progress_bar.update(config.epochs - epoch - 1)
                break
    model.load_state_dict(best)
    model.eval()
    return model, {"best_val_loss": best_loss, "epochs_run": len(history), "val_loss": [round(v, 4) for v in history]}


def _view_tensors(samples: Sequence[XanesSample], views: Sequence[Sequence[tuple[np.ndarray, float]]]):
    """Stack each sample's views as padded inputs: returns (inputs, targets, view_index)."""
    import torch

    n_views = max(len(v) for v in views) + 1
    inputs, targets = sample_tensors(samples)
    z, frac, spectra, e0, has = inputs
    all_spectra, all_e0 = [spectra], [e0]
    view_index = torch.zeros(len(samples), n_views, dtype=torch.long)
    # view k of sample i lives at row k * B + i; samples with fewer views repeat their clean view.
    for k in range(1, n_views):
        windows = [v[k - 1][0] if len(v) >= k else s.window for s, v in zip(samples, views)]
        shifts = [v[k - 1][1] if len(v) >= k else s.e0_shift for s, v in zip(samples, views)]
        (_, _, sp, ee, _), _ = sample_tensors(samples, windows, shifts)
        all_spectra.append(sp)
        all_e0.append(ee)
    for k in range(n_views):
        view_index[:, k] = k * len(samples) + torch.arange(len(samples))
    return (z, frac, torch.cat(all_spectra), torch.cat(all_e0), has), targets, view_index


def blank_points(samples: Sequence[XanesSample], percentile: float = 95.0) -> int:
    """Window points below where (``percentile`` % of) the computed spectra have data.

    FEFF spectra start at the Fermi level, a few eV into the window; measured scans cover the whole
    window. Blanking the same leading points for both keeps training and beamline inputs alike.
    """
    starts = [s.extra["data_start"] for s in samples if "data_start" in s.extra]
    if not starts:
        return 0
    cut = float(np.percentile(starts, percentile))
    relative = np.linspace(XANES_WINDOW.start, XANES_WINDOW.stop, XANES_WINDOW.n_points)
    return int(np.sum(relative < cut))


def _standardise_targets(targets, mean, std):
    targets = dict(targets)
    targets["density_std"] = (targets["density"][:, 0] - mean) / std
    return targets


# --- calibration and metrics --------------------------------------------------------------------


def predict_samples(members, samples: Sequence[XanesSample], temperatures=None, regression_scale=None, batch: int = 256):
    """Ensemble outputs for samples: density mean/std (B,), probabilities at the absorber token."""
    from sfn_stream.core.networks import EncodedBatch, ensemble_outputs

    parts = []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        inputs, _ = sample_tensors(chunk)
        raw = ensemble_outputs(members, EncodedBatch(*inputs), temperatures, regression_scale)
        token = [s.elements.index(s.absorber) for s in chunk]
        rows = np.arange(len(chunk))
        parts.append({
            "density_mean": raw["density"]["mean"],
            "density_std": raw["density"]["std"],
            "oxidation_state": raw["oxidation_state"][rows, token],
            "coordination_number": raw["coordination_number"][rows, token],
        })
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def training_baselines(train_samples: Sequence[XanesSample]) -> dict[str, Any]:
    """The trivial predictors: majority class and mean density of the training split."""
    from sfn_stream.core.networks import ELEMENT_TASK_CLASSES

    out: dict[str, Any] = {}
    for task, classes in ELEMENT_TASK_CLASSES.items():
        values = [getattr(s, task) for s in train_samples if getattr(s, task) in classes]
        out[task] = int(Counter(values).most_common(1)[0][0])
    out["density"] = float(np.mean([s.density for s in train_samples if s.density is not None]))
    return out


def evaluate_split(members, samples, calibration, baselines: Mapping[str, Any]) -> dict[str, Any]:
    """Held-out metrics with trivial baselines (training-split majority class / mean) and calibration."""
    from sfn_stream.core.networks import ELEMENT_TASK_CLASSES

    out = predict_samples(members, samples, calibration["temperatures"], calibration["regression_std_scale"])
    raw = predict_samples(members, samples)  # uncalibrated, to show what temperature scaling did
    metrics: dict[str, Any] = {"n_materials": len(samples)}
    for task, attribute in (("oxidation_state", "oxidation_state"), ("coordination_number", "coordination_number")):
        classes = ELEMENT_TASK_CLASSES[task]
        keep = np.array([getattr(s, attribute) in classes for s in samples])
        true_idx = np.array([classes.index(getattr(s, attribute)) for s, k in zip(samples, keep) if k])
        probs, raw_probs = out[task][keep], raw[task][keep]
        pred = [classes[i] for i in probs.argmax(1)]
        true = [classes[i] for i in true_idx]
        majority = baselines[task]
        metrics[task] = {
            **label_metrics(true, pred),
            "ece": expected_calibration_error(probs, true_idx),
            "ece_uncalibrated": expected_calibration_error(raw_probs, true_idx),
            "nll": negative_log_likelihood(probs, true_idx),
            "baseline_majority_class": {"class": int(majority), **{
                k: v for k, v in label_metrics(true, [majority] * len(true)).items() if k in ("accuracy", "macro_f1")
            }},
        }
    keep = np.array([s.density is not None for s in samples])
    true = np.array([s.density for s in samples if s.density is not None])
    mean, std = out["density_mean"][keep], out["density_std"][keep]
    train_mean = float(baselines["density"])
    err = np.abs(mean - true)
    metrics["density"] = {
        **regression_metrics(true, mean),
        "unit": "g/cm3",
        "fraction_within_1_std": float(np.mean(err < std)),
        "fraction_within_2_std": float(np.mean(err < 2 * std)),
        "mean_predicted_std": float(np.mean(std)),
        "baseline_training_mean": {"value": train_mean, **{
            k: v for k, v in regression_metrics(true, np.full_like(true, train_mean)).items() if k in ("mae", "r2")
        }},
    }
    return metrics


def absorber_logits(members, samples: Sequence[XanesSample], batch: int = 256) -> dict[str, np.ndarray]:
    """Raw member logits at the absorber token: task -> (members, B, classes)."""
    import torch

    out: dict[str, list] = {}
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chunk = samples[start : start + batch]
            inputs, _ = sample_tensors(chunk)
            token = torch.tensor([s.elements.index(s.absorber) for s in chunk])
            rows = torch.arange(len(chunk))
            per_member: dict[str, list] = {}
            for member in members:
                for name, logits in member(*inputs)["element_logits"].items():
                    per_member.setdefault(name, []).append(logits[rows, token].numpy())
            for name, values in per_member.items():
                out.setdefault(name, []).append(np.stack(values))
    return {name: np.concatenate(parts, axis=1) for name, parts in out.items()}


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def fit_calibration(members, val_samples) -> dict[str, Any]:
    """Temperatures (classification) and a std scale (density) fitted on the validation split."""
    from sfn_stream.core.networks import ELEMENT_TASK_CLASSES

    logits = absorber_logits(members, val_samples)
    temperatures = {}
    for task, classes in ELEMENT_TASK_CLASSES.items():
        keep = np.array([getattr(s, task) in classes for s in val_samples])
        labels = np.array([classes.index(getattr(s, task)) for s, k in zip(val_samples, keep) if k])
        task_logits = logits[task][:, keep]
        temperatures[task] = (
            fit_temperature(labels, probabilities_at=lambda t: _softmax(task_logits / t).mean(0))
            if len(labels) else 1.0
        )
    keep = [s for s in val_samples if s.density is not None]
    out = predict_samples(members, keep)
    z = (out["density_mean"] - np.array([s.density for s in keep])) / out["density_std"]
    # Gaussian NLL is minimised by the scale whose square is the mean squared z-score.
    scale = float(np.sqrt(np.mean(z**2))) if len(keep) else 1.0
    return {"temperatures": temperatures, "regression_std_scale": {"density": scale}}


# --- measured dev set ---------------------------------------------------------------------------


def measured_dev_items(absorber: str = "Cu") -> list[dict[str, Any]]:
    """Rows of shared/data/xanes_experimental_dev/labels.csv for ``absorber``, each with its window."""
    from sfn_stream.core.spectra import preprocess_xanes_file
    from sfn_stream.offline.shared import shared_path

    base = shared_path("data", "xanes_experimental_dev")
    items = []
    with open(base / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["absorber"] != absorber:
                continue
            window = preprocess_xanes_file(base / row["file"], absorber=absorber)
            elements, fractions = composition_fractions(row["formula"])
            items.append({
                "file": row["file"],
                "formula": row["formula"],
                "elements": elements,
                "fractions": dict(zip(elements, fractions)),
                "label_oxidation_state": int(row["oxidation_state"]) if row["oxidation_state"] else None,
                "label_cn": int(row["cn"]) if row["cn"] else None,
                "note": row["note"],
                "window": window,
            })
    return items


def evaluate_measured_dev(ensemble, absorber: str = "Cu") -> dict[str, Any]:
    """What the model says about each measured Cu reference vs its label (a sanity check, not tuning)."""
    rows = []
    for item in measured_dev_items(absorber):
        window = item["window"]
        row = {k: item[k] for k in ("file", "formula", "label_oxidation_state", "label_cn", "note")}
        row.update(usable=window.usable, calibration=window.calibration, e0_shift=float(window.e0_shift))
        if window.usable:
            result = ensemble.predict(item["elements"], {absorber: (window.mu, window.e0_shift)}, item["fractions"])
            per = result["per_element"][absorber]
            for task, key in (("oxidation_state", "oxidation_state"), ("coordination_number", "cn")):
                probs = per[task]["probabilities"]
                best = int(np.argmax(probs))
                row[f"predicted_{key}"] = per[task]["classes"][best]
                row[f"predicted_{key}_probability"] = round(float(probs[best]), 3)
            row["predicted_density"] = round(result["compound"]["density"]["mean"], 3)
            row["predicted_density_std"] = round(result["compound"]["density"]["std"], 3)
        else:
            row["reason"] = window.reason
        rows.append(row)

    def score(label, predicted):
        pairs = [(r[label], r.get(predicted)) for r in rows if r[label] is not None and r.get(predicted) is not None]
        return {"correct": sum(a == b for a, b in pairs), "n": len(pairs)}

    return {
        "description": "MEASURED DEV SET (shared/data/xanes_experimental_dev, Cu rows of labels.csv): measured "
        "reference scans, preprocessed with preprocess_xanes (energy as measured or calibrated with the "
        "reference foil channel). Used only as a sanity check; nothing was tuned on it.",
        "oxidation_state": score("label_oxidation_state", "predicted_oxidation_state"),
        "coordination_number": score("label_cn", "predicted_cn"),
        "files": rows,
    }


# --- the bundle ---------------------------------------------------------------------------------


def dataset_sha256(samples: Sequence[XanesSample]) -> str:
    """Hash of what the networks saw: ids, windows, e0 shifts, elements, fractions and labels."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(json.dumps([s.material_id, s.elements, [round(f, 6) for f in s.fractions], s.density,
                                  s.oxidation_state, s.coordination_number, round(s.e0_shift, 4)]).encode())
        digest.update(np.asarray(s.window, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def train_xanes_bundle(
    out_dir: str | Path,
    *,
    seed: int = 0,
    members: int = 5,
    epochs: int = 60,
    progress: bool = True,
    dataset: XanesDataset | None = None,
    splits: Mapping[str, Sequence[str]] | None = None,
    augmentation: Augmentation = Augmentation(),
    config: TrainConfig | None = None,
    evaluate_dev: bool | None = None,
    label_sources: Mapping[str, Any] | None = None,
    energy_offset_record: Mapping[str, Any] | None = None,
):
    """Train the ensemble, calibrate it on the validation split, evaluate on the test split, save the bundle.

    Defaults build the OmniXAS Cu dataset and read the committed split files (made with
    :func:`sfn_stream.offline.splits.balanced_splits`, seed 0, if absent). Pass ``dataset`` and ``splits`` to train on
    anything else (e.g. small synthetic sets in tests).
    """
    import torch
    from tqdm import tqdm

    from sfn_stream.core.networks import save_bundle
    from sfn_stream.core.networks import ELEMENT_TASK_CLASSES, XanesEnsemble

    torch.set_num_threads(1)
    started = time.perf_counter()
    config = config or TrainConfig(epochs=epochs)
    shared_run = dataset is None
    if dataset is None:
        energy_offset_record = energy_offset_record or recorded_energy_offset()
        dataset = build_xanes_dataset(energy_offset=float(energy_offset_record["energy_offset"]), progress=progress)
    if splits is None:
        splits = _default_splits(dataset)
    by_id = dataset.by_id()
    parts = {name: [by_id[i] for i in splits[name] if i in by_id] for name in SPLITS}
    for name in SPLITS:
        if not parts[name]:
            raise TrainingDataError(f"the {name} split has no usable samples")

    rng = np.random.default_rng(seed)
    views = [augmented_views(s, dataset.energy_offset, augmentation, rng) if s.energy is not None else []
             for s in tqdm(parts["train"], disable=not progress, desc="augmented views", mininterval=5)]
    train_inputs, train_targets, view_index = _view_tensors(parts["train"], views)
    densities = np.array([s.density for s in parts["train"] if s.density is not None])
    target_mean, target_std = float(densities.mean()), float(densities.std() or 1.0)
    train_targets = _standardise_targets(train_targets, target_mean, target_std)
    val_inputs, val_targets = sample_tensors(parts["val"])
    val_targets = _standardise_targets(val_targets, target_mean, target_std)

    if "blank_below" not in config.model:
        config = replace(config, model={**config.model, "blank_below": blank_points(parts["train"])})
    stats = descriptor_stats()
    table = descriptor_table(stats)
    trained, member_info = [], []
    with tqdm(total=members * config.epochs, disable=not progress, desc="training", mininterval=2) as bar:
        for k in range(members):
            model, info = train_member(
                (train_inputs, train_targets, view_index), (val_inputs, val_targets), table=table, config=config,
                aug=augmentation, seed=seed * 100 + k, target_mean=target_mean, target_std=target_std, progress_bar=bar,
            )
            trained.append(model)
            member_info.append(info)

    calibration = fit_calibration(trained, parts["val"])
    baselines = training_baselines(parts["train"])
    metrics = {
        "test": evaluate_split(trained, parts["test"], calibration, baselines),
        "validation": evaluate_split(trained, parts["val"], calibration, baselines),
        "baselines_from_training_split": baselines,
        "note": "test = held-out materials (formulas disjoint from train/val); validation was used for early "
        "stopping and calibration; no metric here is computed on training data",
    }
    weights = {
        "descriptor_table": torch.from_numpy(table),
        "members": [m.state_dict() for m in trained],
        "calibration": calibration,
    }
    n_params = sum(p.numel() for p in trained[0].parameters())
    card = {
        "name": BUNDLE_NAME,
        "version": BUNDLE_VERSION,
        "kind": "xanes",
        "created": _dt.date.today().isoformat(),
        "supported_absorbers": sorted({s.absorber for s in parts["train"]}),
        "training_data": {
            "description": dataset.description,
            "sha256": dataset_sha256(parts["train"]),
            "sha256_covers": "train-split material ids, elements, fractions, labels, windows, e0 shifts",
            "label_table_sha256": _file_sha256(LABELS_FILE) if shared_run else None,
            "splits": {name: f"data/splits/xanes_cu_{name}_ids.txt" for name in SPLITS} if shared_run else "given",
            "split_method": "by reduced formula (no formula in two splits), shuffled with seed 0, ~80/10/10 of materials",
            "n_train": len(parts["train"]),
            "n_val": len(parts["val"]),
            "n_test": len(parts["test"]),
            "n_materials_usable": len(dataset.samples),
            "excluded": dict(dataset.excluded),
            "augmentation": augmentation.to_dict(),
        },
        "label_sources": dict(label_sources or _label_sources(dataset)),
        "preprocessing": {
            "function": "sfn_stream.core.spectra.preprocess_xanes",
            "window": XANES_WINDOW.to_dict(),
            "window_energies": "E_ref + linspace(start, stop, n_points); E_ref = tabulated K edge on the calibrated scale",
            "normalization": "flat (Athena/Larch pre_edge defaults of sfn_stream.core.spectra.XANES_DEFAULTS)",
            "inputs": "window (flattened normalised mu) and e0_shift = E0 - E_ref per absorber",
            "energy_offset": energy_offset_record or {"energy_offset": dataset.energy_offset},
            "model_input_blanking": {
                "points": int(config.model["blank_below"]),
                "below_ev_relative_to_e_ref": float(
                    np.linspace(XANES_WINDOW.start, XANES_WINDOW.stop, XANES_WINDOW.n_points)[int(config.model["blank_below"])]
                ),
                "why": "FEFF spectra start at the Fermi level, inside the window; the network zeroes the leading "
                "points (where 5% of training spectra still lack data) for training and beamline inputs alike",
            },
        },
        "architecture": {
            "class": "sfn_stream.core.networks.SpecFusionNet",
            "kwargs": trained[0].constructor_kwargs(),
            "n_parameters_per_member": int(n_params),
            "ensemble_members": members,
            "descriptors": {"names": list(DESCRIPTOR_NAMES), "standardisation": stats,
                            "note": "the standardised table is stored in weights.pt (descriptor_table)"},
            "training": {**config.__dict__, "seed": seed, "members": member_info,
                         "density_target_mean": target_mean, "density_target_std": target_std},
        },
        "tasks": {
            "density": {"type": "regression", "level": "compound", "unit": "g/cm3",
                        "uncertainty": "deep-ensemble mixture std x regression_std_scale (validation)"},
            **{name: {"type": "classification", "level": "element", "classes": list(classes),
                      "temperature": calibration["temperatures"][name]}
               for name, classes in ELEMENT_TASK_CLASSES.items()},
        },
        "calibration": calibration,
        "metrics": metrics,
    }
    bundle = save_bundle(out_dir, card, weights)
    if evaluate_dev if evaluate_dev is not None else shared_run:
        card["metrics"]["measured_dev"] = evaluate_measured_dev(XanesEnsemble.from_bundle(bundle))
    card["training_data"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    return save_bundle(out_dir, card, weights)


def _default_splits(dataset: XanesDataset) -> dict[str, list[str]]:
    try:
        return read_splits()
    except TrainingDataError:
        from ._omnixas import read_omnixas_labels

        formulas = {mid: row["formula"] for mid, row in read_omnixas_labels().items()}
        splits = balanced_splits(formulas, seed=0)
        write_splits(splits)
        return splits


def _label_sources(dataset: XanesDataset) -> dict[str, Any]:
    methods = Counter(s.extra.get("oxidation_method") or "none" for s in dataset.samples)
    return {
        "oxidation_state": "pymatgen BVAnalyzer on the Materials Project structure; fallback "
        "Composition.oxi_state_guesses (most probable); Cu mean over sites with multiplicity weights, "
        "rounded half up to the class",
        "oxidation_state_methods_used": dict(methods),
        "coordination_number": "pymatgen CrystalNN per inequivalent Cu site; multiplicity-weighted mean "
        "rounded half up to the class",
        "cn_mixed_site_materials": int(sum(bool(s.extra.get("cn_mixed")) for s in dataset.samples)),
        "density": "structure density (pymatgen Structure.density)",
        "symmetry": "SpacegroupAnalyzer symprec 0.1",
    }


if __name__ == "__main__":  # python -m sfn_stream.offline.training._xanes [out_dir]  (retrains the committed bundle)
    import sys

    from sfn_stream.core.networks import models_dir

    target = sys.argv[1] if len(sys.argv) > 1 else models_dir() / BUNDLE_NAME
    print(train_xanes_bundle(target).id)

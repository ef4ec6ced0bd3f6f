"""``sfn-stream evaluate xrd``: crystal-system (and space-group) figures of PXRD bundles beside baselines.

Test sets, all from the held-out test split of the bundle's stick table (``data/splits/xrd_test.txt``):

- ``noisy_formula_disjoint``: test structures whose reduced formula is absent from the training
  split, one pattern each under the paper's protocol: Cu K-alpha1, 10-90 deg 2theta, pseudo-Voigt
  peaks (FWHM 0.05-0.20 deg, Lorentz fraction 0.2-0.8), Gaussian noise (sigma 0.5-2 % of the
  tallest peak), no background, shift or texture;
- ``clean``: the same structures, noise-free, FWHM 0.05 deg;
- ``structure_type_disjoint``: test structures whose anonymous formula + space group (structure
  type) occurs nowhere in the training split, noisy protocol;
- ``measured``: the single-phase patterns of ../shared/data/pxrd_experimental_dev (skipped when absent).

Baselines beside every model: majority class of the training split, and a 1-nearest-neighbour
(cosine) on Gaussian-blurred clean profiles of the training structures.

Test structures come in groups of one formula (SiO2 polymorphs, a metal's pressure series: the
largest holds 73 of 1,326) or one structure type, and a group's patterns are not independent. So
each accuracy's 95 % interval redraws whole groups (the unit the set is disjoint by), and
``accuracy_group_mean`` counts every group once beside the accuracy over structures.

A search-match bundle with a chemistry calibration is reported twice: as is, and ``+ elements``,
each query given its structure's element set (symbols from the formula; never the formula or the
amounts), as a user who knows the sample's elements (XRF, synthesis) would give them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.simulation import StickTable, synthesize_pattern
from sfn_stream.core.spectra import XRD_Q_GRID, two_theta_to_q
from sfn_stream.offline.metrics import bootstrap_interval, group_mean, probability_metrics, reliability_table
from sfn_stream.offline.shared import SharedDataMissing
from sfn_stream.offline.training import (
    DEFAULT_STICK_TABLE,
    evaluate_measured,
    formula_elements,
    labels_of,
    measured_dev_set,
    read_split_files,
)

from .xrd_model_eval import frame_timing

CU_K_ALPHA1 = 1.5406
PAPER_TWO_THETA = (10.0, 90.0)
NOISY = {"fwhm_deg": (0.05, 0.20), "eta": (0.2, 0.8), "noise_sigma": (0.005, 0.02)}
CLEAN = {"fwhm_deg": (0.05, 0.05), "eta": (0.5, 0.5), "noise_sigma": (0.0, 0.0)}
SEED = 1313
NN_BLUR_POINTS = 3.0  # Gaussian sigma of the 1-NN blur, grid points (0.015 1/A)


def protocol_conditions(rng: np.random.Generator, protocol: dict) -> dict[str, Any]:
    """Conditions for ``synthesize_pattern``: a lab Cu K-alpha1 scan with only width, shape and noise varied."""
    q_lo, q_hi = two_theta_to_q(np.array(PAPER_TWO_THETA), CU_K_ALPHA1)
    return {
        "source": "lab", "wavelength": CU_K_ALPHA1, "wavelength2": None, "q_range": (float(q_lo), float(q_hi)),
        "instrument_fwhm_deg": rng.uniform(*protocol["fwhm_deg"]), "crystallite_size_A": 1e6, "microstrain": 0.0,
        "eta": rng.uniform(*protocol["eta"]), "zero_shift_deg": 0.0, "displacement_mm": 0.0, "lattice_strain": 0.0,
        "debye_waller_B": 0.0, "per_peak_log_sigma": 0.0, "march_dollase_r": None, "background_fraction": 0.0,
        "peak_counts": 1e9,  # Poisson noise negligible: the protocol's noise is the Gaussian one
        "gaussian_noise": rng.uniform(*protocol["noise_sigma"]),
    }


def protocol_patterns(table: StickTable, indices, protocol: dict, seed: int, progress: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((len(indices), len(XRD_Q_GRID)), dtype=np.float32)
    iterator = enumerate(indices)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(indices), desc="xrd patterns", mininterval=5, leave=False)
    for row, i in iterator:
        out[row] = synthesize_pattern(table.sticks(i), XRD_Q_GRID, rng, conditions=protocol_conditions(rng, protocol))
    return out


def anonymous_formulas(formulas) -> list[str]:
    from pymatgen.core import Composition

    cache: dict[str, str] = {}
    return [cache.setdefault(f, Composition(f).anonymized_formula) for f in formulas]


def test_subsets(table: StickTable, splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Formula-disjoint and structure-type-disjoint subsets of the test split (indices into ``table``)."""
    train, test = splits["train"], splits["test"]
    train_formulas = set(table.formulas[train])
    anonymous = np.array(anonymous_formulas(table.formulas))
    train_types = {(anonymous[i], int(table.spacegroups[i])) for i in train}
    return {
        "formula_disjoint": np.array([i for i in test if table.formulas[i] not in train_formulas], dtype=int),
        "structure_type_disjoint": np.array(
            [i for i in test if (anonymous[i], int(table.spacegroups[i])) not in train_types], dtype=int),
    }


def _blur(x: np.ndarray, sigma: float = NN_BLUR_POINTS) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    y = gaussian_filter1d(np.asarray(x, dtype=np.float32), sigma, axis=1)
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


class NearestNeighbourBaseline:
    """1-NN (cosine) on blurred profiles; one-hot probabilities."""

    name = "1-NN blurred clean profiles"

    def __init__(self, reference: np.ndarray, labels: np.ndarray, spacegroups: np.ndarray | None = None):
        self.reference, self.labels, self.spacegroups = _blur(reference), np.asarray(labels), spacegroups

    def _nearest(self, patterns: np.ndarray) -> np.ndarray:
        query = _blur(patterns)
        return np.concatenate([(query[i:i + 256] @ self.reference.T).argmax(1) for i in range(0, len(query), 256)])

    def probabilities(self, patterns: np.ndarray) -> np.ndarray:
        return np.eye(len(CRYSTAL_SYSTEMS))[self.labels[self._nearest(patterns)]]

    def space_group_probabilities(self, patterns: np.ndarray) -> np.ndarray:
        return np.eye(230)[self.spacegroups[self._nearest(patterns)] - 1]


class WithElements:
    """A search-match model given each query's element set; ``elements`` is set per test set (one per pattern)."""

    has_space_group = True

    def __init__(self, model, timing_elements=("Mn", "O")):
        self.model, self.elements, self.timing_elements = model, None, list(timing_elements)

    def probabilities(self, patterns: np.ndarray) -> np.ndarray:
        return self.model.probabilities(patterns, elements=self.elements)

    def space_group_probabilities(self, patterns: np.ndarray) -> np.ndarray:
        return self.model.space_group_probabilities(patterns, elements=self.elements)

    def predict(self, pattern: np.ndarray) -> dict[str, Any]:  # timing: one frame of a sample of known elements
        return self.model.predict(pattern, elements=self.timing_elements)


class MajorityBaseline:
    """The training split's most frequent crystal system (and space group), whatever the pattern."""

    name = "majority class"

    def __init__(self, labels: np.ndarray, spacegroups: np.ndarray):
        self.frequencies = np.bincount(labels, minlength=len(CRYSTAL_SYSTEMS)) / len(labels)
        self.sg_frequencies = np.bincount(spacegroups - 1, minlength=230) / len(spacegroups)

    def probabilities(self, patterns: np.ndarray) -> np.ndarray:
        return np.tile(np.eye(len(CRYSTAL_SYSTEMS))[self.frequencies.argmax()], (len(patterns), 1))

    def space_group_probabilities(self, patterns: np.ndarray) -> np.ndarray:
        return np.tile(self.sg_frequencies, (len(patterns), 1))


def space_group_topk(spacegroups: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    ranked = np.argsort(-probs, axis=1) + 1
    hits = ranked == np.asarray(spacegroups)[:, None]
    return {"space_group_top1": float(hits[:, :1].any(1).mean()), "space_group_top5": float(hits[:, :5].any(1).mean())}


def score(model, x: np.ndarray, labels: np.ndarray, spacegroups: np.ndarray | None,
          groups: np.ndarray | None = None) -> dict[str, Any]:
    """Figures of ``model`` on patterns ``x``. ``groups``: the unit the test set is disjoint by (formula, structure
    type), one per pattern: the accuracy's interval then redraws whole groups, and ``accuracy_group_mean`` counts
    each group once (a formula with 60 pressure or temperature entries weighs as one)."""
    probs = model.probabilities(x)
    out = probability_metrics(labels, probs, CRYSTAL_SYSTEMS)
    right = (probs.argmax(1) == np.asarray(labels)).astype(float)
    out["accuracy_ci95"] = list(bootstrap_interval(right, groups=groups))
    if groups is not None:
        out["n_groups"] = int(len(np.unique(groups)))
        out["accuracy_group_mean"] = group_mean(right, groups)
    out["reliability"] = reliability_table(probs, labels)
    if spacegroups is not None and getattr(model, "space_group_probabilities", None) is not None \
            and getattr(model, "has_space_group", True):
        out.update(space_group_topk(spacegroups, model.space_group_probabilities(x)))
    return out


def _load_models(bundles: list[Path]) -> list[tuple[str, Any]]:
    from sfn_stream.core.networks import load_bundle, xrd_model_from_bundle

    models = []
    for path in bundles:
        bundle = load_bundle(path)
        models.append((bundle.id, xrd_model_from_bundle(bundle)))
    return models


def evaluate_xrd(
    bundles: list[Path],
    *,
    sticks: Path = DEFAULT_STICK_TABLE,
    splits_dir: Path = paths.SPLITS_DIR,
    max_test: int | None = None,
    max_reference: int | None = None,
    measured: bool = True,
    timing_frames: int = 20,
    progress: bool = True,
    measured_dir: Path | None = None,
    simulated: bool = True,
) -> dict[str, Any]:
    """Figures of every bundle and the two baselines on the four test sets (see the module docstring).
    ``measured_dir``: labelled measured patterns to judge instead of the development set
    (:func:`measured_dev_set`); ``simulated=False`` leaves out the three simulated test sets and the timing."""
    import torch

    torch.set_num_threads(1)
    if not Path(sticks).is_file():
        raise FileNotFoundError(f"stick table {sticks} not found (python -m sfn_stream.offline.training._xrd build)")
    table = StickTable.load(sticks)
    splits = read_split_files(table, splits_dir)
    if splits is None:
        raise FileNotFoundError(f"no xrd_{{train,val,test}}.txt split files in {splits_dir}")
    labels, spacegroups = labels_of(table), table.spacegroups.astype(int)
    rng = np.random.default_rng(SEED)
    subsets = {name: _subsample(idx, max_test, rng) for name, idx in test_subsets(table, splits).items()}
    reference = _subsample(splits["train"], max_reference, rng)

    models = _load_models(bundles)
    models = [entry for name, model in models for entry in
              ([(name, model)] + ([(f"{name} + elements", WithElements(model))]
                                  if getattr(model, "has_chemistry", False) else []))]
    x_reference = protocol_patterns(table, reference, CLEAN, SEED + 1, progress)
    baselines = [("1-NN blurred clean profiles", NearestNeighbourBaseline(x_reference, labels[reference],
                                                                          spacegroups[reference])),
                 ("majority class", MajorityBaseline(labels[splits["train"]], spacegroups[splits["train"]]))]
    everything = models + baselines
    sets = {
        "noisy_formula_disjoint": (subsets["formula_disjoint"], NOISY),
        "clean": (subsets["formula_disjoint"], CLEAN),
        "structure_type_disjoint": (subsets["structure_type_disjoint"], NOISY),
    }
    anonymous = np.array(anonymous_formulas(table.formulas))
    group_of = {"noisy_formula_disjoint": np.asarray(table.formulas), "clean": np.asarray(table.formulas),
                "structure_type_disjoint": np.char.add(np.char.add(anonymous, " "), table.spacegroups.astype(str))}
    report: dict[str, Any] = {
        "sticks": str(sticks), "models": [name for name, _ in everything],
        "protocol": {"wavelength_A": CU_K_ALPHA1, "two_theta_deg": PAPER_TWO_THETA, "noisy": NOISY, "clean": CLEAN,
                     "seed": SEED},
        "n_reference_structures": len(reference), "sets": {},
    }
    for k, (set_name, (idx, protocol)) in enumerate(sets.items() if simulated else ()):
        x = protocol_patterns(table, idx, protocol, SEED + 10 + k, progress)
        _give_elements(everything, [formula_elements(table.formulas[i]) for i in idx])
        groups = group_of[set_name][idx]
        report["sets"][set_name] = {name: score(model, x, labels[idx], spacegroups[idx], groups)
                                    for name, model in everything}
    if measured or measured_dir is not None:
        report["sets"]["measured"] = _measured(everything, measured_dir)
        report["measured_folder"] = str(measured_dir or "../shared/data/pxrd_experimental_dev")
    if simulated:
        report["timing"] = {name: frame_timing(model, timing_frames) for name, model in models}
    return report


GROUP_UNITS = {"noisy_formula_disjoint": "formula", "clean": "formula", "structure_type_disjoint": "structure type"}
CARD_KEYS = ("n", "accuracy", "accuracy_ci95", "n_groups", "accuracy_group_mean", "macro_f1", "ece_15_bins",
             "mean_confidence", "space_group_top1", "space_group_top5", "per_class_accuracy")


def write_card_metrics(bundle_path: str | Path, report: dict[str, Any]) -> None:
    """Put this bundle's test figures, beside the baselines' (and ``+ elements`` where it has that mode), into
    ``metrics.test`` of its card (the weights, and so the bundle id, stay as they are)."""
    import datetime
    import json

    from sfn_stream.core.networks import load_bundle

    bundle = load_bundle(bundle_path)
    mine = {bundle.id: "model", f"{bundle.id} + elements": "model_with_elements",
            "1-NN blurred clean profiles": "nearest_neighbour_baseline", "majority class": "majority_class"}
    test: dict[str, Any] = {
        "source": f"sfn-stream evaluate xrd --write-card ({datetime.date.today().isoformat()}); test split "
                  "(data/splits/xrd_test.txt) never used for fitting; with elements: each query given its "
                  "structure's element set, never its formula; measured: the single-phase patterns of "
                  "../shared/data/pxrd_experimental_dev, not tuned on",
        "protocol": report["protocol"], "n_reference_structures": report["n_reference_structures"]}
    for set_name, by_model in report["sets"].items():
        if "skipped" in by_model:
            test[set_name] = {"skipped": by_model["skipped"]}
            continue
        test[set_name] = {role: {k: by_model[name][k] for k in CARD_KEYS if k in by_model[name]}
                          for name, role in mine.items() if name in by_model}
    test["timing"] = {mine.get(name, name): t for name, t in report.get("timing", {}).items() if name in mine}
    card_path = Path(bundle.path) / "card.json"
    card = json.loads(card_path.read_text())
    card.setdefault("metrics", {})["test"] = test
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def _subsample(idx: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(idx, limit, replace=False)) if limit and len(idx) > limit else np.asarray(idx)


def _measured(models, folder: Path | None = None) -> dict[str, Any]:
    try:
        items, skipped = measured_dev_set(folder)
    except SharedDataMissing as err:
        return {"skipped": str(err)}
    _give_elements(models, [formula_elements(it["formula"]) for it in items if it["pattern"].usable])
    out = {name: evaluate_measured(model, items) for name, model in models}
    return {**out, "skipped_files": skipped}


def _give_elements(models, elements: list[list[str]]) -> None:
    """The element sets of the queries about to be scored, to the ``+ elements`` entries."""
    for _, model in models:
        if isinstance(model, WithElements):
            model.elements = elements


def format_report(report: dict[str, Any], *, details: bool = True) -> list[str]:
    lines = [f"stick table {report['sticks']}; 1-NN reference: {report['n_reference_structures']} training structures"]
    width = max(len(m) for m in report["models"])
    for set_name, by_model in report["sets"].items():
        if "skipped" in by_model:
            lines.append(f"\n{set_name}: skipped ({by_model['skipped']})")
            continue
        first = by_model[report["models"][0]]
        unit = GROUP_UNITS.get(set_name)
        lines.append(f"\n{set_name} (n={first.get('n', first.get('n_usable'))}"
                     + (f"; {first['n_groups']} {unit}s: the interval redraws whole {unit}s, 'once each' counts "
                        f"every {unit} once)" if unit and "n_groups" in first else ")"))
        lines.append(f"  {'model':<{width}}  accuracy  (95 % interval)  once each  macro-F1    ECE  SG top-1  SG top-5")
        for name in report["models"]:
            m = by_model[name]
            sg = "".join(f"  {m[k]:8.3f}" if k in m else "         -" for k in ("space_group_top1", "space_group_top5"))
            ci = m.get("accuracy_ci95")
            ci_text = f"({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
            once = _f(m.get("accuracy_group_mean"), 9)
            lines.append(f"  {name:<{width}}  {_f(m.get('accuracy'))}  {ci_text:>15}  {once}  {_f(m.get('macro_f1'))}  "
                         f"{_f(m.get('ece_15_bins'), 5)}{sg}")
        if details:
            lines += _details(report["models"], by_model)
    for name, t in report.get("timing", {}).items():
        lines.append(f"\nper frame, {name} (torch threads {t['torch_threads']}): preprocess {t['preprocess_ms_median']} ms, "
                     f"predict {t['predict_ms_median']} ms, total {t['total_ms_median']} ms (medians of {t['frames']})")
    return lines


def _details(names, by_model) -> list[str]:
    lines = ["  per-class accuracy (" + " ".join(c[:5] for c in CRYSTAL_SYSTEMS) + ")"]
    for name in names:
        per = by_model[name].get("per_class_accuracy", {})
        lines.append(f"    {name[:28]:<28} " + " ".join(_f(per.get(c), 5) for c in CRYSTAL_SYSTEMS))
    for name in names[:-1]:  # the majority class has no confusion worth printing
        counts = by_model[name].get("confusion_matrix", {}).get("counts")
        if counts:
            lines.append(f"  confusion of {name} (rows true, cols pred)")
            lines += [f"    {c[:12]:>12} " + " ".join(f"{v:4d}" for v in row) for c, row in zip(CRYSTAL_SYSTEMS, counts)]
    return lines


def _f(value, width: int = 8) -> str:
    return f"{value:{width}.3f}" if value is not None and not (isinstance(value, float) and math.isnan(value)) \
        else f"{'-':>{width}}"

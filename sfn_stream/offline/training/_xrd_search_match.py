"""Build the ``xrd-search-match`` bundle: reference profiles of the training split + kNN calibration on val.

    sfn-stream train xrd-search-match [--out models/xrd-search-match]
    python -m sfn_stream.offline.training._xrd_search_match [--out ...] [--max-reference N] [--json]

Reference library: every structure of the TRAIN split of the stick table, one clean profile each
(Cu K-alpha1, the whole Q grid, FWHM 0.08 deg, no noise), made by ``synthesize_pattern`` and so
through the same ``finish_on_grid`` preprocessing (SNIP, normalisation) a measured pattern goes
through. k, the vote temperature T and the prior share are fitted by negative log-likelihood on the
VAL structures whose reduced formula is absent from the training split (as the formula-disjoint test
set), each rendered twice: the paper's noisy protocol (Cu K-alpha1, 10-90 deg, FWHM 0.05-0.2 deg,
noise 0.5-2 %) and the training augmentation (any source, background, texture, shifts). The test
split is not read.

Chemistry (optional at prediction): each reference's element set is stored; the weight lambda of the
element-group similarity in the ranking score, with its own k, T and prior share, is fitted the same
way (NLL on the same val patterns, each given its structure's element set, never its formula).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.offline.metrics import probability_metrics

from ._xrd import DEFAULT_STICK_TABLE, labels_of, read_split_files

BUNDLE_NAME = "xrd-search-match"
VERSION = "0.1.0"
CU_K_ALPHA1 = 1.5406

# Chosen on the val split (formula-disjoint val structures, both renderings; see docs/xrd-search-match.md):
# cell dilations raised 1-NN accuracy from 0.55 to 0.72 (noisy val); of the settings tried (blur 2-7 points,
# +-5/10/15 %, linear / sqrt / ^0.75 intensity) blur 4 points (0.02 1/A), +-15 % in 1 % steps, linear was best.
BLUR_POINTS = 4.0
SUBSAMPLE = 3  # 400 points of 0.015 1/A: the blur (sigma 0.02 1/A) leaves nothing finer, and it is 3x faster
DILATIONS = tuple(round(float(s), 4) for s in np.linspace(-0.15, 0.15, 31))
REFINE_TOP = 500  # references also tried at the half-step dilations (val, 300 best: noisy NLL 0.763 -> 0.750)
REFERENCE_FWHM_DEG = 0.08

K_GRID = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)
TEMPERATURE_GRID = tuple(float(t) for t in np.geomspace(0.003, 0.2, 25))
PRIOR_SHARE_GRID = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)
# lambda of the chemistry term (element-group cosine). Chosen on val (scratch experiments, 2026-12-03): the
# group-presence cosine gave a lower val NLL than the Jaccard of element sets or their mean (0.919 vs 0.936 / 0.927).
CHEMISTRY_WEIGHT_GRID = (0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
SEED = 2024


def _clean_lab_conditions(q_range, fwhm_deg: float, eta: float, noise: float) -> dict[str, Any]:
    """Conditions for ``synthesize_pattern``: a Cu K-alpha1 lab scan with only width, shape and noise set."""
    return {
        "source": "lab", "wavelength": CU_K_ALPHA1, "wavelength2": None, "q_range": tuple(q_range),
        "instrument_fwhm_deg": fwhm_deg, "crystallite_size_A": 1e6, "microstrain": 0.0, "eta": eta,
        "zero_shift_deg": 0.0, "displacement_mm": 0.0, "lattice_strain": 0.0, "debye_waller_B": 0.0,
        "per_peak_log_sigma": 0.0, "march_dollase_r": None, "background_fraction": 0.0,
        "peak_counts": 1e9, "gaussian_noise": noise,
    }


def reference_profiles(table, indices, progress: bool = False) -> np.ndarray:
    """Clean profiles over the whole grid of the structures ``indices`` (float32, max 1)."""
    from sfn_stream.core.simulation import synthesize_pattern
    from sfn_stream.core.spectra import XRD_Q_GRID

    rng = np.random.default_rng(SEED)
    conditions = _clean_lab_conditions((0.0, 10.0), REFERENCE_FWHM_DEG, 0.5, 0.0)
    return np.stack([synthesize_pattern(table.sticks(i), XRD_Q_GRID, rng, conditions=conditions)
                     for i in _progress(indices, progress, "reference profiles")]).astype(np.float32)


def validation_patterns(table, indices, seed: int, progress: bool = False) -> dict[str, np.ndarray]:
    """Two renderings of the structures ``indices``: the paper's noisy protocol and the training augmentation."""
    from sfn_stream.core.simulation import synthesize_pattern
    from sfn_stream.core.spectra import XRD_Q_GRID, two_theta_to_q

    rng = np.random.default_rng(seed)
    q_range = two_theta_to_q(np.array([10.0, 90.0]), CU_K_ALPHA1)
    noisy = [synthesize_pattern(table.sticks(i), XRD_Q_GRID, rng, conditions=_clean_lab_conditions(
        q_range, rng.uniform(0.05, 0.20), rng.uniform(0.2, 0.8), rng.uniform(0.005, 0.02)))
        for i in _progress(indices, progress, "val, noisy protocol")]
    augmented = [synthesize_pattern(table.sticks(i), XRD_Q_GRID, rng)
                 for i in _progress(indices, progress, "val, augmented")]
    return {"noisy_protocol": np.stack(noisy).astype(np.float32), "augmented": np.stack(augmented).astype(np.float32)}


@dataclass
class ValidationSet:
    """The formula-disjoint validation structures in both renderings, stacked: pattern i is structure
    ``structures[i]``, with its label and its element set (what a combination fitted on validation reads)."""

    table: Any  # StickTable
    val: np.ndarray  # the structures, once
    renderings: dict[str, np.ndarray]
    patterns: np.ndarray
    labels: np.ndarray
    structures: np.ndarray
    elements: list[list[str]]


def validation_set(sticks: Path, splits_dir: Path, *, max_val: int | None, seed: int,
                   progress: bool) -> ValidationSet:
    """Validation structures whose formula is absent from the training split (at most ``max_val``, drawn with
    ``seed``), rendered by :func:`validation_patterns` with ``seed + 1``."""
    from sfn_stream.core.simulation import StickTable

    table = StickTable.load(sticks)
    splits = read_split_files(table, splits_dir)
    if splits is None:
        raise FileNotFoundError(f"no xrd_{{train,val,test}}.txt split files in {splits_dir}")
    train_formulas = set(table.formulas[splits["train"]])
    val = np.array([i for i in splits["val"] if table.formulas[i] not in train_formulas], dtype=int)
    if max_val and len(val) > max_val:
        val = np.sort(np.random.default_rng(seed).choice(val, max_val, replace=False))
    if len(val) == 0:
        raise ValueError("the splits leave no formula-disjoint validation structure")
    renderings = validation_patterns(table, val, seed + 1, progress)
    n = len(renderings)
    return ValidationSet(table, val, renderings, np.concatenate(list(renderings.values())),
                         np.tile(labels_of(table)[val], n), np.tile(val, n),
                         [formula_elements(f) for f in table.formulas[val]] * n)


def fit_calibration(searcher, patterns: np.ndarray, labels: np.ndarray, elements=None,
                    chemistry_weight: float | None = None) -> dict[str, Any]:
    """k, T and prior share minimising the mean negative log-likelihood of ``labels`` (grid search), for the
    ranking without chemistry, or with ``elements`` (one set per pattern) and ``chemistry_weight``."""
    k_max = min(max(K_GRID), len(searcher.labels))
    indices, scores = searcher.nearest(patterns, k_max, elements=elements, chemistry_weight=chemistry_weight)
    ks = [k for k in K_GRID if k <= k_max] or [k_max]
    labels = np.asarray(labels)
    true_vote = searcher.labels[indices] == labels[:, None]
    prior_true = searcher.prior[labels][:, None]
    best = None
    for temperature in TEMPERATURE_GRID:  # cumulative sums over the neighbours: every k is one column
        weights = np.exp((scores - scores[:, :1]) / temperature)
        votes_true = np.cumsum(weights * true_vote, axis=1)[:, np.array(ks) - 1] / \
            np.cumsum(weights, axis=1)[:, np.array(ks) - 1]
        for share in PRIOR_SHARE_GRID:
            nll = -np.mean(np.log(np.maximum((1 - share) * votes_true + share * prior_true, 1e-12)), axis=0)
            for k, value in zip(ks, nll):  # in the order of the former loops (k, T, share): same ties
                candidate = {"k": k, "temperature": temperature, "prior_share": share, "nll": float(value)}
                if best is None or _before(candidate, best):
                    best = candidate
    return best


def _before(candidate: dict, best: dict) -> bool:
    """Lower NLL wins; on a tie, the grid point the former nested loop (k, then T, then share) met first."""
    if candidate["nll"] != best["nll"]:
        return candidate["nll"] < best["nll"]
    def order(fit: dict) -> tuple:
        return fit["k"], TEMPERATURE_GRID.index(fit["temperature"]), PRIOR_SHARE_GRID.index(fit["prior_share"])

    return order(candidate) < order(best)


def fit_chemistry(searcher, patterns: np.ndarray, labels: np.ndarray, elements) -> dict[str, Any]:
    """lambda (CHEMISTRY_WEIGHT_GRID) with its k, T and prior share, by NLL; every lambda tried is recorded."""
    tried = {w: fit_calibration(searcher, patterns, labels, elements, w) for w in CHEMISTRY_WEIGHT_GRID}
    weight = min(tried, key=lambda w: tried[w]["nll"])
    return {"weight": weight, **tried[weight],
            "nll_by_weight": {str(w): round(fit["nll"], 5) for w, fit in tried.items()}}


def formula_elements(formula: str) -> list[str]:
    """The element set (symbols, sorted) of a formula: what the chemistry term may know of a structure."""
    import re

    return sorted(set(re.findall(r"[A-Z][a-z]?", str(formula))))


def build_search_match_bundle(out: str | Path | None = None, *, sticks: Path = DEFAULT_STICK_TABLE,
                              splits_dir: Path = paths.SPLITS_DIR, max_reference: int | None = None,
                              max_val: int | None = None, seed: int = 0, progress: bool = True):
    """Reference library (train split), calibration (val split), bundle at ``out``; returns the bundle."""
    from sfn_stream.core.files import file_sha256
    from sfn_stream.core.networks import XrdSearchMatch, models_dir, save_bundle
    from sfn_stream.core.simulation import StickTable

    if not Path(sticks).is_file():
        raise FileNotFoundError(f"stick table {sticks} not found (python -m sfn_stream.offline.training._xrd build)")
    table = StickTable.load(sticks)
    splits = read_split_files(table, splits_dir)
    if splits is None:
        raise FileNotFoundError(f"no xrd_{{train,val,test}}.txt split files in {splits_dir}")
    rng = np.random.default_rng(seed)
    reference = _subsample(splits["train"], max_reference, rng)
    train_formulas = set(table.formulas[splits["train"]])
    val = _subsample(np.array([i for i in splits["val"] if table.formulas[i] not in train_formulas], dtype=int),
                     max_val, rng)
    if len(reference) == 0 or len(val) == 0:
        raise ValueError("the splits leave no reference or no formula-disjoint validation structure")
    labels, spacegroups = labels_of(table), table.spacegroups.astype(np.int64)

    profiles = reference_profiles(table, reference, progress)
    searcher = XrdSearchMatch.from_profiles(profiles, labels[reference],
                              spacegroups[reference], blur_points=BLUR_POINTS, subsample=SUBSAMPLE,
                              dilations=DILATIONS, refine_top=REFINE_TOP, k=1, temperature=1.0, prior_share=0.0,
                              reference_ids=[str(i) for i in table.ids[reference]],
                              reference_elements=[formula_elements(f) for f in table.formulas[reference]])
    renderings = validation_patterns(table, val, seed + 1, progress)
    val_patterns = np.concatenate(list(renderings.values()))
    val_labels = np.tile(labels[val], len(renderings))
    fit = fit_calibration(searcher, val_patterns, val_labels)
    searcher.k, searcher.temperature, searcher.prior_share = fit["k"], fit["temperature"], fit["prior_share"]
    val_elements = [formula_elements(f) for f in table.formulas[val]]
    chemistry = fit_chemistry(searcher, val_patterns, val_labels, val_elements * len(renderings))
    searcher.chemistry = {key: chemistry[key] for key in ("weight", "k", "temperature", "prior_share")}
    metrics = {name: _val_metrics(searcher, x, labels[val], spacegroups[val]) for name, x in renderings.items()}
    metrics.update({f"{name}_with_elements": _val_metrics(searcher, x, labels[val], spacegroups[val], val_elements)
                    for name, x in renderings.items()})
    card = _card(table, sticks, file_sha256(sticks), splits, reference, val, fit, metrics, chemistry)
    return save_bundle(out or models_dir() / BUNDLE_NAME, card, searcher.weights())


def _val_metrics(searcher, patterns, labels, spacegroups, elements=None) -> dict[str, Any]:
    systems, groups = searcher.votes(*searcher.nearest(patterns, elements=elements), chemistry=elements is not None)
    out = {key: value for key, value in probability_metrics(labels, systems, CRYSTAL_SYSTEMS).items()
           if key != "confusion_matrix"}
    ranked = np.argsort(-groups, axis=1)[:, :5] + 1
    out["space_group_top1"] = float((ranked[:, 0] == spacegroups).mean())
    out["space_group_top5"] = float((ranked == spacegroups[:, None]).any(1).mean())
    return out


def _card(table, sticks, sha, splits, reference, val, fit, metrics, chemistry) -> dict[str, Any]:
    from sfn_stream.core.networks import ELEMENT_GROUPS
    from sfn_stream.core.spectra import BACKGROUND, XRD_Q_MIN, XRD_Q_POINTS, XRD_Q_STEP

    return {
        "name": BUNDLE_NAME, "version": VERSION, "kind": "xrd", "created": datetime.date.today().isoformat(),
        "description": "Search-match (Hanawalt 1938; ICDD PDF search-match) as a calibrated k-nearest-neighbour "
                       "classifier: the pattern is compared with a library of simulated reference profiles by a "
                       "blurred, dilation-tolerant cosine over its measured Q range; the k most similar references "
                       "vote for crystal system and space group with weights exp(similarity / T). Given the "
                       "sample's elements, the ranking score adds lambda times an element-group similarity. See "
                       "docs/xrd-search-match.md.",
        "training_data": {
            "description": "reference library: one clean simulated profile (Cu K-alpha1, whole Q grid, FWHM "
                           f"{REFERENCE_FWHM_DEG} deg, no noise, SNIP + normalisation as measured data) per structure "
                           "of the TRAIN split of the stick table",
            "stick_table": Path(sticks).name, "sha256": sha,
            "sources": table.info.get("sources"), "n_by_source": table.info.get("n_by_source"),
            "build": "sfn-stream train xrd-search-match (python -m sfn_stream.offline.training._xrd_search_match)",
            "splits": "data/splits/xrd_{train,val,test}.txt",
            "n_structures": {name: len(idx) for name, idx in splits.items()},
            "n_reference": len(reference), "n_val_formula_disjoint": len(val),
        },
        "label_sources": {"crystal_system": "pymatgen SpacegroupAnalyzer(symprec=0.1).get_crystal_system()",
                          "space_group": "pymatgen SpacegroupAnalyzer(symprec=0.1).get_space_group_number()"},
        "preprocessing": {
            "function": "sfn_stream.spectra.preprocess_xrd",
            "q_grid": {"start": XRD_Q_MIN, "step": XRD_Q_STEP, "points": XRD_Q_POINTS, "unit": "1/A"},
            "background": dict(BACKGROUND),
            "normalisation": "background subtracted, clipped at 0, max = 1; zeros outside the measured range",
            "matching": f"Gaussian blur sigma {BLUR_POINTS} grid points, every {SUBSAMPLE}rd point; measured range "
                        "= first to last non-zero point",
        },
        "architecture": {"class": "XrdSearchMatch",
                         "kwargs": {"blur_points": BLUR_POINTS, "subsample": SUBSAMPLE, "dilations": list(DILATIONS),
                                    "refine_top": REFINE_TOP},
                         "n_parameters": 0, "n_reference": len(reference)},
        "tasks": {"crystal_system": {"type": "classification", "classes": list(CRYSTAL_SYSTEMS)},
                  "space_group": {"type": "classification", "classes": "1..230", "reported": "five most probable"}},
        "calibration": {"method": "k, T and prior share by NLL on the formula-disjoint val structures (two "
                                  "renderings each); grid search", "grid": {"k": list(K_GRID),
                                  "temperature": [round(t, 5) for t in TEMPERATURE_GRID],
                                  "prior_share": list(PRIOR_SHARE_GRID)},
                        **{key: (round(v, 6) if isinstance(v, float) else v) for key, v in fit.items()},
                        "chemistry": {
                            "input": "elements=: the sample's element set (symbols; never amounts or formula)",
                            "score": "pattern similarity + weight * cosine of element-group presence vectors "
                                     f"(groups: {', '.join(ELEMENT_GROUPS)}, other)",
                            "method": "weight (lambda) and its own k, T and prior share by NLL on the same val "
                                      "patterns, each given its structure's element set; grid search",
                            "grid": {"weight": list(CHEMISTRY_WEIGHT_GRID)},
                            **{key: (round(v, 6) if isinstance(v, float) else v) for key, v in chemistry.items()}}},
        "metrics": {f"val_{name}": {"description": f"formula-disjoint val structures, {_rendering(name)} (used to fit "
                                                   "k, T, prior share and the chemistry weight)", **m}
                    for name, m in metrics.items()},
        "references": [
            ("J. D. Hanawalt, H. W. Rinn, L. K. Frevel, Ind. Eng. Chem. Anal. Ed. 10, 457 (1938): search-match by "
            "d-spacings and intensities"),
            "T. Cover, P. Hart, IEEE Trans. Inf. Theory 13, 21 (1967): nearest-neighbour classification",
            "C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, ICML 2017: temperature fitted on validation by NLL",
        ],
        "documentation": "docs/xrd-search-match.md (test figures: sfn-stream evaluate xrd --bundle ...)",
        "limits": [
            ("a pattern is matched to structures of the reference library; a structure type absent from it is "
             "classified by whatever looks most alike"),
            "one phase: a mixture's peaks are matched as one pattern",
            "the cell dilation is isotropic (+-15 %); references differing by an anisotropic strain match less well",
            "measured range = first to last non-zero point of the preprocessed pattern",
            ("elements (optional) use the element set only, through element groups: polymorphs of one chemistry "
             "are not told apart by them, and wrong elements pull the ranking toward the wrong chemistry"),
        ],
    }


def _rendering(name: str) -> str:
    base = name.removesuffix("_with_elements")
    return f"{base} rendering" + (", each given its element set" if base != name else "")


def _subsample(idx: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(idx, limit, replace=False)) if limit and len(idx) > limit else np.asarray(idx)


def _progress(items, progress: bool, desc: str):
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, mininterval=5, leave=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help=f"bundle folder (default: models/{BUNDLE_NAME})")
    parser.add_argument("--sticks", type=Path, default=DEFAULT_STICK_TABLE)
    parser.add_argument("--splits-dir", type=Path, default=paths.SPLITS_DIR)
    parser.add_argument("--max-reference", type=int, help="at most this many training structures (default: all)")
    parser.add_argument("--max-val", type=int, help="at most this many val structures for the fit (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the card's calibration and metrics as JSON")
    args = parser.parse_args(argv)
    bundle = build_search_match_bundle(args.out, sticks=args.sticks, splits_dir=args.splits_dir,
                                       max_reference=args.max_reference, max_val=args.max_val, seed=args.seed,
                                       progress=not args.json)
    summary = {"bundle": bundle.id, "path": str(bundle.path), "calibration": bundle.card["calibration"],
               "metrics": bundle.card["metrics"]}
    print(json.dumps(summary, indent=2) if args.json else
          f"wrote {bundle.path} ({bundle.id}); k={summary['calibration']['k']} "
          f"T={summary['calibration']['temperature']} prior share={summary['calibration']['prior_share']}; "
          f"with elements: lambda={summary['calibration']['chemistry']['weight']} "
          f"k={summary['calibration']['chemistry']['k']} T={summary['calibration']['chemistry']['temperature']} "
          f"prior share={summary['calibration']['chemistry']['prior_share']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

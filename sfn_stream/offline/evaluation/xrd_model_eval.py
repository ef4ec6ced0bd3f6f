"""Recompute the crystal-system classifier's figures from the committed bundle.

    sfn-stream bench xrd-model [--json] [--bundle DIR] [--sticks FILE] [--frames N]

1. Simulated test split: the committed split ids, the stick table (its sha256 must match the card),
   augmentation with the card's seed (+202) and patterns per structure, as in training.
2. Measured dev set: single-phase patterns of ../shared/data/pxrd_experimental_dev (skipped when absent).
3. Per-frame inference time: preprocess_xrd on a measured-size scan + XrdClassifier.predict.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sfn_stream.core import paths
from sfn_stream.core.networks import CRYSTAL_SYSTEMS, XrdClassifier, load_bundle, models_dir
from sfn_stream.core.files import file_sha256
from sfn_stream.core.simulation import StickTable
from sfn_stream.core.spectra import preprocess_xrd, two_theta_to_q
from sfn_stream.offline.metrics import probability_metrics
from sfn_stream.offline.shared import SharedDataMissing
from sfn_stream.offline.training import (
    DEFAULT_STICK_TABLE,
    evaluate_measured,
    labels_of,
    measured_dev_set,
    read_split_files,
    synthesize_set,
)


def simulated_test(classifier, card, sticks_path: Path) -> dict:
    if not sticks_path.is_file():
        return {"skipped": f"stick table {sticks_path} not found (python -m sfn_stream.offline.training._xrd build)"}
    sha = file_sha256(sticks_path)
    if sha != card["training_data"]["sha256"]:
        return {"skipped": f"stick table sha256 {sha[:12]} differs from the card's"}
    table = StickTable.load(sticks_path)
    splits = read_split_files(table, paths.SPLITS_DIR)
    seed = card["training_data"]["seed"]
    n_per = int(card["metrics"]["simulated_test"]["description"].split(" x ")[1].split()[0])
    test_idx = np.repeat(splits["test"], n_per)
    x = synthesize_set(table, test_idx, np.random.default_rng(seed + 202))
    return probability_metrics(labels_of(table)[test_idx], classifier.probabilities(x), CRYSTAL_SYSTEMS)


def frame_timing(classifier, n_frames: int) -> dict:
    two_theta = np.arange(10.0, 100.0, 0.01)  # 9,000 points, as a lab scan
    rng = np.random.default_rng(0)
    q = two_theta_to_q(two_theta, 1.5406)
    # the lines of a tetragonal cell (a 4.59, c 2.96 A: rutile's), about 30 in range: a frame with as many lines
    # as a real one, since the indexing evidence costs more with more lines
    centres = sorted({round(2 * np.pi * np.sqrt((h * h + k * k) / 4.59 ** 2 + m * m / 2.96 ** 2), 4)
                      for h in range(6) for k in range(h + 1) for m in range(4) if h or k or m})
    y = 300 + sum(5000 / (1 + n % 4) * np.exp(-0.5 * ((q - c) / 0.004) ** 2)
                  for n, c in enumerate(c for c in centres if c < q.max()))
    scans = [rng.poisson(y).astype(float) for _ in range(n_frames)]
    classifier.predict(preprocess_xrd(two_theta, scans[0], wavelength=1.5406).intensity)  # warm-up
    t_pre, t_pred = [], []
    for scan in scans:
        t0 = time.perf_counter()
        pattern = preprocess_xrd(two_theta, scan, wavelength=1.5406)
        t1 = time.perf_counter()
        classifier.predict(pattern.intensity)
        t_pred.append(time.perf_counter() - t1)
        t_pre.append(t1 - t0)
    ms = lambda v: round(1e3 * float(np.median(v)), 2)  # noqa: E731
    return {"frames": n_frames, "torch_threads": torch.get_num_threads(), "preprocess_ms_median": ms(t_pre),
            "predict_ms_median": ms(t_pred), "total_ms_median": ms(np.add(t_pre, t_pred))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bundle", default=str(models_dir() / "xrd-crystal-system"))
    parser.add_argument("--sticks", default=None, help="stick table (default: the card's, under data/xrd_sticks/)")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: one small pattern gains nothing from more, and on a busy CPU "
                             "extra threads cost far more than they give)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    bundle = load_bundle(args.bundle)
    classifier = XrdClassifier.from_bundle(bundle)
    card = bundle.card
    sticks = Path(args.sticks) if args.sticks else DEFAULT_STICK_TABLE.parent / card["training_data"]["stick_table"]
    if not sticks.is_file() and DEFAULT_STICK_TABLE.is_file():
        sticks = DEFAULT_STICK_TABLE
    report = {"bundle": bundle.id, "simulated_test": simulated_test(classifier, card, sticks)}
    try:
        items, skipped = measured_dev_set()
        report["measured_dev"] = {**evaluate_measured(classifier, items), "skipped": skipped}
    except SharedDataMissing as err:
        report["measured_dev"] = {"skipped": str(err)}
    report["timing"] = frame_timing(classifier, args.frames)

    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"bundle {report['bundle']}")
    for name in ("simulated_test", "measured_dev"):
        m = report[name]
        if "accuracy" not in m:
            print(f"{name}: skipped ({m.get('skipped')})")
            continue
        print(f"{name}: n={m['n']} accuracy={m['accuracy']:.3f} macro-F1={m['macro_f1']:.3f} ECE={m['ece_15_bins']:.3f}")
        print("  per class: " + ", ".join(f"{c} {v:.2f} (n={m['support'][c]})" if v is not None else f"{c} -"
                                          for c, v in m["per_class_accuracy"].items()))
        print("  confusion (rows true, cols pred: " + " ".join(c[:4] for c in CRYSTAL_SYSTEMS) + ")")
        for c, row in zip(CRYSTAL_SYSTEMS, m["confusion_matrix"]["counts"]):
            print(f"    {c[:12]:>12} " + " ".join(f"{v:4d}" for v in row))
        for row in m.get("rows", []):
            if "predicted" in row:
                print(f"    {row['file'][-40:]:>40} {row['true']:>12} -> {row['predicted']:<12} p={row['probability']:.2f} p_true={row['p_true']:.2f}")
            else:
                print(f"    {row['file'][-40:]:>40} unusable: {row['unusable']}")
    t = report["timing"]
    print(f"per frame ({t['frames']} frames, torch threads {t['torch_threads']}): preprocess {t['preprocess_ms_median']} ms, "
          f"predict {t['predict_ms_median']} ms, total {t['total_ms_median']} ms (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate the committed XANES bundle: test-split metrics, measured dev set, inference time.

    sfn-stream bench xanes-model [--json] [--bundle models/xanes-specfusion]

Test metrics are recomputed from the committed weights and data/splits/xanes_cu_test_ids.txt
(windows rebuilt from ../shared with the card's energy offset) and compared with the card.
The measured dev set (shared/data/xanes_experimental_dev, Cu rows) is a sanity check only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _timings(ensemble, sample, repeats: int = 200) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    args = (list(sample.elements), {sample.absorber: (sample.window, sample.e0_shift)}, dict(zip(sample.elements, sample.fractions)))
    for _ in range(10):
        ensemble.predict(*args)
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        ensemble.predict(*args)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    batch = [args] * 64
    start = time.perf_counter()
    ensemble.predict_batch(batch)
    per_in_batch = (time.perf_counter() - start) / len(batch)
    return {
        "single_compound_ms_median": 1e3 * statistics.median(times),
        "single_compound_ms_p90": 1e3 * float(np.percentile(times, 90)),
        # CPU time of this process: less sensitive than wall time to other jobs on a shared machine
        "single_compound_cpu_ms_mean": 1e3 * float(np.mean(cpu)),
        "load_average_1min": os.getloadavg()[0],
        "batched_64_ms_per_compound": 1e3 * per_in_batch,
        "torch_threads": 1,
        "members": len(ensemble.members),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--bundle", default=None, help="bundle folder (default: models/xanes-specfusion)")
    args = parser.parse_args(argv)

    from sfn_stream.core.networks import XanesEnsemble, load_bundle, models_dir
    from sfn_stream.offline.training import build_xanes_dataset, evaluate_measured_dev, read_splits
    from sfn_stream.offline.shared import have_shared
    from sfn_stream.offline.training import evaluate_split

    bundle = load_bundle(Path(args.bundle) if args.bundle else models_dir() / "xanes-specfusion")
    ensemble = XanesEnsemble.from_bundle(bundle)
    card = bundle.card
    report = {"bundle": bundle.id}
    if not have_shared():
        print("../shared is absent: only the card's metrics can be shown", file=sys.stderr)
        report["card_test_metrics"] = card["metrics"]["test"]
    else:
        offset = float(card["preprocessing"]["energy_offset"]["energy_offset"])
        test_ids = read_splits()["test"]
        dataset = build_xanes_dataset(energy_offset=offset, material_ids=test_ids, progress=False)
        baselines = card["metrics"]["baselines_from_training_split"]
        calibration = card["calibration"]
        metrics = evaluate_split(ensemble.members, dataset.samples, calibration, baselines)
        report["test"] = metrics
        report["test_excluded"] = dict(dataset.excluded)
        report["matches_card"] = all(
            abs(metrics[t][k] - card["metrics"]["test"][t][k]) < 1e-4
            for t, k in (("oxidation_state", "accuracy"), ("coordination_number", "accuracy"), ("density", "mae"))
        )
        report["measured_dev"] = evaluate_measured_dev(ensemble)
        report["timing"] = _timings(ensemble, dataset.samples[0])
    if args.json:
        print(json.dumps(report, indent=2, default=float))
        return 0
    _print(report)
    return 0


def _print(report: dict) -> None:
    print(f"bundle {report['bundle']}")
    test = report.get("test") or report.get("card_test_metrics")
    print(f"TEST split ({test['n_materials']} materials, formulas unseen in training)")
    for task in ("oxidation_state", "coordination_number"):
        m = test[task]
        b = m["baseline_majority_class"]
        print(
            f"  {task:20s} acc {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  ECE {m['ece']:.3f} "
            f"(uncalibrated {m['ece_uncalibrated']:.3f})  | majority class {b['class']}: acc {b['accuracy']:.3f} "
            f"macro-F1 {b['macro_f1']:.3f}"
        )
        labels = m["confusion"]["labels"]
        print(f"    confusion (rows true, cols predicted) classes {labels}")
        for label, row in zip(labels, m["confusion"]["rows_true_cols_pred"]):
            print(f"      {label:>3}: {row}")
    d = test["density"]
    print(
        f"  density              MAE {d['mae']:.3f} g/cm3  R2 {d['r2']:.3f}  |err|<1std {d['fraction_within_1_std']:.3f} "
        f"<2std {d['fraction_within_2_std']:.3f}  | training mean: MAE {d['baseline_training_mean']['mae']:.3f} "
        f"R2 {d['baseline_training_mean']['r2']:.3f}"
    )
    if "matches_card" in report:
        print(f"  recomputed metrics match the card: {report['matches_card']}  (excluded: {report['test_excluded']})")
    if "measured_dev" in report:
        dev = report["measured_dev"]
        print("MEASURED DEV SET (sanity check only, not used for tuning)")
        print(
            f"  oxidation state {dev['oxidation_state']['correct']}/{dev['oxidation_state']['n']}, "
            f"CN {dev['coordination_number']['correct']}/{dev['coordination_number']['n']}"
        )
        for row in dev["files"]:
            if not row["usable"]:
                print(f"  {row['file']}: not usable ({row.get('reason')})")
                continue
            print(
                f"  {row['file']:55s} {row['formula']:16s} ox {row['label_oxidation_state']} -> "
                f"{row['predicted_oxidation_state']} (p={row['predicted_oxidation_state_probability']:.2f})  "
                f"CN {row['label_cn']} -> {row['predicted_cn']} (p={row['predicted_cn_probability']:.2f})  "
                f"e0_shift {row['e0_shift']:+.1f} eV [{row['calibration']}]"
            )
    if "timing" in report:
        t = report["timing"]
        print(
            f"inference ({t['members']} members, 1 thread): {t['single_compound_ms_median']:.2f} ms wall per compound "
            f"(p90 {t['single_compound_ms_p90']:.2f}; CPU {t['single_compound_cpu_ms_mean']:.2f} ms); batched: "
            f"{t['batched_64_ms_per_compound']:.2f} ms per compound; load average {t['load_average_1min']:.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())

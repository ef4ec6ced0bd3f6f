"""``sfn-stream bench agent``: the next-edge agent against fixed and random edge orders, offline.

Samples: the test-split materials of data/splits/xanes_3d_splits.json with two or more 3d metals and a
usable FEFF10 spectrum at every one of their 3d-metal edges (data/corpus). Each sample is "measured" edge by
edge: after k edges, the multi-edge model (the registry's bundle covering the sample's metals) predicts
every metal's oxidation state and CN from the elements (no stoichiometry, as at a beamline) and the k
measured windows; k = 0 is the model's elements-only answer, the no-spectrum baseline.

Strategies: ``agent`` (its own first edge and order, stopping when it says done), ``random`` (every order,
averaged), ``fixed`` (increasing Z), ``all`` (every edge). Figures: label accuracy (every labelled metal x
task of the sample) after k edges; the agent's edges, beamtime and accuracy when it stops; edges each
order needs to reach the all-edge accuracy; the agent's suggestion latency (fusion + scoring, ms).

``--calibrate`` recomputes the agent's calibration from the *validation* split (how much a metal's own edge
sharpens its posterior, averaged per metal; the cross effect on the other metals of multi-metal materials;
label priors from the training split) and writes ``sfn_stream/data/next_edge_calibration.json``. The
test split is never used for it. Figures only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sfn_stream.core import paths
from sfn_stream.live.consumers.next_edge import (
    CALIBRATION_FILE,
    METALS_3D,
    TASKS,
    EdgeCalibration,
    MetalBelief,
    ModelFusion,
    NextEdgeOptions,
    decide,
)

STRATEGIES = ("agent", "random", "fixed", "all")
MAX_ORDERS = 24  # random order: every permutation up to 4 edges, else this many drawn
MIN_CROSS_PAIRS = 10  # fewer (metal, other metal) validation pairs than this: no cross effect assumed


class AgentBenchmarkError(RuntimeError):
    """The benchmark cannot run (corpus, splits or bundle missing)."""


# -- data ---------------------------------------------------------------------------------------------
class Sample:
    """One corpus material seen as a sample: its elements, metals, labels and edge windows."""

    def __init__(self, material, windows: Mapping[str, tuple[np.ndarray, float]]):
        self.material_id = material.material_id
        self.formula = material.formula
        self.elements = list(material.elements)
        self.metals = sorted((m for m in material.elements if m in METALS_3D), key=METALS_3D.index)
        self.labels = {m: dict(material.metal_labels.get(m, {})) for m in self.metals}
        self.windows = dict(windows)

    @property
    def complete(self) -> bool:
        return len(self.metals) >= 1 and all(m in self.windows for m in self.metals)


def load_samples(split: str, *, min_metals: int = 2, corpus: Sequence | None = None,
                 corpus_dir: str | Path | None = None) -> list[Sample]:
    """The corpus materials of ``split`` with at least ``min_metals`` 3d metals, every edge usable."""
    from sfn_stream.offline.training import (
        TrainingDataError,
        edge_window,
        read_corpus_materials,
        read_unified_splits,
    )

    try:
        ids = set(read_unified_splits()[split])
        materials = corpus if corpus is not None else read_corpus_materials(
            corpus_dir or paths.CORPUS_DIR, omnixas=False, progress=False)
    except (TrainingDataError, FileNotFoundError, ImportError) as err:
        raise AgentBenchmarkError(f"the corpus or its splits cannot be read: {err}") from err
    samples = []
    for material in materials:
        if material.material_id not in ids:
            continue
        metals = [m for m in material.elements if m in METALS_3D]
        if len(metals) < min_metals:
            continue
        windows = {}
        for metal, edge in material.edges.items():
            if edge.source != "feff10":
                continue
            window = edge_window(edge)
            if window is not None:
                windows[metal] = (np.asarray(window.mu, np.float32), float(window.e0_shift))
        sample = Sample(material, windows)
        if sample.complete:
            samples.append(sample)
    return samples


class Beliefs:
    """The model's beliefs for one sample per set of measured edges (cached: each subset predicted once)."""

    def __init__(self, fusion: ModelFusion):
        self.fusion = fusion
        self._cache: dict[tuple, dict[str, MetalBelief]] = {}

    def of(self, sample: Sample, measured: Sequence[str], calibration: EdgeCalibration) -> dict[str, MetalBelief]:
        key = (sample.material_id, frozenset(measured))
        if key not in self._cache:
            from sfn_stream.live.consumers.next_edge import EdgeInput

            edges = {m: EdgeInput("corpus", m, sample.windows[m][0], sample.windows[m][1], {}) for m in measured}
            beliefs, _ = self.fusion.beliefs(sample.elements, None, sample.metals, edges, calibration)
            self._cache[key] = beliefs
        return self._cache[key]


def correct_labels(sample: Sample, beliefs: Mapping[str, MetalBelief]) -> tuple[int, int]:
    """(correct, labelled) over the sample's metals x tasks."""
    right = total = 0
    for metal in sample.metals:
        for task in TASKS:
            truth = sample.labels.get(metal, {}).get(task)
            if truth is None:
                continue
            total += 1
            right += int(beliefs[metal].top(task)[0] == int(truth))
    return right, total


# -- calibration (validation split only) ----------------------------------------------------------------
def calibrate(fusion: ModelFusion, *, progress: bool = True, corpus_dir: str | Path | None = None) -> EdgeCalibration:
    """The agent's calibration from the validation split (see the module docstring)."""
    from sfn_stream.offline.training import read_corpus_materials, read_unified_splits

    corpus_dir = Path(corpus_dir or paths.CORPUS_DIR)
    corpus = read_corpus_materials(corpus_dir, omnixas=False, progress=False)
    val = load_samples("val", min_metals=1, corpus=corpus)
    neutral = EdgeCalibration()
    beliefs = Beliefs(fusion)
    # metal -> task -> stage -> [(right, top probability)]
    outcomes: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    cross_before, cross_after = [], []
    for sample in _progress(val, progress, "calibrating on the validation split"):
        prior = beliefs.of(sample, [], neutral)
        for metal in sample.metals:
            with_edge = beliefs.of(sample, [metal], neutral)
            for task in TASKS:
                truth = sample.labels.get(metal, {}).get(task)
                if truth is None:
                    continue
                for stage, belief in (("prior", prior[metal]), ("edge", with_edge[metal])):
                    label, p = belief.top(task)
                    outcomes[metal][task][stage].append((label == int(truth), p))
            for other in sample.metals:
                if other != metal:
                    cross_before.append(sum(prior[other].entropy(t) for t in TASKS))
                    cross_after.append(sum(with_edge[other].entropy(t) for t in TASKS))
    cross = None
    if len(cross_before) >= MIN_CROSS_PAIRS:
        cross = round(float(np.mean(cross_after) / max(np.mean(cross_before), 1e-9)), 4)
    reliability = _reliability(outcomes)
    return EdgeCalibration(
        reliability=reliability, cross_remaining=cross, priors=_label_priors(corpus, read_unified_splits()),
        provenance={
            "bundle_id": getattr(getattr(fusion.predictor(list(METALS_3D)), "bundle", None), "id", None),
            "split": "val (data/splits/xanes_3d_splits.json)", "n_materials": len(val),
            "corpus_content_hash": _corpus_hash(corpus_dir),
            "n_labelled_edges": {m: {t: r["edge"]["n"] for t, r in tasks.items()} for m, tasks in reliability.items()},
            "n_cross_pairs": len(cross_before), "shrinkage_pseudo_count": SHRINKAGE,
            "how": "per metal and task, the top class's accuracy and mean probability on the validation "
                   "materials, elements only ('prior') and with the metal's own edge ('edge'), shrunk towards "
                   "all metals pooled; cross_remaining: mean entropy of the other metals with / without one "
                   f"edge (None below {MIN_CROSS_PAIRS} pairs); priors: training-split label frequencies"})


def _corpus_hash(corpus_dir: Path) -> str | None:
    try:
        return json.loads((corpus_dir / "corpus.json").read_text()).get("content_hash")
    except (OSError, ValueError):
        return None


SHRINKAGE = 5.0  # pseudo-count pulling a metal's figures towards the pooled ones


def _reliability(outcomes) -> dict:
    pooled: dict = defaultdict(lambda: defaultdict(list))
    for tasks in outcomes.values():
        for task, stages in tasks.items():
            for stage, rows in stages.items():
                pooled[task][stage].extend(rows)
    out: dict = {}
    for metal in sorted(outcomes, key=METALS_3D.index):
        for task, stages in outcomes[metal].items():
            for stage, rows in stages.items():
                base = pooled[task][stage]
                acc0, conf0 = np.mean([r for r, _ in base]), np.mean([p for _, p in base])
                n = len(rows)
                acc = (sum(r for r, _ in rows) + SHRINKAGE * acc0) / (n + SHRINKAGE)
                conf = (sum(p for _, p in rows) + SHRINKAGE * conf0) / (n + SHRINKAGE)
                out.setdefault(metal, {}).setdefault(task, {})[stage] = {
                    "accuracy": round(float(acc), 4), "confidence": round(float(conf), 4), "n": n,
                    "raw_accuracy": round(float(np.mean([r for r, _ in rows])), 4)}
    return out


def _label_priors(corpus, splits) -> dict:
    train_ids = set(splits["train"])
    counts: dict = defaultdict(lambda: defaultdict(Counter))
    for material in corpus:
        if material.material_id in train_ids:
            for metal, labels in material.metal_labels.items():
                for task in TASKS:
                    if labels.get(task) is not None:
                        counts[metal][task][str(int(labels[task]))] += 1
    return {m: {t: {k: round(v / sum(c.values()), 4) for k, v in sorted(c.items())} for t, c in tasks.items()}
            for m, tasks in counts.items()}


# -- strategies ---------------------------------------------------------------------------------------
def agent_order(sample: Sample, beliefs: Beliefs, calibration: EdgeCalibration, options: NextEdgeOptions,
                covered: set[str], latencies: list[float]) -> tuple[list[str], int, float]:
    """The agent's order of every edge, the number it measured before saying done, and that beamtime (s)."""
    measured: list[str] = []
    stop_at, seconds, energy = None, 0.0, None
    from sfn_stream.core.spectra import k_edge_energy

    while len(measured) < len(sample.metals):
        started = time.perf_counter()
        current = beliefs.of(sample, measured, calibration)
        decision = decide(sample.metals, current, measured, covered, calibration, options, from_energy=energy)
        latencies.append(time.perf_counter() - started)
        if decision.done and stop_at is None and measured:  # the first edge is always measured (as the plan does)
            stop_at = len(measured)
        if decision.next_edge is not None:
            edge = decision.next_edge
        else:  # past its stop: continue in its ranking (then by Z) only to draw the whole curve
            ranked = sorted((c for c in decision.candidates if not c.measured), key=lambda c: -c.score)
            edge = ranked[0].edge
        if stop_at is None:
            seconds += options.cost.seconds(edge, energy)
        measured.append(edge)
        energy = k_edge_energy(edge)
    if stop_at is None:
        stop_at = len(measured)
    return measured, stop_at, seconds


def orders(sample: Sample, strategy: str, rng: np.random.Generator) -> list[list[str]]:
    metals = list(sample.metals)
    if strategy == "fixed" or strategy == "all":
        return [metals]
    permutations = list(itertools.permutations(metals))
    if len(permutations) > MAX_ORDERS:
        permutations = [tuple(rng.permutation(metals)) for _ in range(MAX_ORDERS)]
    return [list(p) for p in permutations]


def order_seconds(order: Sequence[str], k: int, options: NextEdgeOptions) -> float:
    from sfn_stream.core.spectra import k_edge_energy

    seconds, energy = 0.0, None
    for edge in order[:k]:
        seconds += options.cost.seconds(edge, energy)
        energy = k_edge_energy(edge)
    return seconds


def evaluate(samples: Sequence[Sample], fusion: ModelFusion, calibration: EdgeCalibration,
             options: NextEdgeOptions, *, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Accuracy after k edges per strategy, the agent's stop, edges to reach the all-edge accuracy."""
    rng = np.random.default_rng(seed)
    beliefs = Beliefs(fusion)
    latencies: list[float] = []
    max_k = max(len(s.metals) for s in samples)
    curves: dict[str, list[list[float]]] = {s: [[] for _ in range(max_k + 1)] for s in STRATEGIES}
    per_sample = []
    for sample in _progress(samples, progress, "samples"):
        n = len(sample.metals)
        covered = fusion.covered(sample.metals)
        accuracy = _AccuracyOf(sample, beliefs, calibration)

        full = accuracy(sample.metals)
        agent, stop_at, agent_seconds = agent_order(sample, beliefs, calibration, options, covered, latencies)
        record = {"material_id": sample.material_id, "formula": sample.formula, "metals": sample.metals, "n_edges": n,
                  "all_edge_accuracy": full, "n_labels": correct_labels(sample, beliefs.of(sample, [], calibration))[1],
                  "agent_order": agent, "agent_stop_edges": stop_at,
                  "agent_stop_accuracy": accuracy(agent[:stop_at]), "agent_beamtime_s": round(agent_seconds, 1),
                  "all_edges_beamtime_s": round(order_seconds(sorted(sample.metals, key=METALS_3D.index), n, options), 1),
                  "edges_to_all_edge_accuracy": {}}
        for strategy in STRATEGIES:
            strategy_orders = [agent] if strategy == "agent" else orders(sample, strategy, rng)
            for k in range(max_k + 1):
                kk = n if strategy == "all" else min(k, n)
                curves[strategy][k].append(float(np.mean([accuracy(o[:kk]) for o in strategy_orders])))
            needed = [next(k for k in range(n + 1) if accuracy(o[:k]) >= full - 1e-9) for o in strategy_orders]
            record["edges_to_all_edge_accuracy"][strategy] = float(np.mean(needed))
        per_sample.append(record)
    return _summarise(per_sample, curves, latencies, max_k)


class _AccuracyOf:
    """One sample's label accuracy per set of measured edges (cached)."""

    def __init__(self, sample: Sample, beliefs: Beliefs, calibration: EdgeCalibration):
        self.sample, self.beliefs, self.calibration = sample, beliefs, calibration
        self._cache: dict[frozenset, float] = {}

    def __call__(self, measured: Sequence[str]) -> float:
        key = frozenset(measured)
        if key not in self._cache:
            right, total = correct_labels(self.sample, self.beliefs.of(self.sample, list(measured), self.calibration))
            self._cache[key] = right / total if total else math.nan
        return self._cache[key]


def _summarise(per_sample, curves, latencies, max_k) -> dict[str, Any]:
    n_edges = np.asarray([r["n_edges"] for r in per_sample], float)
    stop = np.asarray([r["agent_stop_edges"] for r in per_sample], float)
    full = float(np.nanmean([r["all_edge_accuracy"] for r in per_sample]))
    at_stop = float(np.nanmean([r["agent_stop_accuracy"] for r in per_sample]))
    ms = np.asarray(latencies) * 1000
    need = {s: float(np.mean([r["edges_to_all_edge_accuracy"][s] for r in per_sample])) for s in STRATEGIES}
    return {
        "n_samples": len(per_sample), "edges_per_sample": dict(Counter(int(n) for n in n_edges)),
        "labelled_fraction": round(sum(r["n_labels"] for r in per_sample) / (2 * n_edges.sum()), 3),
        "accuracy_after_k_edges": {s: [round(float(np.nanmean(v)), 4) if v else None for v in curves[s]]
                                   for s in STRATEGIES},
        "all_edge_accuracy": round(full, 4),
        "agent": {"mean_edges_at_stop": round(float(stop.mean()), 3),
                  "fraction_of_edges_at_stop": round(float((stop / n_edges).mean()), 3),
                  "accuracy_at_stop": round(at_stop, 4),
                  "within_1pct_of_all_edges": bool(at_stop >= full - 0.01),
                  "beamtime_s_at_stop": round(float(np.mean([r["agent_beamtime_s"] for r in per_sample])), 1),
                  "beamtime_s_all_edges": round(float(np.mean([r["all_edges_beamtime_s"] for r in per_sample])), 1)},
        "edges_to_reach_all_edge_accuracy": {s: round(v, 3) for s, v in need.items()},
        "edges_to_reach_note": "per sample, the fewest edges of that order whose accuracy equals the sample's "
                               "all-edge accuracy (an oracle stop: the agent's own stop is under 'agent')",
        "agent_fewer_edges_than_random_pct": (round(100 * (1 - need["agent"] / need["random"]), 1)
                                              if need["random"] > 0 else None),
        "suggestion_latency_ms": {"p50": round(float(np.percentile(ms, 50)), 2),
                                  "p95": round(float(np.percentile(ms, 95)), 2), "n": int(ms.size)} if ms.size else {},
        "samples": per_sample, "max_edges": max_k,
    }


def plot(result: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ks = np.arange(result["max_edges"] + 1)
    styles = {"agent": "o-", "random": "s--", "fixed": "^-.", "all": ":"}
    for strategy, values in result["accuracy_after_k_edges"].items():
        ax.plot(ks, [np.nan if v is None else v for v in values], styles[strategy], label=strategy)
    agent = result["agent"]
    ax.plot([agent["mean_edges_at_stop"]], [agent["accuracy_at_stop"]], "k*", ms=12, label="agent stops")
    ax.set_xlabel("edges measured")
    ax.set_ylabel("oxidation state + CN accuracy")
    ax.set_xticks(ks)
    ax.set_title(f"next-edge agent, {result['n_samples']} test multi-metal samples")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _progress(items, enabled: bool, what: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, file=sys.stderr, leave=False)


def calibration_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("sfn_stream.data").joinpath(CALIBRATION_FILE)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sfn-stream bench agent", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calibrate", action="store_true",
                        help=f"recompute the calibration on the validation split and write {CALIBRATION_FILE}")
    parser.add_argument("--split", default="test", choices=("test", "test_chemical_system", "val"),
                        help="samples to evaluate (default test)")
    parser.add_argument("--min-bits-per-hour", type=float, default=NextEdgeOptions.min_bits_per_hour)
    parser.add_argument("--target-confidence", type=float, default=NextEdgeOptions.target_confidence)
    parser.add_argument("--plot", default="sfn-bench/agent_accuracy.png", help="where to save the PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", default=None, help="corpus folder (default: data/corpus)")
    args = parser.parse_args(argv)
    fusion = ModelFusion()
    try:
        if args.calibrate:
            calibration = calibrate(fusion, progress=not args.json, corpus_dir=args.corpus)
            calibration_path().write_text(json.dumps(calibration.to_dict(), indent=1) + "\n")
            print(f"wrote {calibration_path()}", file=sys.stderr)
        else:
            calibration = EdgeCalibration.shipped()
        samples = load_samples(args.split, corpus_dir=args.corpus)
    except AgentBenchmarkError as err:
        print(f"sfn-stream: {err}", file=sys.stderr)
        return 2
    if not samples:
        print(f"sfn-stream: no {args.split}-split material has two or more 3d metals with every edge computed",
              file=sys.stderr)
        return 2
    options = NextEdgeOptions(min_bits_per_hour=args.min_bits_per_hour, target_confidence=args.target_confidence)
    result = evaluate(samples, fusion, calibration, options, seed=args.seed, progress=not args.json)
    result.update(split=args.split, options=options.describe(), calibration=calibration.provenance,
                  bundle_id=getattr(getattr(fusion.predictor(samples[0].metals), "bundle", None), "id", None))
    result["plot"] = str(plot(result, Path(args.plot)))
    if result["labelled_fraction"] < 0.5:
        print(f"sfn-stream: only {100 * result['labelled_fraction']:.0f} % of the samples' oxidation states and CNs "
              "have a label in this corpus: the accuracies rest on few labels", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        _print(result)
    return 0


def _print(r: Mapping[str, Any]) -> None:
    agent = r["agent"]
    print(f"sfn-stream bench agent: {r['n_samples']} {r['split']}-split samples (edges per sample: "
          f"{r['edges_per_sample']}), bundle {r['bundle_id']}")
    print("accuracy (oxidation state + CN labels) after k edges:")
    for strategy, values in r["accuracy_after_k_edges"].items():
        print(f"  {strategy:7s} " + "  ".join(f"k={k}: {v:.3f}" for k, v in enumerate(values) if v is not None))
    print(f"all edges: {r['all_edge_accuracy']:.3f}; agent stops after {agent['mean_edges_at_stop']:.2f} edges "
          f"({100 * agent['fraction_of_edges_at_stop']:.0f} % of them) at {agent['accuracy_at_stop']:.3f}, "
          f"{agent['beamtime_s_at_stop'] / 60:.1f} min vs {agent['beamtime_s_all_edges'] / 60:.1f} min for all")
    need = r["edges_to_reach_all_edge_accuracy"]
    print("edges to reach the all-edge accuracy (oracle stop): " + ", ".join(f"{s} {v:.2f}" for s, v in need.items()))
    print("per sample (agent order, edges at its stop, accuracy there / with every edge):")
    for sample in r["samples"]:
        print(f"  {sample['material_id']} {sample['formula']:14s} {'>'.join(sample['agent_order']):8s} "
              f"stop {sample['agent_stop_edges']}  {sample['agent_stop_accuracy']:.2f} / {sample['all_edge_accuracy']:.2f}")
    lat = r["suggestion_latency_ms"]
    if lat:
        print(f"suggestion latency: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms ({lat['n']} decisions)")
    print(f"plot: {r['plot']}")


if __name__ == "__main__":
    raise SystemExit(main())

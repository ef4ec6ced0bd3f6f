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
import os
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
from sfn_stream.offline.corpus import snapshot_hash
from sfn_stream.offline.metrics import bootstrap_interval

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


def correct_labels(sample: Sample, beliefs: Mapping[str, MetalBelief],
                   metals: Sequence[str] | None = None) -> tuple[int, int]:
    """(correct, labelled) over the sample's metals (or those given) x tasks."""
    right = total = 0
    for metal in sample.metals if metals is None else metals:
        for task in TASKS:
            truth = sample.labels.get(metal, {}).get(task)
            if truth is None:
                continue
            total += 1
            right += int(beliefs[metal].top(task)[0] == int(truth))
    return right, total


def measured_and_unmeasured(samples: Sequence[Sample], beliefs: Beliefs, calibration: EdgeCalibration
                            ) -> list[dict[str, Any]]:
    """Per number k of measured edges, label accuracy of the metals measured and of those not measured, over
    every k-subset of each sample's edges: what an edge says about its own metal and about the others (an
    agent can stop early only as far as one edge informs the rest)."""
    import itertools

    max_k = max(len(s.metals) for s in samples)
    tally = [{"measured": [0, 0], "unmeasured": [0, 0]} for _ in range(max_k + 1)]
    for sample in samples:
        for k in range(len(sample.metals) + 1):
            for subset in itertools.combinations(sample.metals, k):
                belief = beliefs.of(sample, list(subset), calibration)
                for metal in sample.metals:
                    right, total = correct_labels(sample, belief, metals=[metal])
                    cell = tally[k]["measured" if metal in subset else "unmeasured"]
                    cell[0] += right
                    cell[1] += total
    return [{"edges": k, **{group: (round(r / n, 4) if n else None) for group, (r, n) in row.items()},
             **{f"n_{group}": n for group, (_, n) in row.items()}} for k, row in enumerate(tally)]


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
    calibration = EdgeCalibration(
        reliability=reliability, cross_remaining=cross, priors=_label_priors(corpus, read_unified_splits()),
        provenance={
            "bundle_id": getattr(getattr(fusion.predictor(list(METALS_3D)), "bundle", None), "id", None),
            "split": "val (data/splits/xanes_3d_splits.json)", "n_materials": len(val),
            "corpus_content_hash": snapshot_hash(corpus_dir),
            "n_labelled_edges": {m: {t: r["edge"]["n"] for t, r in tasks.items()} for m, tasks in reliability.items()},
            "n_cross_pairs": len(cross_before), "shrinkage_pseudo_count": SHRINKAGE,
            "how": "per metal and task, the top class's accuracy and mean probability on the validation "
                   "materials, elements only ('prior') and with the metal's own edge ('edge'), shrunk towards "
                   "all metals pooled; cross_remaining: mean entropy of the other metals with / without one "
                   f"edge (None below {MIN_CROSS_PAIRS} pairs); priors: training-split label frequencies"})
    multi_metal = [s for s in val if len(s.metals) >= 2]
    calibration.stopping = fit_stopping(multi_metal, fusion, calibration, progress=progress)
    return calibration


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


# -- the stopping rule (validation split only) ----------------------------------------------------------
NEVER_STOP = NextEdgeOptions(min_bits_per_hour=0.0, target_confidence=1.01)
CONFIDENCE_GRID = (0.7, 0.8, 0.85, 0.9, 0.95, 1.01)  # 1.01: never stop on confidence alone
ACCURACY_TOLERANCE = 0.01  # the stop may cost at most this much of the all-edge accuracy


def stop_path(sample: Sample, beliefs: Beliefs, calibration: EdgeCalibration,
              covered: set[str]) -> list[dict[str, float]]:
    """The agent's steps over a sample when it never stops: after k edges (k >= 1: the first edge is always
    measured), the least calibrated confidence, the best open edge's bits per hour, and the label accuracy."""
    from sfn_stream.core.spectra import k_edge_energy

    measured: list[str] = []
    energy, steps = None, []
    accuracy = _AccuracyOf(sample, beliefs, calibration)
    while True:
        decision = decide(sample.metals, beliefs.of(sample, measured, calibration), measured, covered, calibration,
                          NEVER_STOP, from_energy=energy)
        open_scores = [c.score for c in decision.candidates if not c.measured and c.covered]
        if measured:
            steps.append({"edges": len(measured), "confidence": decision.confidence,
                          "best_score": max(open_scores, default=-math.inf), "accuracy": accuracy(measured)})
        if decision.next_edge is None:
            return steps
        measured.append(decision.next_edge)
        energy = k_edge_energy(decision.next_edge)


def stop_at(path: Sequence[Mapping[str, float]], min_bits_per_hour: float, target_confidence: float) -> Mapping:
    """The step where the rule stops: confident enough, or no open edge worth its cost (or the last step)."""
    for step in path:
        if step["confidence"] >= target_confidence or step["best_score"] < min_bits_per_hour:
            return step
    return path[-1]


def fit_stopping(samples: Sequence[Sample], fusion: ModelFusion, calibration: EdgeCalibration, *,
                 progress: bool = False) -> dict[str, Any]:
    """The stopping rule (target confidence x bits per hour) with the fewest edges whose mean accuracy at the
    stop stays within ``ACCURACY_TOLERANCE`` of the all-edge accuracy on ``samples`` (the validation split's
    multi-metal materials); ties go to the most accurate, then the highest confidence target, then the
    threshold in the middle of the tied ones. Empty when there are no samples."""
    beliefs = Beliefs(fusion)
    paths = [stop_path(s, beliefs, calibration, fusion.covered(s.metals))
             for s in _progress(samples, progress, "fitting the stopping rule on the validation split")]
    paths = [p for p in paths if p]
    if not paths:
        return {}
    full = float(np.nanmean([p[-1]["accuracy"] for p in paths]))
    scores = sorted({step["best_score"] for p in paths for step in p if math.isfinite(step["best_score"])})
    thresholds = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(scores)] + [scores[-1] + 1.0 if scores else 1.0]
    grid = []
    for confidence in CONFIDENCE_GRID:
        for threshold in thresholds:
            stops = [stop_at(p, threshold, confidence) for p in paths]
            grid.append({"target_confidence": confidence, "min_bits_per_hour": round(threshold, 3),
                         "edges": float(np.mean([s["edges"] for s in stops])),
                         "accuracy": float(np.nanmean([s["accuracy"] for s in stops]))})
    feasible = [g for g in grid if g["accuracy"] >= full - ACCURACY_TOLERANCE] or grid
    best_key = min((g["edges"], -g["accuracy"], -g["target_confidence"]) for g in feasible)
    tied = [g for g in feasible if (g["edges"], -g["accuracy"], -g["target_confidence"]) == best_key]
    chosen = tied[len(tied) // 2]
    n_edges = float(np.mean([p[-1]["edges"] for p in paths]))
    return {"target_confidence": chosen["target_confidence"], "min_bits_per_hour": chosen["min_bits_per_hour"],
            "fitted_on": "val", "n_samples": len(paths), "all_edge_accuracy": round(full, 4),
            "accuracy_at_stop": round(chosen["accuracy"], 4), "mean_edges_at_stop": round(chosen["edges"], 3),
            "mean_edges": round(n_edges, 3), "tolerance": ACCURACY_TOLERANCE,
            "how": "validation multi-metal materials measured in the agent's order; every (target confidence, "
                   "bits/h threshold) pair of the grid stops each at its first step confident enough or with no "
                   "open edge worth its cost; kept: the fewest mean edges whose mean accuracy at the stop is within "
                   "the tolerance of the all-edge accuracy (the first edge is always measured)"}


TRADEOFF_CONFIDENCES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
TRADEOFF_BITS_PER_HOUR = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)


def stopping_tradeoff(samples: Sequence[Sample], beliefs: Beliefs, calibration: EdgeCalibration,
                      fusion: ModelFusion, rule: Mapping[str, float],
                      walks: Sequence[tuple[Sequence[Mapping[str, float]], int]] | None = None
                      ) -> dict[str, list[dict[str, float]]]:
    """What stopping earlier costs, one knob of the stopping rule at a time: ``target_confidence`` (with no
    bits/h rule) and ``min_bits_per_hour`` (at the rule's target confidence), each with the agent's mean share
    of the sample's edges at its stop and the accuracy there. A user picks the knobs from this; a target such
    as "within 1 % with at most 60 % of the edges" that lies above both curves is out of reach of the model's
    confidence: it cannot tell which samples still need an edge. ``walks``: :func:`stop_walks` of the samples,
    when already made."""
    if walks is None:
        walks = stop_walks(samples, beliefs, calibration, fusion)

    def point(min_bits: float, confidence: float) -> dict[str, float]:
        stops = [(stop_at(path, min_bits, confidence), n) for path, n in walks]
        return {"target_confidence": confidence, "min_bits_per_hour": min_bits,
                "fraction_of_edges": round(float(np.mean([s["edges"] / n for s, n in stops])), 3),
                "mean_edges": round(float(np.mean([s["edges"] for s, _ in stops])), 3),
                "accuracy": round(float(np.nanmean([s["accuracy"] for s, _ in stops])), 4)}

    return {"target_confidence": [point(0.0, c) for c in TRADEOFF_CONFIDENCES],
            "min_bits_per_hour": [point(b, rule["target_confidence"]) for b in TRADEOFF_BITS_PER_HOUR]}


def stop_walks(samples: Sequence[Sample], beliefs: Beliefs, calibration: EdgeCalibration, fusion: ModelFusion
               ) -> list[tuple[list[dict[str, float]], int]]:
    """(the agent's never-stopping path, number of edges) of every sample whose labels can be scored."""
    walks = []
    for sample in samples:
        path = stop_path(sample, beliefs, calibration, fusion.covered(sample.metals))
        if path and not math.isnan(path[-1]["accuracy"]):
            walks.append((path, len(sample.metals)))
    return walks


def stop_limits(walks: Sequence[tuple[Sequence[Mapping[str, float]], int]]) -> dict[str, Any]:
    """How far any stopping rule could go with this model, in the agent's order.

    - ``need_more_than_one_edge``: samples whose accuracy after the first edge is below that with every edge;
    - ``best_stop_fraction``: the share of each sample's edges that a stop knowing the labels would spend
      while its mean accuracy stays within ``ACCURACY_TOLERANCE`` of the all-edge accuracy (the first edge
      always measured; greedy): each sample starts at its first step as accurate as every edge, then steps
      back, cheapest accuracy per edge saved first, while the tolerance allows. A target below it is out of
      reach of any rule on this model;
    - ``auc``: how well the signals the rule reads after the first edge (least calibrated confidence, best open
      edge's bits per hour) tell the samples that need more edges from those that do not (0.5: not at all,
      1: perfectly)."""
    if not walks:
        return {}
    n = len(walks)
    full = [path[-1]["accuracy"] for path, _ in walks]
    chosen = [next(i for i, step in enumerate(path) if step["accuracy"] >= f - 1e-9)
              for (path, _), f in zip(walks, full)]
    # accuracy that may still be given up: the stops' total above (all-edge mean - tolerance) x samples
    budget = (sum(path[i]["accuracy"] for (path, _), i in zip(walks, chosen))
              - n * (np.mean(full) - ACCURACY_TOLERANCE))
    moves = []
    for w, ((path, _), f) in enumerate(zip(walks, full)):
        for i in range(chosen[w]):
            moves.append(((f - path[i]["accuracy"]) / (chosen[w] - i), w, i))
    spent = 0.0
    for _, w, i in sorted(moves):
        if i >= chosen[w]:
            continue
        cost = walks[w][0][chosen[w]]["accuracy"] - walks[w][0][i]["accuracy"]
        if spent + cost <= budget + 1e-12:
            spent += cost
            chosen[w] = i
    need = [path[0]["accuracy"] < f - 1e-9 for (path, _), f in zip(walks, full)]
    first = [path[0] for path, _ in walks]
    return {"n_samples": n, "need_more_than_one_edge": int(sum(need)),
            "best_stop_fraction": round(float(np.mean([walks[w][0][i]["edges"] / walks[w][1]
                                                        for w, i in enumerate(chosen)])), 3),
            "best_stop_accuracy": round(float(np.mean([walks[w][0][i]["accuracy"] for w, i in enumerate(chosen)])), 4),
            "all_edge_accuracy": round(float(np.mean(full)), 4),
            "auc": {"confidence": _auc([-s["confidence"] for s in first], need),
                    "bits_per_hour": _auc([s["best_score"] for s in first], need)}}


def _auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Probability that a positive scores above a negative (ties count half); None without both kinds."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return round(wins / (len(pos) * len(neg)), 3)


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
    per_sample, unlabelled = [], []
    for sample in _progress(samples, progress, "samples"):
        n = len(sample.metals)
        covered = fusion.covered(sample.metals)
        accuracy = _AccuracyOf(sample, beliefs, calibration)

        full = accuracy(sample.metals)
        if math.isnan(full):  # every label withheld by the audit (misread structure): nothing to score
            unlabelled.append(sample.material_id)
            continue
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
            if strategy == "random":  # the agent's edge count, in random order: what its ordering adds
                record["random_at_agent_stop_accuracy"] = float(np.mean([accuracy(o[:stop_at])
                                                                         for o in strategy_orders]))
        record.update(_hindsight(sample, accuracy, full))
        per_sample.append(record)
    labelled = [s for s in samples if s.material_id not in set(unlabelled)]
    walks = stop_walks(labelled, beliefs, calibration, fusion)  # for the trade-off and the limits alike
    return {**_summarise(per_sample, curves, latencies, max_k), "skipped_without_labels": unlabelled,
            "measured_and_unmeasured": measured_and_unmeasured(labelled, beliefs, calibration),
            "stopping_tradeoff": stopping_tradeoff(labelled, beliefs, calibration, fusion,
                                                   options.stopping(calibration), walks),
            "stop_limits": stop_limits(walks)}


def _hindsight(sample: Sample, accuracy: _AccuracyOf, full: float) -> dict[str, float]:
    """What a strategy that knew the labels would do with this model: the best single edge's accuracy, and the
    fewest edges of any order that reach the all-edge accuracy. No agent can reach these (it sees no labels);
    they bound what ordering and stopping could gain, apart from what the model knows."""
    orders = itertools.permutations(sample.metals)
    needed = min(next(k for k in range(len(sample.metals) + 1) if accuracy(list(o[:k])) >= full - 1e-9)
                 for o in itertools.islice(orders, 720))
    return {"hindsight_single_edge_accuracy": max(accuracy([m]) for m in sample.metals),
            "hindsight_edges": needed}


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
                  "random_order_accuracy_at_same_edges": round(float(np.nanmean(
                      [r["random_at_agent_stop_accuracy"] for r in per_sample])), 4),
                  "within_1pct_of_all_edges": bool(at_stop >= full - 0.01),
                  # paired over samples: how much the stop costs, and the share of edges, on other samples
                  "accuracy_at_stop_minus_all_edges_ci95": [round(v, 4) for v in bootstrap_interval(
                      [r["agent_stop_accuracy"] - r["all_edge_accuracy"] for r in per_sample])],
                  "fraction_of_edges_at_stop_ci95": [round(v, 3) for v in bootstrap_interval(stop / n_edges)],
                  "beamtime_s_at_stop": round(float(np.mean([r["agent_beamtime_s"] for r in per_sample])), 1),
                  "beamtime_s_all_edges": round(float(np.mean([r["all_edges_beamtime_s"] for r in per_sample])), 1)},
        "edges_to_reach_all_edge_accuracy": {s: round(v, 3) for s, v in need.items()},
        "edges_to_reach_note": "per sample, the fewest edges of that order whose accuracy equals the sample's "
                               "all-edge accuracy (an oracle stop: the agent's own stop is under 'agent')",
        "hindsight": {
            "single_edge_accuracy": round(float(np.mean([r["hindsight_single_edge_accuracy"] for r in per_sample])), 4),
            "edges": round(float(np.mean([r["hindsight_edges"] for r in per_sample])), 3),
            "fraction_of_edges": round(float(np.mean([r["hindsight_edges"] / r["n_edges"] for r in per_sample])), 3),
            "note": "with the labels known (no agent can): the best single edge of each sample, and the fewest edges "
                    "of any order reaching its all-edge accuracy; the gap to the agent is what knowing which edge "
                    "(and when to stop) would be worth with this model"},
        "agent_fewer_edges_than_random_pct": (round(100 * (1 - need["agent"] / need["random"]), 1)
                                              if need["random"] > 0 else None),
        "suggestion_latency_ms": {"p50": round(float(np.percentile(ms, 50)), 2),
                                  "p95": round(float(np.percentile(ms, 95)), 2), "n": int(ms.size)} if ms.size else {},
        "samples": per_sample, "max_edges": max_k,
    }


def live_latency(material_ids: Sequence[str], *, progress: bool = True, tiled_uri: str | None = None,
                 api_key: str | None = None) -> dict[str, Any]:
    """The suggestion's latency on the live path: a real RunEngine, the plugin (default spool) with the agent
    as an after-stop consumer, a Tiled server (embedded in this process, or the one at ``tiled_uri``, as a
    beamline runs it), the simulated beamline replaying each material; per decision after an edge, the time
    from the XANES run's stop to the decision (run documents' own times); the same after each PXRD run, apart."""
    import tempfile

    from bluesky import RunEngine

    from sfn_stream.live.catalog import TiledService
    from sfn_stream.live.consumers import NextEdgeAgent
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer
    from sfn_stream.simulated_beamline.agent_session import measure_with_agent

    with tempfile.TemporaryDirectory(prefix="sfn-bench-agent-") as folder:
        if tiled_uri:
            from tiled.client import from_uri

            service, client = None, from_uri(tiled_uri, api_key=api_key)
        else:
            service = TiledService(folder)
            client = service.client()
        agent = NextEdgeAgent()
        plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent], spool=Path(folder) / "spool")
        ready, agent_ms, after_pxrd = [], [], []
        try:
            plugin.wait_ready(timeout=600)  # as at a beamline, where the plugin starts long before the first run
            RE = RunEngine({}, call_returns_result=False)
            RE.subscribe(plugin)
            for material in _progress(list(material_ids), progress, "live latency"):
                result = measure_with_agent(RE, plugin, agent, material, name=f"bench-{material}")
                for step in result.steps:
                    if step.stop_to_suggestion_ms is None:
                        continue
                    if step.trigger == "pxrd":
                        after_pxrd.append(step.stop_to_suggestion_ms)
                    else:
                        ready.append(step.stop_to_suggestion_ms)
                        agent_ms.append(step.decision_ms)
        finally:
            plugin.close()
            if service is not None:
                service.close()
    if not ready:
        return {}
    return {"stop_to_suggestion_ms": {"p50": round(float(np.percentile(ready, 50)), 1),
                                      "p95": round(float(np.percentile(ready, 95)), 1),
                                      "max": round(float(np.max(ready)), 1), "n": len(ready)},
            "agent_decision_ms_p50": round(float(np.percentile(agent_ms, 50)), 1),
            "after_pxrd_ms": {"p50": round(float(np.percentile(after_pxrd, 50)), 1),
                              "max": round(float(np.max(after_pxrd)), 1), "n": len(after_pxrd)} if after_pxrd else {},
            "tiled": TiledService.masked(tiled_uri) if tiled_uri else "embedded in this process",
            "n_materials": len(material_ids), "load_average": [round(x, 2) for x in os.getloadavg()]}


def plot(result: Mapping[str, Any], path: Path) -> Path:
    """Left: accuracy after k edges per strategy. Right: what stopping earlier costs (the agent's stop over its
    target confidence against random order at the same share of edges), with the issue's target region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tradeoff = result.get("stopping_tradeoff") or []
    fig, axes = plt.subplots(1, 2 if tradeoff else 1, figsize=(11 if tradeoff else 5.5, 4), squeeze=False)
    ax = axes[0, 0]
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
    if tradeoff:
        _plot_tradeoff(axes[0, 1], result, tradeoff)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_tradeoff(ax, result: Mapping[str, Any], tradeoff: Mapping[str, list]) -> None:
    full = result["all_edge_accuracy"]
    n = np.asarray([s["n_edges"] for s in result["samples"]], float)
    random = result["accuracy_after_k_edges"]["random"]
    ks = [k for k in range(1, result["max_edges"] + 1) if random[k] is not None]
    ax.plot([float(np.mean(np.minimum(k, n) / n)) for k in ks], [random[k] for k in ks], "s--", color="C1",
            label="random order, k edges")
    ys = []
    for knob, style, color, label in (("target_confidence", "o-", "C0", "agent, stop at a target confidence"),
                                      ("min_bits_per_hour", "d-", "C2", "agent, stop below a bits/h threshold")):
        points = tradeoff.get(knob) or []
        ys += [t["accuracy"] for t in points]
        ax.plot([t["fraction_of_edges"] for t in points], [t["accuracy"] for t in points], style, color=color,
                label=label)
        for t in points[::3]:
            ax.annotate(f"{t[knob]:g}", (t["fraction_of_edges"], t["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(3, -9))
    agent = result["agent"]
    ax.plot([agent["fraction_of_edges_at_stop"]], [agent["accuracy_at_stop"]], "k*", ms=12, label="fitted rule")
    limits = result.get("stop_limits") or {}
    if limits:  # no rule reading this model can do better than a stop that knew the labels
        ax.plot([limits["best_stop_fraction"]], [limits["best_stop_accuracy"]], "X", color="C3", ms=10,
                label="a stop that knew the labels")
        ys.append(limits["best_stop_accuracy"])
    lo = min(min(ys), min(random[k] for k in ks)) - 0.01
    hi = max(max(ys), full) + 0.01
    ax.fill_between([0.0, 0.6], full - 0.01, hi, color="0.85", zorder=0,
                    label="target: <= 60 % of edges, within 1 %")
    ax.axhline(full, color="0.4", lw=0.8, ls=":")
    ax.set_xlim(0.45, 1.02)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("share of the sample's edges measured")
    ax.set_ylabel("accuracy at the stop")
    ax.set_title("what stopping earlier costs")
    ax.legend(loc="lower right", fontsize=8)


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
    parser.add_argument("--min-bits-per-hour", type=float, default=None,
                        help="stop when no edge gives this many bits per hour (default: the calibration's)")
    parser.add_argument("--target-confidence", type=float, default=None,
                        help="stop when every oxidation state and CN is this confident (default: the calibration's)")
    parser.add_argument("--plot", default="sfn-bench/agent_accuracy.png", help="where to save the PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", default=None, help="corpus folder (default: data/corpus)")
    parser.add_argument("--live", type=int, default=3, metavar="N",
                        help="also time the suggestion after a run's stop on the live path for N samples (0: skip)")
    parser.add_argument("--tiled", metavar="URI", default=None,
                        help="for --live: write to the Tiled server at URI (e.g. one started by `sfn-stream serve`, "
                             "a process of its own as at a beamline) instead of one embedded in this process")
    parser.add_argument("--api-key", default=os.environ.get("SFN_TILED_API_KEY"),
                        help="the --tiled server's API key (default: $SFN_TILED_API_KEY)")
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
    result.update(split=args.split, options=options.describe(calibration), calibration=calibration.provenance,
                  stopping_fit=calibration.stopping,
                  bundle_id=getattr(getattr(fusion.predictor(samples[0].metals), "bundle", None), "id", None))
    result["plot"] = str(plot(result, Path(args.plot)))
    if args.live > 0:
        result["live_latency"] = live_latency([s.material_id for s in samples[:args.live]], progress=not args.json,
                                              tiled_uri=args.tiled, api_key=args.api_key)
    if args.split == calibration.stopping.get("fitted_on"):
        print(f"sfn-stream: the stopping rule was fitted on the {args.split} split: these figures are not a test score",
              file=sys.stderr)
    current_hash = snapshot_hash(Path(args.corpus or paths.CORPUS_DIR))
    if calibration.provenance.get("corpus_content_hash") not in (None, current_hash):
        print("sfn-stream: the calibration was fitted on another corpus snapshot "
              f"({str(calibration.provenance['corpus_content_hash'])[:8]}, now {str(current_hash)[:8]}): "
              "run sfn-stream bench agent --calibrate", file=sys.stderr)
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
    if r.get("skipped_without_labels"):
        print(f"  left out, every label withheld by the label audit: {', '.join(r['skipped_without_labels'])}")
    print("accuracy (oxidation state + CN labels) after k edges:")
    for strategy, values in r["accuracy_after_k_edges"].items():
        print(f"  {strategy:7s} " + "  ".join(f"k={k}: {v:.3f}" for k, v in enumerate(values) if v is not None))
    rule = r["options"]
    print(f"stopping rule ({rule['stopping_from']}): target confidence {rule['target_confidence']:g}, "
          f"min {rule['min_bits_per_hour']:g} bits/h")
    fit = r.get("stopping_fit") or {}
    if fit:
        print(f"  fitted on {fit['n_samples']} {fit['fitted_on']}-split samples: {fit['mean_edges_at_stop']:.2f} of "
              f"{fit['mean_edges']:.2f} edges, accuracy {fit['accuracy_at_stop']:.3f} vs "
              f"{fit['all_edge_accuracy']:.3f} "
              "with every edge (validation figures, not a test score)")
    print(f"all edges: {r['all_edge_accuracy']:.3f}; agent stops after {agent['mean_edges_at_stop']:.2f} edges "
          f"({100 * agent['fraction_of_edges_at_stop']:.0f} % of them) at {agent['accuracy_at_stop']:.3f}, "
          f"{agent['beamtime_s_at_stop'] / 60:.1f} min vs {agent['beamtime_s_all_edges'] / 60:.1f} min for all")
    cost, share = agent.get("accuracy_at_stop_minus_all_edges_ci95"), agent.get("fraction_of_edges_at_stop_ci95")
    if cost and share:
        print(f"  95 % intervals over the samples: accuracy at the stop minus with every edge {cost[0]:+.3f} to "
              f"{cost[1]:+.3f}; share of the edges {100 * share[0]:.0f}-{100 * share[1]:.0f} %")
    print(f"  within 1 % of all edges: {'yes' if agent['within_1pct_of_all_edges'] else 'no'}; random order "
          f"stopped after as many edges: {agent['random_order_accuracy_at_same_edges']:.3f}")
    tradeoff = r.get("stopping_tradeoff") or {}
    for knob, points in tradeoff.items():
        other = ("no bits/h rule" if knob == "target_confidence"
                 else f"target confidence {rule['target_confidence']:g}")
        print(f"what stopping earlier costs, by {knob.replace('_', ' ')} ({other}):")
        print("  " + "  ".join(f"{t[knob]:g}: {100 * t['fraction_of_edges']:.0f} % / {t['accuracy']:.3f}"
                              for t in points))
    split = r.get("measured_and_unmeasured") or []
    if split:
        print("what an edge tells: accuracy of the measured / the other metals, every k-subset of the edges:")
        print("  " + "  ".join(f"k={row['edges']}: " + " / ".join("-" if row[g] is None else f"{row[g]:.3f}"
                                                               for g in ("measured", "unmeasured"))
                              for row in split))
    limits = r.get("stop_limits") or {}
    if limits:
        auc = limits["auc"]
        print(f"what any stopping rule could do in the agent's order: {limits['need_more_than_one_edge']} of "
              f"{limits['n_samples']} samples lose accuracy if stopped after their first edge; a stop that knew the "
              f"labels: {100 * limits['best_stop_fraction']:.0f} % of the edges at {limits['best_stop_accuracy']:.3f} "
              f"(all edges {limits['all_edge_accuracy']:.3f}); the rule's signals after the first edge tell those "
              f"samples apart with AUC {_fmt_auc(auc['confidence'])} (confidence), "
              f"{_fmt_auc(auc['bits_per_hour'])} (bits/h)")
    need = r["edges_to_reach_all_edge_accuracy"]
    print("edges to reach the all-edge accuracy (oracle stop): " + ", ".join(f"{s} {v:.2f}" for s, v in need.items()))
    hindsight = r.get("hindsight")
    if hindsight:
        print(f"in hindsight (labels known, no agent can): the best single edge {hindsight['single_edge_accuracy']:.3f} "
              f"(agent's first {r['accuracy_after_k_edges']['agent'][1]:.3f}, random "
              f"{r['accuracy_after_k_edges']['random'][1]:.3f}); the best order and stop "
              f"{hindsight['edges']:.2f} edges ({100 * hindsight['fraction_of_edges']:.0f} %)")
    print("per sample (agent order, edges at its stop, accuracy there / with every edge):")
    for sample in r["samples"]:
        print(f"  {sample['material_id']} {sample['formula']:14s} {'>'.join(sample['agent_order']):8s} "
              f"stop {sample['agent_stop_edges']}  {sample['agent_stop_accuracy']:.2f} / {sample['all_edge_accuracy']:.2f}")
    lat = r["suggestion_latency_ms"]
    if lat:
        print(f"suggestion latency, offline (fusion + scoring): p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms "
              f"({lat['n']} decisions)")
    live = r.get("live_latency") or {}
    if live:
        ready = live["stop_to_suggestion_ms"]
        print(f"suggestion latency, live (XANES run's stop -> decision; RunEngine, plugin, Tiled): "
              f"p50 {ready['p50']:.0f} ms, p95 {ready['p95']:.0f} ms, max {ready['max']:.0f} ms ({ready['n']} decisions "
              f"on {live['n_materials']} samples; the agent's own p50 {live['agent_decision_ms_p50']:.0f} ms; "
              f"load average {live['load_average'][0]:.1f} on {os.cpu_count()} CPUs; Tiled {live['tiled']})")
        pxrd = live.get("after_pxrd_ms") or {}
        if pxrd:
            print(f"  after a PXRD run (the suggestion waits for the PXRD analysis): p50 {pxrd['p50']:.0f} ms, "
                  f"max {pxrd['max']:.0f} ms ({pxrd['n']} decisions)")
    print(f"plot: {r['plot']}")


def _fmt_auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())

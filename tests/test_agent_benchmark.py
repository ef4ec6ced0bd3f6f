"""``sfn-stream bench agent``'s stopping machinery on real corpus samples and the shipped bundle: where a rule
stops, and the trade-off table it prints (figures themselves are the command's, not asserted here)."""

import math

import pytest

from sfn_stream.live.consumers.next_edge import EdgeCalibration, ModelFusion
from sfn_stream.offline.evaluation.agent_benchmark import (
    TRADEOFF_BITS_PER_HOUR,
    AgentBenchmarkError,
    Beliefs,
    correct_labels,
    load_samples,
    measured_and_unmeasured,
    stop_at,
    stop_limits,
    stopping_tradeoff,
)


def test_a_rule_stops_at_the_first_step_confident_enough_or_without_an_edge_worth_its_cost():
    path = [{"edges": 1, "confidence": 0.6, "best_score": 9.0, "accuracy": 0.5},
            {"edges": 2, "confidence": 0.8, "best_score": 3.0, "accuracy": 0.75},
            {"edges": 3, "confidence": 0.9, "best_score": -math.inf, "accuracy": 1.0}]
    assert stop_at(path, 0.0, 0.7)["edges"] == 2  # confident enough after two edges
    assert stop_at(path, 10.0, 1.01)["edges"] == 1  # the open edges are worth less than 10 bits/h
    assert stop_at(path, 5.0, 1.01)["edges"] == 2
    assert stop_at(path, 0.0, 1.01)["edges"] == 3  # never early: the last step


def _step(edges, confidence, best_score, accuracy):
    return {"edges": edges, "confidence": confidence, "best_score": best_score, "accuracy": accuracy}


def test_the_best_possible_stop_spends_only_the_accuracy_the_tolerance_allows():
    settled = ([_step(1, 0.9, 1.0, 1.0), _step(2, 0.95, -math.inf, 1.0)], 2)  # the first edge says it all
    open_ = ([_step(1, 0.5, 9.0, 0.5), _step(2, 0.9, -math.inf, 1.0)], 2)  # the second edge corrects half
    limits = stop_limits([settled, open_])
    assert limits["need_more_than_one_edge"] == 1
    assert limits["best_stop_fraction"] == pytest.approx((0.5 + 1.0) / 2)  # stopping open_ early costs 0.25 > 0.01
    assert limits["best_stop_accuracy"] == pytest.approx(1.0)
    assert limits["auc"] == {"confidence": 1.0, "bits_per_hour": 1.0}  # both signals single out open_
    nearly = ([_step(1, 0.8, 2.0, 0.995), _step(2, 0.9, -math.inf, 1.0)], 2)  # 0.005 short: within 1 %
    assert stop_limits([nearly])["best_stop_fraction"] == pytest.approx(0.5)
    assert stop_limits([nearly])["auc"]["confidence"] is None  # one kind of sample only: nothing to tell apart
    assert stop_limits([]) == {}


@pytest.fixture(scope="module")
def test_samples():
    try:
        samples = load_samples("test")
    except AgentBenchmarkError as err:
        pytest.skip(f"no corpus: {err}")
    if len(samples) < 4:
        pytest.skip("too few multi-metal test samples in this corpus")
    return samples[:8]


def test_a_higher_bits_per_hour_threshold_never_measures_more_edges(test_samples):
    fusion = ModelFusion()
    calibration = EdgeCalibration.shipped()
    table = stopping_tradeoff(test_samples, Beliefs(fusion), calibration, fusion, {"target_confidence": 1.01})
    by_bits = table["min_bits_per_hour"]
    assert [p["min_bits_per_hour"] for p in by_bits] == list(TRADEOFF_BITS_PER_HOUR)
    shares = [p["fraction_of_edges"] for p in by_bits]
    assert shares == sorted(shares, reverse=True)
    smallest = min(1 / len(s.metals) for s in test_samples)
    assert all(smallest - 1e-9 <= p["fraction_of_edges"] <= 1.0 and 0.0 <= p["accuracy"] <= 1.0
               for points in table.values() for p in points)
    by_confidence = [p["fraction_of_edges"] for p in table["target_confidence"]]
    assert by_confidence == sorted(by_confidence)  # a higher target waits for more edges


def test_the_measured_and_unmeasured_split_adds_up_to_the_sample_accuracy(test_samples):
    beliefs, calibration = Beliefs(ModelFusion()), EdgeCalibration.shipped()
    rows = measured_and_unmeasured(test_samples, beliefs, calibration)
    assert rows[0]["measured"] is None and rows[0]["n_measured"] == 0  # no edge: every metal unmeasured
    two = [s for s in test_samples if len(s.metals) == 2]
    full = [correct_labels(s, beliefs.of(s, s.metals, calibration)) for s in two]
    last = measured_and_unmeasured(two, beliefs, calibration)[2]
    assert last["n_unmeasured"] == 0 and last["n_measured"] == sum(n for _, n in full)
    assert last["measured"] == pytest.approx(sum(r for r, _ in full) / sum(n for _, n in full), abs=1e-4)
    for row in rows[1:-1]:  # each label of each sample is counted once per k-subset, in one of the two groups
        assert row["n_measured"] > 0 and row["n_unmeasured"] > 0


def test_hindsight_bounds_every_order_of_the_sample(test_samples):
    """The hindsight figures are what knowing the labels would buy: no order's first edge is more accurate,
    and no order reaches the all-edge accuracy with fewer edges."""
    import itertools

    from sfn_stream.offline.evaluation.agent_benchmark import _AccuracyOf, _hindsight

    beliefs, calibration = Beliefs(ModelFusion()), EdgeCalibration.shipped()
    for sample in test_samples:
        accuracy = _AccuracyOf(sample, beliefs, calibration)
        full = accuracy(sample.metals)
        if math.isnan(full):
            continue
        bound = _hindsight(sample, accuracy, full)
        assert 0 <= bound["hindsight_edges"] <= len(sample.metals)
        for order in itertools.permutations(sample.metals):
            assert accuracy([order[0]]) <= bound["hindsight_single_edge_accuracy"]
            if bound["hindsight_edges"]:
                shorter = list(order[:bound["hindsight_edges"] - 1])
                assert accuracy(shorter) < full - 1e-9  # none reaches it with one edge fewer

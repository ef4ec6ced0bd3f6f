"""Calibration metrics: the temperature fit honours per-example weights (used so that every metal's
validation edges count alike when one calculation setting dominates the validation set)."""

from __future__ import annotations

import numpy as np
import pytest

from sfn_stream.offline.metrics import (
    calibrated_ece_floor,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_table,
)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_weights_move_the_fitted_temperature_towards_the_weighted_group():
    rng = np.random.default_rng(0)
    # group A: confident and right (wants T < 1); group B: confident and right only half the time (wants T > 1)
    logits_a = np.tile([4.0, 0.0], (200, 1))
    labels_a = np.zeros(200, dtype=int)
    logits_b = np.tile([4.0, 0.0], (20, 1))
    labels_b = rng.permutation(np.repeat([0, 1], 10))
    logits, labels = np.vstack([logits_a, logits_b]), np.concatenate([labels_a, labels_b])

    def probabilities_at(t):
        return _softmax(logits / t)

    plain = fit_temperature(labels, probabilities_at=probabilities_at)
    weights = np.concatenate([np.full(200, 1 / 200), np.full(20, 1 / 20)])
    balanced = fit_temperature(labels, probabilities_at=probabilities_at, weights=weights)
    assert balanced > plain  # group B's overconfidence now counts as much as group A's 200 examples
    assert negative_log_likelihood(probabilities_at(balanced), labels, weights) <= \
        negative_log_likelihood(probabilities_at(plain), labels, weights) + 1e-9


def test_the_calibrated_ece_floor_is_large_on_twenty_examples_and_shrinks_with_more():
    rng = np.random.default_rng(1)
    probs = _softmax(rng.normal(0, 2, (2000, 4)))
    small, large = calibrated_ece_floor(probs[:20]), calibrated_ece_floor(probs)
    assert small > 0.1 > 0.03 > large > 0
    # labels drawn from the probabilities themselves land near the floor, labels always class 0 far above it
    labels = (rng.random((2000, 1)) > np.cumsum(probs, 1)).sum(1)
    assert abs(expected_calibration_error(probs, labels) - large) < 0.02
    assert expected_calibration_error(probs, np.zeros(2000, dtype=int)) > large + 0.2


def test_the_reliability_table_bins_what_the_ece_sums():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.55, 0.45]])
    labels = np.array([0, 1, 0, 0])
    rows = reliability_table(probs, labels)
    assert rows == [[2, 0.575, 1.0], [1, 0.9, 0.0], [1, 0.95, 1.0]]  # 0.55 and 0.6 share the bin (0.533, 0.6]
    ece = sum(n / 4 * abs(a - c) for n, c, a in rows)
    assert ece == pytest.approx(expected_calibration_error(probs, labels))


def test_the_interval_of_a_mean_accuracy_narrows_with_more_units_and_holds_the_estimate():
    from sfn_stream.offline.metrics import bootstrap_interval, mean_accuracy_interval

    small = mean_accuracy_interval([(16, 20), (12, 20), (18, 20)])
    large = mean_accuracy_interval([(160, 200), (120, 200), (180, 200)])
    estimate = (0.8 + 0.6 + 0.9) / 3
    assert small[0] < estimate < small[1] and large[0] < estimate < large[1]
    assert (large[1] - large[0]) < 0.5 * (small[1] - small[0])  # ten times the units: about a third as wide
    assert mean_accuracy_interval([(5, 5), (0, 0)]) == (1.0, 1.0)  # an empty group is left out
    lo, hi = bootstrap_interval([0.0, 1.0] * 50)
    assert lo < 0.5 < hi and hi - lo < 0.25


def test_an_interval_over_groups_redraws_whole_groups_and_so_is_wider_when_groups_agree_within():
    from sfn_stream.offline.metrics import bootstrap_interval, group_mean

    values = [1.0] * 30 + [0.0] * 10 + [1.0, 0.0] * 20  # two uniform groups (30 right, 10 wrong), 40 singletons
    groups = ["a"] * 30 + ["b"] * 10 + [f"s{i}" for i in range(40)]
    lo, hi = bootstrap_interval(values)
    glo, ghi = bootstrap_interval(values, groups=groups)
    assert glo < 0.625 < ghi and lo < 0.625 < hi
    assert ghi - glo > 1.5 * (hi - lo)  # 42 groups, two of them heavy: far less information than 80 samples
    singletons = bootstrap_interval(values, groups=list(range(len(values))), seed=3)
    assert abs((singletons[1] - singletons[0]) - (hi - lo)) < 0.03  # one sample per group: the plain bootstrap
    assert group_mean(values, groups) == (1.0 + 0.0 + 20 * 1.0) / 42  # the mean over samples is 0.625

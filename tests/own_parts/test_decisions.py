"""The threshold rule and the decision metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from realnet_core.metrics import decision_metrics, f1_max
from stages.calibrate import threshold_at


def test_the_threshold_lets_at_most_the_target_share_of_validation_scores_above_it():
    scores = np.arange(100, dtype=np.float64)
    assert threshold_at(scores, 0.01) == 98.0 and (scores > 98.0).mean() == 0.01
    assert threshold_at(scores, 0.05) == 94.0 and (scores > 94.0).mean() == 0.05
    assert threshold_at(np.array([0.2, 0.5, 0.3]), 0.01) == 0.5  # few images: none may lie above
    rng = np.random.default_rng(0)
    for fpr in (0.001, 0.02, 0.3):
        s = rng.normal(size=997)
        assert (s > threshold_at(s, fpr)).mean() <= fpr


def test_decision_metrics_count_score_above_threshold_as_defect():
    labels, scores = np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.5, 0.9, 0.5, 0.8])
    m = decision_metrics(labels, scores, 0.5)  # defects: 0.9 (false positive) and 0.8 (true positive)
    assert m == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "fpr": pytest.approx(1 / 3)}
    none = decision_metrics(labels, scores, 1.0)
    assert math.isnan(none["precision"]) and none["recall"] == 0 and none["fpr"] == 0
    normal_only = decision_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.25)
    assert math.isnan(normal_only["recall"]) and normal_only["fpr"] == pytest.approx(1 / 3)


def test_f1_max_threshold_reproduces_its_f1_under_the_stored_rule():
    labels, scores = np.array([0, 0, 1, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7])
    f1, threshold = f1_max(labels, scores)
    assert f1 == pytest.approx(decision_metrics(labels, scores, threshold)["f1"])
    assert f1 == pytest.approx(max(decision_metrics(labels, scores, t)["f1"] for t in [0.0, *scores]))

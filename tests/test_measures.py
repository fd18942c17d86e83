"""The multiplicity measures of SPEC §6 on hand-computed populations, identities and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from rashomon.analysis import (
    ambiguity,
    ambiguous_examples,
    disagreement,
    discrepancy,
    flip_rates,
    multiplicity,
    obscurity,
    pattern_count,
    pattern_rashomon_ratio,
    predicted_classes,
    score_std,
    self_consistency,
    viable_prediction_range,
)

# Three models, four examples; the baseline is row 0.
PREDICTIONS = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]])


def one_hot(predictions: np.ndarray, n_classes: int = 2) -> np.ndarray:
    return np.eye(n_classes)[predictions]


def test_ambiguity_counts_examples_where_any_model_leaves_the_baseline():
    assert ambiguous_examples(PREDICTIONS).tolist() == [True, False, True, False]
    assert ambiguity(PREDICTIONS) == 0.5


def test_discrepancy_and_obscurity_from_flip_rates():
    assert flip_rates(PREDICTIONS).tolist() == [0.0, 0.25, 0.5]
    assert discrepancy(PREDICTIONS) == 0.5
    assert obscurity(PREDICTIONS) == pytest.approx(0.375, abs=1e-15)


def test_a_baseline_other_than_row_zero():
    assert flip_rates(PREDICTIONS, baseline=2).tolist() == [0.5, 0.25, 0.0]
    assert obscurity(PREDICTIONS, baseline=2) == pytest.approx(0.375)
    assert ambiguity(PREDICTIONS, baseline=1) == 0.5


def test_disagreement_by_hand_and_the_binary_identity():
    per_example = disagreement(PREDICTIONS, 2)
    np.testing.assert_allclose(per_example, [2 / 3, 0, 2 / 3, 0], atol=1e-15)
    assert self_consistency(PREDICTIONS) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 2, (9, 50))
    m = len(predictions)
    c1 = predictions.sum(axis=0)
    np.testing.assert_allclose(
        disagreement(predictions, 2), 2 * (m - c1) * c1 / (m * (m - 1)), atol=1e-14
    )
    assert self_consistency(predictions) == pytest.approx(1 - disagreement(predictions).mean())


def test_multiclass_disagreement_by_hand():
    predictions = np.array([[0], [1], [2], [2]])  # counts 1, 1, 2 over m = 4
    np.testing.assert_allclose(disagreement(predictions, 3), [1 - 2 / 12])


def test_viable_prediction_range_and_score_std_by_hand():
    probabilities = np.array(
        [[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], [[0.45, 0.5, 0.05], [0.05, 0.35, 0.6]]]
    )
    np.testing.assert_allclose(viable_prediction_range(probabilities), [0.2, 0.15])
    # baseline 0 predicts class 0 then 2: scores (0.6, 0.45) and (0.6, 0.6)
    np.testing.assert_allclose(score_std(probabilities), [0.075, 0.0], atol=1e-15)
    # baseline 1 predicts class 1 then 2: scores (0.3, 0.5) and (0.6, 0.6)
    np.testing.assert_allclose(score_std(probabilities, baseline=1), [0.1, 0.0], atol=1e-15)


def test_pattern_counts_and_ratio():
    assert pattern_count(PREDICTIONS) == 3
    pool = np.vstack([PREDICTIONS, PREDICTIONS[:1], [[1, 1, 1, 1]]])
    assert pattern_count(pool) == 4
    assert pattern_rashomon_ratio(PREDICTIONS[:2], pool) == 0.5


def test_predicted_classes_takes_the_first_maximum_in_a_small_dtype():
    probabilities = np.array([[[0.5, 0.5], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]], np.float32)
    predictions = predicted_classes(probabilities)
    assert predictions.dtype == np.uint8
    assert predictions.tolist() == [[0, 1], [0, 1]]


def test_a_one_model_set_has_zero_multiplicity():
    probabilities = np.random.default_rng(1).dirichlet(np.ones(3), (1, 20))
    summary = multiplicity(probabilities)
    for name in ("ambiguity", "discrepancy", "obscurity", "disagreement", "vpr_mean",
                 "vpr_share_ge_0.1", "score_std_mean"):  # fmt: skip
        assert summary[name] == 0.0, name
    assert summary["self_consistency"] == 1.0
    assert summary["rashomon_capacity_mean"] == summary["rashomon_capacity_max"] == 1.0
    assert summary["rashomon_ratio"] == summary["pattern_rashomon_ratio"] == 1.0


def test_identical_models_have_zero_multiplicity():
    probabilities = np.repeat(np.random.default_rng(2).dirichlet(np.ones(2), (1, 30)), 5, axis=0)
    summary = multiplicity(probabilities)
    assert summary["disagreement"] == summary["vpr_mean"] == summary["ambiguity"] == 0.0
    assert summary["rashomon_capacity_max"] == pytest.approx(1.0, abs=1e-12)


def test_summary_matches_the_functions_on_random_sets():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(3) * 0.5, (7, 40))
    predictions = predicted_classes(probabilities)
    summary = multiplicity(probabilities)
    assert summary["ambiguity"] == ambiguity(predictions)
    assert summary["discrepancy"] == discrepancy(predictions)
    assert summary["obscurity"] == pytest.approx(obscurity(predictions))
    assert summary["disagreement"] == pytest.approx(disagreement(predictions, 3).mean())
    vpr = viable_prediction_range(probabilities)
    assert summary["vpr_share_ge_0.1"] == pytest.approx((vpr >= 0.1).mean())
    assert 1 <= summary["rashomon_capacity_mean"] <= summary["rashomon_capacity_max"] <= 3


def test_two_models_one_hot_on_different_classes_disagree_everywhere():
    probabilities = one_hot(np.array([[0, 0, 1], [1, 1, 0]]))
    summary = multiplicity(probabilities)
    assert summary["ambiguity"] == summary["discrepancy"] == summary["obscurity"] == 1.0
    assert summary["disagreement"] == 1.0 and summary["vpr_mean"] == 1.0
    assert summary["rashomon_capacity_mean"] == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ambiguity(np.zeros(3, int)), "(models, examples)"),
        (lambda: ambiguity(np.zeros((0, 3), int)), "non-empty"),
        (lambda: ambiguity(np.zeros((2, 3))), "integer"),
        (lambda: discrepancy(np.zeros((2, 3), int), baseline=2), "not a model row"),
        (lambda: viable_prediction_range(np.ones((2, 3, 1))), "two classes"),
    ],
)
def test_bad_arrays_are_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()

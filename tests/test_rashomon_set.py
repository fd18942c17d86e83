"""Choosing the Rashomon set: ε rules, ties, tolerance, exclusions and bad requests."""

from __future__ import annotations

import pandas as pd
import pytest

from rashomon.analysis import rashomon_set
from rashomon.jobs import UserError


def models(**columns) -> pd.DataFrame:
    return pd.DataFrame({"status": "ok", **columns})


POPULATION = models(
    model_id=["a", "b", "c", "d", "e", "f"],
    val_acc=[0.855, 0.835, 0.850, 0.845, 0.90, 0.80],
    val_loss=[0.30, 0.35, 0.31, 0.33, float("nan"), 0.5],
    status=["ok", "ok", "ok", "ok", "diverged", "failed"],
)


def test_absolute_epsilon_admits_models_within_epsilon_of_the_best_on_val_err():
    chosen = rashomon_set(POPULATION, epsilon=0.01)
    assert chosen.model_ids == ["a", "c", "d"]
    assert chosen.baseline_model_id == "a"
    assert chosen.excluded == {"diverged": 1, "failed": 1}
    assert chosen.pool_model_ids == ["a", "b", "c", "d"]
    assert chosen.ratio == 0.75


def test_floating_rounding_does_not_exclude_a_model_on_the_boundary():
    population = models(model_id=["a", "b"], val_acc=[0.855, 0.835], val_loss=[0.3, 0.4])
    assert rashomon_set(population, epsilon=0.02).model_ids == ["a", "b"]
    assert rashomon_set(population, epsilon=0.0199).model_ids == ["a"]


def test_relative_epsilon():
    chosen = rashomon_set(POPULATION, epsilon=0.1, relative=True)  # 0.145 · 1.1 = 0.1595
    assert chosen.model_ids == ["a", "c", "d"]
    assert rashomon_set(POPULATION, epsilon=0.2, relative=True).size == 4


def test_epsilon_zero_keeps_only_ties_and_the_baseline_breaks_them_by_val_loss_then_id():
    population = models(model_id=["z", "y", "x"], val_acc=[0.9, 0.9, 0.9], val_loss=[0.2, 0.1, 0.1])
    chosen = rashomon_set(population, epsilon=0.0)
    assert chosen.baseline_model_id == "x"
    assert chosen.model_ids == ["x", "y", "z"]


def test_any_loss_like_metric_and_an_explicit_baseline():
    chosen = rashomon_set(POPULATION, epsilon=0.02, metric="val_loss")
    assert chosen.model_ids == ["a", "c"]
    chosen = rashomon_set(POPULATION, epsilon=0.0, baseline="d")
    assert chosen.baseline_model_id == "d"
    assert chosen.model_ids == ["d", "a", "c"]  # everything at least as good as d


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": -0.01}, "must be a finite number >= 0"),
        ({"epsilon": float("nan")}, "must be a finite number >= 0"),
        ({"metric": "val_acc"}, "use val_err"),
        ({"metric": "nonsense"}, "choose from .*val_err"),
        ({"metric": "init_seed"}, "not a loss-like column"),
        ({"baseline": "e"}, "not the model_id of a model with status ok"),
    ],
)
def test_bad_requests_raise_a_user_error(kwargs, message):
    population = POPULATION.assign(init_seed=0)
    with pytest.raises(UserError, match=message):
        rashomon_set(population, **kwargs)


def test_an_empty_population_is_refused():
    with pytest.raises(UserError, match=r"no model with status ok .*1 failed"):
        rashomon_set(POPULATION[POPULATION["status"] == "failed"])

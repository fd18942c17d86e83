"""Source decomposition (SPEC §6) against an independent type-I ANOVA, on crossed, unbalanced and
nested designs, and its chance levels by formula and by simulation.

The oracle is statsmodels: each axis's sequential sum of squares is the drop in residual sum of
squares when its term joins the OLS fit (`anova_lm` over the nested fits). `anova_lm(fit, typ=1)`
agrees on full-rank designs, which the tests check, but it is not an oracle for nested ones: it
takes the sums of squares from an unpivoted QR, and a term whose columns add no rank gets an
arbitrary residual direction's share instead of 0.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from _synthetic import write_examples, write_pack
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

from rashomon.analysis import (
    analyze,
    design_factors,
    source_decomposition,
    source_decomposition_chance,
)
from rashomon.engine.cli import main


def anova_shares(probabilities: np.ndarray, factors: pd.DataFrame, typ1: bool = False) -> dict:
    """Per-example type-I shares (sums of squares over classes), averaged over the examples."""
    axes = list(factors.columns)
    frame = factors.astype(str).reset_index(drop=True)
    terms = [f"C({axis})" for axis in axes]
    _, n_examples, n_classes = probabilities.shape
    shares = np.zeros(len(axes))
    for x in range(n_examples):
        explained, total = np.zeros(len(axes)), 0.0
        for k in range(n_classes):
            data = frame.assign(y=probabilities[:, x, k])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rank-deficient designs are the point
                fits = [ols("y ~ " + " + ".join(["1", *terms[:i]]), data).fit()
                        for i in range(len(terms) + 1)]  # fmt: skip
                if typ1:
                    explained += anova_lm(fits[-1], typ=1)["sum_sq"].to_numpy()[:-1]
                else:
                    explained += np.nan_to_num(anova_lm(*fits)["ss_diff"].to_numpy()[1:])
            total += fits[0].ssr
        shares += explained / total
    shares /= n_examples
    return {axis: float(share) for axis, share in zip(axes, shares, strict=True)} | {
        "remainder": float(1 - shares.sum())
    }


def noisy_probabilities(factors: pd.DataFrame, n_examples: int, seed: int, classes: int = 3):
    """Softmax of random main effects of every axis plus independent noise: (models, x, classes)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(factors), n_examples, classes))
    for scale, axis in zip([1.0, 0.6, 0.8, 0.5], factors.columns, strict=False):
        codes = pd.factorize(factors[axis], sort=True)[0]
        effects = rng.normal(0, scale, (codes.max() + 1, n_examples, classes))
        logits += effects[codes]
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=-1, keepdims=True)


def crossed(**levels: int) -> pd.DataFrame:
    return pd.MultiIndex.from_product(
        [range(n) for n in levels.values()], names=list(levels)
    ).to_frame(index=False)


# four models, three levels each: after init (rank 2) lr adds a single direction
CONFOUNDED = pd.DataFrame({"init": [0, 1, 2, 0], "lr": [0, 1, 2, 1]})


def designs() -> dict[str, pd.DataFrame]:
    balanced = crossed(init=3, order=2, data=2, lr=2)
    unbalanced = balanced.drop(index=[0, 5, 6, 17, 18, 23]).reset_index(drop=True)
    # lr nested in init, last: init 0, 1 keep lr 0; init 2, 3 keep lr 1
    nested_last = crossed(init=4, order=3).assign(lr=lambda f: f["init"] // 2)
    # data nested in init (middle), lr crossed after it, and unequal cell counts
    nested_middle = crossed(init=4, order=2, lr=2).assign(data=lambda f: f["init"] % 2)
    nested_middle = nested_middle[["init", "order", "data", "lr"]].drop(index=[3, 12])
    return {
        "balanced": balanced,
        "unbalanced": unbalanced,
        "nested_last": nested_last,
        "nested_middle": nested_middle.reset_index(drop=True),
        "confounded": CONFOUNDED,
    }


@pytest.mark.parametrize("design", list(designs()))
def test_shares_equal_a_type_one_anova_by_statsmodels(design):
    factors = designs()[design]
    probabilities = noisy_probabilities(factors, n_examples=6, seed=len(factors))
    ours = source_decomposition(probabilities, factors)
    oracle = anova_shares(probabilities, factors)
    missing = set(ours) - set(oracle)  # seed axes outside the design are listed with 0
    assert missing <= {"init", "order", "data"} and all(ours[axis] == 0 for axis in missing)
    for axis, share in oracle.items():
        assert ours[axis] == pytest.approx(share, rel=1e-9, abs=1e-12), axis
    if design.startswith("nested"):
        assert ours["lr" if design == "nested_last" else "data"] == 0.0
    if design in ("balanced", "unbalanced"):  # full rank: the one-fit type-I table agrees
        assert anova_shares(probabilities, factors, typ1=True) == pytest.approx(oracle, rel=1e-9)


def test_a_nested_axis_in_the_middle_takes_nothing_from_the_next_one():
    factors = designs()["nested_middle"]
    probabilities = noisy_probabilities(factors, n_examples=20, seed=3)
    with_nested = source_decomposition(probabilities, factors)
    without = source_decomposition(probabilities, factors.drop(columns="data"))
    assert with_nested["data"] == 0.0
    for axis in ("init", "order", "lr", "remainder"):
        assert with_nested[axis] == pytest.approx(without[axis], rel=1e-12), axis


def test_a_setting_null_for_some_models_is_a_level_of_its_own():
    """A cnn setting is null for the models of the other families (hp_channels of an mlp): the
    null models are one level, not dropped from the axis."""
    factors = crossed(init=3, family=2, lr=2)
    channels = np.where(factors["family"] == 0, None, "[4, 4]")
    factors["channels"] = pd.Series(channels, dtype=object)  # the same split as family
    probabilities = noisy_probabilities(factors, n_examples=8, seed=5)
    shares = source_decomposition(probabilities, factors)
    assert shares["family+channels"] == pytest.approx(
        source_decomposition(probabilities, factors.drop(columns="channels"))["family"], rel=1e-12
    )


def test_chance_is_levels_minus_one_over_m_minus_one_when_balanced():
    factors = crossed(init=4, data=3, lr=2)
    assert source_decomposition_chance(factors) == pytest.approx(
        {"init": 3 / 23, "order": 0.0, "data": 2 / 23, "lr": 1 / 23, "remainder": 17 / 23}
    )


def test_chance_of_unbalanced_designs_is_the_rank_of_each_sequential_block():
    assert source_decomposition_chance(CONFOUNDED) == pytest.approx(
        {"order": 0.0, "data": 0.0, "init": 2 / 3, "lr": 1 / 3, "remainder": 0.0}
    )
    chance = source_decomposition_chance(designs()["nested_last"])  # 12 models
    assert chance == pytest.approx(
        {"init": 3 / 11, "order": 2 / 11, "data": 0.0, "lr": 0.0, "remainder": 6 / 11}
    )
    unbalanced = designs()["unbalanced"]  # 18 of the 24 cells: every main effect still full
    assert source_decomposition_chance(unbalanced) == pytest.approx(
        {"init": 2 / 17, "order": 1 / 17, "data": 1 / 17, "lr": 1 / 17, "remainder": 12 / 17}
    )
    alone = source_decomposition_chance(pd.DataFrame({"init": [3], "order": [1]}))
    assert set(alone.values()) == {0.0}


@pytest.mark.parametrize("design", ["unbalanced", "nested_middle", "confounded"])
def test_pure_noise_shares_average_to_the_chance_level(design):
    """Shares of independent Gaussian noise have mean rank / (m − 1) (not (levels − 1) / (m − 1):
    in the confounded design lr has three levels but one direction of its own)."""
    factors = designs()[design]
    n_examples = 20_000
    noise = np.random.default_rng(11).normal(0, 1, (len(factors), n_examples, 3))
    shares = source_decomposition(noise, factors)
    for axis, expected in source_decomposition_chance(factors).items():
        # a share lies in [0, 1], so its standard deviation is at most 1/2: 4 standard errors
        assert shares[axis] == pytest.approx(expected, abs=4 * 0.5 / n_examples**0.5), axis


def test_a_10000_model_population_with_a_nested_axis_in_its_set(tmp_path, capsys):
    """100 init × 10 order × 10 lr; the best models (ε = 0.01) keep one lr per init seed."""
    grid = crossed(init_seed=100, order_seed=10, lr=10)
    n_examples, rng = 12, np.random.default_rng(0)
    in_set = (grid["init_seed"] < 6) & (grid["lr"] == grid["init_seed"] % 2)
    frame = pd.DataFrame(
        {
            "model_id": [f"m{i:05d}" for i in range(len(grid))],
            "init_seed": grid["init_seed"],
            "order_seed": grid["order_seed"],
            "data_seed": 0,
            "hp_lr": 10.0 ** -(1 + grid["lr"] / 4),
            "val_acc": np.where(in_set, 0.9 - 0.005 * rng.random(len(grid)), 0.85),
            "val_loss": 0.3 + rng.random(len(grid)),
            "status": "ok",
        }
    )
    factors = design_factors(frame[in_set].reset_index(drop=True))
    probabilities = noisy_probabilities(design_factors(frame), n_examples, seed=1, classes=2)
    examples = pd.DataFrame({"example_id": np.arange(n_examples), "split": "test", "label": 0})
    write_examples(tmp_path, examples, ["no", "yes"])
    for start in range(0, len(frame), 2500):
        rows = slice(start, start + 2500)
        write_pack(tmp_path, f"p{start}", frame.iloc[rows], {"test": probabilities[rows]})
    result = analyze(tmp_path).to_dict()
    assert result["rashomon_set_size"] == 60
    stored = probabilities[in_set.to_numpy()].astype(np.float32).astype(np.float64)
    oracle = anova_shares(stored, factors[["init", "order", "lr"]])
    shares = result["source_decomposition"]
    assert shares["lr"] == 0.0
    for axis, share in oracle.items():
        assert shares[axis] == pytest.approx(share, rel=1e-9), axis
    assert result["source_decomposition_chance"] == pytest.approx(
        {"init": 5 / 59, "order": 9 / 59, "data": 0.0, "lr": 0.0, "remainder": 45 / 59}
    )
    capsys.readouterr()
    assert main(["analyze", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["source_decomposition_chance"] == result["source_decomposition_chance"]
    assert printed["source_decomposition_chance"].keys() == printed["source_decomposition"].keys()

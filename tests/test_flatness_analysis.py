"""Population-level flatness analysis (SPEC §8): Kendall τ, Jiang et al.'s granulated τ, the
Rashomon set's statistics against the rest, per-model disagreement, and `analyze --json`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from _synthetic import write_examples, write_pack
from scipy.stats import kendalltau

from rashomon.analysis import _flatness as flatness
from rashomon.analysis import analyze, open_results, predicted_classes, rashomon_set
from rashomon.analysis._flatness import (
    FLATNESS_COLUMNS,
    disagreement_with_set,
    flatness_statistics,
    flatness_summary,
    granulated_kendall_tau,
    kendall_tau,
)
from rashomon.analysis._measures import disagreement
from rashomon.analysis._report import _flatness_section
from rashomon.engine.store import MODELS_SCHEMA


def test_kendall_tau_by_hand():
    # one discordant pair of six: (5 − 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # τ-b with ties: 4 concordant, 1 pair tied in x, 1 in y → 4 / sqrt(5 · 5)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    # the same ties in both samples are a perfect ranking
    assert kendall_tau([1, 1, 2, 2], [5, 5, 7, 7]) == pytest.approx(1.0)


def test_kendall_tau_is_scipys_tau_b_on_finite_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 40).astype(float)
    expected = kendalltau(x, y, variant="b").statistic
    assert kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)
    x[[3, 7]], y[11] = np.nan, np.inf
    keep = np.isfinite(x) & np.isfinite(y)
    assert kendall_tau(x, y) == pytest.approx(kendalltau(x[keep], y[keep]).statistic, abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 17, 64, 1000])
def test_kendall_tau_is_scipys_bitwise_with_ties_and_at_any_length(n):
    rng = np.random.default_rng(n)
    for x, y in [
        (rng.normal(size=n), rng.normal(size=n)),
        (rng.integers(0, 3, n).astype(float), rng.normal(size=n)),
        (rng.integers(0, 4, n).astype(float), rng.integers(0, 5, n).astype(float)),
    ]:
        expected = kendalltau(x, y, variant="b").statistic
        assert kendall_tau(x, y) == expected or math.isnan(expected)


def test_analyze_with_flatness_does_not_import_scipy(folder):
    """scipy.stats takes seconds of CPU to import: more than analyze itself at 10,000 models."""
    import subprocess
    import sys

    script = (
        "import sys, rashomon; rashomon.analyze(sys.argv[1], epsilon=0.05).to_dict(); "
        "print('scipy.stats' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder[0])], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False"]


def test_kendall_tau_is_nan_when_undefined_and_checks_shapes():
    assert math.isnan(kendall_tau([1.0], [2.0]))
    assert math.isnan(kendall_tau([1.0, np.nan, 3.0], [1.0, 2.0, np.nan]))
    assert math.isnan(kendall_tau([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))
    assert math.isnan(kendall_tau([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="1-D of one length"):
        kendall_tau([1, 2, 3], [1, 2])


def grid_frame() -> pd.DataFrame:
    """3 lr × 2 weight decays × 2 init seeds. Within every lr group (same weight decay and seed)
    the statistic orders test accuracy perfectly, within every weight-decay group in reverse, and
    across seeds it runs against accuracy, so only groups that hold seeds fixed give ±1."""
    frame = pd.MultiIndex.from_product(
        [[0.01, 0.03, 0.1], [0.0, 1e-4], [0, 1]], names=["hp_lr", "hp_weight_decay", "init_seed"]
    ).to_frame(index=False)
    i = frame["hp_lr"].rank(method="dense").to_numpy() - 1
    j = (frame["hp_weight_decay"] > 0).to_numpy(int)
    k = frame["init_seed"].to_numpy()
    return frame.assign(
        model_id=[f"m{r:02d}" for r in range(len(frame))],
        status="ok",
        order_seed=0,
        data_seed=0,
        hp_optimizer="sgd",
        test_acc=0.5 + 0.1 * i + 0.01 * j + 0.001 * k,
        statistic=i - 10 * j - 100 * k,
    )


def test_granulated_tau_holds_the_other_axes_and_the_seeds_fixed():
    frame = grid_frame()
    got = granulated_kendall_tau(frame, "statistic", "test_acc")
    assert got == pytest.approx({"lr": 1.0, "weight_decay": -1.0, "mean": 0.0})
    assert granulated_kendall_tau(frame, "statistic", "test_acc", ["lr"]) == pytest.approx(
        {"lr": 1.0, "mean": 1.0}
    )
    # one of the four lr groups becomes 2 concordant and 1 discordant pair: τ = 1/3
    group = (frame["hp_weight_decay"] == 0) & (frame["init_seed"] == 0)
    rows = frame.index[group & frame["hp_lr"].isin([0.03, 0.1])]
    frame.loc[rows, "test_acc"] = frame.loc[rows[::-1], "test_acc"].to_numpy()
    got = granulated_kendall_tau(frame, "statistic", "test_acc")
    assert got["lr"] == pytest.approx((1 + 1 + 1 + 1 / 3) / 4)
    # the swap also turns the seed-0 weight-decay group at lr 0.03 concordant: 1 of 6 groups
    assert got["weight_decay"] == pytest.approx((1 - 5) / 6)
    assert got["mean"] == pytest.approx((5 / 6 - 2 / 3) / 2)


def test_granulated_tau_skips_groups_without_two_finite_models():
    frame = grid_frame()
    lone = frame.iloc[[0]].assign(
        model_id="lone", hp_weight_decay=0.5, statistic=99.0, test_acc=0.9
    )
    frame = pd.concat([frame, lone], ignore_index=True)
    frame.loc[frame["hp_weight_decay"] == 1e-4, "statistic"] = np.nan
    got = granulated_kendall_tau(frame, "statistic", "test_acc")
    # the lone model pairs with its (lr 0.01, seed 0) weight-decay group, the rest have one model
    assert got["weight_decay"] == pytest.approx(1.0)
    assert got["lr"] == pytest.approx(1.0)
    frame["statistic"] = 3.0
    got = granulated_kendall_tau(frame, "statistic", "test_acc")
    assert all(math.isnan(v) for v in got.values())
    with pytest.raises(ValueError, match="no column hp_momentum"):
        granulated_kendall_tau(frame, "statistic", "test_acc", ["momentum"])


@pytest.mark.parametrize(("group_size", "n_groups"), [(3, 40), (8, 10), (300, 3)])
def test_granulated_tau_is_the_mean_of_per_group_taus(group_size, n_groups):
    """Pairwise τ over small groups and scipy over large ones agree with a plain loop."""
    rng = np.random.default_rng(group_size)
    n = n_groups * group_size
    frame = pd.DataFrame(
        {
            "hp_lr": rng.permutation(np.arange(n) % group_size),
            "init_seed": 0,
            "statistic": rng.integers(0, 6, n).astype(float),
            "test_acc": rng.integers(0, 4, n) / 4,
        }
    )
    frame["hp_dropout"] = frame.groupby("hp_lr").cumcount()  # n_groups groups of group_size
    taus = [kendall_tau(g["statistic"], g["test_acc"]) for _, g in frame.groupby("hp_dropout")]
    assert len(taus) == n_groups
    expected = np.nanmean(taus)  # groups with a constant statistic or accuracy are left out
    got = granulated_kendall_tau(frame, "statistic", "test_acc", ["lr"])
    assert got["lr"] == pytest.approx(expected, abs=1e-12)


def test_disagreement_with_set_by_hand():
    predictions = np.array([[0, 1, 2, 0], [0, 1, 1, 1], [1, 1, 2, 0]], np.uint8)
    # pairs that differ: (0, 1) on 2 examples, (0, 2) on 1, (1, 2) on 3; over 2 others × 4
    expected = [(2 + 1) / 8, (2 + 3) / 8, (1 + 3) / 8]
    np.testing.assert_allclose(disagreement_with_set(predictions), expected)
    assert disagreement_with_set(predictions).mean() == pytest.approx(
        disagreement(predictions).mean()
    )
    np.testing.assert_array_equal(disagreement_with_set(predictions[:1]), [0.0])


@pytest.mark.parametrize(("m", "n", "classes"), [(2, 9, 2), (7, 50, 3), (25, 31, 5)])
def test_disagreement_with_set_matches_a_loop_over_pairs(monkeypatch, m, n, classes):
    monkeypatch.setattr(flatness, "_CHUNK_ELEMENTS", 3 * m)  # chunks of 3 examples
    predictions = np.random.default_rng(m).integers(0, classes, (m, n))
    expected = [
        np.mean([(predictions[h] != predictions[o]).mean() for o in range(m) if o != h])
        for h in range(m)
    ]
    np.testing.assert_allclose(disagreement_with_set(predictions), expected, rtol=1e-12)


def test_disagreement_with_set_checks_its_input():
    with pytest.raises(ValueError, match="integer classes"):
        disagreement_with_set(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-negative integer"):
        disagreement_with_set(np.array([[0, -1], [1, 1]]))
    with pytest.raises(ValueError, match="non-empty"):
        disagreement_with_set(np.zeros(3, int))


def population(seed: int = 0) -> pd.DataFrame:
    """A models table of 8 ok models and one failed one, every flatness column filled in."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "model_id": [f"m{i}" for i in range(9)],
            "status": ["ok"] * 8 + ["failed"],
            "init_seed": np.arange(9) % 4,
            "hp_lr": np.repeat([0.01, 0.1, 0.3], 3),
            "test_acc": np.linspace(0.9, 0.7, 9),
            "train_loss": np.full(9, 0.2),
            "val_loss": np.linspace(0.3, 0.6, 9),
        }
    )
    for name in FLATNESS_COLUMNS:
        frame[name] = rng.random(9)
    return frame


def test_inside_and_outside_the_set():
    frame = population()
    frame["hessian_trace"] = [1.0, 3.0, 10.0, 20.0, 30.0, np.nan, 50.0, 60.0, 1e6]
    summary = flatness_summary(frame, ["m1", "m0", "m5"])
    entry = summary["statistics"]["hessian_trace"]
    assert entry["n_models"] == 7 and entry["n_inside"] == 2  # m5 NaN, m8 failed
    assert entry["inside_mean"] == pytest.approx(2.0) and entry["inside_median"] == 2.0
    assert entry["outside_mean"] == pytest.approx(34.0) and entry["outside_median"] == 30.0
    # test accuracy falls, the gap grows and the trace grows along the model ids
    assert entry["tau_test_acc"] == pytest.approx(-1.0)
    assert entry["tau_generalization_gap"] == pytest.approx(1.0)
    assert entry["tau_disagreement"] is None
    assert summary["n_models"] == 8 and summary["rashomon_set_size"] == 3
    assert summary["axes"] == ["lr"]
    assert list(summary["statistics"]) == list(FLATNESS_COLUMNS)


def test_disagreement_follows_the_order_of_the_set():
    frame = population()
    set_ids = ["m3", "m0", "m6", "m1"]
    frame.loc[[3, 0, 6, 1], "sam_sharpness"] = [0.4, 0.1, 0.3, 0.2]
    entry = flatness_summary(frame, set_ids, np.array([0.5, 0.0, 0.25, 0.125]))
    assert entry["statistics"]["sam_sharpness"]["tau_disagreement"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one value per model"):
        flatness_summary(frame, set_ids, np.zeros(3))
    with pytest.raises(ValueError, match="not ok"):
        flatness_summary(frame, ["m0", "m8"])


def test_no_statistics_give_an_empty_summary():
    frame = population()
    without = frame.drop(columns=list(FLATNESS_COLUMNS))
    assert flatness_summary(without, ["m0"]) == {} and flatness_statistics(without) == []
    nulls = frame.assign(**{name: np.nan for name in FLATNESS_COLUMNS})
    assert flatness_summary(nulls, ["m0"]) == {}
    failed_only = nulls.copy()
    failed_only.loc[8, "grad_norm"] = 1.0
    assert flatness_summary(failed_only, ["m0"]) == {}
    with pytest.raises(ValueError, match="no column test_acc"):
        flatness_summary(frame.drop(columns="test_acc"), ["m0"])


def test_summary_is_valid_json_with_nan_values():
    frame = population()
    frame["fisher_trace"] = np.nan
    frame["weight_norm"] = 2.0  # constant: every τ undefined
    frame.loc[:6, "grad_norm"] = np.nan  # only m7 left
    summary = flatness_summary(frame, ["m0"], np.zeros(1))
    text = json.dumps(summary, allow_nan=False)
    assert "fisher_trace" not in summary["statistics"]
    norm = json.loads(text)["statistics"]["weight_norm"]
    assert norm["tau_test_acc"] is None and norm["granulated_tau_test_acc"]["mean"] is None
    assert norm["inside_mean"] == 2.0
    grad = summary["statistics"]["grad_norm"]
    assert grad["n_models"] == 1 and grad["inside_mean"] is None and grad["outside_median"] > 0


N_EXAMPLES = 40


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 models (2 lr × 2 weight decays × 3 init seeds, one diverged) with flatness columns."""
    rng = np.random.default_rng(3)
    frame = pd.MultiIndex.from_product(
        [[0.01, 0.1], [0.0, 1e-4], range(3)], names=["hp_lr", "hp_weight_decay", "init_seed"]
    ).to_frame(index=False)
    n = len(frame)
    logit = rng.normal(0, 1.5, N_EXAMPLES) + rng.normal(0, 1.0, (n, N_EXAMPLES))
    p1 = 1 / (1 + np.exp(-logit))
    probabilities = np.stack([1 - p1, p1], axis=-1).astype(np.float32)
    frame = frame.assign(
        model_id=[f"m{i:02d}" for i in range(n)],
        order_seed=0,
        data_seed=0,
        val_acc=np.linspace(0.9, 0.8, n),
        val_loss=np.linspace(0.3, 0.5, n),
        train_loss=np.linspace(0.25, 0.2, n),
        test_acc=np.linspace(0.85, 0.8, n),
        status=["ok"] * (n - 1) + ["diverged"],
    )
    for name in FLATNESS_COLUMNS:
        frame[name] = rng.random(n)
    frame["fisher_trace"] = np.nan
    frame["grad_norm"] = np.linspace(1.0, 2.0, n)
    labels = (probabilities[0, :, 1] > 0.5).astype(int)
    examples = pd.DataFrame({"example_id": np.arange(N_EXAMPLES), "split": "test", "label": labels})
    val = examples.assign(example_id=np.arange(N_EXAMPLES, 2 * N_EXAMPLES), split="val")
    root = tmp_path_factory.mktemp("results") / "run"
    write_examples(root, pd.concat([examples, val], ignore_index=True), ["no", "yes"])
    for start in range(0, n, 5):
        rows = slice(start, start + 5)
        write_pack(
            root,
            f"pack{start:02d}",
            frame.iloc[rows],
            {"test": probabilities[rows], "val": probabilities[rows]},
            {"test": np.arange(N_EXAMPLES), "val": np.arange(N_EXAMPLES, 2 * N_EXAMPLES)},
        )
    return root, frame, probabilities


def test_analyze_json_carries_the_flatness_summary(folder):
    assert {"grad_norm", "dist_from_init"} <= set(MODELS_SCHEMA.names)
    root, frame, probabilities = folder
    analysis = analyze(root, epsilon=0.05)
    got = analysis.to_dict()["flatness"]
    assert json.loads(json.dumps(got, allow_nan=False)) == got
    chosen = rashomon_set(frame, 0.05)
    assert 3 <= chosen.size < 11
    assert got["n_models"] == 11 and got["rashomon_set_size"] == chosen.size
    assert got["axes"] == ["lr", "weight_decay"]
    assert "fisher_trace" not in got["statistics"]
    assert got["statistics"]["grad_norm"]["tau_test_acc"] == pytest.approx(-1.0)
    assert got["statistics"]["grad_norm"]["tau_generalization_gap"] == pytest.approx(1.0)
    rows = [int(m[1:]) for m in chosen.model_ids]
    per_model = disagreement_with_set(predicted_classes(probabilities[rows]))
    expected = flatness_summary(frame, chosen.model_ids, per_model)
    assert got == expected
    ranks = kendall_tau(frame.loc[rows, "weight_norm"], per_model)
    assert got["statistics"]["weight_norm"]["tau_disagreement"] == pytest.approx(ranks)


def test_report_draws_the_flatness_section(folder, tmp_path):
    root, frame, probabilities = folder
    results = open_results(root)
    section = _flatness_section(analyze(results, epsilon=0.05), results)
    assert section.count("<svg") == 1 and "τ test acc" in section and "granulated" in section
    assert "distance from init" in section and "Fisher" not in section
    plain = tmp_path / "plain"
    write_examples(plain, results.examples, ["no", "yes"])
    write_pack(
        plain,
        "only",
        frame.drop(columns=list(FLATNESS_COLUMNS)),
        {"test": probabilities, "val": probabilities},
        {"test": np.arange(N_EXAMPLES), "val": np.arange(N_EXAMPLES, 2 * N_EXAMPLES)},
    )
    analysis = analyze(plain, epsilon=0.05)
    assert analysis.to_dict()["flatness"] == {}
    assert "No flatness statistics" in _flatness_section(analysis, open_results(plain))

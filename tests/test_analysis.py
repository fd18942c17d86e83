"""The analysis layer on results folders in the SPEC §5 schema: loading, `analyze`, subgroups,
source decomposition, curves and the `rashomon analyze` command."""

from __future__ import annotations

import json
import shutil

import fsspec  # a torch dependency, so always there
import numpy as np
import pandas as pd
import pytest
from _synthetic import write_examples, write_pack

from rashomon.analysis import (
    analyze,
    design_factors,
    multiplicity,
    open_results,
    predicted_classes,
    source_decomposition,
)
from rashomon.analysis._curves import epsilon_curve, model_count_curve
from rashomon.engine.cli import main
from rashomon.jobs import UserError

N_INIT, N_DATA, N_EXAMPLES = 4, 3, 60


def factorial(init_effect: float, data_effect: float, seed: int = 0):
    """(models frame, (models, examples, 2) probabilities): 4 init × 3 data seeds × 2 lr."""
    rng = np.random.default_rng(seed)
    grid = pd.MultiIndex.from_product(
        [range(N_INIT), range(N_DATA), [0.01, 0.1]], names=["init_seed", "data_seed", "hp_lr"]
    ).to_frame(index=False)
    base = rng.normal(0, 1.5, N_EXAMPLES)
    init = rng.normal(0, 1, (N_INIT, N_EXAMPLES)) * init_effect
    data = rng.normal(0, 1, (N_DATA, N_EXAMPLES)) * data_effect
    logit = base + init[grid["init_seed"]] + data[grid["data_seed"]]
    p1 = 1 / (1 + np.exp(-logit))
    frame = grid.assign(
        model_id=[f"m{i:03d}" for i in range(len(grid))],
        order_seed=0,
        val_acc=np.linspace(0.9, 0.8, len(grid)),
        val_loss=np.linspace(0.3, 0.5, len(grid)),
        status="ok",
    )
    return frame, np.stack([1 - p1, p1], axis=-1).astype(np.float32)


def write_folder(root, frame, probabilities, pack_size=7, groups=None):
    labels = (probabilities[0, :, 1] > 0.5).astype(int)
    n = probabilities.shape[1]
    examples = pd.DataFrame(
        {
            "example_id": np.arange(100, 100 + n),
            "split": "test",
            "label": labels,
            "sex": groups if groups is not None else np.where(np.arange(n) % 3, "f", "m"),
        }
    )
    val = examples.assign(example_id=np.arange(n), split="val")
    write_examples(root, pd.concat([val, examples], ignore_index=True), ["no", "yes"])
    for start in range(0, len(frame), pack_size):
        rows = slice(start, start + pack_size)
        write_pack(
            root,
            f"pack{start:04d}",
            frame.iloc[rows],
            {"val": probabilities[rows][..., ::-1], "test": probabilities[rows]},
            {"val": np.arange(n), "test": np.arange(100, 100 + n)},
        )
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    frame, probabilities = factorial(1.0, 0.3)
    frame.loc[5, "status"] = "diverged"
    root = write_folder(tmp_path_factory.mktemp("results") / "run", frame, probabilities)
    return root, frame, probabilities


def test_probabilities_load_in_the_requested_model_order_and_example_chunks(folder):
    root, _, probabilities = folder
    results = open_results(root)
    ids = ["m017", "m002", "m009"]
    loaded = results.probabilities("test", ids)
    assert loaded.dtype == np.float32 and loaded.shape == (3, N_EXAMPLES, 2)
    np.testing.assert_array_equal(loaded, probabilities[[17, 2, 9]])
    np.testing.assert_array_equal(
        results.probabilities("test", ids, slice(10, 25)), probabilities[[17, 2, 9], 10:25]
    )
    np.testing.assert_array_equal(
        results.probabilities("val", ids), probabilities[[17, 2, 9], :, ::-1]
    )
    assert results.classes == ["no", "yes"] and results.group_columns == ["sex"]


def test_analyze_equals_the_array_functions_on_the_same_set(folder):
    root, _frame, probabilities = folder
    analysis = analyze(root, epsilon=0.05)
    chosen = analysis.rashomon_set
    assert chosen.excluded == {"diverged": 1} and len(chosen.pool_model_ids) == 23
    rows = [int(m[1:]) for m in chosen.model_ids]
    pool = predicted_classes(probabilities[[int(m[1:]) for m in chosen.pool_model_ids]])
    expected = multiplicity(probabilities[rows], pool)
    got = analysis.to_dict()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert got["rashomon_set_size"] == len(rows) < 23


def test_reading_in_chunks_of_examples_changes_nothing(folder):
    root, _, _ = folder
    whole = analyze(root, epsilon=0.05).to_dict()
    chunked = analyze(root, epsilon=0.05, memory_budget=1).to_dict()
    assert chunked == whole


def test_windows_of_examples_are_measured_exactly_as_one(folder, monkeypatch):
    """Blocks of 7 examples and a budget of one block: 60 examples in 9 windows, each reading
    the files again, against one window; and against the default blocks up to rounding."""
    from rashomon.analysis import _moments, _multiplicity, _population

    root, _, _ = folder
    default = analyze(root, epsilon=0.05).to_dict()
    for module in (_moments, _multiplicity, _population):
        monkeypatch.setattr(module, "EXAMPLE_BLOCK", 7)
    whole = analyze(root, epsilon=0.05).to_dict()
    windows = analyze(root, epsilon=0.05, memory_budget=1).to_dict()
    assert windows == whole
    shares = whole.pop("source_decomposition")
    assert shares == pytest.approx(default.pop("source_decomposition"), rel=1e-12, abs=1e-14)
    assert whole == default


def test_subgroups_are_the_measures_on_their_examples(folder):
    root, _frame, probabilities = folder
    analysis = analyze(root, epsilon=0.05)
    rows = [int(m[1:]) for m in analysis.rashomon_set.model_ids]
    pool_rows = [int(m[1:]) for m in analysis.rashomon_set.pool_model_ids]
    men = np.arange(N_EXAMPLES) % 3 == 0
    expected = multiplicity(
        probabilities[rows][:, men], predicted_classes(probabilities[pool_rows][:, men])
    )
    got = analysis.subgroups["sex"]["m"]
    assert got["n_examples"] == men.sum()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_decomposition_tells_init_noise_from_data_noise():
    for init_effect, data_effect, source in [(1.0, 0.0, "init"), (0.0, 1.0, "data")]:
        frame, probabilities = factorial(init_effect, data_effect)
        shares = source_decomposition(probabilities, design_factors(frame))
        assert shares[source] == pytest.approx(1.0, abs=1e-9), (source, shares)
        assert sum(shares.values()) == pytest.approx(1.0)
        assert shares["order"] == 0.0 and shares["lr"] == pytest.approx(0.0, abs=1e-9)


def test_decomposition_of_a_balanced_design_is_the_classical_main_effects():
    frame, probabilities = factorial(0.7, 0.5, seed=4)
    noise = np.random.default_rng(5).normal(0, 0.02, probabilities.shape[:2])
    p1 = probabilities[:, :, 1].astype(np.float64) + noise
    probabilities = np.stack([1 - p1, p1], axis=-1)
    shares = source_decomposition(probabilities, design_factors(frame))
    centred = p1 - p1.mean(axis=0)
    total = 2 * (centred**2).sum(axis=0)  # both classes carry the same variance
    for axis, column in [("init", "init_seed"), ("data", "data_seed"), ("lr", "hp_lr")]:
        means = pd.DataFrame(centred).groupby(frame[column].to_numpy()).transform("mean")
        expected = (2 * (means.to_numpy() ** 2).sum(axis=0) / total).mean()
        assert shares[axis] == pytest.approx(expected, rel=1e-9), axis
    assert shares["remainder"] > 0


def test_decomposition_order_does_not_matter_when_balanced_but_aliased_axes_merge():
    frame, probabilities = factorial(0.7, 0.5, seed=6)
    forward = source_decomposition(probabilities, design_factors(frame))
    reordered = design_factors(frame)[["lr", "data", "init", "order"]]
    backward = source_decomposition(probabilities, reordered)
    for axis in ("init", "data", "lr"):
        assert forward[axis] == pytest.approx(backward[axis], rel=1e-9)
    paired = frame.assign(order_seed=frame["init_seed"])
    shares = source_decomposition(probabilities, design_factors(paired))
    assert "init+order" in shares and "init" not in shares
    assert shares["init+order"] == pytest.approx(forward["init"], rel=1e-9)


def test_epsilon_curve_grows_with_epsilon_and_matches_analyze(folder):
    root, _, _probabilities = folder
    results = open_results(root)
    analysis = analyze(results, epsilon=1.0)
    chosen = analysis.rashomon_set
    metric = 1 - results.models.set_index("model_id").loc[chosen.model_ids, "val_acc"]
    curve = epsilon_curve(
        results.probabilities("test", chosen.model_ids),
        metric.to_numpy(),
        [0.0, 0.02, 0.05, 1.0],
        pool_predictions=analysis.measures.pool_predictions,
    )
    assert curve["rashomon_set_size"].is_monotonic_increasing
    assert curve["ambiguity"].is_monotonic_increasing
    assert curve.iloc[0]["rashomon_set_size"] == 1 and curve.iloc[0]["ambiguity"] == 0
    at_005 = analyze(results, epsilon=0.05).to_dict()
    row = curve[curve["epsilon"] == 0.05].iloc[0]
    for name in ("rashomon_set_size", "ambiguity", "disagreement", "pattern_rashomon_ratio"):
        assert row[name] == pytest.approx(at_005[name]), name


def test_model_count_curve_has_bands_that_close_at_the_full_set():
    _, probabilities = factorial(1.0, 0.3)
    curve = model_count_curve(probabilities, n_draws=20, seed=1)
    ambiguity = curve[curve["measure"] == "ambiguity"].set_index("size")
    assert list(ambiguity.index) == [1, 2, 4, 8, 16, 24]
    assert ambiguity.loc[1, "mean"] == 0
    assert ambiguity["mean"].is_monotonic_increasing
    assert (ambiguity["low"] <= ambiguity["mean"]).all() and (
        ambiguity["mean"] <= ambiguity["high"]
    ).all()
    assert ambiguity.loc[24, "low"] == ambiguity.loc[24, "high"]
    assert ambiguity.loc[8, "high"] > ambiguity.loc[8, "low"]


def test_analyze_json_has_every_spec_key(folder, capsys):
    root, _, _ = folder
    assert main(["analyze", str(root), "--json", "--epsilon", "0.05"]) == 0
    data = json.loads(capsys.readouterr().out)
    keys = ["n_models", "rashomon_set_size", "epsilon", "metric", "baseline_model_id",
            "ambiguity", "discrepancy", "obscurity", "disagreement", "self_consistency",
            "vpr_mean", "vpr_share_ge_0.1", "score_std_mean", "rashomon_capacity_mean",
            "rashomon_capacity_max", "rashomon_ratio", "pattern_rashomon_ratio",
            "source_decomposition", "flatness"]  # fmt: skip
    assert set(keys) <= set(data)
    assert isinstance(data["n_models"], int) and data["n_models"] == 23
    assert data["baseline_model_id"] == "m000"
    assert main(["analyze", str(root)]) == 0
    table = capsys.readouterr().out
    assert "Rashomon set:" in table and "pool-based" in table and "by sex:" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "-0.1"], "--epsilon -0.1: must be a finite number >= 0"),
        (["--metric", "bogus"], "--metric bogus: not a loss-like column"),
        (["--split", "train"], "the train split has no examples"),
        (["--split", "holdout"], "split 'holdout': expected one of"),
    ],
)
def test_bad_requests_exit_2_with_one_line(folder, capsys, args, message):
    root, _, _ = folder
    assert main(["analyze", str(root), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_split_predictions_and_non_results_folders_are_user_errors(folder, tmp_path):
    root, _frame, _probabilities = folder
    copy = shutil.copytree(root, tmp_path / "copy")
    examples = pd.read_parquet(copy / "examples.parquet")
    train = examples[examples["split"] == "val"].assign(
        split="train", example_id=np.arange(1000, 1000 + N_EXAMPLES)
    )
    write_examples(copy, pd.concat([examples, train]), ["no", "yes"])
    with pytest.raises(UserError, match=r"no train predictions .* stored the splits"):
        analyze(copy, split="train")
    with pytest.raises(UserError, match=r"not a rashomon results folder"):
        open_results(tmp_path / "nothing")


def test_results_open_through_urls(folder):
    root, _, _ = folder
    local = analyze(root, epsilon=0.05).to_dict()
    assert analyze(root.as_uri(), epsilon=0.05).to_dict() == local  # file:// through pyarrow.fs
    memory = fsspec.filesystem("memory")
    for path in root.rglob("*.parquet"):
        memory.pipe(f"/copy/{path.relative_to(root)}", path.read_bytes())
    assert analyze("memory://copy", epsilon=0.05).to_dict() == local
    with pytest.raises(UserError, match="cannot open this results URL"):
        open_results("nosuchscheme://bucket/results")


def test_epsilon_zero_with_a_unique_best_model_gives_zero_multiplicity(folder):
    root, _, _ = folder
    result = analyze(root, epsilon=0.0).to_dict()
    assert result["rashomon_set_size"] == 1
    for name in ("ambiguity", "discrepancy", "obscurity", "disagreement", "vpr_mean",
                 "score_std_mean"):  # fmt: skip
        assert result[name] == 0.0, name
    assert result["rashomon_capacity_max"] == 1.0 and result["self_consistency"] == 1.0
    assert set(result["source_decomposition"].values()) == {0.0}

"""``analyze --by COLUMN``: each value of a models column a population of its own, compared side by
side and at equal set size (SPEC §3, issue #14 item 4), on hand-built results folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _synthetic import write_examples, write_pack

import rashomon
from rashomon.analysis import format_cohorts
from rashomon.analysis._training import MAX_COHORTS as MAX_DRAWN
from rashomon.analysis._training import training_cohorts
from rashomon.engine.cli import main
from rashomon.jobs import UserError

N = 10  # test (and val) examples
BASE = np.where(np.arange(N) % 2, 0.8, 0.2)  # P(class 1) of every cohort's best model

# model: (optimizer, lr, trial, val_acc, val_loss, status, examples it flips against BASE)
MODELS = {
    "a0": ("adam", 0.001, 0, 0.900, 0.30, "ok", []),
    "a1": ("adam", 0.001, 0, 0.895, 0.31, "ok", [0, 1]),
    "a2": ("adam", 0.001, 1, 0.800, 0.40, "ok", [0, 1, 2, 3, 4]),
    "s0": ("sgd", 0.1, 1, 0.850, 0.35, "ok", []),
    "s1": ("sgd", 0.1, None, 0.845, 0.36, "ok", [0, 1, 2, 3]),
    "s2": ("sgd", 0.1, None, 0.845, 0.37, "ok", [0, 1, 2, 3]),
    "s3": ("sgd", 0.1, None, 0.845, 0.38, "ok", [0, 1, 2, 3]),
    "s4": ("sgd", 0.1, None, 0.500, 0.90, "ok", [5]),
    "m0": ("sgdm", 1e-05, 2, 0.700, 0.50, "ok", [9]),
    "m1": ("sgdm", 1e-05, 2, 0.300, 0.95, "diverged", []),
    "x0": ("sam", 0.30000000000000004, 3, 0.100, 2.00, "diverged", []),
    "x1": ("sam", 0.30000000000000004, 3, 0.100, 2.00, "diverged", []),
}


def frame_and_probabilities(ids):
    rows, probabilities = [], []
    for model_id in ids:
        number = int(model_id[1:])  # the seeds are the model's own, wherever it is written
        optimizer, lr, trial, val_acc, val_loss, status, flips = MODELS[model_id]
        rows.append(
            {"model_id": model_id, "init_seed": number % 3, "order_seed": number % 2,
             "data_seed": 0, "trial": trial, "hp_optimizer": optimizer, "hp_lr": lr,
             "hp_momentum": 0.9 if optimizer.startswith("sgd") else np.nan,
             "hp_nesterov": optimizer == "sgdm",
             "val_acc": val_acc, "val_loss": val_loss, "test_acc": val_acc,
             "train_loss": val_loss, "status": status}
        )  # fmt: skip
        p1 = BASE.copy()
        p1[flips] = 1 - p1[flips]
        probabilities.append(np.stack([1 - p1, p1], axis=-1))
    frame = pd.DataFrame(rows)
    frame["trial"] = pd.Series([row["trial"] for row in rows], dtype=object)  # ints and nulls
    return frame, np.array(probabilities, np.float32)


def write_results(root, ids, pack_size=3):
    """A results folder of the models ``ids``; packs mix cohorts, as a planner's packs do."""
    frame, probabilities = frame_and_probabilities(ids)
    examples = pd.DataFrame(
        {"example_id": np.arange(2 * N), "split": ["val"] * N + ["test"] * N,
         "label": np.tile((BASE > 0.5).astype(int), 2), "sex": np.tile(["f", "m"], N)}
    )  # fmt: skip
    write_examples(root, examples, ["no", "yes"])
    for start in range(0, len(frame), pack_size):
        rows = slice(start, start + pack_size)
        write_pack(
            root,
            f"pack{start}",
            frame.iloc[rows],
            {"val": probabilities[rows], "test": probabilities[rows]},
            {"val": np.arange(N), "test": np.arange(N, 2 * N)},
        )
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    order = ["s2", "a0", "x0", "s0", "m0", "a1", "s4", "x1", "s1", "a2", "m1", "s3"]
    return write_results(tmp_path_factory.mktemp("cohorts") / "run", order)


@pytest.fixture(scope="module")
def by_optimizer(folder):
    return rashomon.analyze(folder, epsilon=0.01, by="hp_optimizer")


def test_each_cohort_has_its_own_set_and_hand_computed_measures(by_optimizer):
    cohorts = by_optimizer.cohorts
    assert list(cohorts) == ["adam", "sgd", "sgdm"]  # by value; "sam" has no ok model
    assert by_optimizer.without_ok_models == {"sam": {"diverged": 2}}
    adam, sgd, sgdm = (cohorts[k].to_dict() for k in ("adam", "sgd", "sgdm"))
    # the whole population's set at ε = 0.01 holds only a0 and a1: sgd's set is chosen in sgd
    assert (adam["rashomon_set_size"], sgd["rashomon_set_size"], sgdm["rashomon_set_size"]) == (
        2, 4, 1,
    )  # fmt: skip
    assert adam["baseline_model_id"] == "a0" and sgd["baseline_model_id"] == "s0"
    assert sgdm["excluded_models"] == {"diverged": 1} and sgdm["n_models"] == 1
    for name in ("ambiguity", "discrepancy", "obscurity"):
        assert adam[name] == pytest.approx(0.2) and sgd[name] == pytest.approx(0.4), name
    assert adam["disagreement"] == pytest.approx(0.2)  # two models differ on 2 of 10 examples
    # c = (1, 3) on 4 examples: D = 1 − (0 + 3·2) / (4·3) = 1/2
    assert sgd["disagreement"] == pytest.approx(0.5 * 0.4)
    assert adam["vpr_mean"] == pytest.approx(0.6 * 0.2, abs=1e-7)
    assert sgd["rashomon_ratio"] == pytest.approx(4 / 5) and adam["rashomon_ratio"] == 2 / 3
    assert sgdm["disagreement"] == 0 and sgdm["rashomon_capacity_max"] == 1


def test_a_cohort_is_analysed_exactly_as_a_folder_of_its_models_alone(by_optimizer, tmp_path):
    """Exactly, but for the source decomposition: its sums over models run in pack order, and
    the alone folder packs the models otherwise, so its shares may differ in the last bits."""
    for name, ids in {"adam": ["a0", "a1", "a2"], "sgd": ["s0", "s1", "s2", "s3", "s4"]}.items():
        alone = write_results(tmp_path / name, ids)
        expected = rashomon.analyze(alone, epsilon=0.01).to_dict()
        del expected["n_pending"]
        cohort = by_optimizer.to_dict()["by"][name]
        shares = cohort.pop("source_decomposition")
        expected_shares = expected.pop("source_decomposition")
        assert cohort == expected, name
        assert shares == pytest.approx(expected_shares, rel=1e-12, abs=1e-14), name


def test_cohorts_are_compared_at_the_largest_set_size_every_cohort_reaches(by_optimizer):
    assert by_optimizer.equal_size == 2  # adam's set; sgdm's single model compares nothing
    data = by_optimizer.to_dict()["at_equal_size"]
    assert data["sgdm"] is None
    # adam's set has 2 models: one draw, the set itself
    adam = by_optimizer.cohorts["adam"].overall
    for measure, entry in data["adam"].items():
        assert entry == pytest.approx(dict.fromkeys(("mean", "low", "high"), adam[measure]))
    # any two of sgd's set (baseline + one of three identical models) differ on 4 examples:
    # D = 1 there, twice sgd's full-set disagreement; equal in size, sgd disagrees more than adam
    assert data["sgd"]["disagreement"] == pytest.approx({"mean": 0.4, "low": 0.4, "high": 0.4})
    assert by_optimizer.cohorts["sgd"].overall["disagreement"] == pytest.approx(0.2)
    assert data["sgd"]["ambiguity"]["mean"] == pytest.approx(0.4)


def test_json_of_the_command_is_the_api_object(folder, by_optimizer, capsys):
    assert main(["analyze", str(folder), "--by", "hp_optimizer", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(by_optimizer.to_dict()))
    assert printed["column"] == "hp_optimizer" and printed["n_models"] == 9
    assert printed["equal_size"] == 2 and printed["equal_size_draws"] == 30
    assert set(printed["by"]) == {"adam", "sgd", "sgdm"}


def test_reading_in_chunks_changes_no_cohort(folder, by_optimizer):
    chunked = rashomon.analyze(folder, epsilon=0.01, by="hp_optimizer", memory_budget=1)
    assert chunked.to_dict() == by_optimizer.to_dict()


def test_values_are_named_as_the_models_table_holds_them(folder):
    by_lr = rashomon.analyze(folder, epsilon=0.01, by="hp_lr")
    assert list(by_lr.cohorts) == ["1e-05", "0.001", "0.1"]
    assert list(by_lr.without_ok_models) == ["0.30000000000000004"]
    by_trial = rashomon.analyze(folder, epsilon=0.01, by="trial")  # integers with nulls
    assert list(by_trial.cohorts) == ["0", "1", "2", "<missing>"]
    assert by_trial.cohorts["<missing>"].rashomon_set.model_ids == ["s1", "s2", "s3"]
    by_seed = rashomon.analyze(folder, epsilon=0.01, by="init_seed")
    assert list(by_seed.cohorts) == ["0", "1", "2"]
    by_momentum = rashomon.analyze(folder, epsilon=0.01, by="hp_momentum")  # NaN for adam, sam
    assert list(by_momentum.cohorts) == ["0.9", "<missing>"]
    assert by_momentum.cohorts["<missing>"].rashomon_set.model_ids == ["a0", "a1"]
    by_flag = rashomon.analyze(folder, epsilon=0.01, by="hp_nesterov")
    assert list(by_flag.cohorts) == ["False", "True"]


def test_one_value_is_the_whole_population(folder):
    whole = rashomon.analyze(folder, epsilon=0.5).to_dict()
    one = rashomon.analyze(folder, epsilon=0.5, by="data_seed")
    assert list(one.cohorts) == ["0"] and one.equal_size == whole["rashomon_set_size"]
    del whole["n_pending"]
    assert one.to_dict()["by"]["0"] == whole


def test_an_unknown_column_exits_2_in_one_line_naming_the_columns(folder, capsys):
    assert main(["analyze", str(folder), "--by", "hp_nothing"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--by hp_nothing: not a column of the models table; choose a design column " in err
    assert "init_seed, order_seed, data_seed, trial, hp_" in err and "hp_lr" in err


def test_many_distinct_values_and_a_named_baseline_are_refused(folder, monkeypatch):
    from rashomon.analysis import _cohorts

    monkeypatch.setattr(_cohorts, "MAX_COHORTS", 3)
    with pytest.raises(UserError, match=r"--by model_id: 12 distinct values; .* \(at most 3\)"):
        rashomon.analyze(folder, by="model_id")
    with pytest.raises(UserError, match="--baseline a0 with --by hp_lr"):
        rashomon.analyze(folder, by="hp_lr", baseline="a0")


def test_a_column_whose_every_cohort_failed_is_a_user_error(tmp_path):
    root = write_results(tmp_path / "run", ["x0", "x1", "m1"])
    with pytest.raises(UserError, match="no cohort has a model with status ok"):
        rashomon.analyze(root, by="hp_optimizer")


def test_per_example_and_curves_stack_the_cohorts(by_optimizer):
    rows = by_optimizer.per_example()
    assert list(rows.columns[:4]) == ["hp_optimizer", "example_id", "label", "sex"]
    assert len(rows) == 3 * N
    sgd = rows[rows["hp_optimizer"] == "sgd"]
    assert sgd["disagreement"].mean() == pytest.approx(0.2)
    assert sgd["flip_share"].mean() == pytest.approx(
        by_optimizer.cohorts["sgd"].overall["obscurity"]
    )
    curves = by_optimizer.curves()
    counts = curves.model_count
    assert set(counts["hp_optimizer"]) == {"adam", "sgd", "sgdm"}
    at_two = counts[(counts["size"] == 2) & (counts["measure"] == "disagreement")]
    assert dict(zip(at_two["hp_optimizer"], at_two["mean"], strict=True)) == pytest.approx(
        {"adam": 0.2, "sgd": 0.4}
    )
    epsilon = curves.epsilon
    assert epsilon.groupby("hp_optimizer")["rashomon_set_size"].max().to_dict() == {
        "adam": 3, "sgd": 5, "sgdm": 1,
    }  # fmt: skip


def test_the_table_shows_cohorts_side_by_side_within_100_columns(by_optimizer, folder):
    table = format_cohorts(by_optimizer)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100
    header = next(line for line in lines if "adam" in line and "sgd" in line)
    assert header.split() == ["adam", "sgd", "sgdm"]
    size = next(line for line in lines if line.strip().startswith("Rashomon set size"))
    assert size.split()[-3:] == ["2", "4", "1"]
    assert "at equal set size m = 2" in table and "sam: 2 diverged" in table
    assert "a set of one model (cohorts sgdm)" in table
    many = rashomon.analyze(folder, epsilon=0.01, by="model_id")  # 9 cohorts with an ok model
    lines = format_cohorts(many).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert sum(line.strip().startswith("ambiguity ↑") for line in lines) >= 2  # wrapped blocks


def test_long_values_get_numbered_columns_and_a_legend(tmp_path):
    long = {k: (f"a-rather-long-optimizer-name-{v[0]}", *v[1:]) for k, v in MODELS.items()}
    frame, probabilities = frame_and_probabilities(["a0", "a1", "s0", "s1"])
    frame["hp_optimizer"] = [long[m][0] for m in frame["model_id"]]
    root = tmp_path / "run"
    examples = pd.DataFrame({"example_id": np.arange(2 * N), "split": ["val"] * N + ["test"] * N,
                             "label": 0})  # fmt: skip
    write_examples(root, examples, ["no", "yes"])
    write_pack(root, "p", frame, {"val": probabilities, "test": probabilities},
               {"val": np.arange(N), "test": np.arange(N, 2 * N)})  # fmt: skip
    table = format_cohorts(rashomon.analyze(root, epsilon=0.01, by="hp_optimizer"))
    assert "#1 = hp_optimizer a-rather-long-optimizer-name-adam" in table
    assert "#2 = hp_optimizer a-rather-long-optimizer-name-sgd" in table


def test_layer_lists_are_ordered_by_their_widths_not_as_text(tmp_path):
    """hp_hidden is text ("[128]"); as text [128] < [32] < [512] < [8], which scrambles a width
    sweep's columns and the report's learning curves, sharpness and simplicity sections."""
    ids = ["a0", "a1", "s0", "s1", "s2", "s3", "m0"]
    frame, probabilities = frame_and_probabilities(ids)
    frame = frame.assign(hp_optimizer="adam", hp_lr=0.001, hp_momentum=np.nan, hp_nesterov=False)
    widths = ["[8]", "[32]", "[64]", "[64, 32]", "[128]", "[512]"]
    order = [5, 0, 4, 1, 3, 2]
    frame["hp_hidden"] = pd.Series([widths[i] for i in order] + [None], dtype=object)
    root = tmp_path / "run"
    examples = pd.DataFrame({"example_id": np.arange(2 * N), "split": ["val"] * N + ["test"] * N,
                             "label": 0})  # fmt: skip
    write_examples(root, examples, ["no", "yes"])
    write_pack(root, "p", frame, {"val": probabilities, "test": probabilities},
               {"val": np.arange(N), "test": np.arange(N, 2 * N)})  # fmt: skip
    by_width = rashomon.analyze(root, epsilon=0.01, by="hp_hidden")
    assert list(by_width.cohorts) == [*widths, "<missing>"]
    results = rashomon.open_results(root)
    assert training_cohorts(results, "hp_hidden")[2] == [*widths, "<missing>"][:MAX_DRAWN]
    named = [f"hidden={w}" for w in widths]
    assert training_cohorts(results, None)[2] == [*named, ""][:MAX_DRAWN]  # null: no name


def test_report_by_a_column_compares_the_cohorts(folder, tmp_path, capsys):
    target = tmp_path / "report.html"
    assert main(["report", str(folder), "--by", "hp_optimizer", "--epsilon", "0.01",
                 "--html", str(target)]) == 0  # fmt: skip
    page = target.read_text()
    assert "<h2>Cohorts by hp_optimizer</h2>" in page and "m = 2" in page
    assert "Cohorts without ok models" in page and "sam: 2 diverged" in page
    plain = tmp_path / "plain.html"
    assert main(["report", str(folder), "--html", str(plain)]) == 0
    assert "Cohorts by" not in plain.read_text()
    by_api = rashomon.report(rashomon.analyze(folder, epsilon=0.01, by="hp_optimizer"),
                             tmp_path / "api.html")  # fmt: skip
    assert by_api.read_text() == page  # the command and the API write the same page

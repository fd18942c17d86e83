"""Dataset loading, the fixed split and preprocessing: the behaviour jobs and analyses rely on."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rashomon.jobs import parse_job
from rashomon.jobs._datasets import (
    PREPROCESSING_VERSION,
    DatasetInfo,
    PreparedDataset,
    builtin_datasets,
    prepare_dataset,
)
from rashomon.jobs._errors import UserError


def write_csv(tmp_path: Path, frame: pd.DataFrame | dict, name: str = "data.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(frame).to_csv(path, index=False)
    return path


def prepare(
    source: str | Path,
    target: str | None = "y",
    groups: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    val: float = 0.2,
    test: float = 0.2,
    seed: int = 0,
    base_dir: Path | None = None,
    missing_values: tuple[str, ...] = (),
    shape: tuple[int, ...] | None = None,
) -> PreparedDataset:
    return prepare_dataset(
        str(source), target, groups, exclude, val, test, seed, base_dir, missing_values, shape
    )


def column(ds: PreparedDataset, name: str) -> np.ndarray:
    return ds.features[:, ds.feature_names.index(name)]


def split_of(tmp_path: Path, labels: list, **kwargs) -> np.ndarray:
    """The split of a file with these labels (it depends on labels and split settings only)."""
    path = write_csv(tmp_path, {"x": np.arange(len(labels)), "y": labels}, "labels_only.csv")
    return prepare(path, **kwargs).split


# --- split ---------------------------------------------------------------------------------------


def test_split_sizes_are_exact_per_class(tmp_path: Path) -> None:
    labels = ["a"] * 10 + ["b"] * 20 + ["c"] * 5
    split = split_of(tmp_path, labels, val=0.2, test=0.1)
    y = np.array(labels)
    # a: test round(1.0)=1, val round(2.0)=2; b: 2 and 4; c: round(0.5)=1 (halves round up), 1.
    expected = {"a": (7, 2, 1), "b": (14, 4, 2), "c": (3, 1, 1)}
    for cls, counts in expected.items():
        assert tuple(np.bincount(split[y == cls], minlength=3)) == counts


def test_split_follows_the_documented_algorithm(tmp_path: Path) -> None:
    labels = [3, 10, 5, 3, 3, 10, 5, 5, 10, 3, 3, 5, 10, 10, 3, 5, 5, 3, 10, 3] * 2
    split = split_of(tmp_path, labels, val=0.25, test=0.25, seed=7)
    y = np.array(labels)
    rng = np.random.default_rng(7)
    expected = np.zeros(len(labels), dtype=np.int8)
    for cls in (3, 5, 10):  # numeric sort order, not "10" < "3"
        rows = rng.permutation(np.flatnonzero(y == cls))
        n_test = math.floor(rows.size * 0.25 + 0.5)
        n_val = math.floor(rows.size * 0.25 + 0.5)
        expected[rows[:n_test]] = 2
        expected[rows[n_test : n_test + n_val]] = 1
    np.testing.assert_array_equal(split, expected)


def test_split_is_deterministic_per_seed_and_differs_between_seeds(tmp_path: Path) -> None:
    labels = [0, 1] * 30
    first = split_of(tmp_path, labels, seed=0)
    again = split_of(tmp_path, labels, seed=0)
    other = split_of(tmp_path, labels, seed=1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.bincount(first).tolist() == np.bincount(other).tolist()


def test_split_does_not_depend_on_argument_order_or_feature_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, {"a": range(40), "b": list("pq") * 20, "y": [0, 0, 1, 1, 2] * 8}, "d.csv"
    )
    one = prepare_dataset(str(path), "y", [], [], val=0.3, test=0.2, seed=3)
    two = prepare_dataset(str(path), "y", [], ["b"], seed=3, test=0.2, val=0.3)
    np.testing.assert_array_equal(one.split, two.split)


def test_split_and_dtypes_of_the_result(tmp_path: Path) -> None:
    path = write_csv(tmp_path, {"x": np.arange(20) * 1.5, "y": [0, 1] * 10})
    ds = prepare(path)
    assert ds.features.dtype == np.float32 and ds.features.flags.c_contiguous
    assert ds.features.shape == (20, 1) and ds.n_features == 1
    assert ds.labels.dtype == np.int64 and ds.split.dtype == np.int8
    np.testing.assert_array_equal(ds.example_ids, np.arange(20, dtype=np.int64))
    parts = [ds.indices(s) for s in ("train", "val", "test")]
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(20))
    assert [p.size for p in parts] == [12, 4, 4]
    with pytest.raises(UserError, match="'dev'"):
        ds.indices("dev")


# --- preprocessing -------------------------------------------------------------------------------


def labelled_frame(tmp_path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """10 rows (5 'a', 5 'b') and their split: 3+3 train, 1+1 val, 1+1 test."""
    labels = ["a"] * 5 + ["b"] * 5
    split = split_of(tmp_path, labels)
    return labels, split, split == 0


def test_standardisation_uses_train_statistics_only(tmp_path: Path) -> None:
    labels, split, train = labelled_frame(tmp_path)
    x = np.full(10, 100.0)
    x[train] = [1, 2, 3, 4, 5, 6]  # val/test rows are far away and must not move the statistics
    ds = prepare(write_csv(tmp_path, {"x": x, "y": labels}))
    mean, std = 3.5, math.sqrt(35 / 12)  # population std of 1…6
    expected = (x - mean) / std
    np.testing.assert_allclose(column(ds, "x"), expected, rtol=1e-6)
    np.testing.assert_array_equal(ds.split, split)
    assert ds.feature_names == ("x",)


def test_missing_numeric_values_are_imputed_with_an_indicator(tmp_path: Path) -> None:
    labels, _, train = labelled_frame(tmp_path)
    train_rows, other_rows = np.flatnonzero(train), np.flatnonzero(~train)
    x = np.full(10, 50.0)
    x[train_rows] = [2, np.nan, 4, np.nan, 6, 8]
    x[other_rows[0]] = np.nan
    ds = prepare(write_csv(tmp_path, {"x": x, "y": labels}))
    assert ds.feature_names == ("x", "x__missing")
    mean = 5.0  # train mean of 2, 4, 6, 8, missing cells ignored
    std = math.sqrt(5.0)  # population std of 2, 4, 6, 8
    expected = np.where(np.isnan(x), 0.0, (x - mean) / std)  # imputed with the mean → 0
    np.testing.assert_allclose(column(ds, "x"), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(column(ds, "x__missing"), np.isnan(x).astype(np.float32))


def test_indicator_is_dropped_when_no_training_row_is_missing(tmp_path: Path) -> None:
    labels, _, train = labelled_frame(tmp_path)
    x = np.arange(10, dtype=float)
    x[np.flatnonzero(~train)[0]] = np.nan  # missing only outside train: nothing to learn from
    ds = prepare(write_csv(tmp_path, {"x": x, "y": labels}))
    assert ds.feature_names == ("x",)
    assert column(ds, "x")[np.isnan(x)] == 0.0


def test_one_hot_uses_train_categories_and_unseen_is_all_zeros(tmp_path: Path) -> None:
    labels, _, train = labelled_frame(tmp_path)
    train_rows, other_rows = np.flatnonzero(train), np.flatnonzero(~train)
    colour = np.array(["red"] * 10, dtype=object)
    colour[train_rows] = ["red", "blue", None, "red", "blue", "green"]
    colour[other_rows[0]] = "purple"  # never seen in train
    colour[other_rows[1]] = None
    ds = prepare(write_csv(tmp_path, {"colour": colour, "y": labels}))
    assert ds.feature_names == (
        "colour=blue",
        "colour=green",
        "colour=missing",
        "colour=red",
    )
    block = ds.features
    np.testing.assert_array_equal(block[other_rows[0]], [0, 0, 0, 0])
    np.testing.assert_array_equal(block[other_rows[1]], [0, 0, 1, 0])
    np.testing.assert_array_equal(block[train_rows[1]], [1, 0, 0, 0])
    np.testing.assert_array_equal(block.sum(axis=1)[np.arange(10) != other_rows[0]], 1)


def test_columns_constant_on_train_are_dropped(tmp_path: Path) -> None:
    labels, _, train = labelled_frame(tmp_path)
    const_num = np.where(train, 5.0, 7.0)  # varies only outside train
    const_cat = np.where(train, "x", "z")
    ds = prepare(
        write_csv(
            tmp_path,
            {"c1": const_num, "c2": const_cat, "keep": np.arange(10), "y": labels},
        )
    )
    assert ds.feature_names == ("keep",)


def test_binary_integer_and_bool_columns(tmp_path: Path) -> None:
    labels, _, train = labelled_frame(tmp_path)
    flag01 = np.where(np.arange(10) % 2 == 0, 1, 0)
    flag01[np.flatnonzero(train)[:2]] = [0, 1]
    path = tmp_path / "b.parquet"
    frame = pd.DataFrame({"f01": flag01, "fb": flag01.astype(bool), "y": labels})
    frame.to_parquet(path)
    ds = prepare(path)
    assert ds.name == "b"
    assert ds.feature_names == ("f01", "fb=False", "fb=True")  # 0/1 ints stay numeric
    t = flag01[train]
    np.testing.assert_allclose(column(ds, "f01"), (flag01 - t.mean()) / t.std(), rtol=1e-6)
    np.testing.assert_array_equal(column(ds, "fb=True"), flag01)


def test_classes_sort_numerically_for_numbers_and_as_strings_otherwise(tmp_path: Path) -> None:
    numeric = prepare(write_csv(tmp_path, {"x": range(12), "y": [10, 3, 5] * 4}, "n.csv"))
    assert numeric.classes == ("3", "5", "10")
    np.testing.assert_array_equal(numeric.labels, [2, 0, 1] * 4)
    floats = prepare(write_csv(tmp_path, {"x": range(12), "y": [1.0, 0.0] * 6}, "f.csv"))
    assert floats.classes == ("0", "1")
    words = prepare(write_csv(tmp_path, {"x": range(12), "y": ["no", "yes", "maybe"] * 4}))
    assert words.classes == ("maybe", "no", "yes")
    np.testing.assert_array_equal(words.labels, [1, 2, 0] * 4)


def test_groups_are_raw_strings_and_stay_features_unless_excluded(tmp_path: Path) -> None:
    sex = ["F", "M", None, "M", "F"] * 4
    age = [30, 41, 30, 52, 41] * 4
    path = write_csv(tmp_path, {"sex": sex, "age": age, "y": [0, 1] * 10})
    ds = prepare(path, groups=("sex", "age"))
    assert list(ds.groups.columns) == ["sex", "age"]
    assert list(ds.groups.index) == list(range(20))
    assert ds.groups["sex"].tolist() == ["F", "M", "missing", "M", "F"] * 4
    assert ds.groups["age"].tolist() == ["30", "41", "30", "52", "41"] * 4
    assert "age" in ds.feature_names and "sex=F" in ds.feature_names

    excluded = prepare(path, groups=("sex",), exclude=("sex",))
    assert excluded.feature_names == ("age",)
    assert excluded.groups["sex"].tolist() == ds.groups["sex"].tolist()


def test_relative_path_resolves_against_base_dir_and_gzip_csv_reads(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": range(10), "y": [0, 1] * 5})
    with gzip.open(tmp_path / "z.csv.gz", "wt") as fh:
        frame.to_csv(fh, index=False)
    ds = prepare("z.csv.gz", base_dir=tmp_path)
    assert ds.name == "z" and ds.n_examples == 10


def test_fingerprint_follows_file_content_not_path(tmp_path: Path) -> None:
    frame = {"x": range(10), "y": [0, 1] * 5}
    a = prepare(write_csv(tmp_path, frame, "a.csv"))
    b = prepare(write_csv(tmp_path, frame, "b.csv"))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    changed = prepare(write_csv(tmp_path, {"x": range(1, 11), "y": [0, 1] * 5}, "a.csv"))
    assert changed.fingerprint != a.fingerprint
    assert PREPROCESSING_VERSION


# --- errors --------------------------------------------------------------------------------------


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path, {"age": range(20), "sex": ["F", "M"] * 10, "y": [0, 1] * 10}, "good.csv"
    )


def test_unknown_builtin_lists_names_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"'adlt'.*did you mean 'adult'.*compas"):
        prepare("adlt", target=None)
    with pytest.raises(UserError, match="did you mean 'adult'"):
        prepare("Adult", target=None)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope.csv.*does not exist"):
        prepare(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(UserError, match=r"data.xlsx.*unsupported extension"):
        prepare(tmp_path / "data.xlsx")
    (tmp_path / "bad.parquet").write_text("not parquet at all")
    with pytest.raises(UserError, match=r"bad.parquet.*as Parquet"):
        prepare(tmp_path / "bad.parquet")
    (tmp_path / "bad.csv.gz").write_text("a,y\n1,2\n")  # plain text behind a .gz name
    with pytest.raises(UserError, match=r"bad.csv.gz.*as CSV"):
        prepare(tmp_path / "bad.csv.gz")
    (tmp_path / "empty.csv").write_text("x,y\n")
    with pytest.raises(UserError, match=r"empty.csv.*no rows"):
        prepare(tmp_path / "empty.csv")


def test_target_errors(tmp_path: Path, good_csv: Path) -> None:
    with pytest.raises(UserError, match=r"'label'.*good.csv.*age, sex, y"):
        prepare(good_csv, target="label")
    with pytest.raises(UserError, match="did you mean 'sex'"):
        prepare(good_csv, target="Sex")
    with pytest.raises(UserError, match=r"dataset.target.*required.*good.csv"):
        prepare(good_csv, target=None)
    with pytest.raises(UserError, match=r"'adult' predicts 'income', not 'sex'"):
        prepare("adult", target="sex")


def test_label_errors(tmp_path: Path) -> None:
    one = write_csv(tmp_path, {"x": range(10), "y": ["a"] * 10}, "one.csv")
    with pytest.raises(UserError, match=r"'y'.*one.csv.*only one class"):
        prepare(one)
    holes = write_csv(tmp_path, {"x": range(10), "y": [0, 1, None, 1, 0, None, 1, 0, 1, 0]})
    with pytest.raises(UserError, match=r"2 rows.*'y'"):
        prepare(holes)


def test_column_choice_errors(good_csv: Path) -> None:
    with pytest.raises(UserError, match=r"dataset.groups.*'sexx'.*did you mean 'sex'"):
        prepare(good_csv, groups=("sexx",))
    with pytest.raises(UserError, match=r"dataset.exclude.*'agee'.*good.csv"):
        prepare(good_csv, exclude=("agee",))
    with pytest.raises(UserError, match=r"dataset.groups.*'y' is the target"):
        prepare(good_csv, groups=("y",))
    with pytest.raises(UserError, match=r"no feature columns.*good.csv"):
        prepare(good_csv, exclude=("age", "sex"))


def test_all_features_constant_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path, {"c": [1] * 10, "y": [0, 1] * 5}, "flat.csv")
    with pytest.raises(UserError, match=r"flat.csv.*constant"):
        prepare(path)


def test_impossible_splits(tmp_path: Path, good_csv: Path) -> None:
    rare = write_csv(tmp_path, {"x": range(12), "y": ["a"] * 10 + ["b"] * 2}, "rare.csv")
    with pytest.raises(UserError, match=r"class 'b'.*rare.csv.*only 2 rows"):
        prepare(rare, val=0.3, test=0.3)
    with pytest.raises(UserError, match=r"val=0.6 \+ test=0.4"):
        prepare(good_csv, val=0.6, test=0.4)
    with pytest.raises(UserError, match=r"dataset.split.val"):
        prepare(good_csv, val=0.0)
    with pytest.raises(UserError, match=r"dataset.split.test.*empty"):
        prepare(
            write_csv(tmp_path, {"x": range(4), "y": [0, 1] * 2}, "tiny.csv"), val=0.5, test=0.1
        )
    with pytest.raises(UserError, match=r"dataset.split.seed"):
        prepare(good_csv, seed=-1)


# --- built-ins -----------------------------------------------------------------------------------

BUILTINS = {
    "adult": (48_842, 2, "income"),
    "compas": (6_172, 2, "two_year_recid"),
    "breast_cancer": (569, 2, "target"),
    "wine": (178, 3, "target"),
    "digits": (1_797, 10, "target"),
    "mnist1d": (5_000, 10, "target"),
}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_load(name: str) -> None:
    rows, n_classes, target = BUILTINS[name]
    ds = prepare(name, target=None)
    assert ds.name == name and ds.n_examples == rows and ds.n_classes == n_classes
    assert set(np.unique(ds.labels[ds.indices("train")])) == set(range(n_classes))
    assert np.isfinite(ds.features).all()
    same = prepare(name, target=target)  # naming the built-in's own target is fine
    np.testing.assert_array_equal(same.features, ds.features)


def test_builtin_listing_matches_the_files() -> None:
    infos = {info.name: info for info in builtin_datasets()}
    assert set(infos) == set(BUILTINS)
    for name, (rows, n_classes, target) in BUILTINS.items():
        info = infos[name]
        assert isinstance(info, DatasetInfo)
        assert (info.rows, info.classes, info.target) == (rows, n_classes, target)
    assert infos["adult"].groups == ("sex", "race")
    assert "race" in infos["compas"].groups and "sex" in infos["compas"].groups


def test_adult_groups_and_missing_values() -> None:
    ds = prepare("adult", target=None, groups=("sex", "race"), exclude=("sex", "race"))
    assert ds.classes == ("<=50K", ">50K")
    assert sorted(ds.groups["sex"].unique()) == ["Female", "Male"]
    assert ds.groups["race"].nunique() == 5
    assert not any(n.startswith(("sex", "race")) for n in ds.feature_names)
    assert "workclass=missing" in ds.feature_names  # missing categories are their own value
    train = ds.indices("train")
    np.testing.assert_allclose(column(ds, "age")[train].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(column(ds, "age")[train].std(), 1.0, rtol=1e-5)


def test_compas_groups() -> None:
    ds = prepare("compas", target=None, groups=("sex", "race"))
    assert ds.classes == ("0", "1")
    assert sorted(ds.groups["sex"].unique()) == ["Female", "Male"]
    assert "African-American" in set(ds.groups["race"])
    assert "race=Caucasian" in ds.feature_names  # groups stay features unless excluded


# --- data that looks wrong -----------------------------------------------------------------------


def junk_frame(numbers: int, odd: list[str], **extra: list) -> dict:
    """A text column 'age' of `numbers` distinct numbers plus the `odd` cells, and a label."""
    age = [str(20 + i) for i in range(numbers)] + odd
    return {"age": age, "y": [0, 1] * (len(age) // 2) + [0] * (len(age) % 2), **extra}


def test_a_numeric_column_with_junk_cells_is_refused_naming_them(tmp_path: Path) -> None:
    path = write_csv(tmp_path, junk_frame(100, ["?", "?", "n/a ", "\x1b[2J"], z=list(range(104))))
    with pytest.raises(UserError) as caught:
        prepare(path)
    message = str(caught.value)
    assert message == (
        f"dataset.source: column 'age' of {path} holds numbers but 4 of its 104 cells are not "
        r"numbers ('?', 'n/a ', '\x1b[2J'); clean them, list them in dataset.missing_values to "
        "read them as missing, or list 'age' in dataset.exclude"
    )
    assert prepare(path, exclude=("age",)).n_examples == 104  # the suggested fix works


@pytest.mark.parametrize(
    ("numbers", "odd", "refused"),
    [
        (90, 10, True),  # exactly 90% numbers
        (90, 11, False),  # just under 90%: text with some numbers, one-hot
        (21, 1, True),  # more than 20 distinct numbers
        (20, 1, False),  # codes with few values (1, 2, 3, A) stay categorical
        (50, 0, False),  # numbers as text, nothing odd: the file says text
    ],
)
def test_the_junk_rule_boundaries(tmp_path: Path, numbers: int, odd: int, refused: bool) -> None:
    frame = pd.DataFrame(junk_frame(numbers, ["?"] * odd)).astype({"age": "string"})
    path = tmp_path / "junk.parquet"  # Parquet keeps the text column text, even when all digits
    frame.to_parquet(path)
    if refused:
        with pytest.raises(UserError, match=rf"'age'.*but {odd} of its {numbers + odd} cells"):
            prepare(path)
    else:
        ds = prepare(path)
        assert all(name.startswith("age=") for name in ds.feature_names)


def test_missing_values_read_junk_as_missing_exactly_like_empty_cells(tmp_path: Path) -> None:
    odd = ["?", " n/a", "-999", "-999"]
    marked = write_csv(tmp_path, junk_frame(100, odd, w=[1.5, -999.0] * 52), "marked.csv")
    empty = write_csv(
        tmp_path, junk_frame(100, [""] * 4, w=[1.5, None] * 52), "empty.csv"
    )  # the same file with empty cells
    ds = prepare(marked, missing_values=("?", "n/a ", "-999"))
    reference = prepare(empty)
    assert ds.feature_names == reference.feature_names == ("age", "age__missing", "w__missing")
    np.testing.assert_array_equal(ds.features, reference.features)
    np.testing.assert_array_equal(ds.split, reference.split)


def test_missing_values_in_the_label_are_missing_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path, {"x": range(10), "y": ["a", "b", "?"] + ["a", "b"] * 3 + ["?"]})
    assert prepare(path).classes == ("?", "a", "b")
    with pytest.raises(UserError, match=r"2 rows .* no value in the target column 'y'"):
        prepare(path, missing_values=("?",))


def test_missing_values_through_the_job_keep_ids_of_jobs_without_them() -> None:
    plain = parse_job({"name": "j", "dataset": {"source": "adult"}}, "j.yaml")
    marked = parse_job(
        {"name": "j", "dataset": {"source": "adult", "missing_values": ["?", "n/a"]}}, "j.yaml"
    )
    assert "missing_values" not in plain.model_dump()["dataset"]  # older jobs hash the same
    assert "missing_values" not in plain.dataset.identity()
    assert marked.dataset.identity()["missing_values"] == ["?", "n/a"]
    assert marked.job_hash != plain.job_hash
    assert parse_job(yaml.safe_load(marked.to_yaml()), "j.yaml").job_hash == marked.job_hash
    with pytest.raises(UserError, match=r"dataset.missing_values: '\?' is listed twice"):
        parse_job({"name": "j", "dataset": {"source": "adult", "missing_values": ["?", "?"]}}, "j")


@pytest.mark.parametrize(
    ("labels", "refused"),
    [
        ([0.5 + i for i in range(21)] * 5, True),  # 21 non-integer values
        ([0.5 + i for i in range(20)] * 5, False),  # 20: half-point ratings are classes
        (list(range(10)) * 10 + list(range(100, 111)), True),  # 11 of 21 values on one row
        (list(range(11)) * 10 + list(range(100, 110)), False),  # 10 of 21 on one row
    ],
    ids=["21-floats", "20-floats", "11-singletons", "10-singletons"],
)
def test_a_continuous_label_is_called_a_regression_target(
    tmp_path: Path, labels: list, refused: bool
) -> None:
    path = write_csv(tmp_path, {"x": range(len(labels)), "price": labels})
    if refused:
        with pytest.raises(UserError) as caught:
            prepare(path, target="price")
        assert str(caught.value).startswith(
            f"dataset.target: column 'price' of {path} looks like a regression target (21 "
            "distinct values, "
        )
        assert "rashomon trains classifiers" in str(caught.value)
    else:
        assert prepare(path, target="price").n_classes == len(set(labels))


def test_a_float_price_label_says_regression_not_empty_split(tmp_path: Path) -> None:
    prices = np.round(np.random.default_rng(0).lognormal(10, 1, 500), 2)
    path = write_csv(tmp_path, {"rooms": np.arange(500) % 7, "price": prices})
    with pytest.raises(
        UserError,
        match=r"looks like a regression target \(500 distinct values, "
        r"not all integers; e\.g\. ",
    ):
        prepare(path, target="price")


def test_paths_and_column_names_from_data_are_escaped_in_messages(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        prepare(tmp_path / "a\x1b[2Jb.csv")
    assert "\x1b" not in str(caught.value) and r"a\x1b[2Jb.csv does not exist" in str(caught.value)
    path = write_csv(tmp_path, {"x\x1b[31m": range(10), "y": [0, 1] * 5})
    with pytest.raises(UserError) as caught:
        prepare(path, target="label")
    assert "\x1b" not in str(caught.value) and r"its columns are: x\x1b[31m, y" in str(caught.value)


def test_a_file_name_too_long_for_the_file_system_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"dataset.source: cannot use .*: File name too long"):
        prepare(tmp_path / ("a" * 5000 + ".csv"))


# --- shaped data (signals and images) and .npz files ---------------------------------------------


def shaped_frame(n: int = 12) -> tuple[pd.DataFrame, np.ndarray]:
    """n examples of shape [2, 3] as columns c{channel}_{position}, channel 1 on another scale."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 2, 3)) * np.array([1.0, 50.0])[:, None] + np.array([0, 7.0])[:, None]
    columns = {f"c{c}_{i}": x[:, c, i] for c in range(2) for i in range(3)}
    return pd.DataFrame(columns | {"y": [0, 1, 2] * (n // 3)}), x


def test_each_channel_is_standardised_over_train_examples_and_positions(tmp_path: Path) -> None:
    frame, x = shaped_frame()
    ds = prepare(write_csv(tmp_path, frame), shape=(2, 3))
    train = ds.split == 0
    expected = np.empty_like(x)
    for channel in range(2):
        seen = x[train, channel, :]  # one mean and one std over examples and positions
        expected[:, channel] = (x[:, channel] - seen.mean()) / seen.std()
    np.testing.assert_allclose(ds.features, expected.reshape(len(x), 6), rtol=1e-5, atol=1e-6)
    assert ds.shape == (2, 3) and ds.example_shape == (2, 3) and ds.features.dtype == np.float32
    assert ds.feature_names == tuple(frame.columns[:-1])
    table = prepare(write_csv(tmp_path, frame))
    assert table.shape is None and table.example_shape == (6,)
    assert table.fingerprint != ds.fingerprint  # another preprocessing of the same bytes


def test_a_channel_constant_on_train_is_centred_not_divided_by_zero(tmp_path: Path) -> None:
    frame, _ = shaped_frame()
    for i in range(3):
        frame[f"c1_{i}"] = 4.0
    ds = prepare(write_csv(tmp_path, frame), shape=(2, 3))
    assert (ds.features[:, 3:] == 0).all() and np.isfinite(ds.features).all()


def test_npz_files_read_like_the_same_values_in_a_table(tmp_path: Path) -> None:
    frame, x = shaped_frame()
    y = frame["y"].to_numpy()
    np.savez(tmp_path / "images.npz", x=x, y=y)
    from_npz = prepare("images.npz", target=None, base_dir=tmp_path)
    from_csv = prepare(write_csv(tmp_path, frame), shape=(2, 3))
    assert from_npz.name == "images" and from_npz.shape == (2, 3)
    np.testing.assert_array_equal(from_npz.features, from_csv.features)
    np.testing.assert_array_equal(from_npz.split, from_csv.split)
    np.testing.assert_array_equal(from_npz.labels, from_csv.labels)
    reshaped = prepare(tmp_path / "images.npz", target=None, shape=(1, 6))
    assert reshaped.shape == (1, 6)
    np.savez(tmp_path / "flat.npz", x=x.reshape(len(x), 6), y=y)
    flat = prepare(tmp_path / "flat.npz", target=None)
    assert flat.shape is None and flat.feature_names == tuple(f"x_{i}" for i in range(6))
    np.testing.assert_allclose(flat.features.mean(axis=0)[:0], [])
    assert prepare(tmp_path / "flat.npz", target=None, shape=(2, 3)).shape == (2, 3)


LABELS = np.arange(6) % 2


@pytest.mark.parametrize(
    ("arrays", "kwargs", "expected"),
    [
        ({"x": np.zeros((6, 2))}, {}, r"has no array 'y' \(it has 'x'\); save it with np.savez"),
        ({"x": np.zeros((6, 2)), "y": np.zeros(5)}, {}, r"x of shape \(6, 2\) and y of shape"),
        ({"x": np.array([["a"]] * 6), "y": LABELS}, {}, r"x of .* holds <U1 values"),
        ({"x": np.zeros((6, 2)), "y": LABELS}, {"target": "y"}, r"dataset.target: the labels"),
        ({"x": np.zeros((6, 2)), "y": LABELS}, {"groups": ("a",)}, r"dataset.groups: .* arrays"),
        ({"x": np.zeros((6, 4)), "y": LABELS}, {"shape": (1, 3)}, r"dataset.shape: \[1, 3\]"),
    ],
)
def test_bad_npz_files_are_one_line_naming_the_fix(tmp_path, arrays, kwargs, expected) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=expected):
        prepare(tmp_path / "d.npz", **({"target": None} | kwargs))


def test_an_npz_with_a_pickled_object_array_is_refused_unread(tmp_path: Path) -> None:
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    with pytest.raises(UserError, match=r"cannot read .*evil.npz as .npz \(ValueError"):
        prepare(tmp_path / "evil.npz", target=None)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"cannot read .*junk.npz as .npz"):
        prepare(tmp_path / "junk.npz", target=None)


def test_shaped_tables_must_be_complete_numbers(tmp_path: Path) -> None:
    frame, _ = shaped_frame()
    with pytest.raises(UserError, match=r"dataset.shape: \[2, 2\] holds 4 values .* 6 feature"):
        prepare(write_csv(tmp_path, frame), shape=(2, 2))
    texts = frame.assign(c0_1=["a", "b", "c"] * 4)
    with pytest.raises(UserError, match=r"column 'c0_1' .* is not numeric"):
        prepare(write_csv(tmp_path, texts), shape=(2, 3))
    holes = frame.astype({"c1_2": float})
    holes.loc[4, "c1_2"] = np.nan
    with pytest.raises(UserError, match=r"1 missing or infinite .* row 4, column 'c1_2'"):
        prepare(write_csv(tmp_path, holes), shape=(2, 3))


def test_signal_and_image_builtins_keep_their_shape_and_every_pixel() -> None:
    mnist1d = prepare("mnist1d", target=None)
    digits = prepare("digits", target=None)
    assert mnist1d.shape == (1, 40) and mnist1d.n_features == 40
    assert digits.shape == (1, 8, 8) and digits.n_features == 64  # border pixels kept
    for ds in (mnist1d, digits):
        train = ds.features[ds.indices("train")]
        assert abs(train.mean()) < 1e-6 and train.std() == pytest.approx(1.0, rel=1e-5)
    assert {i.name: i.shape for i in builtin_datasets()}["mnist1d"] == (1, 40)


def test_the_shape_is_part_of_the_model_identity() -> None:
    identity = parse_job({"name": "x", "dataset": {"source": "digits"}}, "j").dataset.identity()
    assert identity["shape"] == [1, 8, 8]
    spelled = {"source": "digits", "shape": [1, 8, 8]}
    assert parse_job({"name": "x", "dataset": spelled}, "j").dataset.identity() == identity
    wine = parse_job({"name": "x", "dataset": {"source": "wine"}}, "j").dataset.identity()
    assert "shape" not in wine  # tables keep the ids they had

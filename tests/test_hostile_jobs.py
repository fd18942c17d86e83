"""Hostile or broken job files: each is one line and exit status 2, never a hang or a traceback.

The alias bombs here expand to 10²⁰ values: a loader, validator or message that expanded them would
never finish, so these tests can only pass if nothing walks the expanded document.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rashomon.engine.cli import main
from rashomon.jobs import UserError, load_job, load_job_text
from rashomon.jobs._load import MAX_JOB_BYTES, MAX_JOB_DEPTH, MAX_JOB_VALUES
from rashomon.jobs._text import show

VALID = "name: j\ndataset: {source: adult}\n"


def bomb(levels: int = 20, width: int = 10) -> str:
    """Anchors a0 … a{levels-1}, each a list of `width` aliases of the one before: width^levels."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "bombs:\n" + "".join(f"  {line}\n" for line in lines)


def chain(links: int, nesting: int) -> str:
    """Anchors each nesting the one before `nesting` levels deeper: a small, very deep value."""
    opening, closing = "[" * nesting, "]" * nesting
    lines = [f"c0: &c0 {opening}1{closing}"]
    lines += [f"c{i}: &c{i} {opening}*c{i - 1}{closing}" for i in range(1, links)]
    return "chain:\n" + "".join(f"  {line}\n" for line in lines)


def error_of(text: str) -> str:
    with pytest.raises(UserError) as caught:
        load_job_text(text, "job.yaml")
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_an_alias_bomb_is_refused_before_anything_expands_it() -> None:
    message = error_of(bomb() + "name: *a19\ndataset: {source: adult}\n")
    assert message.startswith("job.yaml: the job expands to about 10^20 values through its aliases")
    assert "(*a0, *a1, *a2, " in message and f"more than the {MAX_JOB_VALUES:,}" in message


def test_an_alias_bomb_inside_a_valid_section_is_refused() -> None:
    message = error_of(bomb() + VALID + "population: {grid: {lr: *a19}}\n")
    assert "expands to about 10^20 values through its aliases" in message


def test_an_alias_bomb_behind_merge_keys_is_refused() -> None:
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: 1" for i in range(10)) + "}"]
    lines += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + "]}" for i in range(1, 20)]
    text = "merges:\n" + "".join(f"  {line}\n" for line in lines) + VALID
    assert "through its aliases (*m0, *m1" in error_of(text)


@pytest.mark.parametrize(
    ("text", "alias"),
    [
        ("name: &n [*n]\ndataset: {source: adult}\n", "*n"),
        (VALID + "population: &p {grid: *p}\n", "*p"),
    ],
    ids=["in-a-value", "in-a-section"],
)
def test_an_alias_that_contains_itself_is_refused(text: str, alias: str) -> None:
    message = error_of(text)
    assert f"the alias {alias} refers to a value that contains it" in message
    assert message.startswith("job.yaml: line ")


def test_a_small_document_nested_deep_through_aliases_is_refused() -> None:
    message = error_of(chain(40, nesting=30) + "name: *c39\ndataset: {source: adult}\n")
    assert "job.yaml: the job nests 1,203 levels deep through its aliases (*c0, *c1" in message
    assert f"more than the {MAX_JOB_DEPTH} a job may have" in message


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "{a: " * 100_000, "".join("  " * i + "a:\n" for i in range(200))],
    ids=["brackets", "flow-mappings", "block-mappings"],
)
def test_deep_nesting_is_refused_while_parsing(text: str) -> None:
    message = error_of(text)
    assert f"invalid YAML: nested deeper than {MAX_JOB_DEPTH} levels" in message
    assert message.startswith("job.yaml: line ")


def test_the_value_limit_counts_every_alias_expansion() -> None:
    """A document of exactly MAX_JOB_VALUES values is parsed (and judged on its keys); one more
    value is refused. VALID is 7 values; `z: {x: [10 values], y: [...]}` adds 16 and then 11 per
    alias of x and 1 per scalar in y."""
    k, p = divmod(MAX_JOB_VALUES - 23, 11)

    def document(extra: int) -> str:
        items = ", ".join(["*x"] * k + ["1"] * (p + extra))
        return VALID + f"z:\n  x: &x [{', '.join(['1'] * 10)}]\n  y: [{items}]\n"

    assert "unknown key 'z' at the top level" in error_of(document(0))
    assert f"the job expands to {MAX_JOB_VALUES + 1:,} values through its aliases (*x)" in (
        error_of(document(1))
    )


def test_ordinary_anchors_and_aliases_still_load() -> None:
    job = load_job_text(
        VALID
        + "population: {grid: {lr: &rates [0.1, 0.01]}}\n"
        + "search: {lr: {choice: *rates}, momentum: &m {uniform: [0.5, 0.9]}}\n",
        "job.yaml",
    )
    assert job.population.grid.axes()["lr"] == job.search.lr.choice == (0.1, 0.01)


def test_a_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(VALID + "#" * (MAX_JOB_BYTES - len(VALID) - 1) + "\n")
    assert load_job(path).name == "j"  # exactly the limit
    path.write_text(VALID + "#" * (MAX_JOB_BYTES - len(VALID)) + "\n")
    with pytest.raises(UserError, match=r"job\.yaml: more than 1 MiB, too large for a job file"):
        load_job(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: j\ndataset: {source: adult}\ntrain: {epochs: " + "9" * 5000 + "}\n",
            "line 3, column 17: invalid YAML: cannot read '999",
        ),
        ("name: 2020-13-45\ndataset: {source: adult}\n", "cannot read '2020-13-45' as a date"),
        (VALID + "train: {epochs: !!int abc}\n", "cannot read 'abc' as an integer"),
        (VALID + "train: {epochs: !!timestamp abc}\n", "cannot read 'abc' as a date"),
        ("name: j\x00\ndataset: {source: adult}\n", "line 1: invalid YAML: unacceptable character"),
        (VALID + "population: {seeds: " + "1" + "0" * 30 + "}\n", "must be <= 9223372036854775807"),
        (VALID + "population: {seeds: {init: " + "9" * 20 + "}}\n", "init: must be <= 92233720"),
        (VALID + "1: x\n", "unknown key 1 at the top level; valid keys: name, dataset"),
        (VALID + "~: x\n", "unknown key null at the top level"),
        (VALID + "population: {grid: {true: [1]}}\n", "grid.true: unknown hyperparameter"),
        (VALID + "train: {epochs: 1e300}\n", "train.epochs: expected an integer, got 1e+300"),
        ("name: " + "j" * 201 + "\ndataset: {source: adult}\n", "at most 200 (it becomes a folder"),
    ],
    ids=[
        "5000-digit-int",
        "bad-date",
        "bad-int-tag",
        "bad-timestamp-tag",
        "nul-character",
        "seeds-10^30",
        "seed-axis-10^20",
        "int-key",
        "null-key",
        "bool-key",
        "epochs-1e300",
        "long-name",
    ],
)
def test_nasty_values_are_one_line(text: str, expected: str) -> None:
    assert expected in error_of(text)


@pytest.mark.parametrize(
    "text",
    [
        bomb() + "name: *a19\ndataset: {source: adult}\n",
        "[" * 100_000,
        "name: &n [*n]\ndataset: {source: adult}\n",
        "name: j\ntrain: {epochs: " + "9" * 5000 + "}\n",
    ],
    ids=["alias-bomb", "brackets", "recursive-alias", "huge-int"],
)
def test_the_cli_says_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"rashomon: error: {path}: ")
    assert not (tmp_path / "out").exists()


def test_show_is_bounded_for_values_of_any_size() -> None:
    value: list = ["lol"] * 10
    for _ in range(30):
        value = [value] * 10  # 10^31 leaves, shared
    looped: list = []
    looped.append(looped)
    assert len(show(value)) == 60 and show(value).endswith("...")
    assert show(looped) == "[[[[[...]]]]]"
    assert show(10**5000) == "<an integer of about 5,001 digits>"
    assert show({"a\x1b[31m": "\x1b"}) == r"{a\x1b[31m: '\x1b'}"

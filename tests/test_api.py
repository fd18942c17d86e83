"""The public Python API of SPEC §2, as a notebook uses it: ``import rashomon``, then run, open,
analyze, per_example, curves, report and tune, from a folder holding the user's own ``jobs/``,
``analysis.py`` and ``engine/`` (issue #12 item 5). Real processes, a real embedded Ray.

The results are checked against independent readings: pandas on the Parquet files, and the
``rashomon analyze --json`` command in the same folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cli import TIMEOUT, environment, rashomon
from test_cohorts import write_results
from test_user_folders import users_folder

import rashomon as api
from rashomon.jobs import UserError, load_job

REPOSITORY = Path(__file__).resolve().parents[1]
SPEC_NAMES = ["Analysis", "CohortAnalysis", "Results", "TuneResult", "analyze", "open_results",
              "report", "run", "tune"]  # fmt: skip

JOB = """
name: mine
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [4]}
train: {epochs: 3, batch_size: 16, optimizer: sgd, lr: 0.05}
population:
  seeds: {init: 2, order: 2}
  grid: {lr: [0.03, 0.1]}
resources: {cpus_per_worker: 1}
flatness: {enabled: false}
"""

# a notebook's cells, as one script in the user's folder (its folder is first on sys.path)
NOTEBOOK = """
import hashlib, json, os, sys
import numpy as np, yaml
import rashomon

def files(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder))}

results = rashomon.run("jobs/x.yaml")
import ray
stopped = not ray.is_initialized()
analysis = rashomon.analyze(results, epsilon=0.05)
per_example = analysis.per_example()
curves = analysis.curves()
by_lr = rashomon.analyze(results, epsilon=0.05, by="hp_lr")
page = rashomon.report(results, epsilon=0.05, by="hp_lr")

before = files("results/mine/models")
job = yaml.safe_load(open("jobs/x.yaml"))
job["train"]["lr"] = np.float64(0.05)
job["population"]["grid"]["lr"] = np.array([0.03, 0.1])
again = rashomon.run(job, out="results/mine", progress=False)

job["name"] = "search"
job["search"] = {"lr": {"loguniform": [0.01, 0.2]}}
del job["population"]["grid"]
tuned = rashomon.tune(job, 2, out="results/search", progress=False)

np.save("probabilities.npy", results.probabilities("test"))
per_example.to_parquet("per_example.parquet")
curves.epsilon.to_parquet("epsilon.parquet")
curves.model_count.to_parquet("model_count.parquet")
json.dump({
    "stopped": stopped,
    "model_ids": results.model_ids,
    "analysis": analysis.to_dict(),
    "by": by_lr.to_dict(),
    "report": str(page),
    "unchanged": files("results/mine/models") == before and again.models.equals(results.models),
    "trials": len(tuned.trials),
    "trial_numbers": sorted(tuned.results.models["trial"].dropna().unique().tolist()),
    "reprs": [repr(results), repr(analysis), repr(by_lr), repr(tuned)],
    "modules": {name: sys.modules[name].__file__ for name in
                ["rashomon", "rashomon.analysis", "rashomon.jobs", "rashomon.engine.run"]},
}, open("api.json", "w"))
"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The notebook run once from the user's folder; its stderr goes to a log file."""
    root = users_folder(tmp_path_factory.mktemp("user"))
    (root / "jobs" / "x.yaml").write_text(textwrap.dedent(JOB))
    (root / "notebook.py").write_text(textwrap.dedent(NOTEBOOK))
    with open(root / "stderr.log", "wb") as log:
        done = subprocess.run(
            [sys.executable, "notebook.py"],
            cwd=root,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=TIMEOUT,
        )
    log = (root / "stderr.log").read_bytes()
    assert done.returncode == 0, log.decode(errors="replace")[-3000:]
    return root, json.loads((root / "api.json").read_text()), log


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_the_chain_runs_in_the_users_folder_on_rashomons_own_modules(notebook):
    root, data, _ = notebook
    for name, file in data["modules"].items():
        assert not Path(file).resolve().is_relative_to(root.resolve()), (name, file)
    assert data["stopped"]  # the embedded Ray that run() started is gone after it
    assert data["unchanged"]  # the same job as a dict with numpy values: one job, nothing retrained
    assert data["trials"] == 2 and data["trial_numbers"] == [0, 1]


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_probabilities_and_model_ids_agree_with_the_parquet_files(notebook):
    root, data, _ = notebook
    out = root / "results" / "mine"
    models = pd.read_parquet(out / "models")
    ok = sorted(models.loc[models["status"] == "ok", "model_id"])
    assert data["model_ids"] == ok and len(ok) == 8
    predictions = pd.read_parquet(out / "predictions", filters=[("split", "==", "test")])
    wide = predictions.set_index(["model_id", "example_id"]).sort_index()
    n_examples = predictions["example_id"].nunique()
    expected = np.stack(
        [wide.loc[ok, f"prob_{k}"].to_numpy().reshape(len(ok), n_examples) for k in range(3)],
        axis=-1,
    )
    np.testing.assert_array_equal(np.load(root / "probabilities.npy"), expected)


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_analysis_is_what_the_command_prints(notebook):
    root, data, _ = notebook
    for extra, key in (([], "analysis"), (["--by", "hp_lr"], "by")):
        done = rashomon("analyze", "results/mine", "--json", "--epsilon", "0.05", *extra, cwd=root)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == data[key], key
    assert set(data["by"]["by"]) == {"0.03", "0.1"}


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_per_example_means_are_the_set_measures(notebook):
    root, data, _ = notebook
    rows = pd.read_parquet(root / "per_example.parquet")
    examples = pd.read_parquet(root / "results" / "mine" / "examples.parquet")
    test = examples[examples["split"] == "test"].sort_values("example_id")
    assert rows["example_id"].tolist() == test["example_id"].tolist()
    assert rows["label"].tolist() == test["label"].tolist()
    summary = data["analysis"]
    means = {"ambiguous": "ambiguity", "flip_share": "obscurity", "disagreement": "disagreement",
             "vpr": "vpr_mean", "score_std": "score_std_mean",
             "rashomon_capacity": "rashomon_capacity_mean"}  # fmt: skip
    for column, measure in means.items():
        assert rows[column].mean() == pytest.approx(summary[measure], abs=1e-12), column
    assert rows["rashomon_capacity"].max() == pytest.approx(summary["rashomon_capacity_max"])


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_curves_pass_through_the_analysis(notebook):
    root, data, _ = notebook
    summary = data["analysis"]
    epsilon = pd.read_parquet(root / "epsilon.parquet")
    at = epsilon[epsilon["epsilon"] == 0.05].iloc[0]
    assert at["rashomon_set_size"] == summary["rashomon_set_size"]
    assert epsilon["rashomon_set_size"].max() == summary["n_models"]  # the grid reaches them all
    count = pd.read_parquet(root / "model_count.parquet")
    full = count[count["size"] == summary["rashomon_set_size"]].set_index("measure")
    for measure in ("ambiguity", "disagreement", "vpr_mean", "rashomon_capacity_mean"):
        assert at[measure] == pytest.approx(summary[measure], abs=1e-12), measure
        assert full.loc[measure, "mean"] == pytest.approx(summary[measure], abs=1e-12), measure


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_report_and_reprs(notebook):
    root, data, _ = notebook
    page = Path(data["report"])
    assert page.resolve() == (root / "results" / "mine" / "report.html").resolve()
    text = page.read_text()
    assert "<h2>Cohorts by hp_lr</h2>" in text and "<svg" in text
    results, analysis, by_lr, tuned = data["reprs"]
    for shown in data["reprs"]:
        assert len(shown) < 600 and len(shown.splitlines()) <= 6, shown
    assert (
        results.startswith("Results('")
        and results.endswith(
            "/results/mine': 8 models (8 ok), 3 classes, examples 89 train / 44 val / 45 test)"
        )
        is False
    )
    assert "/results/mine': 8 models (8 ok), 3 classes, examples " in results
    assert analysis.startswith("Analysis(Rashomon set of ")
    assert by_lr.startswith("CohortAnalysis(by hp_lr: 2 cohorts")
    assert tuned.startswith("TuneResult(study 'search' in sqlite:///") and "2 complete" in tuned


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_progress_in_a_log_file_is_whole_lines(notebook):
    _, _, log = notebook
    assert b"\r" not in log
    lines = log.decode().splitlines()
    assert "0/8 models (0%)" in lines[0] and "8/8 models (100%)" in lines[1], lines


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_the_quickstart_example_runs_from_a_folder_with_the_users_own_jobs(tmp_path):
    root = users_folder(tmp_path)
    done = subprocess.run(
        [sys.executable, str(REPOSITORY / "examples" / "quickstart.py")],
        cwd=root,
        env=environment(MPLBACKEND=None),
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    assert (root / "quickstart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Cohorts by hp_lr" in (root / "results" / "quickstart" / "report.html").read_text()
    assert b"\r" not in done.stderr


def test_import_is_cheap_and_names_exactly_the_spec_api():
    code = textwrap.dedent(
        """
        import json, sys, rashomon
        heavy = ["torch", "ray", "pandas", "matplotlib", "optuna"]
        first = [m for m in heavy if m in sys.modules]
        rashomon.analyze, rashomon.open_results, rashomon.report
        second = [m for m in heavy if m in sys.modules]
        print(json.dumps([first, second, rashomon.__all__, sorted(set(rashomon.__all__) & set(dir(rashomon)))]))
        """  # noqa: E501
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment(), timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, second, names, listed = json.loads(done.stdout)
    assert first == [] and names == SPEC_NAMES == listed
    assert "torch" not in second and "ray" not in second  # analysis alone needs neither
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        api.nothing  # noqa: B018


def test_signatures_are_the_specs():
    import inspect

    def parameters(function):
        return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]

    empty = inspect.Parameter.empty
    assert parameters(api.run) == [("job", empty), ("out", None), ("address", None),
                                   ("progress", True)]  # fmt: skip
    assert parameters(api.open_results) == [("dir", empty)]
    assert parameters(api.analyze)[:6] == [("results_or_dir", empty), ("epsilon", 0.01),
        ("metric", "val_err"), ("relative", False), ("split", "test"), ("by", None)]  # fmt: skip
    assert parameters(api.tune)[:2] == [("job", empty), ("trials", empty)]
    assert parameters(api.report)[:2] == [("results_or_dir", empty), ("html", None)]
    for function in (api.run, api.open_results, api.analyze, api.tune, api.report):
        assert "Parameters\n    ----------" in function.__doc__, function.__name__


def test_a_job_dict_is_validated_as_the_job_file_is(tmp_path):
    settings = {"name": "x", "dataset": {"source": "wine"}, "train": {"lr": -1, "epochs": "ten"}}
    path = tmp_path / "x.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    with pytest.raises(UserError) as from_file:
        load_job(path)
    with pytest.raises(UserError) as from_dict:
        api.run(settings)  # refused before any Ray starts
    assert str(from_dict.value) == str(from_file.value).replace(str(path), "job dict")
    assert "job dict: train.lr" in str(from_dict.value)
    with pytest.raises(UserError, match=r"job dict: population.grid.lr\[1\]: a set is not a job"):
        api.run({"name": "x", "population": {"grid": {"lr": [0.1, {0.2}]}}})
    with pytest.raises(UserError, match="job: expected the path of a job YAML file or a dict"):
        api.tune(42, trials=1)
    with pytest.raises(UserError, match="no such job file"):
        api.run(tmp_path / "missing.yaml")


def test_results_say_which_models_their_probabilities_hold(tmp_path):
    root = write_results(tmp_path / "run", ["a0", "s1", "m1", "a1"])  # m1 diverged
    results = api.open_results(root)
    assert results.model_ids == ["a0", "a1", "s1"]
    probabilities = results.probabilities("test")
    assert probabilities.shape == (3, 10, 2)
    np.testing.assert_array_equal(probabilities, results.probabilities("test", ["a0", "a1", "s1"]))
    assert repr(results) == (
        f"Results({str(root)!r}: 4 models (3 ok, 1 diverged), 2 classes, examples 10 val / 10 test)"
    )
    analysis = api.analyze(results, epsilon=1.0)
    assert len(repr(analysis).splitlines()) == 3
    assert analysis.per_example()["flip_share"].mean() == pytest.approx(
        analysis.overall["obscurity"]
    )

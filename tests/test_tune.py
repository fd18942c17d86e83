"""`rashomon tune` end to end on a real embedded Ray: cohorts as trials, objectives read back
from the Parquet, a Pareto front, resume after SIGKILL, and bad search specs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from _jobs import write_job

from rashomon.analysis import disagreement, open_results, predicted_classes
from rashomon.engine.cli import main

JOB = """
name: tune
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [8], activation: relu}
train: {epochs: 3, batch_size: 16, optimizer: sgd, lr: 0.05, momentum: 0.9}
population:
  seeds: {init: 2, order: 2, data: 1}
flatness: {enabled: false}
resources: {cpus_per_worker: 1, models_per_pack: 4}
search:
  lr: {loguniform: [0.001, 0.3]}
  hidden: {choice: [[4], [8, 4]]}
  objectives: %s
"""
SEEDS = 4


def load(out: Path, name: str = "tune") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def cohort_values(out: Path, trial: optuna.trial.FrozenTrial) -> tuple[float, float]:
    """(mean val_acc, mean val disagreement) of the cohort with ``trial``'s parameters."""
    models = pd.read_parquet(out / "models")
    hidden = trial.params["hidden"]  # choices of lists are JSON text, as in the models table
    same = models[np.isclose(models["hp_lr"], trial.params["lr"]) & (models["hp_hidden"] == hidden)]
    assert len(same) == SEEDS
    probabilities = open_results(out).probabilities("val", same["model_id"].tolist())
    spread = disagreement(predicted_classes(probabilities), probabilities.shape[-1]).mean()
    return float(same["val_acc"].mean()), float(spread)


@pytest.fixture(scope="module")
def single(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    out = root / "out"
    job = write_job(root, JOB % "[val_acc]")
    assert main(["tune", str(job), "--trials", "8", "--out", str(out), "--quiet"]) == 0
    return out


def test_every_trial_is_a_cohort_whose_models_land_in_the_parquet(single):
    study = load(single)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 8 and len(study.trials) == 8
    models = pd.read_parquet(single / "models")
    assert models["model_id"].is_unique and (models["status"] == "ok").all()
    assert models["trial"].notna().all()
    assert models.groupby("trial").size().eq(SEEDS).all()
    for trial in complete:
        accuracy, _ = cohort_values(single, trial)
        assert trial.value == pytest.approx(accuracy)
    assert study.best_value == max(t.value for t in complete)


def test_a_rerun_with_more_trials_continues_the_study_without_duplicates(single, capsys):
    out = single.parent / "out"
    assert main(["tune", str(single.parent / "job.yaml"), "--trials", "10", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    study = load(out)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 10
    models = pd.read_parquet(out / "models")
    assert models["model_id"].is_unique
    configurations = {(round(t.params["lr"], 12), t.params["hidden"]) for t in study.trials}
    assert len(configurations) == 10, "a resumed sampler must not replay the first run's draws"
    assert "best trial (val_acc)" in capsys.readouterr().out


def test_multi_objective_study_returns_a_pareto_front(ray_cluster, tmp_path, capsys):
    job = write_job(tmp_path, JOB % "[val_acc, disagreement]")
    out = tmp_path / "out"
    assert main(["tune", str(job), "--trials", "8", "--out", str(out), "--quiet"]) == 0
    assert "Pareto front (val_acc, disagreement)" in capsys.readouterr().out
    study = load(out)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    for trial in complete:
        assert trial.values == pytest.approx(cohort_values(out, trial))
    front = study.best_trials
    assert front
    for trial in front:  # nobody dominates a member of the front
        for other in complete:
            better = other.values[0] >= trial.values[0] and other.values[1] <= trial.values[1]
            strictly = other.values[0] > trial.values[0] or other.values[1] < trial.values[1]
            assert not (better and strictly)


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_tune_killed_with_sigkill_resumes_without_duplicate_trials_or_models(ray_cluster, tmp_path):
    job = write_job(tmp_path, JOB % "[val_acc]")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rashomon.engine.cli", "tune", str(job), "--trials", "8",
               "--out", str(out), "--quiet"]  # fmt: skip
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "models").glob("*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = load(out).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(before) < 8, "the kill should land mid-search"
    assert main(["tune", str(job), "--trials", "8", "--out", str(out), "--quiet"]) == 0
    study = load(out)
    states = pd.Series([t.state.name for t in study.trials]).value_counts().to_dict()
    assert states.get("COMPLETE") == 8 and "RUNNING" not in states
    models = pd.read_parquet(out / "models")
    assert models["model_id"].is_unique
    assert not list(out.rglob(".*.tmp"))


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("", "has no search: section to tune"),
        ("search: {lr: {loguniform: [0.1, 0.01]}}", "search.lr.loguniform: needs 0 < low < high"),
        ("search: {lr: {loguniform: [0.001, 0.1]}, objectives: [loss]}", "objectives[0]: must be"),
        (
            "search: {lr: {loguniform: [0.001, 0.1]}, objectives: []}",
            "needs at least one objective",
        ),
        ("search: {momentum: {normal: [0, 1]}}", "search.momentum"),
    ],
)
def test_bad_search_specs_exit_2_with_one_line(tmp_path, capsys, search, message):
    text = JOB.split("search:")[0] + search + "\n"
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text))
    assert main(["tune", str(path), "--trials", "2", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_trials_and_storage_exit_2(tmp_path, capsys):
    job = write_job(tmp_path, JOB % "[val_acc]")
    assert main(["tune", str(job), "--trials", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--trials 0: must be >= 1" in capsys.readouterr().err
    assert main(["tune", str(job), "--trials", "1", "--out", str(tmp_path / "b"),
                 "--storage", "nosuchdb://x"]) == 2  # fmt: skip
    assert "--storage nosuchdb://x: cannot open this Optuna storage" in capsys.readouterr().err


def test_a_journal_file_storage_for_clusters_with_shared_disks(ray_cluster, tmp_path):
    job = write_job(tmp_path, JOB % "[val_acc]")
    journal = tmp_path / "shared" / "study.log"
    journal.parent.mkdir()
    out = tmp_path / "out"
    assert main(["tune", str(job), "--trials", "2", "--out", str(out), "--quiet",
                 "--storage", f"journal:{journal}", "--study", "shared"]) == 0  # fmt: skip
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(
        study_name="shared", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2
    assert not (out / "study.db").exists()


@pytest.mark.slow  # a PostgreSQL server
def test_a_postgresql_storage(ray_cluster, tmp_path, postgres_storage_url):
    job = write_job(tmp_path, JOB % "[val_acc]")
    out = tmp_path / "out"
    assert main(["tune", str(job), "--trials", "3", "--out", str(out), "--quiet",
                 "--storage", postgres_storage_url]) == 0  # fmt: skip
    study = optuna.load_study(study_name="tune", storage=postgres_storage_url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    assert not (out / "study.db").exists()
    assert main(["tune", str(job), "--trials", "4", "--out", str(out), "--quiet",
                 "--storage", postgres_storage_url]) == 0  # fmt: skip
    study = optuna.load_study(study_name="tune", storage=postgres_storage_url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4


def test_analyze_covers_the_searched_population(single, capsys):
    assert main(["analyze", str(single), "--json", "--epsilon", "0.05"]) == 0
    result = json.loads(capsys.readouterr().out)
    models = pd.read_parquet(single / "models")
    assert result["n_models"] == len(models) >= 8 * SEEDS
    assert "lr" in result["source_decomposition"] or "hidden+lr" in result["source_decomposition"]


def test_a_configuration_asked_twice_at_once_is_trained_once(ray_cluster, tmp_path):
    # one choice: every trial is the same cohort, and two are in flight at once (two workers)
    text = JOB.split("search:")[0] + "search: {hidden: {choice: [[4, 4]]}}\n"
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(text))
    out = tmp_path / "out"
    assert main(["tune", str(job), "--trials", "6", "--out", str(out), "--quiet"]) == 0
    study = load(out)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == len(study.trials) == 6
    models = pd.read_parquet(out / "models")
    assert len(models) == SEEDS and models["model_id"].is_unique
    assert len({trial.value for trial in complete}) == 1  # the same cohort, the same score


def test_status_of_a_searched_folder_counts_trials_not_a_negative_pending(single, capsys):
    capsys.readouterr()
    assert main(["status", str(single)]) == 0
    text = capsys.readouterr().out
    models = pd.read_parquet(single / "models")
    assert f"trials   {models['trial'].nunique():>8} (a search has no fixed total)" in text
    assert f"done     {len(models):>8}" in text and "pending" not in text
    assert not re.search(r"\s-\d", text)
    assert main(["analyze", str(single), "--json", "--epsilon", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["n_pending"] == 0

"""What a `rashomon tune` study records for the people who open it (optuna-dashboard,
``trials_dataframe``): the objectives' names, and on every trial its cohort size and results
folder. A real embedded Ray and a real SQLite study."""

from __future__ import annotations

import textwrap

import optuna

from rashomon.engine.cli import main

JOB = """
name: records
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [4], activation: relu}
train: {epochs: 2, batch_size: 16, optimizer: sgd, lr: 0.05}
population:
  seeds: {init: 3, order: 2}
flatness: {enabled: false}
resources: {cpus_per_worker: 1, models_per_pack: 6}
search:
  lr: {loguniform: [0.01, 0.3]}
  objectives: [val_acc, disagreement]
"""


def test_the_study_names_its_objectives_and_each_trial_its_cohort_and_folder(
    ray_cluster, tmp_path, capsys
):
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(JOB))
    out = tmp_path / "out"
    assert main(["tune", str(job), "--trials", "2", "--out", str(out), "--quiet"]) == 0
    study = optuna.load_study(study_name="records", storage=f"sqlite:///{out / 'study.db'}")
    assert study.metric_names == ["val_acc", "disagreement"]
    assert len(study.trials) == 2
    for trial in study.trials:
        assert trial.user_attrs.items() >= {"cohort_size": 3 * 2, "results_dir": str(out)}.items()
        assert set(trial.user_attrs) == {"cohort_size", "results_dir", "rashomon_driver"}
    frame = study.trials_dataframe()
    assert {"values_val_acc", "values_disagreement", "user_attrs_cohort_size"} <= set(frame)
    assert "values_val_acc" in capsys.readouterr().out  # the table `tune` prints

"""`rashomon run` of the new families end to end on Ray: the families job (logistic, mlp and cnn
in one population), a user's module in their own folder (a subprocess, as users start it),
`flatness` rebuilding the module from the results folder alone, resume, an edited module refused,
and bad modules refused before any file is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rashomon.engine.cli import main
from rashomon.jobs import FLATNESS_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
RASHOMON = Path(sys.executable).parent / "rashomon"


def families_job(tmp_path: Path) -> Path:
    """jobs/mnist1d-families.yaml, smaller: three epochs, two seeds, narrow convolutions."""
    job = yaml.safe_load((ROOT / "jobs" / "mnist1d-families.yaml").read_text())
    job["model"] |= {"hidden": [16], "channels": [4, 4]}
    job["train"] |= {"epochs": 3}
    job["population"]["seeds"] = {"init": 2}
    job["flatness"] = {"curvature_examples": 64, "trace_probes": 8, "adaptive_probes": 4}
    path = tmp_path / "families.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_the_families_job_trains_logistic_mlp_and_cnn_in_one_run(ray_cluster, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(families_job(tmp_path)), "--out", str(out), "--quiet"]) == 0
    models = pd.read_parquet(out / "models").set_index("hp_family")
    assert sorted(models.index.value_counts().items()) == [("cnn", 4), ("logistic", 4), ("mlp", 4)]
    assert (models["status"] == "ok").all() and models[FLATNESS_COLUMNS].notna().all().all()
    assert set(models.loc["cnn", "hp_channels"]) == {"[4, 4]"}
    assert set(models.loc["cnn", "hp_kernel"]) == {5}
    assert models.loc[["logistic", "mlp"], ["hp_channels", "hp_kernel"]].isna().all().all()
    assert set(models.loc["logistic", "hp_hidden"]) == {"[]"}
    assert set(models.loc["mlp", "hp_hidden"]) == set(models.loc["cnn", "hp_hidden"]) == {"[16]"}
    accuracy = models.groupby(level=0)["test_acc"].mean()
    assert (accuracy > 0.15).all(), accuracy  # ten classes: every family learnt something
    capsys.readouterr()
    assert main(["analyze", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_models"] == 12
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--html", str(page)]) == 0
    assert "Linear mode connectivity not measured" not in page.read_text()


USER_JOB = """
name: user-module
dataset: {source: digits}
model: {family: module, module: "my_models:SmallResNet", kwargs: {width: 4, blocks: 1}}
train: {epochs: 1, batch_size: 64, optimizer: adam, lr: 0.003}
population: {seeds: {init: 2, order: 2}}
resources: {models_per_pack: 2}
flatness: {curvature_examples: 32, trace_probes: 4, adaptive_probes: 2, eig_iterations: 5}
"""


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A user's folder with their module and job, run with `rashomon run` in a subprocess
    started elsewhere, so only the job's folder can provide the module."""
    root = tmp_path_factory.mktemp("user")
    (root / "project").mkdir()
    shutil.copy(ROOT / "examples" / "my_models.py", root / "project")
    (root / "project" / "job.yaml").write_text(textwrap.dedent(USER_JOB))
    (root / "elsewhere").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(RASHOMON), "run", "../project/job.yaml", "--out", "../out", "--quiet"],
        cwd=root / "elsewhere", env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 models trained (0 diverged, 0 failed, 0 already done) of 4" in done.stdout
    return root


def test_a_users_module_trains_from_its_own_folder(user_run):
    models = pd.read_parquet(user_run / "out" / "models")
    assert (models["status"] == "ok").all() and len(models) == 4
    assert models[FLATNESS_COLUMNS].notna().all().all()
    assert models[["hp_hidden", "hp_activation", "hp_channels"]].isna().all().all()
    recorded = yaml.safe_load((user_run / "out" / "job.yaml").read_text())["model"]
    source = (user_run / "project" / "my_models.py").read_bytes()
    assert recorded["source_sha256"] == __import__("hashlib").sha256(source).hexdigest()


def test_flatness_rebuilds_the_module_from_the_results_folder_alone(user_run, tmp_path, capsys):
    trained = pd.read_parquet(user_run / "out" / "models").set_index("model_id").sort_index()
    copy = shutil.copytree(user_run / "out", tmp_path / "copy")
    os.chdir(tmp_path)  # neither the job's folder nor the module is here
    try:
        assert main(["flatness", str(copy)]) == 0
    finally:
        os.chdir(ROOT)
    again = pd.read_parquet(copy / "models").set_index("model_id").sort_index()
    pd.testing.assert_frame_equal(again[FLATNESS_COLUMNS], trained[FLATNESS_COLUMNS], rtol=1e-6)


def test_resume_retrains_only_what_is_missing_and_an_edited_module_is_refused(
    ray_cluster, user_run, tmp_path, capsys
):
    project, out = user_run / "project", tmp_path / "out"
    shutil.copytree(user_run / "out", out)
    job = str(project / "job.yaml")
    first = sorted((out / "models").glob("*.parquet"))[0]
    predictions = pd.read_parquet(out / "predictions" / first.name)
    first.unlink()
    assert main(["run", job, "--out", str(out), "--quiet"]) == 0
    assert "2 models trained (0 diverged, 0 failed, 2 already done) of 4" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions" / first.name), predictions)

    module = project / "my_models.py"
    original = module.read_text()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    module.write_text(original + "\n# an edit\n")
    try:
        assert main(["run", job, "--out", str(out), "--quiet"]) == 2
    finally:
        module.write_text(original)
    error = capsys.readouterr().err
    assert "holds models of another version of my_models (source sha256" in error
    assert "restore that version of the file, or choose another --out" in error
    assert "Traceback" not in error and error.count("\n") == 1
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"module": "no_such_file:Net"}, "model.module: cannot find the module 'no_such_file' in"),
        ({"module": "_nets:FailsInInit"}, "failed: ValueError: width 8 is too small (at _nets.py"),
        ({"module": "_nets:WrongOutput"}, "forward must return logits of shape (batch, n_classes)"),
        ({"module": "_nets:RandomForward"}, "at layer 'drop' (Dropout): it draws random numbers"),
    ],
)
def test_a_bad_module_exits_2_before_anything_is_written(tmp_path, capsys, model, expected):
    shutil.copy(Path(__file__).parent / "_nets.py", tmp_path)
    job = {
        "name": "bad",
        "dataset": {"source": "wine"},
        "model": {"family": "module"} | model,
        "population": {"seeds": 1},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "job.yaml"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error and error.count("\n") == 1
    assert not out.exists()


def test_a_users_module_reaches_every_model_from_a_subfolder_package(ray_cluster, tmp_path):
    """`module: "nets.vision:Net"` in a package next to the job; its __init__ is not needed
    to hash the module, only to import it on the workers."""
    package = tmp_path / "nets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "vision.py").write_text(
        (ROOT / "examples" / "my_models.py").read_text().replace("SmallResNet", "Net")
    )
    job = yaml.safe_load(textwrap.dedent(USER_JOB))
    job["model"]["module"] = "nets.vision:Net"
    job["flatness"] = {"enabled": False}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    models = pd.read_parquet(tmp_path / "out" / "models")
    assert (models["status"] == "ok").all() and len(models) == 4
    assert np.isfinite(models["test_loss"]).all()

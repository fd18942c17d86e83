"""`rashomon run` end to end on a real embedded Ray: output schema, resume, refusal of a
different job, determinism, and a driver killed with SIGKILL that resumes without loss."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from _jobs import tiny_job, write_job
from safetensors import safe_open

from rashomon.engine.cli import main
from rashomon.jobs import FLATNESS_COLUMNS

# with flatness statistics, and half of the models diverged
JOB = tiny_job(
    population={
        "seeds": {"init": 3, "order": 2, "data": 2},
        "grid": {"lr": [0.05, 1000000.0], "dropout": [0.0, 0.3]},
    },
    resources={"models_per_pack": 5},
    flatness=None,
)
N_MODELS = 3 * 2 * 2 * 2 * 2


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    job = write_job(root, JOB)
    out = root / "out"
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    return job, out


def test_run_writes_every_model_once_with_the_spec_schema(finished_run):
    _, out = finished_run
    models = pd.read_parquet(out / "models")
    assert len(models) == N_MODELS and models["model_id"].is_unique
    for column in ["model_id", "pack_id", "init_seed", "order_seed", "data_seed", "trial",
                   "hp_lr", "hp_dropout", "train_loss", "train_acc", "val_loss", "val_acc",
                   "test_loss", "test_acc", "train_seconds", "status"]:  # fmt: skip
        assert column in models.columns
    assert models["trial"].isna().all()
    exploded = models["hp_lr"] == 1e6
    assert (models.loc[exploded, "status"] == "diverged").all()
    assert (models.loc[~exploded, "status"] == "ok").all()
    assert models.loc[~exploded, "test_acc"].min() > 0.7
    assert len(list((out / "models").glob("*.parquet"))) == models["pack_id"].nunique()


def test_predictions_load_into_a_models_by_examples_by_classes_array(finished_run):
    _, out = finished_run
    examples = pd.read_parquet(out / "examples.parquet")
    test_ids = examples.loc[examples["split"] == "test", "example_id"].to_numpy()
    predictions = pd.read_parquet(out / "predictions", filters=[("split", "==", "test")])
    assert set(predictions["split"]) == {"test"}
    n_models = predictions["model_id"].nunique()
    assert n_models == N_MODELS and len(predictions) == n_models * len(test_ids)
    per_model = predictions["example_id"].to_numpy().reshape(n_models, -1)
    assert (per_model == test_ids).all()  # contiguous rows per model, in example_id order
    probs = predictions[["prob_0", "prob_1", "prob_2"]].to_numpy().reshape(n_models, -1, 3)
    ok = predictions.groupby("model_id", sort=False)["pred"].first().index
    models = pd.read_parquet(out / "models").set_index("model_id").loc[ok]
    healthy = (models["status"] == "ok").to_numpy()
    assert np.allclose(probs[healthy].sum(-1), 1, atol=1e-5)
    assert (predictions["pred"].to_numpy().reshape(n_models, -1)[healthy]
            == probs[healthy].argmax(-1)).all()  # fmt: skip


def test_examples_and_job_files_describe_the_run(finished_run):
    _, out = finished_run
    examples = pq.read_table(out / "examples.parquet")
    assert examples.column_names[:3] == ["example_id", "split", "label"]
    assert examples.num_rows == 178
    assert (out / "job.yaml").read_text().startswith("# job_hash: ")


def test_weights_are_safetensors_stacked_per_pack(finished_run):
    _, out = finished_run
    models = pd.read_parquet(out / "models")
    pack_id = models["pack_id"].iloc[0]
    with safe_open(str(out / "weights" / f"{pack_id}.safetensors"), "pt") as f:
        first = f.get_tensor("layers.0.weight")
        assert first.shape == ((models["pack_id"] == pack_id).sum(), 13, 8)


def test_rerun_trains_nothing_and_changes_no_file(finished_run, capsys):
    job, out = finished_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    assert f"0 models trained (0 diverged, 0 failed, {N_MODELS} already done)" in (
        capsys.readouterr().out
    )
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}


def test_a_different_job_is_refused_and_the_results_stay_intact(finished_run, tmp_path, capsys):
    _, out = finished_run
    other = write_job(tmp_path, JOB.replace("epochs: 3", "epochs: 4"))
    before = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    assert main(["run", str(other), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "different job" in error and "Traceback" not in error
    assert before == {p: p.read_bytes() for p in out.rglob("*.parquet")}


def test_same_job_twice_gives_bitwise_identical_predictions(finished_run, tmp_path, capsys):
    job, out = finished_run
    again = tmp_path / "again"
    assert main(["run", str(job), "--out", str(again), "--quiet"]) == 0
    _says_where_the_time_went(capsys.readouterr().out)
    columns = ["model_id", "example_id", "split", "prob_0", "prob_1", "prob_2"]
    first = pd.read_parquet(out / "predictions", columns=columns)
    second = pd.read_parquet(again / "predictions", columns=columns)
    order = ["split", "model_id", "example_id"]
    first = first.sort_values(order).reset_index(drop=True)
    second = second.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def _says_where_the_time_went(output: str) -> None:
    """The run's last line: its wall time by stage (adding up to the total), and the trainers'
    seconds in each phase of their packs."""
    total, stages, busy, phases = re.search(
        r"^time: ([\d.]+) s = (.+) s; trainers \(2\) busy ([\d.]+) s: (.+) s$", output, re.M
    ).groups()
    stages = dict(re.fullmatch(r"(.+) ([\d.]+)", x).groups() for x in stages.split(" + "))
    assert list(stages) == ["folder and dataset", "Ray start", "plan", "trainers and packs",
                            "finish"]  # fmt: skip
    assert abs(sum(map(float, stages.values())) - float(total)) <= 0.05 * len(stages)
    phases = dict(re.fullmatch(r"(.+) ([\d.]+)", x).groups() for x in phases.split(", "))
    assert set(phases) == {"training", "evaluation", "flatness", "output"}
    assert abs(sum(map(float, phases.values())) - float(busy)) <= 0.05 * len(phases)
    assert float(phases["training"]) > 0


def test_status_counts_done_and_diverged(finished_run, capsys):
    _, out = finished_run
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"done     {N_MODELS:>8} ({N_MODELS // 2} ok, {N_MODELS // 2} diverged)" in text
    assert "pending         0" in text


def test_analyze_and_report_cover_the_trained_population(finished_run, capsys, tmp_path):
    _, out = finished_run
    assert main(["analyze", str(out), "--json", "--epsilon", "0.05"]) == 0
    result = json.loads(capsys.readouterr().out)
    models = pd.read_parquet(out / "models")
    assert result["n_models"] == (models["status"] == "ok").sum() == N_MODELS // 2
    assert result["excluded_models"] == {"diverged": N_MODELS // 2}
    assert 1 <= result["rashomon_set_size"] <= result["n_models"]
    assert (
        result["n_examples"] == (pd.read_parquet(out / "examples.parquet")["split"] == "test").sum()
    )
    assert set(result["source_decomposition"]) >= {"init", "order", "data", "remainder"}
    assert 1 <= result["rashomon_capacity_mean"] <= result["rashomon_capacity_max"] <= 3
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--epsilon", "0.05", "--html", str(page)]) == 0
    text = page.read_text()
    # + flatness, learning curves, simplicity, connectivity (sharpness was not tracked)
    assert text.count("<svg") == 9 and "pool-based" in text
    assert not re.search(r"(src|href)=\"(https?:)?//|url\([^#]", text)  # nothing fetched


def test_flatness_recomputes_the_statistics_from_saved_weights(finished_run, tmp_path, capsys):
    _, out = finished_run
    copy = shutil.copytree(out, tmp_path / "copy")
    trained = pd.read_parquet(out / "models").set_index("model_id").sort_index()
    ok = trained["status"] == "ok"
    assert trained.loc[ok, FLATNESS_COLUMNS].notna().all().all()
    assert trained.loc[~ok, FLATNESS_COLUMNS].isna().all().all()
    assert main(["flatness", str(copy)]) == 0
    again = pd.read_parquet(copy / "models").set_index("model_id").sort_index()
    pd.testing.assert_frame_equal(again[FLATNESS_COLUMNS], trained[FLATNESS_COLUMNS], rtol=1e-6)
    assert main(["flatness", str(copy), "--set", "trace_probes=8", "--set", "avg_sigma=0.1"]) == 0
    changed = pd.read_parquet(copy / "models").set_index("model_id").sort_index()
    assert not np.allclose(changed.loc[ok, "hessian_trace"], trained.loc[ok, "hessian_trace"])
    pd.testing.assert_series_equal(changed["weight_norm"], trained["weight_norm"], rtol=1e-6)
    pd.testing.assert_frame_equal(
        changed.drop(columns=FLATNESS_COLUMNS), trained.drop(columns=FLATNESS_COLUMNS)
    )
    capsys.readouterr()
    bad_settings = [
        ("bogus=1", "--set bogus: not a flatness setting"),
        ("trace_probes=1", "--set trace_probes:"),
        ("trace_probes", "KEY=VALUE"),
    ]
    for bad, message in bad_settings:
        assert main(["flatness", str(copy), "--set", bad]) == 2
        assert message in capsys.readouterr().err
    pd.testing.assert_frame_equal(
        pd.read_parquet(copy / "models").set_index("model_id").sort_index(), changed
    )


def test_an_interrupted_flatness_recompute_continues_where_it_stopped(finished_run, tmp_path):
    """Each pack's models file is rewritten whole, with the settings it was measured with: run
    again after an interruption (one pack still as trained), only that pack is measured."""
    _, out = finished_run
    copy = shutil.copytree(out, tmp_path / "copy")
    trained = {p.name: p.read_bytes() for p in (copy / "models").glob("*.parquet")}
    assert main(["flatness", str(copy), "--set", "trace_probes=8", "--quiet"]) == 0
    first = pd.read_parquet(copy / "models").set_index("model_id").sort_index()
    victim = sorted(trained)[0]
    (copy / "models" / victim).write_bytes(trained[victim])  # not reached before the stop
    stamps = {p.name: p.stat().st_mtime_ns for p in (copy / "models").glob("*.parquet")}
    assert main(["flatness", str(copy), "--set", "trace_probes=8", "--quiet"]) == 0
    rewritten = {
        p.name
        for p in (copy / "models").glob("*.parquet")
        if p.stat().st_mtime_ns != stamps[p.name]
    }
    assert rewritten == {victim}
    again = pd.read_parquet(copy / "models").set_index("model_id").sort_index()
    pd.testing.assert_frame_equal(again, first)


def test_flatness_of_a_pack_without_weights_stops_with_one_line(finished_run, tmp_path, capsys):
    """A trainer's user error (here: a pack's weights are gone) ends the recompute at once,
    in one line, as the driver's would."""
    _, out = finished_run
    copy = shutil.copytree(out, tmp_path / "copy")
    victim = sorted((copy / "weights").glob("*.safetensors"))[0]
    victim.unlink()
    capsys.readouterr()
    assert main(["flatness", str(copy), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert f"no saved weights for pack {victim.stem}" in error
    assert "Traceback" not in error and len(error.splitlines()) == 1


def test_bad_job_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    job = write_job(tmp_path, JOB.replace("epochs: 3", "epochs: -3"))
    assert main(["run", str(job), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "train.epochs" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def _pack_files(out: Path) -> list[Path]:
    folder = out / "models"
    return list(folder.glob("*.parquet")) if folder.exists() else []


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_driver_killed_with_sigkill_resumes_with_every_model_exactly_once(ray_cluster, tmp_path):
    job = write_job(tmp_path, JOB.replace("epochs: 3", "epochs: 60"))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "rashomon.engine.cli",
        "run",
        str(job),
        "--out",
        str(out),
        "--quiet",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(command, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while len(_pack_files(out)) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished_before = len(_pack_files(out))
    assert 0 < finished_before < N_MODELS / 5, "the kill should land mid-run"
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    models = pd.read_parquet(out / "models")
    assert len(models) == N_MODELS and models["model_id"].is_unique
    predictions = pd.read_parquet(out / "predictions", columns=["model_id", "split"])
    assert predictions.groupby("split")["model_id"].nunique().to_dict() == {
        "test": N_MODELS,
        "val": N_MODELS,
    }
    assert not list(out.rglob(".*.tmp"))


def test_failed_models_are_reported_and_only_they_are_trained_again(finished_run, tmp_path, capsys):
    from rashomon.engine.run import RunContext
    from rashomon.engine.run._plan import plan_packs
    from rashomon.engine.store import models_table
    from rashomon.jobs import expand, load_job

    job_file, out = finished_run
    job = load_job(job_file)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    context = RunContext.for_job(job, copy)
    results = context.results
    victim_pack = pd.read_parquet(copy / "models")["pack_id"].iloc[0]
    for folder in ("models", "predictions"):
        (copy / folder / f"{victim_pack}.parquet").unlink()
    (copy / "weights" / f"{victim_pack}.safetensors").unlink()
    pending = context.pending().variants
    [pack] = plan_packs(pending, job.train, len(pending), 13, 3)
    failed = models_table(
        pack.columns() | {"status": ["failed"] * len(pack), "error": ["boom"] * len(pack)}
    )
    results.write_pack(pack.pack_id, failed)

    assert main(["status", str(copy)]) == 1
    text = capsys.readouterr().out
    assert f"failed   {len(pack):>8}" in text and f"pack {pack.pack_id}" in text and "boom" in text
    still = context.pending()
    assert {v.model_id for v in still.variants} == {m.model_id for m in pack.models}
    assert still.failed_packs == {pack.pack_id} and still.total == len(expand(job))

    assert main(["run", str(job_file), "--out", str(copy), "--quiet"]) == 0
    assert f"{len(pack)} models trained" in capsys.readouterr().out
    models = pd.read_parquet(copy / "models")
    assert len(models) == N_MODELS and models["model_id"].is_unique
    assert set(models["status"]) == {"ok", "diverged"}
    rewritten = pd.read_parquet(copy / "models" / f"{pack.pack_id}.parquet")
    assert rewritten["error"].isna().all()

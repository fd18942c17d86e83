"""`rashomon run --dry-run`: the plan and a wall-time estimate timed on this machine.

No test asserts an absolute time: the machine is shared and of unknown speed. The estimate is
checked for what it prints, for growing with the work it describes, and for writing nothing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rashomon.engine.cli import main
from rashomon.engine.run import _dry_run
from rashomon.engine.run._dry_run import _makespan, estimate_compute, summarise_plan
from rashomon.jobs import load_job, prepare_job_dataset

JOB = """
name: sizing
dataset: {{source: wine, split: {{val: 0.25, test: 0.25, seed: 1}}}}
model: {{family: mlp, hidden: [32], activation: relu}}
train: {{epochs: {epochs}, batch_size: 16, optimizer: sgd, lr: 0.05, momentum: 0.9}}
population:
  seeds: {{init: 4, order: 2, data: 2}}
  grid: {{lr: [0.05, 0.1]{extra_grid}}}
flatness: {flatness}
resources: {{cpus_per_worker: 1, gpus_per_worker: {gpus}}}
"""
SMALL_FLATNESS = "{curvature_examples: 32, trace_probes: 4, adaptive_probes: 2, eig_iterations: 3}"


def write_job(
    tmp_path: Path,
    epochs: int = 20,
    flatness: str = "{enabled: false}",
    gpus: int = 0,
    extra_grid: str = "",
) -> Path:
    text = JOB.format(epochs=epochs, flatness=flatness, gpus=gpus, extra_grid=extra_grid)
    path = tmp_path / f"job-{epochs}-{gpus}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def test_dry_run_prints_compute_wall_time_and_what_it_includes(tmp_path, capsys):
    job = write_job(tmp_path, flatness=SMALL_FLATNESS)
    assert main(["run", str(job), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "32 models, 32 to train" in text and "estimated output" in text
    assert "worker-hours on workers like this machine's (cpu, 1 torch thread each)" in text
    assert "models per worker-hour" in text
    assert "includes flatness statistics and output serialisation" in text
    assert "estimated wall time:" in text and "with the" in text and "local workers" in text
    assert "per node of" in text and "divide by the number of nodes" in text
    assert "1 of 1 pack kinds timed on this machine" in text
    assert "note:" not in text


def test_the_estimate_scales_each_part_with_the_work_it_grows_with(tmp_path, monkeypatch):
    """With the per-model costs fixed (no timing), training doubles with the epochs and the
    evaluation, flatness and output parts do not change."""
    cost = _dry_run.ModelCost(
        step=1e-3, example=1e-5, prediction_row=1e-6, flatness=0.1, record=0.01
    )
    monkeypatch.setattr(
        _dry_run,
        "_time_kinds",
        lambda job, dataset, plan, order, *_: ({k: cost for k in order}, [8]),
    )
    parts = {}
    for epochs in (20, 40):
        job = load_job(write_job(tmp_path, epochs=epochs))
        dataset = prepare_job_dataset(job)
        parts[epochs] = estimate_compute(job, dataset, summarise_plan(job, dataset, tmp_path)).parts
    assert parts[40]["training"] == pytest.approx(2 * parts[20]["training"])
    for name in ("evaluation", "flatness", "output"):
        assert parts[40][name] == pytest.approx(parts[20][name])
    n_train = len(dataset.indices("train"))
    assert parts[20]["training"] == pytest.approx(32 * 20 * -(-n_train // 16) * 1e-3)


def test_a_dry_run_writes_nothing(tmp_path, monkeypatch, capsys):
    job = write_job(tmp_path, flatness=SMALL_FLATNESS)
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    before = files_under(tmp_path)
    for out in (tmp_path / "never", empty):
        assert main(["run", str(job), "--out", str(out), "--dry-run"]) == 0
    assert "estimated wall time" in capsys.readouterr().out
    assert files_under(tmp_path) == before


def test_a_job_asking_for_gpus_says_where_it_was_calibrated(tmp_path, capsys):
    job = write_job(tmp_path, gpus=1)
    assert main(["run", str(job), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "note: the job asks for 1 GPU per worker" in text
    import torch

    if torch.cuda.is_available():
        assert "calibrated on this machine's GPU" in text
    else:
        assert "no CUDA device" in text and "a GPU worker will differ" in text


def test_pack_kinds_past_the_budget_are_scaled_from_a_timed_one(tmp_path, monkeypatch):
    monkeypatch.setattr(_dry_run, "CALIBRATION_BUDGET_SECONDS", 0.0)
    job = load_job(write_job(tmp_path, extra_grid=", hidden: [[8], [64, 64]]"))
    dataset = prepare_job_dataset(job)
    estimate = estimate_compute(job, dataset, summarise_plan(job, dataset, tmp_path / "out"))
    assert (estimate.timed_kinds, estimate.kinds) == (1, 2)
    assert estimate.parts["training"] > 0 and estimate.parts["flatness"] == 0
    lines = _dry_run.describe_estimate(job, estimate, workers=2)
    assert "1 of 2 pack kinds timed" in lines[3] and "scaled by their FLOPs" in lines[3]


@pytest.mark.parametrize(
    ("packs", "workers", "wall"),
    [([1.0, 1.0, 1.0], 2, 2.0), ([3.0, 1.0, 1.0, 1.0], 2, 3.0), ([2.0, 2.0], 4, 2.0)],
)
def test_wall_time_deals_packs_in_plan_order_to_the_first_free_worker(packs, workers, wall):
    assert _makespan(packs, workers) == wall

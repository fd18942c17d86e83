"""`rashomon run --dry-run`: the population counted by kind without expanding it, the packs as
the run plans them, and a compute estimate timed on the trainers.

No test asserts a time: the machine is shared and of unknown speed. The estimate is checked for
what it prints, its plan against the run's own planner, its counts against the expansion, the
bounded work of the packs it times, and for writing nothing.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import Counter
from pathlib import Path

import pytest
from _jobs import tiny_job, write_job

from rashomon.engine.cli import main
from rashomon.engine.model import build_family
from rashomon.engine.run import RunContext, estimate
from rashomon.engine.run._dry_run import (
    CALIBRATION_FLOPS,
    FLATNESS_FLOPS,
    _makespan,
    _passes,
    _timing,
)
from rashomon.engine.run._kinds import SAMPLE, Kind, census
from rashomon.engine.run._plan import pack_settings, plan_packs
from rashomon.engine.store import models_table
from rashomon.jobs import count_models, expand, load_job

SMALL_FLATNESS = {
    "enabled": True,
    "curvature_examples": 32,
    "trace_probes": 4,
    "adaptive_probes": 2,
    "eig_iterations": 3,
}
# kinds of every sort: two architectures, two batch sizes, with and without dropout
MIXED = {
    "population": {
        "seeds": {"init": 3, "order": 2},
        "grid": {
            "hidden": [[8], [16, 8]],
            "batch_size": [16, 32],
            "dropout": [0.0, 0.2],
            "lr": [0.05, 0.1, 0.2],
        },
    },
    "resources": {"cpus_per_worker": 1, "models_per_pack": "auto"},
}


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def oracle(job) -> Counter:
    """Models per kind, from the expansion."""
    module = job.module_reference()
    return Counter(
        Kind(pack_settings(v.hparams, job.train, module), bool(v.hparams["dropout"]))
        for v in expand(job)
    )


@pytest.fixture(scope="module")
def printed(ray_cluster, tmp_path_factory):
    """The tiny job's dry run from its folder, into a folder that does not exist and into an
    empty one: what it printed, and whether any file changed."""
    root = tmp_path_factory.mktemp("dry")
    job = write_job(root, tiny_job(flatness=SMALL_FLATNESS))
    (root / "empty").mkdir()
    before = {p: p.stat().st_mtime_ns for p in files_under(root)}
    texts, cwd = [], os.getcwd()
    os.chdir(root)  # nothing in the working directory either
    try:
        for out in (root / "never", root / "empty"):
            with contextlib.redirect_stdout(io.StringIO()) as stdout:
                assert main(["run", str(job), "--out", str(out), "--dry-run"]) == 0
            texts.append(stdout.getvalue())
    finally:
        os.chdir(cwd)
    return texts, before == {p: p.stat().st_mtime_ns for p in files_under(root)}


def test_dry_run_prints_the_plan_the_compute_and_the_start_up(printed):
    texts, _ = printed
    for text in texts:
        assert "job tiny: 12 models, 12 to train, 0 done" in text
        assert "packs: 3 (models per pack 4-4, 1 distinct architectures/settings)" in text
        assert "estimated output" in text and "weights 6.7 KB" in text  # 12 x 139 float32
        assert "worker-hours on workers like this machine's (cpu, 1 torch thread each)" in text
        assert "includes flatness statistics and writing its output" in text
        assert "estimated wall time:" in text and "with the 2 local workers" in text
        assert "of which start-up" in text and "(Ray " in text and "trainers " in text
        assert "1 of 1 pack kinds timed on this machine's trainers, up to 4 models per" in text
        assert "note:" not in text and "huge model" not in text and "read off" not in text


def test_a_dry_run_writes_nothing(printed):
    _, unchanged = printed
    assert unchanged


def test_the_plan_is_the_runs_plan_and_every_phase_is_measured(ray_cluster, tmp_path):
    """Packs, their sizes and the weights' bytes as `plan_packs` makes them from the whole
    expansion, for the workers the estimate planned for; the four most-worked kinds timed."""
    job = load_job(write_job(tmp_path, tiny_job(flatness=SMALL_FLATNESS, **MIXED)))
    found = estimate(job, tmp_path / "out")
    dataset = RunContext.for_job(job, tmp_path / "out").dataset
    packs = plan_packs(expand(job), job.train, "auto", 13, 3, n_workers=found.workers)
    assert (found.total, found.pending) == (144, 144)
    assert found.packs == len(packs) and found.settings == len({p.settings for p in packs})
    assert found.pack_sizes == (min(map(len, packs)), max(map(len, packs)))
    weights = sum(
        len(p) * build_family(p.settings, dataset.example_shape, 3).n_parameters * 4 for p in packs
    )
    assert found.output["weights"] == weights
    compute = found.compute
    assert (compute.timed, compute.kinds) == (4, 8)
    assert all(seconds > 0 for seconds in compute.parts.values())
    assert set(compute.startup) == {"Ray", "trainers"}
    assert compute.wall_seconds > sum(compute.startup.values())


def test_a_census_of_a_grid_and_sample_equals_the_expansion():
    """Exact counts by kind, in the order each kind first appears, with structural axes,
    dropout, a per-model axis and sampled per-model hyperparameters."""
    sample = {"n": 3, "seed": 1, "momentum": {"uniform": [0.5, 0.9]}}
    grid = {"family": ["mlp", "logistic"], "dropout": [0.0, 0.1]}
    grid |= {"weight_decay": [0.0, 0.01], "epochs": [2, 3]}
    text = tiny_job(population={"grid": grid, "sample": sample})
    job = load_job_text(text)
    found = census(job)
    expected = oracle(job)
    assert found.sampled is None and found.models == count_models(job) == 576
    assert {kind: count.models for kind, count in found.kinds.items()} == expected
    assert list(found.kinds) == list(expected)  # Counter keeps the order of first appearance


def test_a_census_of_ten_million_seeds_on_a_huge_grid_expands_nothing():
    """``seeds: 10000000`` on a grid of 6·10⁸ configurations (6·10¹⁵ models, 400 kinds): the
    counts come from arithmetic, in a few megabytes."""
    import tracemalloc

    values = [0.001 * (i + 1) for i in range(100)]
    grid = {name: values for name in ("lr", "momentum", "weight_decay")}
    grid |= {"dropout": [0.0, 0.1, 0.2], "hidden": [[8], [16]], "epochs": list(range(1, 101))}
    job = load_job_text(tiny_job(population={"seeds": 10_000_000, "grid": grid}))
    tracemalloc.start()
    found = census(job)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found.models == count_models(job) == 10**7 * 100**4 * 3 * 2
    assert len(found.kinds) == 2 * 100 * 2  # hidden x epochs x (dropout or not)
    assert {count.models for count in found.kinds.values()} == {
        10**7 * 100**3,  # no dropout
        2 * 10**7 * 100**3,  # dropout 0.1 or 0.2
    }
    assert peak < 50 * 2**20


def test_sampled_structure_is_counted_from_a_sample_spread_over_the_population():
    """Batch sizes drawn by the sample: exact below `SAMPLE` models, then shares read off
    `SAMPLE` of them (each within 1% of the population's)."""
    sample = {"n": 2, "seed": 3, "batch_size": {"choice": [16, 32]}}
    sample |= {"momentum": {"uniform": [0.5, 0.9]}}
    small = load_job_text(tiny_job(population={"sample": sample}))
    assert census(small).sampled is None
    assert {k: c.models for k, c in census(small).kinds.items()} == oracle(small)
    sample = {"n": 2000, "seed": 3, "batch_size": {"int": [8, 64]}, "lr": {"uniform": [0.01, 1]}}
    large = load_job_text(tiny_job(population={"sample": sample, "grid": None}))
    found = census(large)
    assert found.sampled == SAMPLE and found.models == count_models(large) == 12_000
    expected = oracle(large)
    assert set(found.kinds) == set(expected)
    for kind, count in found.kinds.items():
        assert abs(count.models - expected[kind]) <= 0.01 * 12_000


def test_a_resumed_folder_plans_only_its_unfinished_models(ray_cluster, tmp_path):
    """Two packs finished (ok and diverged), one failed, a search trial's models: the plan is
    the run's own plan of what it would train."""
    job = load_job(write_job(tmp_path, tiny_job(**MIXED)))
    context = RunContext.for_job(job, tmp_path / "out")
    with context.writing("test"):
        packs = plan_packs(expand(job), job.train, 4, 13, 3)
        for pack, status in zip(packs, ["ok", "diverged", "failed"], strict=False):
            columns = pack.columns() | {"status": [status] * len(pack)}
            context.results.write_pack(pack.pack_id, models_table(columns))
    found = estimate(job, tmp_path / "out")
    pending = context.pending().variants
    assert (found.total, found.pending) == (144, len(pending)) == (144, 136)
    planned = plan_packs(pending, job.train, "auto", 13, 3, n_workers=found.workers)
    assert found.packs == len(planned)
    assert found.pack_sizes == (min(map(len, planned)), max(map(len, planned)))


def test_nothing_left_to_train_is_said_without_starting_anything(tmp_path, capsys):
    job = load_job(write_job(tmp_path))
    context = RunContext.for_job(job, tmp_path / "out")
    with context.writing("test"):
        for pack in plan_packs(expand(job), job.train, 4, 13, 3):
            columns = pack.columns() | {"status": ["ok"] * len(pack)}
            context.results.write_pack(pack.pack_id, models_table(columns))
    before = {p: p.stat().st_mtime_ns for p in files_under(tmp_path)}
    command = ["run", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "out"), "--dry-run"]
    assert main(command) == 0
    text = capsys.readouterr().out
    assert "12 models, 0 to train, 12 done" in text and "packs: 0" in text
    assert "estimated compute" not in text
    assert {p: p.stat().st_mtime_ns for p in files_under(tmp_path)} == before


def test_a_folder_of_another_job_is_refused_as_the_run_refuses_it(tmp_path, capsys):
    job = load_job(write_job(tmp_path))
    with RunContext.for_job(job, tmp_path / "out").writing("test"):
        pass
    other = write_job(tmp_path, tiny_job(train={"epochs": 4}), "other.yaml")
    assert main(["run", str(other), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "holds the results of a different job" in error and len(error.splitlines()) == 1


def test_a_job_asking_for_gpus_says_where_it_was_calibrated(ray_cluster, tmp_path, capsys):
    job = write_job(tmp_path, tiny_job(resources={"gpus_per_worker": 1}))
    assert main(["run", str(job), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "note: the job asks for 1 GPU per worker" in text
    import torch

    if torch.cuda.is_available():
        assert "calibrated on this machine's GPU" in text
    else:
        assert "no CUDA device" in text and "a GPU worker will differ" in text


@pytest.mark.parametrize("hidden", [[100_000], [4096, 4096, 4096]])
def test_a_huge_model_is_timed_on_a_bounded_part_of_its_work(tmp_path, hidden):
    """`hidden: [100000]` or 34 M parameters: fewer models, flatness probes and curvature
    examples (and a slice of the minibatch), each phase within its FLOPs budget, and said to be
    scaled; the tiny job's pack is timed whole."""
    text = tiny_job(model={"hidden": hidden}, flatness={"enabled": True})
    job = load_job(write_job(tmp_path, text))
    context = RunContext.for_job(job, tmp_path / "out")
    [(kind, count)] = census(job).kinds.items()
    task, work, sliced = _timing(context, kind, count.hparams, planned=4, index=0)
    pack, _, flatness = task.args
    models = len(pack)
    assert sliced and models == (4 if len(hidden) == 1 else 1)
    assert pack.settings.batch_size == (16 if len(hidden) == 1 else 12)
    assert models * work["training"] <= CALIBRATION_FLOPS * 1.01
    assert models * work["flatness"] <= FLATNESS_FLOPS * 1.01
    assert flatness.trace_probes < 64 and _passes(flatness) < _passes(context_flatness(job))
    tiny = load_job(write_job(tmp_path, tiny_job(flatness={"enabled": True}), "tiny.yaml"))
    context = RunContext.for_job(tiny, tmp_path / "tiny")
    [(kind, count)] = census(tiny).kinds.items()
    task, _, sliced = _timing(context, kind, count.hparams, planned=4, index=0)
    assert len(task.pack) == 4 and not sliced


def context_flatness(job):
    from rashomon.engine.model import FlatnessSettings

    return FlatnessSettings.from_config(job.flatness)


@pytest.mark.parametrize(
    ("packs", "workers", "wall"),
    [
        ([(1.0, 3)], 2, 2.0),
        ([(3.0, 1), (1.0, 3)], 2, 3.0),
        ([(2.0, 2)], 4, 2.0),
        ([(1.0, 200_000)], 3, 200_000 / 3 + 1),  # past the simulation: the bound
    ],
)
def test_wall_time_deals_packs_in_plan_order_to_the_first_free_worker(packs, workers, wall):
    assert _makespan(packs, workers) == pytest.approx(wall)
    if sum(count for _, count in packs) < 1000:
        assert _makespan(packs, workers) >= math.fsum(s * c for s, c in packs) / workers


def load_job_text(text: str):
    from rashomon.jobs import load_job_text as load

    return load(text, "job.yaml")

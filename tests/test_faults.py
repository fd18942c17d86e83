"""Fault injection on a multi-node Ray cluster on one machine (issue #6): a worker node lost
for good mid-run, a trainer actor killed mid-pack, a trainer that can never be placed, no room
for any trainer, a pack that always fails, and a driver killed with SIGKILL. Every run must end
with each model recorded exactly once and, where it finishes, with the same predictions as an
undisturbed run (the trainer is deterministic)."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pytest
from _jobs import tiny_job, write_job

from rashomon.engine.cli import main
from rashomon.engine.run import _scheduler, run_job
from rashomon.engine.run._scheduler import MAX_ATTEMPTS, PackScheduler
from rashomon.jobs import UserError, expand, load_job

pytestmark = pytest.mark.slow  # a multi-node cluster

JOB = tiny_job(
    name="faults",
    train={"epochs": 40},
    population={"seeds": {"init": 3, "order": 2, "data": 2}},
    resources={"models_per_pack": 2},
)
N_MODELS = 3 * 2 * 2 * 2
N_PACKS = N_MODELS // 2
PREDICTION_COLUMNS = ["model_id", "example_id", "split", "prob_0", "prob_1", "prob_2"]
DEADLINE = 240  # seconds for any one wait; a run here takes a few seconds
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes (1 CPU each) on loopback; the test process is the driver."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared Ray of other modules, if it runs: the driver joins this one
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def ensure_three_nodes(cluster) -> None:
    """Bring the cluster back to head + 2 workers (a test may have removed one)."""
    import ray

    while len(cluster.worker_nodes) < 2:
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    deadline = time.monotonic() + DEADLINE
    while ray.is_initialized() and ray.cluster_resources().get("CPU", 0) < 3:
        assert time.monotonic() < deadline, "the cluster did not come back to 3 CPUs"
        time.sleep(0.1)


def pack_files(out: Path) -> list[Path]:
    folder = out / "models"
    return list(folder.glob("*.parquet")) if folder.exists() else []


def predictions(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "predictions", columns=PREDICTION_COLUMNS)
    return frame.sort_values(["split", "model_id", "example_id"]).reset_index(drop=True)


def assert_every_model_exactly_once(job_file: Path, out: Path) -> pd.DataFrame:
    models = pd.read_parquet(out / "models")
    expected = {v.model_id for v in expand(load_job(job_file))}
    assert len(models) == N_MODELS == len(expected)
    assert models["model_id"].is_unique and set(models["model_id"]) == expected
    assert set(models["status"]) <= {"ok", "diverged"}
    frame = pd.read_parquet(out / "predictions", columns=["model_id", "split", "example_id"])
    assert frame.groupby("split")["model_id"].nunique().to_dict() == {
        "test": N_MODELS,
        "val": N_MODELS,
    }
    assert not frame.duplicated().any()
    assert not list(out.rglob(".*.tmp"))
    return models


def wait_for(value: Callable[[], T], what: str) -> T:
    """Poll ``value()`` until it is truthy, and return it."""
    deadline = time.monotonic() + DEADLINE
    while not (found := value()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found


def wait_for_packs(out: Path, count: int) -> int:
    """Wait until ``count`` pack files exist; how many there are then."""
    return wait_for(lambda: n if (n := len(pack_files(out))) >= count else 0, "pack files")


def in_background(action: Callable[[], T]) -> threading.Thread:
    """Run ``action()`` while the test thread drives a run; ``join_checked`` hands back its
    result or raises its error."""

    def run() -> None:
        try:
            thread.result = action()
        except BaseException as error:  # handed to the test thread
            thread.error = error

    thread = threading.Thread(target=run, daemon=True)
    thread.result, thread.error = None, None
    thread.start()
    return thread


def join_checked(thread: threading.Thread):
    thread.join(DEADLINE)
    assert not thread.is_alive()
    if thread.error is not None:
        raise thread.error
    return thread.result


@contextlib.contextmanager
def cpus_held(count: int) -> Iterator[None]:
    """Keep ``count`` of the cluster's CPUs away from the trainers (a placement group)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([{"CPU": 1}] * count)
    ray.get(group.ready(), timeout=DEADLINE)
    try:
        yield
    finally:
        remove_placement_group(group)


@pytest.fixture(scope="module")
def undisturbed(cluster, tmp_path_factory):
    """The job run once on the cluster without faults: the reference predictions."""
    root = tmp_path_factory.mktemp("undisturbed")
    job_file = write_job(root, JOB)
    out = root / "out"
    summary = run_job(load_job(job_file), out, address=cluster.address, show_progress=False)
    assert (summary.trained, summary.failed) == (N_MODELS, 0)
    assert_every_model_exactly_once(job_file, out)
    return predictions(out)


def test_a_worker_node_lost_for_good_mid_run_loses_no_model(cluster, undisturbed, tmp_path):
    """The lost actor's replacement can never be placed (2 CPUs left, both held by the other
    trainers): its packs must go to the two that remain, and the run must end."""
    ensure_three_nodes(cluster)
    job_file = write_job(tmp_path, JOB)
    out = tmp_path / "out"
    victim = next(iter(cluster.worker_nodes))

    def remove() -> int:
        packs = wait_for_packs(out, 1)
        cluster.remove_node(victim, allow_graceful=False)
        return packs

    remover = in_background(remove)
    summary = run_job(load_job(job_file), out, address=cluster.address, show_progress=False)
    assert 1 <= join_checked(remover) < N_PACKS, "the node should be removed mid-run"
    assert victim not in cluster.worker_nodes
    assert (summary.trained, summary.failed, summary.already_done) == (N_MODELS, 0, 0)
    assert_every_model_exactly_once(job_file, out)
    pd.testing.assert_frame_equal(predictions(out), undisturbed, check_exact=True)


def test_a_trainer_killed_mid_pack_is_replaced_and_its_packs_retried(
    cluster, undisturbed, tmp_path, monkeypatch
):
    import ray

    ensure_three_nodes(cluster)
    job_file = write_job(tmp_path, JOB)
    out = tmp_path / "out"
    retried: list[str] = []  # why each retry happened
    retry_or_give_up = PackScheduler._retry_or_give_up

    def spy(self, task, reason, *args) -> None:
        retried.append(reason)
        retry_or_give_up(self, task, reason, *args)

    monkeypatch.setattr(PackScheduler, "_retry_or_give_up", spy)
    started: queue.Queue = queue.Queue()  # trainers, as the driver lets them take packs
    mark_started = PackScheduler._started

    def started_spy(self, ref) -> None:
        index = self.starting[ref]
        mark_started(self, ref)
        if index in self.started:
            started.put(self.actors[index])

    monkeypatch.setattr(PackScheduler, "_started", started_spy)

    def kill() -> int:
        victim = started.get(timeout=240)
        # the driver deals every started trainer its packs before it waits for anything, so
        # once one more pack is written after the victim started, the victim has packs in
        # flight (12 packs, 3 trainers, 2 each at most)
        packs = wait_for_packs(out, len(pack_files(out)) + 1)
        ray.kill(victim)
        return packs

    killer = in_background(kill)
    summary = run_job(load_job(job_file), out, address=cluster.address, show_progress=False)
    assert 1 <= join_checked(killer) < N_PACKS, "the actor should be killed mid-run"
    assert retried and set(retried) == {"its worker died"}
    assert (summary.trained, summary.failed, summary.already_done) == (N_MODELS, 0, 0)
    assert_every_model_exactly_once(job_file, out)
    pd.testing.assert_frame_equal(predictions(out), undisturbed, check_exact=True)


def test_a_trainer_that_can_never_be_placed_gets_no_pack(cluster, undisturbed, tmp_path):
    """One CPU of three is held elsewhere, as a lost node's is: of the three trainers one is
    never placed, and the run must end on the two others instead of waiting for it."""
    ensure_three_nodes(cluster)
    job_file = write_job(tmp_path, JOB)
    out = tmp_path / "out"
    with cpus_held(1):
        summary = run_job(load_job(job_file), out, address=cluster.address, show_progress=False)
    assert (summary.trained, summary.failed, summary.already_done) == (N_MODELS, 0, 0)
    assert_every_model_exactly_once(job_file, out)
    pd.testing.assert_frame_equal(predictions(out), undisturbed, check_exact=True)


def test_no_room_for_any_trainer_ends_the_run_with_a_clear_error(cluster, tmp_path, monkeypatch):
    """All the CPUs are held elsewhere, as if every node had been lost: no trainer can start,
    and the run must say so instead of waiting forever."""
    ensure_three_nodes(cluster)
    monkeypatch.setattr(_scheduler, "START_TIMEOUT", 1.0)
    job, out = load_job(write_job(tmp_path, JOB)), tmp_path / "out"
    with cpus_held(3), pytest.raises(UserError, match="no trainer is running and none has"):
        run_job(job, out, address=cluster.address, show_progress=False)
    assert not pack_files(out)


def test_a_poison_pack_fails_after_bounded_retries_and_only_it_is_rerun(cluster, tmp_path, capsys):
    from rashomon.engine.run._plan import plan_packs

    ensure_three_nodes(cluster)
    job_file = write_job(tmp_path, JOB)
    job = load_job(job_file)
    out = tmp_path / "out"
    packs = plan_packs(expand(job), job.train, job.resources.models_per_pack, 13, 3)
    assert len(packs) == N_PACKS
    poison = packs[3]
    # A directory where the pack's weights file must go: every attempt to write it raises
    # inside the actor (os.replace onto a directory), for this pack only.
    blocker = out / "weights" / f"{poison.pack_id}.safetensors"
    (blocker / "in-the-way").mkdir(parents=True)
    command = ["run", str(job_file), "--out", str(out), "--address", cluster.address, "--quiet"]
    assert main(command) == 1
    assert f"{N_MODELS - 2} models trained (0 diverged, 2 failed, 0 already done)" in (
        capsys.readouterr().out
    )
    models = pd.read_parquet(out / "models")
    assert len(models) == N_MODELS and models["model_id"].is_unique
    failed = models[models["status"] == "failed"]
    assert set(failed["model_id"]) == {m.model_id for m in poison.models}
    assert set(failed["pack_id"]) == {poison.pack_id}
    [error] = set(failed["error"])
    assert error.startswith(f"failed {MAX_ATTEMPTS} times; last: IsADirectoryError")
    assert models.loc[models["status"] != "failed", "error"].isna().all()
    assert not (out / "predictions" / f"{poison.pack_id}.parquet").exists()

    assert main(["status", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"failed   {2:>8}" in text and f"done     {N_MODELS - 2:>8}" in text
    assert f"pack {poison.pack_id} (2 models): failed {MAX_ATTEMPTS} times" in text
    assert "IsADirectoryError" in text

    before = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*.parquet")}
    shutil.rmtree(blocker)
    assert main(command) == 0
    assert f"2 models trained (0 diverged, 0 failed, {N_MODELS - 2} already done)" in (
        capsys.readouterr().out
    )
    after = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*.parquet")}
    changed = {p.stem for p in after if before.get(p) != after[p]}
    assert changed == {poison.pack_id}
    assert_every_model_exactly_once(job_file, out)
    assert main(["status", str(out)]) == 0


def test_driver_killed_with_sigkill_on_the_cluster_resumes(cluster, undisturbed, tmp_path):
    ensure_three_nodes(cluster)
    job_file = write_job(tmp_path, JOB)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rashomon.engine.cli", "run", str(job_file), "--out", str(out),
               "--address", cluster.address, "--quiet"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(command, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + DEADLINE
    while len(pack_files(out)) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished_before = len(pack_files(out))
    assert 2 <= finished_before < N_PACKS, "the kill should land mid-run"
    summary = run_job(load_job(job_file), out, address=cluster.address, show_progress=False)
    assert summary.failed == 0
    # actors of the killed driver may finish a pack in flight before Ray reaps them
    assert summary.already_done >= 2 * finished_before
    assert summary.already_done + summary.trained == N_MODELS
    assert summary.trained == N_MODELS - 2 * finished_before
    assert_every_model_exactly_once(job_file, out)
    pd.testing.assert_frame_equal(predictions(out), undisturbed, check_exact=True)

"""One writer per results folder (issue #11 §2, SPEC §5): a second `run` or `tune` is refused with
a message naming the holder, a lock left by a killed process is taken over, and of processes that
start together exactly one trains. Real processes, a real embedded Ray, a real Optuna study."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from _jobs import tiny_job, write_job

from rashomon.engine.cli import main
from rashomon.engine.run._tune import DRIVER, _fail_abandoned_trials
from rashomon.engine.store import FolderLock, Owner, ResultsDir
from rashomon.engine.store._lock import LOCK_NAME, STALE_AFTER, WAIT
from rashomon.jobs import UserError, expand, load_job

JOB = tiny_job(
    name="locked",
    train={"epochs": 20},
    resources={"models_per_pack": 3},
    output={"weights": False},
    search={"lr": {"loguniform": [0.01, 0.1]}},
)
N_MODELS = 12
HOLDER = """
import sys
from rashomon.engine.store import ResultsDir
with ResultsDir(sys.argv[1]).lock("a test holder"):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def holder(location: str):
    """A separate process holding the folder's lock until the block ends (or it is killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, location], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        assert process.stdout.readline().strip() == b"held"
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(
    ray_cluster, tmp_path, capsys
):
    job = write_job(tmp_path, JOB)
    out = tmp_path / "out"
    with holder(str(out)) as process:
        for command in (["run", str(job)], ["tune", str(job), "--trials", "1"]):
            assert main([*command, "--out", str(out), "--quiet"]) == 2
            error = capsys.readouterr().err
            assert "another rashomon process is writing to this results folder" in error
            assert f"a test holder on {socket.gethostname()}, pid {process.pid}" in error
            assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
        os.killpg(process.pid, signal.SIGKILL)  # SIGKILL: the lock stays behind
        process.wait()
        assert (out / LOCK_NAME / "owner.json").is_file()
        assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    models = pd.read_parquet(out / "models")
    assert len(models) == N_MODELS and models["model_id"].is_unique
    assert not (out / LOCK_NAME).exists()
    capsys.readouterr()
    with holder(str(out)) as process:
        assert main(["status", str(out)]) == 0  # a reader is never refused
        assert f"in progress: a test holder on {socket.gethostname()}, pid {process.pid}" in (
            capsys.readouterr().out
        )


def test_two_runs_started_together_train_every_model_exactly_once(ray_cluster, tmp_path):
    job = write_job(tmp_path, JOB)
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "rashomon.engine.cli", "run", str(job), "--out", str(out),
               "--address", address, "--quiet"]  # fmt: skip
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    outcomes = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in outcomes)
    trained = sum(int(o.split(" models trained")[0]) for code, o, _ in outcomes if code == 0)
    assert trained == N_MODELS, outcomes
    if codes == [0, 2]:  # they overlapped: the second was refused and named the first
        [error] = [e for code, _, e in outcomes if code == 2]
        assert "another rashomon process is writing" in error and "`rashomon run`" in error, error
    else:  # the first finished before the second looked: it found everything done
        assert codes == [0, 0]
    models = pd.read_parquet(out / "models")
    assert sorted(models["model_id"]) == sorted(v.model_id for v in expand(load_job(job)))
    rows = pd.read_parquet(out / "predictions", columns=["model_id", "split", "example_id"])
    assert not rows.duplicated().any()


def _record(path: Path, **fields) -> None:
    owner = Owner.of_this_process("someone else's run")
    path.mkdir(parents=True, exist_ok=True)
    (path / "owner.json").write_text(json.dumps(owner.record() | fields))


def test_another_hosts_lock_is_stale_only_without_a_recent_heartbeat(tmp_path):
    out = tmp_path / "out"
    _record(out / LOCK_NAME, host="elsewhere", heartbeat=time.time() - 5)
    with pytest.raises(UserError, match=r"someone else's run on elsewhere, .*heartbeat 5 s ago"):
        ResultsDir(out).lock("mine").__enter__()
    _record(out / LOCK_NAME, host="elsewhere", heartbeat=time.time() - STALE_AFTER - 1)
    with ResultsDir(out).lock("mine") as lock:
        record = json.loads((out / LOCK_NAME / "owner.json").read_text())
        assert record["token"] == lock.me.token and record["purpose"] == "mine"
    assert not (out / LOCK_NAME).exists()


def test_a_reused_pid_and_an_abandoned_bare_lock_folder_are_stale(tmp_path):
    out = tmp_path / "out"
    _record(out / LOCK_NAME, started=12345.0)  # this host, this pid, but another process
    with ResultsDir(out).lock("mine"):
        pass
    (out / LOCK_NAME).mkdir()  # a mkdir whose owner record never followed
    old = time.time() - 2 * WAIT
    os.utime(out / LOCK_NAME, (old, old))
    with ResultsDir(out).lock("mine"):
        pass


def test_a_taken_over_lock_is_noticed_and_left_to_its_new_owner(tmp_path):
    out = tmp_path / "out"
    lost = pytest.raises(UserError, match="lost the folder's lock")
    with lost, ResultsDir(out).lock("mine") as lock:
        _record(out / LOCK_NAME, token="f" * 32, purpose="a newer run")
        lock._refresh()  # the heartbeat finds another owner
        assert "a newer run" in lock.lost
        lock.check()
    assert json.loads((out / LOCK_NAME / "owner.json").read_text())["token"] == "f" * 32


def test_of_contenders_in_one_instant_exactly_one_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    for _ in range(3):
        start, done, held, refused = threading.Barrier(5), threading.Event(), [], []

        def contend(start=start, done=done, held=held, refused=refused):
            lock = FolderLock(ResultsDir(out).filesystem, str(out), str(out), "contender")
            start.wait()
            try:
                lock.acquire()
            except UserError:
                refused.append(lock)
                return
            held.append(lock)
            done.wait()  # hold until every contender has tried
            lock.release()

        threads = [threading.Thread(target=contend) for _ in range(5)]
        for thread in threads:
            thread.start()
        while len(held) + len(refused) < 5:
            time.sleep(0.01)
        done.set()
        for thread in threads:
            thread.join()
        assert len(held) == 1 and len(refused) == 4
        assert not (out / LOCK_NAME).exists()


def test_a_resumed_tune_fails_only_the_trials_whose_driver_is_gone(tmp_path):
    """Two `tune`s on one study used to fail each other's running trials (and then crash with
    "Cannot tell a FAIL trial"): a trial is failed only when the driver that asked it is gone."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    live = Owner.of_this_process("tune")
    drivers = {
        "live here": live,
        "dead here": Owner(**(live.record() | {"token": "d" * 32, "started": 1.0})),
        "live elsewhere": Owner(**(live.record() | {"token": "e" * 32, "host": "elsewhere"})),
        "gone elsewhere": Owner(**(live.record() | {"token": "g" * 32, "host": "elsewhere",
                                                   "heartbeat": time.time() - STALE_AFTER - 1})),
    }  # fmt: skip
    numbers = {}
    for name, owner in drivers.items():
        study.set_user_attr(f"{DRIVER}:{owner.token}", owner.record())
        trial = study.ask()
        trial.set_user_attr(DRIVER, owner.token)
        numbers[name] = trial.number
    numbers["unrecorded"] = study.ask().number
    _fail_abandoned_trials(study)
    states = {name: study.trials[n].state.name for name, n in numbers.items()}
    assert states == {"live here": "RUNNING", "dead here": "FAIL", "live elsewhere": "RUNNING",
                      "gone elsewhere": "FAIL", "unrecorded": "FAIL"}  # fmt: skip

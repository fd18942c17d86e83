"""Every failure of the command line is one line and an exit status, never a traceback: 2 for a
mistake the user can fix, 1 for a run that stopped or failed, 130 / 143 for Ctrl-C / SIGTERM (with
the resume hint, and the run resumable). What is printed is safe for a terminal (control
characters from data are escaped) and never shows a password. Real processes, real signals, a
real full file system limit (RLIMIT_FSIZE) and real file permissions."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cli import CONTROL, command, environment, one_line, rashomon
from _jobs import write_job

from rashomon.engine.cli import main
from rashomon.engine.run import TuneSummary, describe_tune, run_job
from rashomon.jobs import load_job

ESCAPE = "\x1b[31m"  # a group value in the data: it must not turn the terminal red
JOB = """
name: errors
dataset: {source: data.csv, target: label, groups: [g], split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [4]}
train: {epochs: 2, batch_size: 32, optimizer: sgd, lr: 0.05}
population:
  seeds: {init: 3}
resources: {cpus_per_worker: 1}
output: {predictions: [val, test], weights: true}
flatness: {enabled: false}
"""
# long enough to be interrupted mid-run: 12 packs of 2 models
SLOW_JOB = """
name: slow
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [16]}
train: {epochs: 80, batch_size: 8, optimizer: sgd, lr: 0.01}
population:
  seeds: {init: 24}
resources: {cpus_per_worker: 1, models_per_pack: 2}
flatness: {enabled: false}
"""
DEADLINE = 240  # seconds for any one wait


def write_data(folder: Path, columns: dict[str, str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 3))
    frame = pd.DataFrame(x, columns=["f1", "f2", "f3"])
    frame["g"] = np.where(rng.random(160) < 0.5, f"red{ESCAPE}", "plain")
    frame["label"] = (x[:, 0] + 0.5 * rng.normal(size=160) > 0).astype(int)
    path = folder / "data.csv"
    frame.rename(columns=columns or {}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def results(ray_cluster, tmp_path_factory) -> Path:
    """A small trained results folder whose data hold a terminal escape sequence."""
    root = tmp_path_factory.mktemp("results")
    data = write_data(root)  # absolute: `flatness` reads it again, from anywhere
    out = root / "out"
    run_job(load_job(write_job(root, JOB.replace("data.csv", str(data)))), out, show_progress=False)
    return out


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def pack_files(out: Path) -> list[Path]:
    return sorted((out / "models").glob("*.parquet")) if (out / "models").exists() else []


# --- a trainer that cannot start --------------------------------------------------------------


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_a_trainer_that_fails_to_start_is_reported_with_its_exception(tmp_path):
    """A user's own ``torch.py`` in the working directory shadows PyTorch in the Ray workers
    (Ray puts that folder first on their import path): the run must say so, not blame the
    cluster's size."""
    (tmp_path / "torch.py").write_text('raise ImportError("this is my torch.py, not PyTorch")\n')
    write_job(tmp_path, SLOW_JOB)
    done = rashomon("run", "job.yaml", "--quiet", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "the trainers cannot start: ImportError: this is my torch.py, not PyTorch" in line
    assert f"{tmp_path / 'torch.py'}, line 1" in line and "rename it" in line
    assert "cpus_per_worker" not in line
    assert not pack_files(tmp_path / "results" / "slow")


# --- disk full ---------------------------------------------------------------------------------

LIMIT = 32 * 1024  # bytes: a pack's predictions are ~90 KB, Ray's worker logs ~5 KB
SITECUSTOMIZE = f"""
import resource, sys
if sys.argv and sys.argv[0].endswith("default_worker.py"):  # Ray's workers only
    resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, resource.RLIM_INFINITY))
"""


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_a_full_disk_stops_the_run_with_one_line_and_the_run_resumes(ray_cluster, tmp_path, capsys):
    """The workers may write no file beyond 32 KiB (RLIMIT_FSIZE: writes fail with EFBIG, as
    they fail with ENOSPC on a full disk): the run stops at the first pack with one line, records
    nothing as failed, and a rerun on a disk with room trains everything."""
    limit = tmp_path / "limit"
    limit.mkdir()
    (limit / "sitecustomize.py").write_text(SITECUSTOMIZE)
    job = """
    name: full
    dataset: {source: wine}
    model: {family: mlp, hidden: [4]}
    train: {epochs: 1, batch_size: 32, optimizer: sgd, lr: 0.05}
    population:
      seeds: {init: 32}
    resources: {cpus_per_worker: 1, models_per_pack: 32}
    output: {predictions: [train, val, test], weights: false}
    flatness: {enabled: false}
    """
    write_job(tmp_path, job)
    path = os.pathsep.join(filter(None, [str(limit), os.environ.get("PYTHONPATH")]))
    full = rashomon("run", "job.yaml", "--out", "out", "--quiet", cwd=tmp_path,
                    env=environment(PYTHONPATH=path))  # fmt: skip
    assert full.returncode == 1, full.stderr
    line = one_line(full.stderr)
    assert f"{tmp_path / 'out'}: cannot write the results (File too large)" in line
    assert line.endswith("run the same command again to resume")
    assert full.stdout == ""
    assert not pack_files(tmp_path / "out") and not list((tmp_path / "out").rglob("*.tmp"))

    assert main(["run", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("32 models trained (0 diverged, 0 failed, 0 al")


# --- Ctrl-C and SIGTERM ------------------------------------------------------------------------


def start_slow_run(folder: Path) -> subprocess.Popen:
    write_job(folder, SLOW_JOB)
    return subprocess.Popen(
        [*command(), "run", "job.yaml", "--out", "out", "--quiet"],
        cwd=folder,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_packs(run: subprocess.Popen, out: Path, count: int) -> int:
    deadline = time.monotonic() + DEADLINE
    while len(pack_files(out)) < count:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no pack was written"
        time.sleep(0.05)
    return len(pack_files(out))


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_a_second_ctrl_c_while_the_run_cleans_up_changes_nothing(tmp_path):
    run = start_slow_run(tmp_path)
    try:
        wait_for_packs(run, tmp_path / "out", 1)
        run.send_signal(signal.SIGINT)
        first = run.stderr.readline()  # the run has stopped and now cleans up (stops Ray)
        run.send_signal(signal.SIGINT)
        rest, more = run.communicate(timeout=DEADLINE)
    finally:
        run.kill()
    assert run.returncode == 130
    line = one_line(first + more)
    assert line == "rashomon: interrupted; run the same command again to resume"
    assert rest == ""


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_sigterm_stops_a_run_like_ctrl_c_and_the_run_resumes(ray_cluster, tmp_path, capsys):
    run = start_slow_run(tmp_path)
    try:
        wait_for_packs(run, tmp_path / "out", 2)
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=DEADLINE)
        assert stdout == ""
    finally:
        run.kill()
    assert run.returncode == 143, stderr
    line = one_line(stderr)
    assert line == "rashomon: interrupted by SIGTERM; run the same command again to resume"
    finished = {p.name for p in pack_files(tmp_path / "out")}
    assert 2 <= len(finished) < 12, "the signal should land mid-run"

    assert main(["run", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    trained, done = 24 - 2 * len(finished), 2 * len(finished)
    summary = capsys.readouterr().out
    assert summary.startswith(f"{trained} models trained (0 diverged, 0 failed, {done} already")
    models = pd.read_parquet(tmp_path / "out" / "models")
    assert len(models) == 24 and models["model_id"].is_unique


# --- output the reader stops reading ----------------------------------------------------------


def test_analyze_into_a_closed_pipe_exits_quietly(results):
    """``rashomon analyze DIR | head -1`` once ``head`` has gone: no traceback, the status a
    shell gives a command stopped by SIGPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = rashomon("analyze", str(results), cwd=results, stdout=write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")


# --- folders that cannot be written ------------------------------------------------------------


PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it


def _drop_root_override() -> None:
    """In the child: root loses the capabilities that let it write where permissions forbid
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), from its bounding set so that they are
    not given back by the exec that follows."""
    if os.geteuid() == 0:
        for capability in (1, 2, 3):
            if PRCTL(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def read_only_copy(results: Path, tmp_path: Path) -> Path:
    """A copy of ``results`` that this test's processes cannot write (skips where they can)."""
    copy = tmp_path / "read-only"
    shutil.copytree(results, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    probe = [sys.executable, "-c", f"open({str(copy / 'probe')!r}, 'w')"]
    try:
        probed = subprocess.run(probe, preexec_fn=_drop_root_override, stderr=subprocess.DEVNULL)
        writable = probed.returncode == 0
    except subprocess.SubprocessError:  # no CAP_SETPCAP to drop capabilities with
        writable = True
    if writable:
        pytest.skip("this process can write into read-only folders")
    return copy


@pytest.mark.parametrize("command", [["report"], ["flatness"]])
def test_a_read_only_results_folder_is_one_line_and_exit_2(results, tmp_path, command):
    copy = read_only_copy(results, tmp_path)
    before = fingerprint(copy)
    try:
        done = rashomon(*command, str(copy), cwd=tmp_path, preexec_fn=_drop_root_override)
        assert done.returncode == 2, done.stderr
        line = one_line(done.stderr)
        assert str(copy) in line and "Permission denied" in line
        assert fingerprint(copy) == before
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_report_into_a_folder_is_one_line_and_exit_2(results, tmp_path, capsys):
    assert main(["report", str(results), "--html", str(tmp_path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--html {tmp_path}: is a folder" in line and str(tmp_path / "report.html") in line


def test_a_report_on_a_full_disk_is_one_line_and_exit_2(results, tmp_path):
    """RLIMIT_FSIZE of 4 KiB in the command's process: the report (~100 KB) cannot be written."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    target = tmp_path / "report.html"
    done = rashomon("report", str(results), "--html", str(target), cwd=tmp_path,
                    preexec_fn=limit)  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"{target}: cannot write the report (File too large)" in line


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_report_onto_a_full_device_is_one_line_and_exit_2(results, capsys):
    """/dev/full takes no byte: every write to it fails with ENOSPC, as on a full disk."""
    assert main(["report", str(results), "--html", "/dev/full"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "/dev/full: cannot write the report (No space left on device)" in line


# --- tune's storage ---------------------------------------------------------------------------


def test_a_journal_in_a_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    write_data(tmp_path)
    job = write_job(tmp_path, JOB + "search: {lr: {loguniform: [0.01, 0.1]}}\n")
    storage = f"journal:{tmp_path / 'missing' / 'x.log'}"
    assert main(["tune", str(job), "--trials", "1", "--storage", storage]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--storage {storage}: cannot open the journal file (No such file" in line


def test_a_storage_password_is_never_printed(tmp_path, capsys):
    write_data(tmp_path)
    job = write_job(tmp_path, JOB + "search: {lr: {loguniform: [0.01, 0.1]}}\n")
    url = "postgresql://user:s3cret@127.0.0.1:1/db"  # nothing listens on port 1
    assert main(["tune", str(job), "--trials", "1", "--storage", url]) == 2
    line = one_line(capsys.readouterr().err)
    assert "postgresql://user:***@127.0.0.1:1/db" in line and "s3cret" not in line

    summary = TuneSummary("study", url, pd.DataFrame({"number": [0]}), ("val_acc",))
    text = describe_tune(summary) + repr(summary)
    assert "s3cret" not in text and "postgresql://user:***@127.0.0.1:1/db" in text


# --- control characters from data -------------------------------------------------------------


def test_control_characters_in_an_error_about_the_data_are_escaped(tmp_path, capsys):
    write_data(tmp_path, columns={"f3": "f3\x1b]0;owned\x07"})
    job = write_job(tmp_path, JOB.replace("target: label", "target: nope"))
    assert main(["run", str(job), "--dry-run"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "f3\\x1b]0;owned\\x07" in line and not CONTROL.search(line)


def test_control_characters_in_the_analyze_table_and_status_are_escaped(results, tmp_path):
    import pyarrow as pa

    from rashomon.engine.store import ResultsDir

    done = rashomon("analyze", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "red\\x1b[31m" in done.stdout and not CONTROL.search(done.stdout)

    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    store = ResultsDir(copy)
    pack_id = store.pack_ids()[0]
    models = store.read_models(pack_id)  # as a pack that failed with this message records it
    for name, value in [("status", "failed"), ("error", "ValueError: \x1b]0;owned\x07\rtext\x00")]:
        column = pa.array([value] * len(models), models.schema.field(name).type)
        models = models.set_column(models.schema.get_field_index(name), name, column)
    store.rewrite_models(pack_id, models)
    status = rashomon("status", str(copy), cwd=tmp_path)
    assert status.returncode == 1, status.stderr
    assert "ValueError: \\x1b]0;owned\\x07\\rtext\\x00" in status.stdout
    assert not CONTROL.search(status.stdout)

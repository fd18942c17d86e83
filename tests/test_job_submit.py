"""`ray job submit --working-dir . -- rashomon run …` against a running Ray head (issue #6): the
way README and docs/cluster.md tell users to run a job on a cluster. The entrypoint must join the
cluster it runs on (Ray sets RAY_ADDRESS for it), the uploaded working dir holds only the job
file, and every model must reach the output exactly once.

The head is a real `ray start --head --block` with its dashboard (the Jobs API), bound to
127.0.0.1 only, with token authentication on a token made for this test (so ~/.ray is neither
read nor written), and on ports picked here so that it cannot collide with other Ray instances
on the machine. It is stopped with SIGTERM to `ray start` and SIGKILL to any process left in its
session or naming this test's folder, never with `ray stop`, which would stop every Ray on the
machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from rashomon.engine.cli import main
from rashomon.jobs import expand, load_job

pytestmark = pytest.mark.slow  # `ray start` processes

JOB = """
name: submitted
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [8], activation: relu}
train: {epochs: 5, batch_size: 16, optimizer: sgd, lr: 0.05, momentum: 0.9}
population:
  seeds: {init: 2, order: 2}
resources: {cpus_per_worker: 1, models_per_pack: 2}
output: {predictions: [val, test]}
flatness: {enabled: false}
"""
N_MODELS = 2 * 2
DEADLINE = 180  # seconds for any one wait; start-up takes 5-15 s, the job 20-35 s
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def script(name: str, module: str) -> list[str]:
    """The console script installed next to this Python (CI's PATH may lack .venv/bin)."""
    path = Path(sys.executable).parent / name
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


RAY = script("ray", "ray.scripts.scripts")
RASHOMON = script("rashomon", "rashomon.engine.cli")


@dataclass
class Head:
    process: subprocess.Popen  # `ray start --head --block`, leader of its own session
    url: str  # the dashboard, which serves the Jobs API
    root: Path  # token, Ray's temp dir, job dir, output: every file of this test

    def get(self, path: str, token: bool = True) -> tuple[int, str]:
        """GET from the Jobs API: status code and body."""
        secret = (self.root / "token").read_text()
        headers = {"Authorization": f"Bearer {secret}"} if token else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def log(self) -> str:
        return (self.root / "head.log").read_text(errors="replace")


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now (held together, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ray_env(root: Path) -> dict[str, str]:
    """The environment of the head and of every Ray command talking to it."""
    # No ambient RAY_* variable (RAY_ADDRESS, RAY_AUTH_TOKEN, …) may steer this test's Ray.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every service on 127.0.0.1
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(root / "token"),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",  # head.log complete when an assertion shows it
        # On SIGTERM `ray start --block` first drains the node, for up to 30 s by default.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )
    return env


def start_head(root: Path) -> Head:
    (root / "token").write_text(secrets.token_hex(32))
    (root / "token").chmod(0o600)
    gcs, dashboard, client = free_ports(3)
    command = [*RAY, "start", "--head", "--block", "--disable-usage-stats",
               "--node-ip-address", "127.0.0.1", "--port", str(gcs),
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
               "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", "0",
               "--ray-client-server-port", str(client),
               "--min-worker-port", "0", "--max-worker-port", "0",  # 0: any free port
               "--num-cpus", "2", "--object-store-memory", str(100 * 2**20),
               "--temp-dir", str(root / "ray")]  # fmt: skip
    with open(root / "head.log", "wb") as log:
        process = subprocess.Popen(
            command, env=ray_env(root), cwd=root, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Head(process, f"http://127.0.0.1:{dashboard}", root)


def wait_for_jobs_api(head: Head) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        assert head.process.poll() is None, f"ray start exited:\n{head.log()}"
        assert time.monotonic() < deadline, f"the Jobs API never answered:\n{head.log()}"
        try:
            if head.get("/api/jobs/")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)


def processes_of(head: Head) -> list[int]:
    """Live processes of this head: its session (ray start, GCS, raylet, dashboard, workers) and
    whatever names this test's folder (the job's driver, which Ray starts in a session of its
    own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, session = fields[0], int(fields[3])
        if state != "Z" and (session == head.process.pid or str(head.root) in cmdline):
            found.append(int(entry.name))
    return found


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses of the TCP sockets these processes listen on."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:  # gone meanwhile
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    addresses = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                # /proc prints each 32-bit word of the address in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                addresses.add(socket.inet_ntop(family, words))
    return addresses


def gone(head: Head, seconds: float) -> bool:
    """Whether ray start and every process of the head are gone within ``seconds``."""
    deadline = time.monotonic() + seconds
    while head.process.poll() is None or processes_of(head):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def stop_head(head: Head) -> None:
    """SIGTERM to ray start, which stops what it started (SIGTERM to its whole group instead
    kills the GCS first, and the autoscaler monitor, then ray start, can hang for a minute);
    if that hangs, SIGKILL to the group and to every process of the head. None may survive."""
    head.process.terminate()
    if not gone(head, 60):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.process.pid, signal.SIGKILL)
        for pid in processes_of(head):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert gone(head, 30), f"processes of the test's Ray head survived: {processes_of(head)}"


def submit(head: Head, job_dir: Path, out: Path, submission: str, n_models: int) -> None:
    """`ray job submit --working-dir JOB_DIR -- rashomon run job.yaml`, and its success."""
    command = [*RAY, "job", "submit", "--address", head.url, "--submission-id", submission,
               "--working-dir", str(job_dir), "--",
               *RASHOMON, "run", "job.yaml", "--out", str(out), "--quiet"]  # fmt: skip
    submitted = subprocess.run(command, env=ray_env(head.root), cwd=head.root,
                               capture_output=True, text=True, timeout=DEADLINE)  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    status, body = head.get(f"/api/jobs/{submission}")
    assert status == 200 and json.loads(body)["status"] == "SUCCEEDED", body
    status, body = head.get(f"/api/jobs/{submission}/logs")
    logs = json.loads(body)["logs"]
    summary = f"{n_models} models trained (0 diverged, 0 failed, 0 already done) of {n_models}"
    assert status == 200 and summary in logs, logs


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    root = Path(tempfile.mkdtemp(prefix="rj-", dir="/tmp"))  # Unix socket paths: < 108 chars
    try:
        running = start_head(root)
        try:
            wait_for_jobs_api(running)
            yield running
        finally:
            stop_head(running)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_ray_job_submit_trains_every_model_once_on_the_cluster(head, capsys):
    assert head.get("/api/jobs/", token=False)[0] == 401, "the Jobs API must demand the token"
    addresses = listening_addresses(processes_of(head))
    assert addresses and addresses <= LOOPBACK, addresses
    job_dir = head.root / "job"
    job_dir.mkdir()
    (job_dir / "job.yaml").write_text(textwrap.dedent(JOB))
    out = head.root / "out"
    submit(head, job_dir, out, "rashomon", N_MODELS)

    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"done     {N_MODELS:>8} ({N_MODELS} ok" in text and "pending         0" in text
    expected = {variant.model_id for variant in expand(load_job(job_dir / "job.yaml"))}
    assert len(expected) == N_MODELS
    models = pd.read_parquet(out / "models")
    assert models["model_id"].is_unique and set(models["model_id"]) == expected
    assert set(models["status"]) == {"ok"}
    predictions = pd.read_parquet(out / "predictions", columns=["model_id", "split", "example_id"])
    assert not predictions.duplicated().any()
    assert predictions.groupby("split")["model_id"].unique().map(set).to_dict() == {
        "test": expected,
        "val": expected,
    }


MODULE_JOB = """
name: submitted-module
dataset: {source: digits}
model: {family: module, module: "my_models:SmallResNet", kwargs: {width: 4, blocks: 1}}
train: {epochs: 1, batch_size: 64, optimizer: adam, lr: 0.003}
population: {seeds: {init: 2}}
resources: {cpus_per_worker: 1, models_per_pack: 1}
flatness: {enabled: false}
"""


def test_ray_job_submit_ships_a_users_module_with_the_working_dir(head):
    """The user's module exists only in the uploaded working dir: the driver and every worker
    import it from there."""
    job_dir = head.root / "module-job"
    job_dir.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "my_models.py", job_dir)
    (job_dir / "job.yaml").write_text(textwrap.dedent(MODULE_JOB))
    out = head.root / "module-out"
    submit(head, job_dir, out, "rashomon-module", 2)
    models = pd.read_parquet(out / "models")
    assert len(models) == 2 and set(models["status"]) == {"ok"}
    assert models["pack_id"].nunique() == 2  # one model per pack

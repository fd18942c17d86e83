"""Results in an object store (issue #6): `rashomon run --out s3://...` on a real S3 server.

The server is moto's (a real HTTP server speaking the S3 protocol) on loopback. Object stores
have no rename, so what users rely on here is the commit protocol: a pack's models file is written
last, files of a pack without one are never read and are deleted by the next run, and only
committed objects are ever visible — no temporaries, no half-written files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from rashomon.analysis import open_results
from rashomon.engine.cli import main
from rashomon.engine.store import (
    PACK_FILES,
    FolderLock,
    Owner,
    ResultsDir,
    resolve_location,
)
from rashomon.engine.store._lock import STALE_AFTER
from rashomon.jobs import UserError, expand, load_job

pytestmark = pytest.mark.slow  # an S3 server

JOB = """
name: remote
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [8], activation: relu}
train: {epochs: 5, batch_size: 16, optimizer: sgd, lr: 0.05, momentum: 0.9}
population:
  seeds: {init: 3, order: 2}
  grid: {lr: [0.05, 0.1]}
resources: {cpus_per_worker: 1, models_per_pack: 4}
output: {predictions: [val, test], weights: true}
flatness: {enabled: false}
"""
N_MODELS = 3 * 2 * 2
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on loopback, with credentials in the environment (set before the
    module's Ray starts, so its workers inherit them, as they would an instance role)."""
    import ray

    ray.shutdown()  # the shared Ray of other modules, if it runs: its workers lack them
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "the moto S3 server exited"
                assert time.monotonic() < deadline, "the moto S3 server did not start"
                time.sleep(0.2)
        yield f"endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    filesystem, _ = resolve_location(f"s3://results?{s3_endpoint}&allow_bucket_creation=true")
    filesystem.create_dir("results")
    return filesystem


def url(endpoint: str, prefix: str) -> str:
    return f"s3://results/{prefix}?{endpoint}"


def object_names(filesystem: pafs.FileSystem, prefix: str) -> list[str]:
    selector = pafs.FileSelector(f"results/{prefix}", recursive=True, allow_not_found=True)
    infos = filesystem.get_file_info(selector)
    return sorted(i.path.split("/", 2)[2] for i in infos if i.type == pafs.FileType.File)


def predictions(location) -> pd.DataFrame:
    results = open_results(location)
    store = results.store
    files = [store.pack_file("predictions", p) for p in sorted(results.models["pack_id"].unique())]
    table = pq.ParquetDataset(files, filesystem=store.filesystem).read().to_pandas()
    return table.sort_values(["model_id", "split", "example_id"], ignore_index=True)


@pytest.fixture(scope="module")
def job_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("job") / "job.yaml"
    path.write_text(textwrap.dedent(JOB))
    return path


@pytest.fixture(scope="module")
def remote_run(bucket, s3_endpoint, ray_cluster, job_file):
    location = url(s3_endpoint, "run")
    assert main(["run", str(job_file), "--out", location, "--quiet"]) == 0
    return location


def test_a_run_into_s3_commits_every_pack_and_leaves_nothing_else(remote_run, bucket, job_file):
    models = open_results(remote_run).models
    assert sorted(models["model_id"]) == sorted(v.model_id for v in expand(load_job(job_file)))
    packs = sorted(models["pack_id"].unique())
    expected = ["examples.parquet", "job.yaml"] + [
        f"{folder}/{pack}{suffix}" for folder, suffix in PACK_FILES.items() for pack in packs
    ]
    assert object_names(bucket, "run") == sorted(expected)


def test_s3_results_equal_a_local_run_bitwise(remote_run, job_file, tmp_path):
    local = tmp_path / "local"
    assert main(["run", str(job_file), "--out", str(local), "--quiet"]) == 0
    pd.testing.assert_frame_equal(predictions(remote_run), predictions(local))


def test_status_analyze_and_flatness_read_and_write_s3(remote_run, capsys):
    capsys.readouterr()
    assert main(["status", remote_run]) == 0
    assert f"done     {N_MODELS:>8}" in capsys.readouterr().out
    assert main(["analyze", remote_run, "--epsilon", "0.05"]) == 0
    assert "Rashomon set" in capsys.readouterr().out
    assert main(["flatness", remote_run, "--set", "trace_probes=4"]) == 0
    models = open_results(remote_run).models
    assert models["hessian_trace"].notna().all() and len(models) == N_MODELS


@pytest.mark.parametrize("where", ["local", "s3"])
def test_uncommitted_pack_files_are_deleted_and_their_models_retrained(
    where, bucket, s3_endpoint, ray_cluster, job_file, tmp_path
):
    """A writer killed between a pack's predictions and its models file leaves an uncommitted
    pack: the rerun trains it again, and files we wrote for packs that no longer exist go. Only
    files provably ours are deleted: a pack file copied under another pack's name is moved to
    quarantine/, and a user's own files stay byte for byte."""
    location = str(tmp_path / "out") if where == "local" else url(s3_endpoint, "crash")
    assert main(["run", str(job_file), "--out", location, "--quiet"]) == 0
    before = predictions(location)
    store = ResultsDir(location)
    filesystem, root = store.filesystem, store.root
    lost = sorted(open_results(location).models["pack_id"].unique())[0]
    # a pack of ours whose models file was never written (a writer killed before its commit)
    stray = "0123456789abcdef"
    models = store.read_models(lost)
    n = models.num_rows
    store.write_pack(
        stray,
        models.set_column(1, "pack_id", pa.array([stray] * n)),
        pq.read_table(store.pack_file("predictions", lost), filesystem=filesystem),
        {"layers.0.weight": torch.zeros(n, 2, 2), "layers.0.bias": torch.zeros(n, 2)},
        {"model_ids": json.dumps(models["model_id"].to_pylist())},
    )
    filesystem.delete_file(store.pack_file("models", stray))
    filesystem.delete_file(store.pack_file("models", lost))
    copied = f"{root}/predictions/fedcba9876543210.parquet"  # our name, another pack's marker
    filesystem.copy_file(store.pack_file("predictions", lost), copied)
    ours_temporary = f"{root}/predictions/.{lost}.parquet.{'a' * 32}.tmp"
    users = [f"{root}/predictions/baseline.parquet", f"{root}/weights/pretrained.safetensors",
             f"{root}/x.tmp", f"{root}/predictions/.notes.tmp"]  # fmt: skip
    for path in [ours_temporary, *users]:
        with filesystem.open_output_stream(path) as stream:
            stream.write(f"not rashomon's: {path}".encode())

    assert main(["run", str(job_file), "--out", location, "--quiet"]) == 0
    models = open_results(location).models
    assert models["model_id"].is_unique and len(models) == N_MODELS
    pd.testing.assert_frame_equal(predictions(location), before)
    gone = [store.pack_file("predictions", stray), store.pack_file("weights", stray),
            ours_temporary, copied]  # fmt: skip
    assert all(filesystem.get_file_info(p).type == pafs.FileType.NotFound for p in gone)
    for path in users:
        with filesystem.open_input_stream(path) as stream:
            assert stream.read() == f"not rashomon's: {path}".encode()
    quarantined = f"{root}/quarantine/predictions/fedcba9876543210.parquet"
    assert filesystem.get_file_info(quarantined).type == pafs.FileType.File


def test_a_missing_bucket_is_one_clear_error(s3_endpoint, job_file, capsys):
    location = f"s3://no-such-bucket/x?{s3_endpoint}"
    assert main(["run", str(job_file), "--out", location, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"rashomon: error: {location}: cannot write") and "bucket" in error
    assert "Traceback" not in error


def test_tune_into_s3_needs_a_storage_that_is_not_sqlite(s3_endpoint, bucket, tmp_path, capsys):
    job = tmp_path / "search.yaml"
    job.write_text(textwrap.dedent(JOB) + "search: {lr: {loguniform: [0.01, 0.1]}}\n")
    location = url(s3_endpoint, "tune")
    assert main(["tune", str(job), "--trials", "1", "--out", location, "--quiet"]) == 2
    assert "--storage" in capsys.readouterr().err


def test_a_foreign_prefix_is_refused_untouched(bucket, s3_endpoint, job_file, capsys):
    with bucket.open_output_stream("results/foreign/predictions/baseline.parquet") as stream:
        stream.write(b"the user's own")
    location = url(s3_endpoint, "foreign")
    assert main(["run", str(job_file), "--out", location, "--quiet"]) == 2
    assert "not empty and not a rashomon results folder" in capsys.readouterr().err
    assert object_names(bucket, "foreign") == ["predictions/baseline.parquet"]


HOLDER = """
import sys
from rashomon.engine.store import ResultsDir
with ResultsDir(sys.argv[1]).lock("a test holder"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_one_writer_per_prefix_and_a_killed_holders_lease_is_taken_over(
    bucket, s3_endpoint, ray_cluster, job_file, capsys
):
    location = url(s3_endpoint, "leased")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, location], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert main(["run", str(job_file), "--out", location, "--quiet"]) == 2
        error = capsys.readouterr().err
        assert "another rashomon process is writing" in error and f"pid {holder.pid}" in error
    finally:
        holder.kill()  # SIGKILL: its lease stays behind
        holder.wait()
    assert len(object_names(bucket, "leased")) == 1  # the dead holder's lease
    assert main(["run", str(job_file), "--out", location, "--quiet"]) == 0
    assert f"{N_MODELS} models trained" in capsys.readouterr().out
    assert not [n for n in object_names(bucket, "leased") if n.startswith(".rashomon-lock")]


def test_leases_of_other_hosts_and_contenders_in_one_instant(bucket, s3_endpoint):
    store = ResultsDir(url(s3_endpoint, "contended"))
    me = Owner.of_this_process("someone else's run")
    lease = f"{store.root}/.rashomon-lock/{'e' * 32}.json"
    fresh = me.record() | {"token": "e" * 32, "host": "elsewhere", "heartbeat": time.time()}
    with bucket.open_output_stream(lease) as stream:
        stream.write(json.dumps(fresh).encode())
    with pytest.raises(UserError, match="someone else's run on elsewhere"):
        store.lock("mine").__enter__()
    stale = fresh | {"heartbeat": time.time() - STALE_AFTER - 1}
    with bucket.open_output_stream(lease) as stream:
        stream.write(json.dumps(stale).encode())
    with store.lock("mine"):
        assert [o.purpose for o in FolderLock(bucket, store.root, "", "x").leases()] == ["mine"]
    assert object_names(bucket, "contended") == []

    held, refused = [], []
    start = threading.Barrier(4)

    def contend():
        lock = FolderLock(store.filesystem, store.root, store.location, "contender")
        start.wait()
        try:
            lock.acquire()
            held.append(lock)
        except UserError:
            refused.append(lock)

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(held) == 1 and len(refused) == 3
    held[0].release()
    assert object_names(bucket, "contended") == []

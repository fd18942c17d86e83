"""benchmarks/gpu_check.sh on a machine without a GPU: ``--cpu`` runs every part (the CUDA tests
skipped, the benchmarks and the population run at small sizes) and prints one table; without a
CUDA device and without ``--cpu`` it refuses in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_script(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable, "GPU_CHECK_OUT": str(out)}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900)  # fmt: skip


def test_the_cpu_path_runs_every_part_and_prints_one_table(tmp_path):
    result = run_script("--cpu", out=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]
            if line[:1].strip()}  # fmt: skip
    assert [rows[part][1] for part in ("tests", "bench_mlp", "bench_cnn", "run")] == ["ok"] * 4
    assert "skipped" in result.stdout  # the CUDA tests, collected and skipped
    assert result.stdout.count("MFU") == 3  # MLP packs, MLP loop, CNN packs
    models = pd.read_parquet(tmp_path / "population" / "models")
    assert len(models) == 8 and (models["status"] == "ok").all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_without_a_gpu_and_without_the_flag_it_refuses_in_one_line(tmp_path):
    result = run_script(out=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--cpu" in result.stderr

"""A user's own ``jobs/``, ``analysis`` and ``engine/`` never shadow rashomon's (issue #11 §1).

``jobs/`` is the natural folder for a user's job files, and the working directory is first on the
import path of ``python -c``, of notebooks, and of every Ray worker (Ray puts the driver's working
directory there). Every user module here raises when imported, so any import of one fails loudly.
Real processes and a real embedded Ray, started from the user's folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _cli import TIMEOUT, environment, rashomon

JOB = """
name: mine
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [4]}
train: {epochs: 3, batch_size: 16, optimizer: sgd, lr: 0.05}
population:
  seeds: {init: 2, order: 2}
resources: {cpus_per_worker: 1}
flatness: {enabled: false}
"""


def users_folder(root: Path) -> Path:
    def module(path: str) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(f'raise ImportError("the user\'s own {path} was imported")\n')

    module("jobs/__init__.py")
    module("analysis.py")
    module("engine/__init__.py")
    module("engine/cli.py")
    (root / "jobs" / "x.yaml").write_text(textwrap.dedent(JOB))
    return root


@pytest.mark.slow  # a command in a child process, with a Ray of its own
def test_run_analyze_and_import_work_from_a_folder_with_the_users_own_packages(tmp_path):
    root = users_folder(tmp_path)

    run = rashomon("run", "jobs/x.yaml", "--quiet", cwd=root)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("4 models trained (0 diverged, 0 failed, 0 already done)")

    analyze = rashomon("analyze", "results/mine", "--json", cwd=root)
    assert analyze.returncode == 0, analyze.stderr
    assert json.loads(analyze.stdout)["n_models"] == 4

    imports = "; ".join(
        [
            "import json, rashomon, rashomon.analysis, rashomon.jobs, rashomon.engine.cli",
            "names = ['rashomon', 'rashomon.analysis', 'rashomon.jobs', 'rashomon.engine.cli']",
            "print(json.dumps({n: __import__('sys').modules[n].__file__ for n in names}))",
        ]
    )
    python = subprocess.run(
        [sys.executable, "-c", imports],
        cwd=root,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert python.returncode == 0, python.stderr
    for name, file in json.loads(python.stdout).items():
        assert not Path(file).resolve().is_relative_to(root.resolve()), (name, file)

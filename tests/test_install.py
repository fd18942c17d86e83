"""A regular (non-editable) install works with the repository root as working directory.

The trap this guards against: the package's own files importable from the root (a ``rashomon/``
folder there) shadow the installed package whenever Python starts in the root — on a cluster
node, ``ray job submit --working-dir .`` of the repository then fails in the workers with ``No
module named 'rashomon.engine'``. Here the project is installed with ``pip install --target T``
into a fresh virtual environment that sees the dependencies but not the editable install, and
``rashomon`` is imported, listed and run (with an embedded Ray, whose workers get the root first
on their import path) from the root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from _cli import TIMEOUT, environment

pytestmark = pytest.mark.slow  # a pip install, and a command with a Ray of its own

ROOT = Path(__file__).resolve().parents[1]
# what the build does not need; everything else is copied as it is (links stay links)
NOT_BUILT = (".git", ".venv", "results", "build", "*.egg-info", "__pycache__", ".*_cache", "tests")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(T, a Python that sees the dependencies and T, but not the editable install)."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # the build writes build/ and *.egg-info: not into the checkout
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_BUILT))
    target = work / "target"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, timeout=TIMEOUT)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies' folder, whose .pth files (the editable install's among them) a path
    # listed in a .pth file does not get processed
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return target, python


def from_root(python: Path, target: Path, *args: str) -> subprocess.CompletedProcess:
    env = environment(PYTHONPATH=str(target))
    return subprocess.run(
        [str(python), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_the_package_is_imported_from_the_install_not_the_checkout(installed):
    target, python = installed
    names = ["rashomon", "rashomon.engine.cli", "rashomon.jobs", "rashomon.analysis"]
    code = (
        "import importlib as i, json; "
        f"print(json.dumps([i.import_module(n).__file__ for n in {names}]))"
    )
    found = from_root(python, target, "-c", code)
    assert found.returncode == 0, found.stderr
    for file in json.loads(found.stdout):
        assert Path(file).is_relative_to(target), file
    assert (target / "rashomon" / "jobs" / "quickstart.yaml").is_file()
    assert (target / "rashomon" / "jobs" / "data" / "wine.parquet").is_file()


def test_the_installed_command_lists_datasets_and_runs_a_job(installed, tmp_path):
    target, python = installed
    listed = from_root(python, target, str(target / "bin" / "rashomon"), "datasets")
    assert listed.returncode == 0, listed.stderr
    assert "breast_cancer" in listed.stdout and "wine" in listed.stdout

    job = tmp_path / "job.yaml"
    job.write_text(
        textwrap.dedent("""
        name: installed
        dataset: {source: wine}
        model: {family: mlp, hidden: [4]}
        train: {epochs: 2, batch_size: 32, optimizer: sgd, lr: 0.05}
        population:
          seeds: {init: 2}
        resources: {cpus_per_worker: 1}
        flatness: {enabled: false}
        """)
    )
    out = tmp_path / "out"
    command = ["-m", "rashomon.engine.cli", "run", str(job), "--out", str(out), "--quiet"]
    ran = from_root(python, target, *command)  # `-m`: the root is first on every import path
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("2 models trained (0 diverged, 0 failed, 0 already done)")
    assert os.listdir(out / "models")

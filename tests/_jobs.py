"""The tiny job most tests train, and the writer of job files.

Imported by the tests as a plain module (``tests/`` is no package: pytest puts it on ``sys.path``).
"""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# 12 small MLPs on wine that train in a second: 2 learning rates x 3 init x 2 order seeds, in packs
# of 4, with weights. A test changes what it needs: tiny_job(train={"epochs": 40}).
TINY_JOB: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"source": "wine", "split": {"val": 0.25, "test": 0.25, "seed": 1}},
    "model": {"family": "mlp", "hidden": [8], "activation": "relu"},
    "train": {"epochs": 3, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "population": {"seeds": {"init": 3, "order": 2}, "grid": {"lr": [0.05, 0.1]}},
    "resources": {"cpus_per_worker": 1, "models_per_pack": 4},
    "output": {"predictions": ["val", "test"], "weights": True},
    "flatness": {"enabled": False},
}


def tiny_job(**changes: Any) -> str:
    """`TINY_JOB` as YAML, each section of ``changes`` merged into its own (a value of None
    removes the key): ``tiny_job(population={"seeds": {"init": 2}})``."""
    return yaml.safe_dump(_merged(TINY_JOB, changes), sort_keys=False, default_flow_style=None)


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_job(folder: Path, text: str | None = None, name: str = "job.yaml") -> Path:
    """``text`` (default: the tiny job) as ``folder/name`` (the folder made if need be);
    indented text is dedented."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(tiny_job() if text is None else text))
    return path

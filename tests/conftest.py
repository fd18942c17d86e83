"""Shared fixtures. Ray must bind to loopback only: the variable is read when Ray is imported."""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.pop("RAY_ADDRESS", None)

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """One embedded local Ray per test module (2 CPUs, no dashboard)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()

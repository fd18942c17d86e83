"""Shared fixtures: the Ray cluster and the PostgreSQL server (the tiny job and its writer are
in ``_jobs``).

Ray must bind to loopback only: the variable is read when Ray is imported. Tests marked ``slow``
start multi-node clusters, a PostgreSQL server, an S3 server or ``ray start`` processes;
``pytest -m "not slow"`` leaves them out (CI runs everything).
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.pop("RAY_ADDRESS", None)

import pytest
from _postgres import postgres_storage_url_fixture  # noqa: F401  (postgres_storage_url)


@pytest.fixture(scope="module")
def ray_cluster():
    """One embedded local Ray per test module (2 CPUs, no dashboard)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()

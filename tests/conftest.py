"""Shared fixtures: the Ray cluster and the PostgreSQL server (the tiny job and its writer are
in ``_jobs``).

Ray must bind to loopback only: the variable is read when Ray is imported. Tests marked ``slow``
start multi-node clusters, a PostgreSQL server, an S3 server or ``ray start`` processes;
``pytest -m "not slow"`` leaves them out (CI runs everything).
"""

from __future__ import annotations

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.pop("RAY_ADDRESS", None)

import pytest
from _postgres import postgres_storage_url_fixture  # noqa: F401  (postgres_storage_url)


@pytest.fixture(scope="module")
def ray_cluster():
    """The embedded local Ray (2 CPUs, no dashboard), shared by the test modules that ask for
    it: started by the first, stopped at the end of the session or by a module that needs a Ray
    of its own (it calls ``ray.shutdown()`` first; the next module starts this one again)."""
    import ray

    if not ray.is_initialized():
        # as the command's own Ray: the workers' output stays in Ray's logs (a dying trainer's
        # late message must not land in the stderr of a later test)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    return ray


@pytest.fixture(scope="session", autouse=True)
def _stop_ray_at_the_end():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()

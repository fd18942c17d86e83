"""Starting or joining Ray.

Ray has no authentication, so anything that can reach its ports can run code on the machine
(CVE-2023-48022). The embedded Ray therefore binds to loopback only: Ray reads
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` when it is imported and then puts every service on
127.0.0.1 — which is why this module, and nothing before it, imports Ray. The dashboard is never
started by rashomon. ``address="local"`` always starts a fresh embedded instance instead of
joining whatever cluster a stale ``ray_current_cluster`` file points at.

Workers' output is not streamed to the driver: every failure of a trainer reaches the driver as an
exception and is reported there in one line, which the workers' own tracebacks would only repeat
(they stay in Ray's session logs, ``/tmp/ray/session_latest/logs``).
"""

from __future__ import annotations

import os
import signal
import threading

from rashomon.jobs import UserError


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
    """Start an embedded Ray (no address) or join the cluster at ``address`` / ``RAY_ADDRESS``."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return ray
    in_main_thread = threading.current_thread() is threading.main_thread()
    # None: a handler set outside Python, which cannot be given back
    on_sigterm = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    try:
        if address is None:
            ray.init(
                address="local",
                include_dashboard=False,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                logging_level="ERROR",
                log_to_driver=False,
            )
        else:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except ConnectionError as error:
        raise UserError(
            f"--address {address}: cannot join a Ray cluster there ({error}); if the cluster "
            "uses token authentication (`ray start` enables it from Ray 2.59), set "
            "RAY_AUTH_MODE=token (the token comes from RAY_AUTH_TOKEN or ~/.ray/auth_token); "
            "else start one with `ray start --head`, or omit --address and unset RAY_ADDRESS "
            "for an embedded Ray"
        ) from None
    if on_sigterm is not None:
        # Ray's core worker makes SIGTERM abort the process (exit 134 and a stack dump): give it
        # back its handler (the command line's stops a run as Ctrl-C does; a rerun resumes)
        signal.signal(signal.SIGTERM, on_sigterm)
    return ray


def worker_count(ray, cpus_per_worker: float, gpus_per_worker: float) -> int:
    """How many trainer actors the cluster can hold at once."""
    resources = ray.cluster_resources()
    counts = [int(resources.get("CPU", 0) // cpus_per_worker)]
    if gpus_per_worker > 0:
        counts.append(int(resources.get("GPU", 0) // gpus_per_worker))
    workers = min(counts)
    if workers < 1:
        raise UserError(
            f"resources: each worker needs {cpus_per_worker} CPUs and {gpus_per_worker} GPUs, "
            f"but the cluster has {resources.get('CPU', 0)} CPUs and {resources.get('GPU', 0)} "
            "GPUs; lower resources.cpus_per_worker / gpus_per_worker or add nodes"
        )
    return workers

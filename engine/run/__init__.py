"""Where and when packs train: planning, Ray actors, scheduling, searches and estimates.

Everything that starts or joins Ray, or decides which pack goes where, lives here; the pack's
computation itself is `rashomon.engine.model`'s and the files are `rashomon.engine.store`'s.
A command's job, dataset, folder, Ray and trainers are one `RunContext`; its packs go to the
trainers through the one `PackScheduler`.
"""

from rashomon.engine.run._context import RunContext
from rashomon.engine.run._driver import RunSummary, run_job
from rashomon.engine.run._dry_run import Compute, Estimate, estimate
from rashomon.engine.run._recompute import recompute_flatness
from rashomon.engine.run._scheduler import PackScheduler, RunFailed, Task
from rashomon.engine.run._tune import TuneSummary, describe_tune, tune_job

__all__ = [
    "Compute",
    "Estimate",
    "PackScheduler",
    "RunContext",
    "RunFailed",
    "RunSummary",
    "Task",
    "TuneSummary",
    "describe_tune",
    "estimate",
    "recompute_flatness",
    "run_job",
    "tune_job",
]

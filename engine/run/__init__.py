"""Where and when packs train: planning, Ray actors, scheduling, searches and estimates.

Everything that starts or joins Ray, or decides which pack goes where, lives here; the pack's
computation itself is `rashomon.engine.model`'s and the files are `rashomon.engine.store`'s.
"""

from rashomon.engine.run._driver import RunFailed, RunSummary, run_job
from rashomon.engine.run._dry_run import describe_plan
from rashomon.engine.run._recompute import recompute_flatness
from rashomon.engine.run._tune import TuneSummary, describe_tune, tune_job

__all__ = [
    "RunFailed",
    "RunSummary",
    "TuneSummary",
    "describe_plan",
    "describe_tune",
    "recompute_flatness",
    "run_job",
    "tune_job",
]

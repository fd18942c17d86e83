"""The public functions of ``rashomon`` (SPEC §2), for notebooks and scripts.

Each is a thin layer over the engine and the analysis that the ``rashomon`` command uses too:
a job given as a dict is validated exactly as a job file is, a run resumes as the command's does,
and the Ray that a call starts it also stops (a Ray the caller started stays running).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rashomon.analysis import (
    Analysis,
    CohortAnalysis,
    Results,
    analyze,
    open_results,
    write_report,
)
from rashomon.jobs import Job, UserError, load_job, parse_job, redact

if TYPE_CHECKING:
    import pandas as pd

    from rashomon.engine.run import TuneSummary

__all__ = [
    "Analysis",
    "CohortAnalysis",
    "Results",
    "TuneResult",
    "analyze",
    "open_results",
    "report",
    "run",
    "tune",
]

JobLike = str | os.PathLike | Mapping[str, Any] | Job
DICT_SOURCE = "job dict"  # names a job given as a dict in error messages


def run(
    job: JobLike,
    out: str | os.PathLike | None = None,
    address: str | None = None,
    *,
    progress: bool = True,
) -> Results:
    """Train every model of a job on Ray and return its results folder.

    Running it again on the same folder resumes: models already finished are not trained again,
    so an interrupted run (Ctrl-C, a lost node) continues where the files say it stopped.

    Parameters
    ----------
    job : str, path-like or dict
        A job YAML file, or the same settings as a dict (validated exactly as the file would
        be; relative dataset paths are resolved from the working directory).
    out : str or path-like, optional
        The results folder: a path or a ``pyarrow.fs`` URL; default ``results/<job name>``.
    address : str, optional
        A Ray cluster to join (``"auto"`` or ``"HOST:PORT"``); default ``RAY_ADDRESS``, else an
        embedded Ray on this machine, listening on loopback only and stopped at the end.
    progress : bool, default True
        Show a progress bar (a widget in Jupyter; a plain line now and then when stderr is a
        log file rather than a terminal).

    Returns
    -------
    Results
        The results folder, opened (`open_results`).

    Raises
    ------
    rashomon.jobs.UserError
        A mistake in the job or the folder (the message names the place and the fix).
    rashomon.engine.run.RunFailed
        The folder cannot take more results (full, read-only); what is written stays.

    Warns
    -----
    RuntimeWarning
        Some models failed (``results.models["error"]`` says why); run again to retry them.
    """
    from rashomon.engine.run import run_job

    spec = _job(job)
    out = _out(spec, out)
    with _ray_session():
        summary = run_job(spec, out, address=address, show_progress=progress)
    if summary.failed:
        warnings.warn(
            f"{summary.failed} of {summary.total} models failed (results.models['error'] says "
            "why); run the same job again to retry them",
            RuntimeWarning,
            stacklevel=2,
        )
    return open_results(out)


def tune(
    job: JobLike,
    trials: int,
    out: str | os.PathLike | None = None,
    storage: str | None = None,
    study: str | None = None,
    address: str | None = None,
    *,
    progress: bool = True,
) -> TuneResult:
    """An Optuna search in which every trial trains a cohort of seeds (SPEC §7).

    Parameters
    ----------
    job : str, path-like or dict
        A job with a ``search:`` section (as for `run`).
    trials : int
        Completed trials the study should hold; calling it again continues the study, without
        repeating trials or models.
    out : str or path-like, optional
        The results folder of every trial's models; default ``results/<job name>``.
    storage : str, optional
        The Optuna storage URL; default ``sqlite:///<out>/study.db``. Its password is never
        printed.
    study : str, optional
        The study's name; default the job's name.
    address : str, optional
        A Ray cluster to join, as for `run`.
    progress : bool, default True
        Show a progress bar, as for `run`.

    Returns
    -------
    TuneResult
        The study's trials, its best trial (or Pareto front) and the results folder.
    """
    from rashomon.engine.run import tune_job

    spec = _job(job)
    out = _out(spec, out)
    with _ray_session():
        summary = tune_job(spec, out, trials, storage, study, address, progress)
    return TuneResult(summary, open_results(out))


def report(
    results_or_dir: Results | Analysis | CohortAnalysis | str | os.PathLike,
    html: str | os.PathLike | None = None,
    *,
    epsilon: float = 0.01,
    metric: str = "val_err",
    relative: bool = False,
    split: str = "test",
    by: str | None = None,
) -> Path:
    """Write a self-contained HTML report (plots inline, no scripts, opens offline).

    Parameters
    ----------
    results_or_dir : Results, Analysis, CohortAnalysis, str or path-like
        The results (or their folder) to analyse with the settings below, or an analysis
        already made, whose settings are then used.
    html : str or path-like, optional
        The file to write; default ``report.html`` in a local results folder, else in the
        working directory.
    epsilon, metric, relative, split
        As for `analyze`.
    by : str, optional
        Add a section comparing the cohorts of this models column (as ``analyze(by=...)``).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    if isinstance(results_or_dir, CohortAnalysis):
        by = results_or_dir.by
        some = next(iter(results_or_dir.cohorts.values()))
        chosen = some.rashomon_set
        analysis = analyze(some.results, chosen.epsilon, chosen.metric, chosen.relative, some.split)
        cohorts = results_or_dir
    else:
        if isinstance(results_or_dir, Analysis):
            analysis = results_or_dir
            if analysis.n_pending is None:
                raise UserError(
                    "report: this Analysis is one cohort's; give the results, the whole "
                    "population's analysis or the CohortAnalysis"
                )
        else:
            analysis = analyze(results_or_dir, epsilon, metric, relative, split)
        chosen = analysis.rashomon_set
        cohorts = None
        if by is not None:
            cohorts = analyze(
                analysis.results, chosen.epsilon, chosen.metric, chosen.relative,
                analysis.split, by=by,
            )  # fmt: skip
    return write_report(analysis.results, analysis, html, cohorts)


class TuneResult:
    """What `tune` returns: the study and the results folder of its trials' models.

    Attributes
    ----------
    study_name : str
    objectives : tuple of str
        ``val_acc``, and ``disagreement`` for a two-objective search.
    trials : pandas.DataFrame
        One row per trial: number, parameters, values, state.
    best : list of optuna.trial.FrozenTrial
        The best trial, or the Pareto front of a multi-objective study.
    results : Results
        Every trial's models, with their ``trial`` number: analyse it like any run.
    storage : str
        The study's storage URL (it may hold a password: `repr` masks it).
    """

    def __init__(self, summary: TuneSummary, results: Results) -> None:
        self.study_name: str = summary.study_name
        self.objectives: tuple[str, ...] = tuple(summary.objectives)
        self.trials: pd.DataFrame = summary.trials
        self.best: list = list(summary.best)
        self.results = results
        self.storage: str = summary.storage

    def __repr__(self) -> str:
        states = self.trials["state"].value_counts() if "state" in self.trials else {}
        counts = ", ".join(f"{n} {str(state).lower()}" for state, n in states.items())
        if len(self.best) == 1:
            trial = self.best[0]
            values = ", ".join(
                f"{name} {value:.4g}" for name, value in zip(self.objectives, trial.values,
                                                              strict=False)
            )  # fmt: skip
            best = f"best trial {trial.number}: {values} with {_params(trial.params)}"
        else:
            best = f"Pareto front of {len(self.best)} trials ({', '.join(self.objectives)})"
        return (
            f"TuneResult(study {self.study_name!r} in {redact(self.storage)}: "
            f"{len(self.trials)} trials ({counts or 'none'})\n  {best}\n"
            f"  results {redact(self.results.location)!r})"
        )


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _job(job: JobLike) -> Job:
    if isinstance(job, Job):
        return job
    if isinstance(job, Mapping):
        return parse_job(_plain(job, ""), DICT_SOURCE, base_dir=Path.cwd())
    if isinstance(job, str | os.PathLike):
        return load_job(job)
    raise UserError(
        f"job: expected the path of a job YAML file or a dict of its settings, got a "
        f"{type(job).__name__}"
    )


def _plain(value: Any, where: str) -> Any:
    """``value`` as a YAML document could hold it: numpy values as Python ones, tuples as lists,
    paths as text; anything else is refused with its place in the job."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {key: _plain(item, f"{where}.{key}".lstrip(".")) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic | numpy.ndarray):
        return _plain(value.tolist(), where)
    raise UserError(
        f"{DICT_SOURCE}: {where or 'the job'}: a {type(value).__name__} is not a job setting; "
        "use text, numbers, booleans, None, lists and dicts"
    )


def _out(job: Job, out: str | os.PathLike | None) -> str | os.PathLike:
    return f"results/{job.name}" if out is None else out


@contextlib.contextmanager
def _ray_session() -> Iterator[None]:
    """Stop the Ray (embedded, or the connection to a cluster) that the block started, as the
    command does; give SIGTERM back the handler it had, which Ray's shutdown resets."""
    ray = sys.modules.get("ray")
    running = ray is not None and ray.is_initialized()
    try:
        yield
    finally:
        ray = sys.modules.get("ray")
        if not running and ray is not None and ray.is_initialized():
            main = threading.current_thread() is threading.main_thread()
            handler = signal.getsignal(signal.SIGTERM) if main else None
            ray.shutdown()
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)

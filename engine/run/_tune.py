"""``rashomon tune``: an Optuna search whose every trial is a cohort of seeds.

The driver is the only client of the study (ask-and-tell): it asks for a configuration, trains
the configuration under all the job's seeds as ordinary packs on the engine's actors, and tells
the study only after the cohort's Parquet is written, reading the objectives back from the files.
So the study never holds a value the results folder does not explain, and the searched
population is a results folder like any other for ``rashomon analyze``.

Resume: model ids depend only on configuration and seeds, so a configuration asked again finds
its finished models on disk and trains only what is missing. The driver holds the results
folder's lock, records itself on each trial it asks for, and keeps a heartbeat in the study's
user attributes; a trial left ``RUNNING`` by a driver that is gone (killed) is marked ``FAIL`` on
restart (its finished models stay and are reused), while one whose driver lives — another
``tune`` of the same study into another folder — is left to it. Only completed trials count
towards ``--trials``.

The study records what users look for in it (``optuna-dashboard``, ``trials_dataframe``): the
objectives' names, and on every trial its cohort size and results folder. A storage URL's
password is never printed or recorded.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rashomon.engine.run._context import FINISHED, RunContext
from rashomon.engine.run._driver import RunSummary, train
from rashomon.engine.run._plan import Pack
from rashomon.engine.store import Owner, ResultsDir
from rashomon.jobs import UserError, cohort, redact

IN_FLIGHT_TRIALS_PER_WORKER = 1
DRIVER = "rashomon_driver"  # trial attribute: the driver's token; study attribute DRIVER:token


@dataclass
class TuneSummary:
    study_name: str
    storage: str = field(repr=False)  # may hold a password
    trials: pd.DataFrame
    objectives: tuple[str, ...]
    best: list = field(default_factory=list)
    run: RunSummary | None = None


def tune_job(
    job,
    out_dir: str | os.PathLike,
    n_trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    address: str | None = None,
    show_progress: bool = True,
) -> TuneSummary:
    if not job.search.distributions():
        raise UserError(
            f"{job.name}: the job has no search: section to tune; add one, e.g. "
            "search: {lr: {loguniform: [0.001, 0.1]}}"
        )
    if n_trials < 1:
        raise UserError(f"--trials {n_trials}: must be >= 1")
    context = RunContext.for_job(job, out_dir)
    storage = storage or _default_storage(context.results)
    with context.writing(f"`rashomon tune` of job {job.name}"):
        return _search(context, n_trials, storage, study_name, address, show_progress)


def _search(
    context: RunContext,
    n_trials: int,
    storage: str,
    study_name: str | None,
    address: str | None,
    show_progress: bool,
) -> TuneSummary:
    """The search, under the results folder's lock."""
    import optuna

    job, lock = context.job, context.lock
    name = study_name or job.name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=_storage(storage),
        directions=job.search.directions,
        load_if_exists=True,
    )
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and in every UI since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(job.search.objectives))
    driver = lock.me.token
    lock.on_heartbeat(lambda: study.set_user_attr(f"{DRIVER}:{driver}", lock.me.record()))
    _fail_abandoned_trials(study)
    # a resumed study must not replay the first run's random draws
    study.sampler = _sampler(job.search, offset=len(study.trials))
    start = time.perf_counter()
    summary = RunSummary(0, 0, 0, 0, 0, 0.0, context.results.location)
    context.connect(address)
    search = _Search(study, context, n_trials, driver)
    if search.wanted():
        train(
            context,
            search.next_packs(),
            summary,
            show_progress,
            refill=search.next_packs,
            on_pack=search.pack_done,
        )
    summary.seconds = time.perf_counter() - start
    return TuneSummary(
        study_name=name,
        storage=storage,
        trials=study.trials_dataframe(attrs=("number", "params", "values", "state")),
        objectives=tuple(job.search.objectives),
        best=study.best_trials,
        run=summary,
    )


def _default_storage(results: ResultsDir) -> str:
    """SQLite beside the results; SQLite cannot live in an object store."""
    if not results.is_local:
        raise UserError(
            f"--out {results.location}: the default study storage is a SQLite file in the "
            "results folder, which an object store cannot hold; pass --storage "
            "postgresql://... (or journal:PATH on a shared filesystem)"
        )
    return f"sqlite:///{results.path('study.db')}"


class _Search:
    """Trials in flight: which packs each still waits for, and telling when a cohort is done."""

    def __init__(self, study, context: RunContext, n_trials: int, driver: str):
        self.study, self.context, self.job = study, context, context.job
        self.n_trials, self.driver = n_trials, driver
        self.waiting: dict[int, set[str]] = {}  # trial number -> unfinished pack ids
        self.trials_of: dict[str, set[int]] = {}  # pack id in flight -> trials waiting for it
        self.pack_of: dict[str, str] = {}  # model id in flight -> its pack id
        self.cohorts: dict[int, tuple[object, list[str]]] = {}
        self.failed = 0  # trials of this run that failed: they stop the search at n_trials

    def wanted(self) -> int:
        """Trials still to start so that ``n_trials`` complete."""
        import optuna

        complete = len(self.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        if self.failed >= self.n_trials:
            return 0
        return max(0, self.n_trials - complete - len(self.waiting))

    def next_packs(self) -> list[Pack]:
        """Ask for trials until enough are in flight to keep every worker busy."""
        packs: list[Pack] = []
        limit = max(1, self.context.workers * IN_FLIGHT_TRIALS_PER_WORKER)
        finished = self.context.finished_ids()
        while self.wanted() and len(self.waiting) < limit:
            trial = self.study.ask()
            trial.set_user_attr(DRIVER, self.driver)
            params = {name: _suggest(trial, name, dist) for name, dist in self._distributions()}
            variants = cohort(self.job, params, trial=trial.number)
            trial.set_user_attr("cohort_size", len(variants))
            trial.set_user_attr("results_dir", redact(self.context.results.location))
            self.cohorts[trial.number] = (trial, [v.model_id for v in variants])
            # a configuration asked twice waits for the packs already training its models
            shared = {self.pack_of[v.model_id] for v in variants if v.model_id in self.pack_of}
            pending = [
                v for v in variants if v.model_id not in finished and v.model_id not in self.pack_of
            ]
            if not pending and not shared:
                self._tell(trial.number)
                continue
            trial_packs = self.context.plan(pending)
            self.waiting[trial.number] = shared | {p.pack_id for p in trial_packs}
            for pack in trial_packs:
                self.pack_of |= {m.model_id: pack.pack_id for m in pack.models}
            for pack_id in self.waiting[trial.number]:
                self.trials_of.setdefault(pack_id, set()).add(trial.number)
            packs += trial_packs
        return packs

    def pack_done(self, pack: Pack) -> None:
        for model in pack.models:
            self.pack_of.pop(model.model_id, None)
        for number in sorted(self.trials_of.pop(pack.pack_id, ())):
            self.waiting[number].discard(pack.pack_id)
            if not self.waiting[number]:
                del self.waiting[number]
                self._tell(number)

    def _tell(self, number: int) -> None:
        import optuna

        trial, model_ids = self.cohorts.pop(number)
        results = self.context.results
        models = results.recorded_metrics(model_ids)
        complete = len(models) == len(model_ids) and models["status"].isin(FINISHED).all()
        objectives = self.job.search.objectives
        values = [_objective(name, models, results) for name in objectives] if complete else []
        if not complete or not np.isfinite(values).all():
            self.failed += 1
            _tell(self.study, trial, state=optuna.trial.TrialState.FAIL)
            return
        _tell(self.study, trial, values if len(values) > 1 else values[0])

    def _distributions(self):
        return self.job.search.distributions().items()


def _objective(name: str, models: pd.DataFrame, results: ResultsDir) -> float:
    """The cohort's mean validation accuracy, or its mean disagreement on the validation split."""
    if name == "val_acc":
        return float(models["val_acc"].mean())
    from rashomon.analysis import disagreement, open_results, predicted_classes

    ok = models.loc[models["status"] == "ok", "model_id"].tolist()
    if len(ok) < 2:
        return 0.0
    probabilities = open_results(results.location).probabilities("val", ok)
    return float(disagreement(predicted_classes(probabilities), probabilities.shape[-1]).mean())


def _suggest(trial, name: str, dist) -> object:
    if getattr(dist, "loguniform", None) is not None:
        return trial.suggest_float(name, *dist.loguniform, log=True)
    if getattr(dist, "uniform", None) is not None:
        return trial.suggest_float(name, *dist.uniform)
    if getattr(dist, "int", None) is not None:
        return trial.suggest_int(name, *dist.int)
    encoded = [json.dumps(list(c)) if isinstance(c, tuple) else c for c in dist.choice]
    value = trial.suggest_categorical(name, encoded)
    return tuple(json.loads(value)) if isinstance(value, str) and value.startswith("[") else value


def _sampler(search, offset: int):
    """NSGA-II for several objectives, else TPE with constant liar (trials run in parallel)."""
    import optuna

    seed = search.seed + offset
    if len(search.objectives) > 1:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


def _storage(url: str):
    """An Optuna storage: a database URL, or ``journal:PATH`` for a journal file on shared disk."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        except OSError as error:
            raise UserError(
                f"--storage {redact(url)}: cannot open the journal file "
                f"({error.strerror or error}); give a file in an existing, writable folder (on a "
                "cluster, one that every node shares)"
            ) from None
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as error:  # a missing driver, a bad URL, an unreachable server
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            redact(f"--storage {url}: cannot open this Optuna storage ({message})")
        ) from None


def _tell(study, trial, *args, **kwargs) -> None:
    """Tell the study, unless another driver has finished the trial meanwhile (it judged this
    one gone: a missed heartbeat); the cohort's models stay for whoever asks it again."""
    try:
        study.tell(trial, *args, **kwargs)
    except ValueError as error:
        if "Cannot tell a" not in str(error):
            raise


def _fail_abandoned_trials(study) -> None:
    """Trials left RUNNING by a driver that is gone: mark them FAIL (their finished models are
    kept). A trial of a live driver (its heartbeat in the study is fresh) is its driver's."""
    import optuna

    drivers = study.user_attrs
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        record = drivers.get(f"{DRIVER}:{trial.user_attrs.get(DRIVER)}")
        owner = Owner.from_json(record) if isinstance(record, dict) else None
        if owner is not None and owner.alive():
            continue
        _tell(study, trial.number, state=optuna.trial.TrialState.FAIL)


def describe_tune(summary: TuneSummary) -> str:
    """The trials table and the best trial, or the Pareto front for several objectives."""
    trials = summary.trials
    with pd.option_context("display.width", 120, "display.max_rows", 200):
        lines = [
            f"study {summary.study_name} in {redact(summary.storage)}",
            trials.to_string(index=False),
        ]
    label = "Pareto front" if len(summary.objectives) > 1 else "best trial"
    lines.append(f"{label} ({', '.join(summary.objectives)}):")
    for trial in summary.best:
        lines.append(f"  trial {trial.number}: values {trial.values} params {trial.params}")
    run = summary.run
    if run is not None:
        lines.append(
            f"{run.trained} models trained in this run ({run.diverged} diverged, {run.failed} "
            f"failed) in {run.seconds:.1f} s -> {run.out_dir}"
        )
    return "\n".join(lines)

"""The driver of a population run: job → plan → packs on Ray actors → Parquet.

The driver owns all decisions — what is left to train, which pack goes where, whether a failure
is retried — and the actors own the heavy work. At most ``IN_FLIGHT_PER_WORKER`` packs wait per
actor, so the object store never fills with queued work and a crash costs only the packs in
flight. What is finished is read back from the results folder, never from driver memory, which is
what makes a rerun after a kill resume exactly where the files say the run stopped.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from rashomon.engine.model import FlatnessSettings
from rashomon.engine.run import _cluster
from rashomon.engine.run._actor import PackTrainer, dataset_payload
from rashomon.engine.run._plan import Pack, plan_packs
from rashomon.engine.run._preflight import check_models
from rashomon.engine.run._progress import progress_bar
from rashomon.engine.store import ResultsDir, models_table
from rashomon.jobs import UserError, expand, prepare_job_dataset

IN_FLIGHT_PER_WORKER = 2
MAX_ATTEMPTS = 3
START_TIMEOUT = 600.0  # seconds to wait for a trainer to start while no pack is in flight
FINISHED = ("ok", "diverged")
# a results folder that cannot take a pack's files cannot take any other's: retrying is futile
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class RunFailed(Exception):
    """The run stopped before its end (the results folder cannot take more files); what is
    written stays, and running the same command again resumes."""


@dataclass
class RunSummary:
    total: int
    already_done: int
    trained: int
    diverged: int
    failed: int
    seconds: float
    out_dir: str
    repaired: int = 0  # damaged packs found at the start, whose models were trained again

    def line(self) -> str:
        repaired = f"; {self.repaired} damaged packs trained again" if self.repaired else ""
        return (
            f"{self.trained} models trained ({self.diverged} diverged, {self.failed} failed, "
            f"{self.already_done} already done) of {self.total} in {self.seconds:.1f} s "
            f"-> {self.out_dir}{repaired}"
        )


def pending_models(job, results: ResultsDir):
    """The job's variants without a finished record in an intact pack, and the ids of stale
    failed packs."""
    recorded = results.recorded_models()
    finished = set(recorded.loc[recorded["status"].isin(FINISHED), "model_id"])
    failed_packs = set(recorded.loc[~recorded["status"].isin(FINISHED), "pack_id"])
    variants = expand(job)
    return [v for v in variants if v.model_id not in finished], len(variants), failed_packs


def run_job(
    job,
    out_dir: str | os.PathLike,
    address: str | None = None,
    show_progress: bool = True,
    num_cpus: int | None = None,
) -> RunSummary:
    """Train every pending model of ``job`` into ``out_dir``, holding the folder's lock."""
    start = time.perf_counter()
    dataset = prepare_job_dataset(job)
    results = ResultsDir(out_dir)
    check_models(job, dataset, results)
    with results.lock(f"`rashomon run` of job {job.name}") as lock:
        repaired = results.claim(job, dataset)
        pending, total, failed_packs = pending_models(job, results)
        summary = RunSummary(
            total, total - len(pending), 0, 0, 0, 0.0, results.location, len(repaired)
        )
        if pending:
            ray = _cluster.connect(address, num_cpus=num_cpus)
            resources = job.resources
            workers = _cluster.worker_count(
                ray, resources.cpus_per_worker, resources.gpus_per_worker
            )
            packs = plan_packs(
                pending,
                job.train,
                resources.models_per_pack,
                dataset.n_features,
                dataset.n_classes,
                n_workers=workers,
                on_gpu=resources.gpus_per_worker > 0,
                in_shape=dataset.example_shape,
                module=job.module_reference(),
            )
            results.discard_packs(failed_packs - {p.pack_id for p in packs})
            scheduler = _Scheduler(ray, job, dataset, results, workers, summary, show_progress)
            scheduler.run(packs, on_done=lambda _pack: lock.check())
            lock.check()
            results.remove_uncommitted()
    summary.seconds = time.perf_counter() - start
    return summary


class _Scheduler:
    """Packs go only to trainers that have started: a replacement that the cluster has no room
    for (its node is gone for good) just never gets any, and while no pack is in flight the wait
    for a trainer to start is bounded, so a run cannot hang on an actor that is never placed.

    Trainers are named ``rashomon-<run>-<n>`` (``ray.util.list_named_actors``), so an operator
    can find one, or evict it with ``ray.kill(ray.get_actor(name))``: its packs are retried."""

    def __init__(self, ray, job, dataset, results, workers, summary, show_progress) -> None:
        self.ray, self.job, self.results, self.summary = ray, job, results, summary
        resources = job.resources
        actor_class = ray.remote(
            num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker
        )(PackTrainer)
        run = uuid.uuid4().hex[:8]
        names = (f"rashomon-{run}-{n}" for n in itertools.count())
        data_ref = ray.put(dataset_payload(dataset))
        threads = max(1, int(resources.cpus_per_worker))
        flatness = FlatnessSettings.from_config(job.flatness) if job.flatness.enabled else None
        self.new_actor = lambda: actor_class.options(name=next(names)).remote(
            data_ref,
            results.location,
            tuple(job.output.predictions),
            job.output.weights,
            threads,
            flatness,
        )
        self.actors: list = [None] * workers
        self.starting: dict = {}  # an actor's ready ref -> its slot in self.actors
        self.started: set[int] = set()  # slots whose actor has started
        self.start_error = ""
        for index in range(workers):
            self._start(index)
        self.show_progress = show_progress

    def run(
        self,
        packs: list[Pack],
        refill: Callable[[], list[Pack]] | None = None,
        on_done: Callable[[Pack], None] | None = None,
    ) -> None:
        """Train ``packs``; ``refill`` (called whenever a worker would idle) may hand in more,
        and ``on_done`` hears of every pack once it is finished or recorded as failed.

        The trainers are killed when it returns or raises: left to the garbage collector they
        could hold their CPUs long after (a caught actor error's traceback holds this frame, and
        so every actor handle, in a reference cycle), starving the next run in the process."""
        try:
            self._train(packs, refill, on_done)
        finally:
            for actor in self.actors:
                self.ray.kill(actor)

    def _train(self, packs, refill, on_done) -> None:
        queue = deque(packs)
        in_flight: dict = {}
        attempts: Counter[str] = Counter()
        load = Counter()
        with progress_bar(
            self.summary.total or None,  # a search does not know its size
            self.summary.already_done,
            self.show_progress,
        ) as progress:
            while True:
                if refill is not None and len(queue) < len(self.actors):
                    queue.extend(refill())
                if not queue and not in_flight:
                    break
                for index in sorted(self.started):
                    actor = self.actors[index]
                    while queue and load[index] < IN_FLIGHT_PER_WORKER:
                        pack = queue.popleft()
                        in_flight[actor.train.remote(pack)] = (pack, index, actor)
                        load[index] += 1
                ref = self._next(in_flight)
                if ref in self.starting:
                    self._started(ref)
                    continue
                pack, index, actor = in_flight.pop(ref)
                load[index] -= 1
                try:
                    outcome = self.ray.get(ref)
                except self.ray.exceptions.RayActorError:
                    self._replace_actor(index, actor)
                    done = self._retry_or_fail(pack, attempts, queue, "its worker died", progress)
                except self.ray.exceptions.RayTaskError as error:
                    self._stop_if_unwritable(error)
                    done = self._retry_or_fail(pack, attempts, queue, _short(error), progress)
                else:
                    self.summary.trained += outcome["models"]
                    self.summary.diverged += outcome["diverged"]
                    progress.update(outcome["models"])
                    done = True
                if done and on_done is not None:
                    on_done(pack)

    def _start(self, index: int) -> None:
        self.actors[index] = self.new_actor()
        self.starting[self.actors[index].__ray_ready__.remote()] = index

    def _next(self, in_flight: dict):
        """The next pack or trainer start to finish. Packs in flight always finish or fail (a
        lost node fails its actor's packs); with none in flight only a start can come, and the
        cluster may never have room for it."""
        waiting = [*in_flight, *self.starting]
        if not waiting:
            raise UserError(
                f"no trainer is running and none has started ({self.start_error}); run the "
                "same command again to resume"
            )
        timeout = None if in_flight else START_TIMEOUT
        ready, _ = self.ray.wait(waiting, num_returns=1, timeout=timeout)
        if not ready:
            resources, free = self.job.resources, self.ray.available_resources()
            raise UserError(
                f"no trainer is running and none has started in {START_TIMEOUT:.0f} s: the "
                f"cluster has no room for one; each needs {resources.cpus_per_worker} CPUs and "
                f"{resources.gpus_per_worker} GPUs, the cluster has {free.get('CPU', 0)} CPUs and "
                f"{free.get('GPU', 0)} GPUs free: add nodes or lower resources.cpus_per_worker / "
                "gpus_per_worker, then run again to resume"
            )
        return ready[0]

    def _started(self, ref) -> None:
        """Let a started trainer take packs. One that died before starting is not replaced (it
        never held a pack, so no retry budget bounds its replacements): its slot stays empty.

        A trainer whose start raised (an import error in the worker, a failing constructor)
        fails alike on every node, so while no trainer runs that error ends the run at once."""
        index = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayActorError as error:
            if not error.actor_init_failed:
                self.start_error = f"last failure: {_short(error)}"
                return
            failure = _startup_failure(str(error))
            if not self.started:
                raise UserError(f"the trainers cannot start: {failure}") from None
            self.start_error = f"a trainer failed to start: {failure}"
        else:
            self.started.add(index)

    def _stop_if_unwritable(self, error) -> None:
        """Stop the run when the results folder cannot take a pack's files (disk full, quota,
        read-only): every other pack would fail the same way, and be recorded as failed."""
        cause = getattr(error, "cause", None)
        if isinstance(cause, OSError) and cause.errno in UNWRITABLE:
            raise RunFailed(
                f"{self.results.location}: cannot write the results ({os.strerror(cause.errno)}); "
                "make room or fix the folder's permissions, then run the same command again to "
                "resume"
            )

    def _replace_actor(self, index: int, dead) -> None:
        """Replace a dead actor once, however many of its packs report its death."""
        if self.actors[index] is dead:
            self.ray.kill(dead, no_restart=True)
            self.started.discard(index)
            self._start(index)

    def _retry_or_fail(self, pack, attempts, queue, reason, progress) -> bool:
        """Queue ``pack`` again, or record it as failed after MAX_ATTEMPTS (returns True)."""
        attempts[pack.pack_id] += 1
        if attempts[pack.pack_id] < MAX_ATTEMPTS:
            queue.append(pack)
            return False
        error = f"failed {MAX_ATTEMPTS} times; last: {reason}"
        failed = pack.columns() | {"status": ["failed"] * len(pack), "error": [error] * len(pack)}
        self.results.write_pack(pack.pack_id, models_table(failed))
        self.summary.failed += len(pack)
        progress.update(len(pack))
        return True


def _short(error: Exception) -> str:
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')


def _startup_failure(text: str) -> str:
    """The exception, and where it was raised, in the traceback text that Ray gives for an actor
    whose start failed. A file in the working directory is called out: Ray puts that folder first
    on every worker's import path, where a user's ``torch.py`` shadows the installed package."""
    lines = text.splitlines()
    frames = [(i, m) for i, line in enumerate(lines) if (m := _FRAME.match(line))]
    if not frames:
        return lines[-1][:500] if lines else "unknown error"
    last, frame = frames[-1]
    raised = [line for line in lines[last + 1 :] if line and not line[0].isspace()]
    exception = (raised[0] if raised else lines[-1]).strip()[:500]
    where = f"{frame['file']}, line {frame['line']}"
    if _is_users(frame["file"]):
        return (
            f"{exception} (raised in {where}, in the working directory, which Ray puts first on "
            "the workers' import path: if that file shadows an installed package, rename it or "
            "start rashomon from another folder)"
        )
    return f"{exception} (raised in {where})"


def _is_users(file: str) -> bool:
    """Whether ``file`` lies in the working directory but is neither ours nor installed."""
    import rashomon

    path = os.path.realpath(file)
    ours = os.path.realpath(os.path.dirname(rashomon.__file__))
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    return (
        path.startswith(os.path.realpath(os.getcwd()) + os.sep)
        and not path.startswith(ours + os.sep)
        and not any(path.startswith(p + os.sep) for p in installed)
    )

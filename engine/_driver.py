"""The driver of a population run: job → plan → packs on Ray actors → Parquet.

The driver owns all decisions — what is left to train, which pack goes where, whether a failure
is retried — and the actors own the heavy work. At most ``IN_FLIGHT_PER_WORKER`` packs wait per
actor, so the object store never fills with queued work and a crash costs only the packs in
flight. What is finished is read back from the results folder, never from driver memory, which is
what makes a rerun after a kill resume exactly where the files say the run stopped.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from engine import _cluster
from engine._actor import PackTrainer, dataset_payload
from engine._flatness import FlatnessSettings
from engine._plan import Pack, plan_packs
from engine._store import ResultsDir
from engine._tables import models_table
from jobs import expand, prepare_job_dataset

IN_FLIGHT_PER_WORKER = 2
MAX_ATTEMPTS = 3
FINISHED = ("ok", "diverged")


@dataclass
class RunSummary:
    total: int
    already_done: int
    trained: int
    diverged: int
    failed: int
    seconds: float
    out_dir: str

    def line(self) -> str:
        return (
            f"{self.trained} models trained ({self.diverged} diverged, {self.failed} failed, "
            f"{self.already_done} already done) of {self.total} in {self.seconds:.1f} s "
            f"-> {self.out_dir}"
        )


def pending_models(job, results: ResultsDir):
    """The job's variants without a finished record, and the ids of stale failed packs."""
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
    start = time.perf_counter()
    dataset = prepare_job_dataset(job)
    results = ResultsDir(out_dir)
    results.claim(job, dataset)
    pending, total, failed_packs = pending_models(job, results)
    summary = RunSummary(total, total - len(pending), 0, 0, 0, 0.0, results.location)
    if pending:
        ray = _cluster.connect(address, num_cpus=num_cpus)
        resources = job.resources
        workers = _cluster.worker_count(ray, resources.cpus_per_worker, resources.gpus_per_worker)
        packs = plan_packs(
            pending,
            job.train,
            resources.models_per_pack,
            dataset.n_features,
            dataset.n_classes,
            n_workers=workers,
            on_gpu=resources.gpus_per_worker > 0,
        )
        results.discard_packs(failed_packs - {p.pack_id for p in packs})
        _Scheduler(ray, job, dataset, results, workers, summary, show_progress).run(packs)
        results.remove_uncommitted()
    summary.seconds = time.perf_counter() - start
    return summary


class _Scheduler:
    def __init__(self, ray, job, dataset, results, workers, summary, show_progress) -> None:
        self.ray, self.job, self.results, self.summary = ray, job, results, summary
        resources = job.resources
        actor_class = ray.remote(PackTrainer).options(
            num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker
        )
        data_ref = ray.put(dataset_payload(dataset))
        threads = max(1, int(resources.cpus_per_worker))
        flatness = FlatnessSettings.from_config(job.flatness) if job.flatness.enabled else None
        self.new_actor = lambda: actor_class.remote(
            data_ref,
            results.location,
            tuple(job.output.predictions),
            job.output.weights,
            threads,
            flatness,
        )
        self.actors = [self.new_actor() for _ in range(workers)]
        self.show_progress = show_progress

    def run(
        self,
        packs: list[Pack],
        refill: Callable[[], list[Pack]] | None = None,
        on_done: Callable[[Pack], None] | None = None,
    ) -> None:
        """Train ``packs``; ``refill`` (called whenever a worker would idle) may hand in more,
        and ``on_done`` hears of every pack once it is finished or recorded as failed."""
        from tqdm import tqdm

        queue = deque(packs)
        in_flight: dict = {}
        attempts: Counter[str] = Counter()
        load = Counter()
        with tqdm(
            total=self.summary.total or None,  # a search does not know its size
            initial=self.summary.already_done,
            unit="model",
            disable=not self.show_progress,
            smoothing=0.1,
        ) as progress:
            while True:
                if refill is not None and len(queue) < len(self.actors):
                    queue.extend(refill())
                if not queue and not in_flight:
                    break
                for index, actor in enumerate(self.actors):
                    while queue and load[index] < IN_FLIGHT_PER_WORKER:
                        pack = queue.popleft()
                        in_flight[actor.train.remote(pack)] = (pack, index, actor)
                        load[index] += 1
                ready, _ = self.ray.wait(list(in_flight), num_returns=1)
                pack, index, actor = in_flight.pop(ready[0])
                load[index] -= 1
                try:
                    outcome = self.ray.get(ready[0])
                except self.ray.exceptions.RayActorError:
                    self._replace_actor(index, actor)
                    done = self._retry_or_fail(pack, attempts, queue, "its worker died", progress)
                except self.ray.exceptions.RayTaskError as error:
                    done = self._retry_or_fail(pack, attempts, queue, _short(error), progress)
                else:
                    self.summary.trained += outcome["models"]
                    self.summary.diverged += outcome["diverged"]
                    progress.update(outcome["models"])
                    done = True
                if done and on_done is not None:
                    on_done(pack)

    def _replace_actor(self, index: int, dead) -> None:
        """Replace a dead actor once, however many of its packs report its death."""
        if self.actors[index] is dead:
            self.ray.kill(dead, no_restart=True)
            self.actors[index] = self.new_actor()

    def _retry_or_fail(self, pack, attempts, queue, reason, progress) -> bool:
        """Queue ``pack`` again, or record it as failed after MAX_ATTEMPTS (returns True)."""
        attempts[pack.pack_id] += 1
        if attempts[pack.pack_id] < MAX_ATTEMPTS:
            queue.append(pack)
            return False
        error = f"failed {MAX_ATTEMPTS} times; last: {reason}"
        self.results.write_pack(
            pack.pack_id, models_table(pack, ["failed"] * len(pack), None, 0.0, error)
        )
        self.summary.failed += len(pack)
        progress.update(len(pack))
        return True


def _short(error: Exception) -> str:
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]

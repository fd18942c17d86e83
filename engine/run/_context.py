"""What a run, a search, a flatness recompute and the estimate share: one `RunContext`.

The job, its prepared dataset and its results folder; the folder's lock while the command writes;
the Ray it trains on and how many trainers that holds; which models are finished; the plan of
the rest; and the trainers themselves (`PackScheduler`). What is finished is read back from the
results folder, never from driver memory, which is what makes a rerun after a kill resume
exactly where the files say the command stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rashomon.engine.model import FlatnessSettings
from rashomon.engine.run import _cluster
from rashomon.engine.run._actor import dataset_payload
from rashomon.engine.run._plan import Pack, plan_packs
from rashomon.engine.run._preflight import check_models
from rashomon.engine.run._scheduler import PackScheduler
from rashomon.engine.store import FolderLock, ResultsDir
from rashomon.jobs import ModelVariant, count_models, iter_variants, prepare_job_dataset

FINISHED = ("ok", "diverged")


@dataclass(frozen=True)
class Pending:
    """The job's models without a finished record, of ``total``, and the packs recorded as
    failed (their models are among the pending ones)."""

    variants: list[ModelVariant]
    total: int
    failed_packs: set[str]


class RunContext:
    """One command's job, dataset, results folder, lock, Ray and trainers."""

    def __init__(self, job, dataset, results: ResultsDir) -> None:
        self.job, self.dataset, self.results = job, dataset, results
        self.lock: FolderLock | None = None
        self.ray = None
        self.workers, self.gpus = 0, 0.0

    @classmethod
    def for_job(cls, job, out_dir: str | os.PathLike) -> RunContext:
        """A job about to train into ``out_dir``: its dataset prepared and its models checked
        (before anything is written)."""
        dataset = prepare_job_dataset(job)
        results = ResultsDir(out_dir)
        check_models(job, dataset, results)
        return cls(job, dataset, results)

    @classmethod
    def for_results(cls, location: str | os.PathLike) -> RunContext:
        """The job a results folder holds, with the dataset it was trained on."""
        results = ResultsDir(location)
        return cls(results.job(), results.dataset(), results)

    @contextlib.contextmanager
    def writing(self, purpose: str, claim: bool = True) -> Iterator[dict[str, str]]:
        """Hold the folder's lock; with ``claim``, make the folder hold this job's results
        first. Yields the damaged packs that the claim retired (their models train again)."""
        with self.results.lock(purpose) as lock:
            self.lock = lock
            try:
                yield self.results.claim(self.job, self.dataset) if claim else {}
            finally:
                self.lock = None

    def check_lock(self) -> None:
        """Stop if the lock was lost (another writer took the folder over)."""
        if self.lock is not None:
            self.lock.check()

    def connect(
        self, address: str | None = None, num_cpus: int | None = None, gpus: float | None = None
    ) -> None:
        """Start or join Ray, and count the trainers it holds (of ``gpus`` each, if not the
        job's)."""
        self.ray = _cluster.connect(address, num_cpus=num_cpus)
        self.gpus = self.job.resources.gpus_per_worker if gpus is None else gpus
        self.workers = _cluster.worker_count(
            self.ray, self.job.resources.cpus_per_worker, self.gpus
        )

    def finished_ids(self) -> set[str]:
        return self._records()[0]

    def pending(self) -> Pending:
        finished, failed_packs = self._records()
        pending = [v for v in iter_variants(self.job) if v.model_id not in finished]
        return Pending(pending, count_models(self.job), failed_packs)

    def finished_population(self) -> pa.Table:
        """The records of the finished models of the population (not of a search's trials)."""
        models = self.results.scan().models()
        done = pc.is_in(models["status"], value_set=pa.array(FINISHED))
        return models.filter(pc.and_(done, pc.is_null(models["trial"])))

    def _records(self) -> tuple[set[str], set[str]]:
        """The ids of the finished models, and the packs recorded as failed."""
        recorded = self.results.recorded_models()
        done = recorded["status"].isin(FINISHED)
        return set(recorded.loc[done, "model_id"]), set(recorded.loc[~done, "pack_id"])

    def plan(self, variants: Sequence[ModelVariant]) -> list[Pack]:
        """``variants`` in packs, for this context's trainers."""
        job, dataset = self.job, self.dataset
        return plan_packs(
            variants,
            job.train,
            job.resources.models_per_pack,
            dataset.n_features,
            dataset.n_classes,
            n_workers=self.workers,
            on_gpu=job.resources.gpus_per_worker > 0,
            in_shape=dataset.example_shape,
            module=job.module_reference(),
        )

    def scheduler(
        self, flatness: FlatnessSettings | None = None, write: bool = True
    ) -> PackScheduler:
        """Start this context's trainers (after `connect`). ``flatness``: the statistics they
        measure (default: the job's); ``write``: False for trainers that write nothing to the
        results folder (the estimate's)."""
        job, resources = self.job, self.job.resources
        if flatness is None and job.flatness.enabled:
            flatness = FlatnessSettings.from_config(job.flatness)
        trainer = (
            self.ray.put(dataset_payload(self.dataset)),
            self.results.location if write else None,
            tuple(job.output.predictions),
            job.output.weights,
            max(1, int(resources.cpus_per_worker)),
            flatness,
        )
        return PackScheduler(
            self.ray, self.workers, resources.cpus_per_worker, self.gpus, trainer,
            self.results.location,
        )  # fmt: skip

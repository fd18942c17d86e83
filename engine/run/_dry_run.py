"""``rashomon run --dry-run``: a job's plan, the size of its output and the compute it needs,
measured through the real path.

Nothing is written to the results folder. The population is counted by kind (`census`), never
expanded, and the packs follow from arithmetic (`pack_size`). Ray and the job's trainers start as
for a run (that start-up is timed), and the kinds that carry most of the work are each trained as
one real pack on a trainer (`PackTrainer.calibrate`), whose phase timings are scaled by how much
of each phase's work the whole job repeats: optimizer steps, examples evaluated, curvature
examples, bytes written. A timed pack is cut to a budget of floating-point work per phase
(`CALIBRATION_FLOPS`: fewer models, steps and examples; for a huge model a slice of the
minibatch or of the curvature set), so even a model of millions of parameters is timed in
seconds; the kinds left untimed are scaled from the nearest timed one.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from rashomon.engine.model import DTYPES, PHASES, FlatnessSettings, PackSettings, build_family
from rashomon.engine.run._context import RunContext
from rashomon.engine.run._kinds import Census, Kind, census, without_finished
from rashomon.engine.run._plan import CPU_PACK_CAP, Pack, pack_model, pack_size
from rashomon.engine.run._scheduler import Task
from rashomon.jobs import SPLITS, ModelVariant, UserError

# Measured on adult-mlp (zstd Parquet, 20 M rows): a prediction row costs about its float32
# probabilities plus ~1 byte for the dictionary-encoded id columns; a models row, with the
# flat-minima statistics, ~340 bytes (docs/sizing.md).
PREDICTION_ROW_OVERHEAD = 1
MODEL_ROW_BYTES = 340
# The work of a timed pack: a fraction of a second per phase on one core (~20 GFLOP/s), the
# flatness statistics a few seconds (all their probes, but for huge models)
CALIBRATION_FLOPS = 5e9
FLATNESS_FLOPS = 4e10
STEPS = (2, 64)  # optimizer steps of a timed pack
TIMED_KINDS = 4  # kinds timed, largest share of the work first
SIMULATED_PACKS = 100_000  # more packs than this: the wall time of list scheduling's bound
WORK = (*PHASES, "output")


@dataclass(frozen=True)
class Compute:
    """The job's worker time, from packs timed on this machine's trainers: worker-seconds per
    part of the work, the seconds to start Ray and the trainers, and the wall time."""

    parts: dict[str, float]
    startup: dict[str, float]
    wall_seconds: float  # start-up, then the packs dealt in plan order to the local workers
    device: str
    threads: int
    timed: int  # kinds timed, of `kinds`
    kinds: int
    calibration_seconds: float
    calibration_models: int  # the most models in a timed pack
    sliced: bool  # a timed pack did part of its work (a huge model's), and was scaled

    @property
    def worker_seconds(self) -> float:
        return sum(self.parts.values())


@dataclass(frozen=True)
class Estimate:
    """What ``--dry-run`` prints: the models, the dataset, the packs (their number, smallest
    and largest size, distinct settings), the output's bytes and the compute."""

    job: str
    total: int
    pending: int
    dataset: str
    examples: int
    features: int
    classes: int
    packs: int
    pack_sizes: tuple[int, int]
    settings: int
    workers: int
    output: dict[str, float]  # bytes of predictions, weights, models
    out: str
    sampled: int | None  # the kinds' shares read off this many models (None: exact)
    flatness: bool
    gpus: float  # per worker, as the job asks
    compute: Compute | None


def estimate(job, out: str | os.PathLike) -> Estimate:
    """The plan of ``job`` into ``out`` and, unless nothing is left to train, its compute timed
    here (nothing is written)."""
    context = RunContext.for_job(job, out)
    dataset, results = context.dataset, context.results
    found = census(job)
    total = found.models
    if results.identity() is not None:
        if results.identity().get("job_hash") != job.job_hash:
            raise UserError(
                f"{results.location}: holds the results of a different job, which `rashomon "
                "run` refuses; choose another --out"
            )
        found = without_finished(found, context.finished_population())
    pending = {kind: count.models for kind, count in found.kinds.items() if count.models}
    startup: dict[str, float] = {}
    if pending:
        start = time.perf_counter()
        resources = job.resources
        on_gpu = resources.gpus_per_worker > 0 and torch.cuda.is_available()
        # a worker wider than this machine is timed here all the same, on the cores it has
        cpus = math.ceil(resources.cpus_per_worker)
        num_cpus = cpus if (os.cpu_count() or 1) < cpus else None
        context.connect(num_cpus=num_cpus, gpus=resources.gpus_per_worker if on_gpu else 0)
        startup["Ray"] = time.perf_counter() - start
    else:
        context.workers = max(1, int((os.cpu_count() or 1) // job.resources.cpus_per_worker))
    groups: dict[PackSettings, int] = {}
    for kind, n in pending.items():
        groups[kind.settings] = groups.get(kind.settings, 0) + n
    packs = {settings: _packs(context, settings, n) for settings, n in groups.items()}
    n_pending = sum(pending.values())
    predicted = sum(len(dataset.indices(s)) for s in job.output.predictions)
    return Estimate(
        job=job.name,
        total=total,
        pending=n_pending,
        dataset=dataset.name,
        examples=dataset.n_examples,
        features=dataset.n_features,
        classes=dataset.n_classes,
        packs=sum(count for sizes in packs.values() for _, count in sizes),
        pack_sizes=(
            min((size for sizes in packs.values() for size, _ in sizes), default=0),
            max((size for sizes in packs.values() for size, _ in sizes), default=0),
        ),
        settings=len(groups),
        workers=context.workers,
        output={
            "predictions": n_pending * predicted * _row_bytes(dataset.n_classes),
            "weights": sum(n * _weight_bytes(context, k.settings) for k, n in pending.items()),
            "models": n_pending * MODEL_ROW_BYTES,
        },
        out=results.location,
        sampled=found.sampled,
        flatness=job.flatness.enabled,
        gpus=job.resources.gpus_per_worker,
        compute=_compute(context, found, pending, packs, startup) if pending else None,
    )


def _packs(context: RunContext, settings: PackSettings, n_models: int) -> list[tuple[int, int]]:
    """The plan's packs of ``n_models`` models with these settings: (size, how many)."""
    job, dataset = context.job, context.dataset
    size = pack_size(
        n_models, settings, job.resources.models_per_pack, dataset.n_features,
        dataset.n_classes, context.workers, job.resources.gpus_per_worker > 0,
        dataset.example_shape,
    )  # fmt: skip
    full, rest = divmod(n_models, size)
    return [(size, full), (rest, 1)] if rest else [(size, full)]


def _compute(
    context: RunContext,
    found: Census,
    pending: dict[Kind, int],
    packs: dict[PackSettings, list[tuple[int, int]]],
    startup: dict[str, float],
) -> Compute:
    """Start the trainers, time the kinds with the most work and scale every kind from them."""
    dataset = context.dataset
    rows = {name: len(dataset.indices(name)) for name in SPLITS}
    flatness = _flatness(context, rows["train"])
    work = {kind: _work(context, kind.settings, rows, flatness) for kind in pending}
    order = sorted(pending, key=lambda k: -pending[k] * work[k]["training"])
    timed = {
        kind: _timing(context, kind, found.kinds[kind].hparams, packs[kind.settings][0][0], i)
        for i, kind in enumerate(order[:TIMED_KINDS])
    }
    start = time.perf_counter()
    scheduler = context.scheduler(write=False)
    scheduler.wait_started()
    startup["trainers"] = time.perf_counter() - start
    rates: dict[Kind, dict[str, float]] = {}  # seconds per unit of each phase's work
    kind_of = {task.pack_id: kind for kind, (task, _, _) in timed.items()}

    def done(task: Task, outcome: dict) -> None:
        kind = kind_of[task.pack_id]
        units, seconds = timed[kind][1], outcome["timings"]
        rates[kind] = {p: seconds[p] / len(task.pack) / units[p] if units[p] else 0 for p in WORK}

    def failed(task: Task, reason: str) -> None:
        raise UserError(f"--dry-run: the trainers could not time a pack of this job ({reason})")

    start = time.perf_counter()
    scheduler.run([task for task, _, _ in timed.values()], on_done=done, give_up=failed)
    calibration = time.perf_counter() - start
    per_model = {}
    for kind in pending:
        rate = rates.get(kind) or rates[_nearest(kind, rates, work)]
        per_model[kind] = {phase: rate[phase] * work[kind][phase] for phase in WORK}
    parts = {phase: sum(n * per_model[k][phase] for k, n in pending.items()) for phase in WORK}
    seconds = dict.fromkeys(packs, 0.0)  # of a model of a pack, averaged over its kinds
    for kind, n in pending.items():
        share = n / sum(size * count for size, count in packs[kind.settings])
        seconds[kind.settings] += share * sum(per_model[kind].values())
    runs = [(seconds[s] * size, count) for s, sizes in packs.items() for size, count in sizes]
    return Compute(
        parts=parts,
        startup=startup,
        wall_seconds=sum(startup.values()) + _makespan(runs, context.workers),
        device="cuda" if context.gpus > 0 else "cpu",
        threads=max(1, int(context.job.resources.cpus_per_worker)),
        timed=len(timed),
        kinds=len(pending),
        calibration_seconds=calibration,
        calibration_models=max(len(task.pack) for task, _, _ in timed.values()),
        sliced=any(sliced for _, _, sliced in timed.values()),
    )


def _timing(
    context: RunContext, kind: Kind, hparams, planned: int, index: int
) -> tuple[Task, dict[str, float], bool]:
    """The timed pack of a kind: the models of one of its configurations, as many as its
    packs hold but for the FLOPs budget (on a CPU, at most `CPU_PACK_CAP` of a GPU job's),
    trained for `STEPS` on the first rows of each split; its flatness statistics on the job's
    curvature set with as many probes and iterations as the budget allows. With the work per
    model in its phases (`_work`), and whether it is part of the kind's (a huge model's)."""
    job, dataset = context.job, context.dataset
    settings, budget = kind.settings, CALIBRATION_FLOPS
    flops, _ = _flops(context, settings)
    models = min(planned, CPU_PACK_CAP) if context.gpus < job.resources.gpus_per_worker else planned
    step = 3 * flops * settings.batch_size  # forward and backward of one model's minibatch
    models = min(models, max(1, int(budget // (STEPS[0] * step))))
    batch = settings.batch_size
    if STEPS[0] * step > budget:  # a slice of one minibatch
        batch = max(1, int(budget // (STEPS[0] * 3 * flops)))
    steps = min(STEPS[1], max(STEPS[0], int(budget // (models * 3 * flops * batch))))
    n_train = len(dataset.indices("train"))
    flatness = _flatness(context, n_train, models * flops)
    curvature = flatness.curvature_examples if flatness else 0
    train = min(n_train, max(steps * batch, curvature))
    epochs = max(1, round(steps / math.ceil(train / batch)))
    others = max(1, int(budget // (2 * models * flops)))
    rows = {name: min(len(dataset.indices(name)), others) for name in SPLITS} | {"train": train}
    seeds = itertools.islice(job.population.seeds.triples(), models)
    variants = [ModelVariant(f"{i:016x}", *triple, hparams) for i, triple in enumerate(seeds)]
    pack = Pack(
        f"{index:016x}",
        replace(settings, epochs=epochs, batch_size=batch),
        tuple(pack_model(v) for v in variants),
    )
    task = Task(pack.pack_id, "calibrate", (pack, rows, flatness), pack)
    sliced = batch < settings.batch_size or flatness != _flatness(context, n_train)
    return task, _work(context, pack.settings, rows, flatness), sliced


def _flatness(context: RunContext, n_train: int, flops: float = 0.0) -> FlatnessSettings | None:
    """The job's flatness settings on a training split of ``n_train`` examples (None: off);
    with ``flops`` (one forward pass of every model of a pack), with fewer probes and
    iterations, then fewer curvature examples, until they fit `FLATNESS_FLOPS`."""
    config = context.job.flatness
    if not config.enabled:
        return None
    settings = FlatnessSettings.from_config(config)
    settings = replace(settings, curvature_examples=min(settings.curvature_examples, n_train))
    share = FLATNESS_FLOPS / max(flops * settings.curvature_examples * _passes(settings), 1.0)
    if share < 1:
        settings = replace(
            settings,
            trace_probes=max(2, int(settings.trace_probes * share)),
            adaptive_probes=max(2, int(settings.adaptive_probes * share)),
            eig_iterations=max(1, int(settings.eig_iterations * share)),
            avg_pairs=max(1, int(settings.avg_pairs * share)),
        )
        rows = FLATNESS_FLOPS / (flops * _passes(settings))
        settings = replace(
            settings, curvature_examples=max(1, min(settings.curvature_examples, int(rows)))
        )
    return settings


def _work(
    context: RunContext,
    settings: PackSettings,
    rows: Mapping[str, int],
    flatness: FlatnessSettings | None,
) -> dict[str, float]:
    """One model's work in each phase: the FLOPs of its optimizer steps, of evaluating every
    split, and of the flatness statistics; the bytes of its output."""
    job = context.job
    flops, _ = _flops(context, settings)
    steps = settings.epochs * math.ceil(rows["train"] / settings.batch_size)
    predicted = sum(rows[name] for name in job.output.predictions)
    curvature = min(flatness.curvature_examples, rows["train"]) if flatness else 0
    return {
        "training": steps * 3 * flops * settings.batch_size,
        "evaluation": sum(rows.values()) * flops,
        "flatness": curvature * _passes(flatness) * flops if flatness else 0.0,
        "output": predicted * _row_bytes(context.dataset.n_classes)
        + _weight_bytes(context, settings)
        + MODEL_ROW_BYTES,
    }


def _flops(context: RunContext, settings: PackSettings) -> tuple[float, int]:
    """One example's forward FLOPs (at least two per parameter), and the parameters."""
    dataset = context.dataset
    family = build_family(settings, dataset.example_shape, dataset.n_classes)
    return max(family.forward_flops, 2.0 * family.n_parameters), family.n_parameters


def _passes(settings: FlatnessSettings) -> float:
    """The flatness statistics' forward passes per curvature example: about five per
    Hessian-vector product (trace, adaptive trace, Lanczos) and two per perturbed loss, and some
    fifty for the rest (the gradient, Fisher trace, ascent steps, the products' set-up), as
    measured on MLPs of 10⁴-10⁶ parameters."""
    products = settings.trace_probes + settings.adaptive_probes + settings.eig_iterations
    return 5.0 * products + 4.0 * settings.avg_pairs + 50.0


def _row_bytes(n_classes: int) -> int:
    return 4 * n_classes + PREDICTION_ROW_OVERHEAD


def _weight_bytes(context: RunContext, settings: PackSettings) -> int:
    if not context.job.output.weights:
        return 0
    return _flops(context, settings)[1] * DTYPES[settings.dtype].itemsize


def _nearest(kind: Kind, timed: Mapping[Kind, dict], work: Mapping[Kind, dict]) -> Kind:
    """The timed kind closest in FLOPs per example (one that draws dropout as this one does,
    if any): its rates stand for this kind's."""
    alike = [k for k in timed if k.dropout == kind.dropout] or list(timed)
    flops = work[kind]["evaluation"]
    return min(alike, key=lambda k: abs(math.log(work[k]["evaluation"] / flops)))


def _makespan(packs: Sequence[tuple[float, int]], workers: int) -> float:
    """Wall time when every pack, in plan order, goes to the first worker to become free (as
    the scheduler deals them): (seconds, how many) runs of packs. Past `SIMULATED_PACKS`, the
    bound of list scheduling (the total over the workers, plus one longest pack)."""
    workers = max(1, workers)
    if sum(count for _, count in packs) > SIMULATED_PACKS:
        longest = max(seconds for seconds, count in packs if count)
        return sum(seconds * count for seconds, count in packs) / workers + longest
    free_at = [0.0] * workers
    for seconds, count in packs:
        for _ in range(count):
            heapq.heapreplace(free_at, free_at[0] + seconds)
    return max(free_at)

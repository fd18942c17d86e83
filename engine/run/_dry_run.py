"""``rashomon run --dry-run``: a job's plan, the size of its output and the compute it needs.

Nothing is trained for good and nothing is written. The wall-time estimate is measured, not
assumed: one real pack of each kind is timed on this machine the way a trainer actor runs it
(same pack, same torch threads, same device) for a few optimizer steps, an evaluation of a slice
of every split, the flat-minima statistics and the serialisation of its output, and each part is
scaled by how often the whole job repeats it.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save as safetensors_bytes

from rashomon.engine.model import (
    DTYPES,
    Architecture,
    Family,
    FlatnessSettings,
    PackResult,
    PackSettings,
    TrainingData,
    build_family,
    device_slice,
    keep_freed_memory,
    pack_flatness,
    train_pack,
)
from rashomon.engine.run._actor import dataset_payload
from rashomon.engine.run._driver import pending_models
from rashomon.engine.run._plan import CPU_PACK_CAP, Pack, plan_packs
from rashomon.engine.run._preflight import check_models
from rashomon.engine.store import ResultsDir, models_table, parquet_bytes, predictions_table
from rashomon.jobs import SPLITS, prepare_job_dataset

# Measured on adult-mlp (zstd Parquet, 20 M rows): a prediction row costs about its float32
# probabilities plus ~1 byte for the dictionary-encoded id columns; a models row, with the
# flat-minima statistics, ~340 bytes (docs/sizing.md).
PREDICTION_ROW_OVERHEAD = 1
MODEL_ROW_BYTES = 340

# The timed training run of a pack aims at this many seconds (between these many steps), so that
# one calibration stays near a second whatever the model size (its steps are judged from a warm-up
# that also pays one-off costs, so it runs shorter); epochs over a slice of the training split
# keep the evaluation of that slice a small part of the run.
CALIBRATION_TRAIN_SECONDS = 1.0
CALIBRATION_STEPS = (4, 64)
CALIBRATION_EPOCHS = 4
CALIBRATION_REPEATS = 2
FLATNESS_CALIBRATION_SECONDS = 0.5
# Pack kinds are timed, largest share first, until this much time is spent; the rest are scaled
# from a timed kind by their floating-point work.
CALIBRATION_BUDGET_SECONDS = 6.0


class PackKind(NamedTuple):
    """What a pack's cost depends on: its settings, and whether it draws dropout masks."""

    settings: PackSettings
    dropout: bool


@dataclass(frozen=True)
class PlanSummary:
    """The plan reduced to what the printout needs, so the million models can be freed first."""

    total: int
    pending: int
    workers: int
    packs: list[tuple[PackKind, int]]  # every pack's kind and size, in the order of the plan
    first_packs: dict[PackKind, Pack]  # the pack of each kind that calibration times
    weight_bytes: int


@dataclass(frozen=True)
class ModelCost:
    """A worker's seconds for one model of a pack, split by what each part grows with."""

    step: float  # one optimizer step
    example: float  # evaluating one example of any split
    prediction_row: float  # building and serialising one row of the predictions table
    flatness: float  # the flat-minima statistics
    record: float  # the models row and the weights

    def scaled(self, step_ratio: float, parameter_ratio: float) -> ModelCost:
        """The cost of a kind with more floating-point work per step and per parameter."""
        return ModelCost(
            self.step * step_ratio,
            self.example * parameter_ratio,
            self.prediction_row,
            self.flatness * parameter_ratio,
            self.record * parameter_ratio,
        )


@dataclass(frozen=True)
class Workload:
    """What one model of a kind asks of a worker, in the units of `ModelCost`."""

    steps: int
    examples: int
    prediction_rows: int

    def parts(self, cost: ModelCost) -> dict[str, float]:
        return {
            "training": cost.step * self.steps,
            "evaluation": cost.example * self.examples,
            "flatness": cost.flatness,
            "output": cost.prediction_row * self.prediction_rows + cost.record,
        }


@dataclass(frozen=True)
class ComputeEstimate:
    """The job's worker time, from packs timed on this machine."""

    parts: dict[str, float]  # worker-seconds of all pending models, per part of the work
    wall_seconds: float  # on the local workers, packs dealt in plan order
    models: int
    device: str
    threads: int
    timed_kinds: int
    kinds: int
    calibration_seconds: float
    calibration_models: int

    @property
    def worker_seconds(self) -> float:
        return sum(self.parts.values())


def describe_plan(job, out: Path | str) -> str:
    """The printout of ``--dry-run``: what would be trained, how much it writes, how long it
    takes on workers like this machine (timed here; nothing is written)."""
    dataset = prepare_job_dataset(job)
    check_models(job, dataset, ResultsDir(out))
    plan = summarise_plan(job, dataset, out)
    sizes = [size for _, size in plan.packs] or [0]
    n_predicted = sum(len(dataset.indices(s)) for s in job.output.predictions)
    prediction_bytes = (
        plan.pending * n_predicted * (4 * dataset.n_classes + PREDICTION_ROW_OVERHEAD)
    )
    lines = [
        f"job {job.name}: {plan.total} models, {plan.pending} to train, "
        f"{plan.total - plan.pending} done",
        f"dataset {dataset.name}: {dataset.n_examples} examples x {dataset.n_features} features, "
        f"{dataset.n_classes} classes",
        f"packs: {len(plan.packs)} (models per pack {min(sizes)}-{max(sizes)}, "
        f"{len({kind.settings for kind, _ in plan.packs})} distinct architectures/settings), "
        f"planned for {plan.workers} local workers",
        f"estimated output: predictions {_bytes(prediction_bytes)}, "
        f"weights {_bytes(plan.weight_bytes)}, "
        f"models {_bytes(plan.pending * MODEL_ROW_BYTES)} -> {out}",
    ]
    if plan.pending:
        lines += describe_estimate(job, estimate_compute(job, dataset, plan), plan.workers)
    return "\n".join(lines)


def summarise_plan(job, dataset, out: Path | str) -> PlanSummary:
    """Plan the pending models as the driver would, for as many workers as this machine has."""
    results = ResultsDir(out)
    if results.identity() is not None:
        pending, total, _ = pending_models(job, results)
    else:
        from rashomon.jobs import expand

        pending = expand(job)
        total = len(pending)
    workers = max(1, int((os.cpu_count() or 1) // job.resources.cpus_per_worker))
    packs = plan_packs(
        pending,
        job.train,
        job.resources.models_per_pack,
        dataset.n_features,
        dataset.n_classes,
        n_workers=workers,
        on_gpu=job.resources.gpus_per_worker > 0,
        in_shape=dataset.example_shape,
        module=job.module_reference(),
    )
    kinds = [PackKind(p.settings, any(m.spec.dropout > 0 for m in p.models)) for p in packs]
    first_packs: dict[PackKind, Pack] = {}
    for kind, pack in zip(kinds, packs, strict=True):
        first_packs.setdefault(kind, pack)
    weight_bytes = 0
    if job.output.weights:
        weight_bytes = sum(
            len(p) * _parameters(p.settings, dataset) * _itemsize(p.settings) for p in packs
        )
    return PlanSummary(
        total,
        len(pending),
        workers,
        [(kind, len(p)) for kind, p in zip(kinds, packs, strict=True)],
        first_packs,
        weight_bytes,
    )


def estimate_compute(job, dataset, plan: PlanSummary) -> ComputeEstimate:
    """Time the pack kinds that carry most of the work (within the calibration budget) and
    scale every pack of the plan from them."""
    threads = max(1, int(job.resources.cpus_per_worker))
    device = _calibration_device(job)
    models_per_kind: dict[PackKind, int] = {}
    for kind, size in plan.packs:
        models_per_kind[kind] = models_per_kind.get(kind, 0) + size
    workloads = {kind: _workload(kind.settings, dataset, job) for kind in models_per_kind}
    order = sorted(
        models_per_kind,
        key=lambda k: -models_per_kind[k] * workloads[k].steps * _step_flops(k, dataset),
    )
    start = time.perf_counter()
    costs, calibration_models = _time_kinds(job, dataset, plan, order, device, threads)
    calibration_seconds = time.perf_counter() - start
    for kind in order:
        if kind not in costs:
            costs[kind] = _scaled_cost(kind, costs, dataset)
    parts = dict.fromkeys(("training", "evaluation", "flatness", "output"), 0.0)
    for kind, n_models in models_per_kind.items():
        for name, seconds in workloads[kind].parts(costs[kind]).items():
            parts[name] += n_models * seconds
    per_model = {kind: sum(workloads[kind].parts(costs[kind]).values()) for kind in costs}
    return ComputeEstimate(
        parts=parts,
        wall_seconds=_makespan([per_model[k] * size for k, size in plan.packs], plan.workers),
        models=plan.pending,
        device=device.type,
        threads=threads,
        timed_kinds=len(calibration_models),
        kinds=len(order),
        calibration_seconds=calibration_seconds,
        calibration_models=max(calibration_models),
    )


def describe_estimate(job, estimate: ComputeEstimate, workers: int) -> list[str]:
    """Worker-hours, what a model costs and what it includes, and the wall time per node: a
    cluster's nodes of ``workers`` workers like these share the packs, so time divides by them."""
    hours = estimate.worker_seconds / 3600
    per_model = estimate.worker_seconds / estimate.models
    share = ", ".join(
        f"{name} {seconds / estimate.models:.3g}" for name, seconds in estimate.parts.items()
    )
    flatness = "flatness statistics" if job.flatness.enabled else "no flatness statistics (off)"
    lines = [
        f"estimated compute: {hours:.3g} worker-hours on workers like this machine's "
        f"({estimate.device}, {estimate.threads} torch thread{'s' * (estimate.threads > 1)} "
        f"each): {estimate.models / hours:,.0f} models per worker-hour",
        f"  a model: {per_model:.3g} s = {share} (s); includes {flatness} and output "
        "serialisation, not start-up (Ray, actors) or storage I/O",
        f"estimated wall time: {_duration(estimate.wall_seconds)} with the {workers} local "
        f"workers, i.e. per node of {workers} workers like these: divide by the number of nodes",
        f"  (calibrated in {estimate.calibration_seconds:.1f} s: {estimate.timed_kinds} of "
        f"{estimate.kinds} pack kinds timed on this machine, up to "
        f"{estimate.calibration_models} models per pack"
        + (", the others scaled by their FLOPs)" if estimate.timed_kinds < estimate.kinds else ")"),
    ]
    if job.resources.gpus_per_worker > 0:
        lines.append(_gpu_caveat(job, estimate.device))
    return lines


def _gpu_caveat(job, device: str) -> str:
    asked = f"the job asks for {job.resources.gpus_per_worker:g} GPU per worker"
    if device == "cuda":
        return (
            f"  note: {asked}; calibrated on this machine's GPU "
            f"({torch.cuda.get_device_name()}): another GPU will differ"
        )
    return (
        f"  note: {asked}, but this machine has no CUDA device: the estimate is for its CPU "
        f"(packs timed at most {CPU_PACK_CAP} models of the planned GPU packs); a GPU worker "
        "will differ and was not measured"
    )


def _time_kinds(
    job,
    dataset,
    plan: PlanSummary,
    order: Sequence[PackKind],
    device: torch.device,
    threads: int,
) -> tuple[dict[PackKind, ModelCost], list[int]]:
    """The cost per model of the first kinds of ``order`` that fit the calibration budget (and
    the calibration packs' sizes), timed in this process as an actor would train them."""
    payload = dataset_payload(dataset)
    flatness = FlatnessSettings.from_config(job.flatness) if job.flatness.enabled else None
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    keep_freed_memory()  # as in every actor: without it, fresh pages cost the flatness a third
    costs: dict[PackKind, ModelCost] = {}
    calibration_models = []
    data: dict[str, TrainingData] = {}
    deadline = time.perf_counter() + CALIBRATION_BUDGET_SECONDS
    try:
        for kind in order:
            if costs and time.perf_counter() > deadline:
                break
            pack = plan.first_packs[kind]
            dtype = pack.settings.dtype
            if dtype not in data:
                data[dtype] = TrainingData.from_arrays(
                    payload["features"],
                    payload["labels"],
                    payload["split"],
                    payload["n_classes"],
                    DTYPES[dtype],
                    device,
                    payload["shape"],
                )
            pack = replace(
                pack, models=pack.models[: _slice_size(job, pack, data[dtype], flatness)]
            )
            costs[kind] = _time_pack(pack, data[dtype], payload, job, flatness)
            calibration_models.append(len(pack))
    finally:
        torch.set_num_threads(previous_threads)
    return costs, calibration_models


def _slice_size(job, pack: Pack, data: TrainingData, flatness: FlatnessSettings | None) -> int:
    """How many models of ``pack`` to time: on a CUDA device, the slice the actor trains at
    once; a GPU-sized pack timed on a CPU, `CPU_PACK_CAP`."""
    on_device = device_slice(pack.settings, data, flatness)
    if on_device is not None:
        return min(len(pack), on_device)
    if job.resources.gpus_per_worker > 0:
        return min(len(pack), CPU_PACK_CAP)
    return len(pack)


def _time_pack(
    pack: Pack,
    data: TrainingData,
    payload: dict,
    job,
    flatness: FlatnessSettings | None,
) -> ModelCost:
    """Seconds per model of each part of training ``pack``: the evaluation of a slice of every
    split, a few epochs over a slice of the training split (less its evaluation), the flatness
    statistics of the trained models and the serialisation of their output."""
    settings, specs = pack.settings, [m.spec for m in pack.models]
    splits, n_models = job.output.predictions, len(pack)
    steps = _calibration_steps(settings, specs, data, splits)
    sliced = _first_rows(data, settings.batch_size * math.ceil(steps / CALIBRATION_EPOCHS))
    evaluated = _fastest(replace(settings, epochs=0), specs, sliced, splits)
    per_example = evaluated.seconds / n_models / _examples(sliced)
    train_rows = len(sliced.split_indices["train"])
    training_only = _first_rows(data, train_rows, others=1)
    trained = _fastest(replace(settings, epochs=CALIBRATION_EPOCHS), specs, training_only, splits)
    training = trained.seconds - per_example * n_models * _examples(training_only)
    predictions, record = _output_seconds(pack, evaluated, trained, sliced, payload, job)
    return ModelCost(
        step=max(training, 0.0) / n_models / _steps(train_rows, settings, CALIBRATION_EPOCHS),
        example=per_example,
        prediction_row=predictions / n_models / max(1, _prediction_rows(sliced, splits)),
        flatness=_flatness_seconds(pack, trained, data, flatness),
        record=record / n_models,
    )


def _fastest(
    settings: PackSettings, specs: list, data: TrainingData, splits: Sequence[str]
) -> PackResult:
    """The faster of `CALIBRATION_REPEATS` runs: other work on the machine only ever slows a
    run down, and the estimate is for a worker that has its cores to itself."""
    runs = [train_pack(settings, specs, data, splits) for _ in range(CALIBRATION_REPEATS)]
    return min(runs, key=lambda run: run.seconds)


def _calibration_steps(
    settings: PackSettings, specs: list, data: TrainingData, splits: Sequence[str]
) -> int:
    """How many steps take about `CALIBRATION_TRAIN_SECONDS`, judged from a warm-up of two
    steps (which also pays the one-off costs of a first call, so that no timed run does)."""
    warm_data = _first_rows(data, 2 * settings.batch_size)
    warm_up = train_pack(replace(settings, epochs=1), specs, warm_data, splits)
    per_step = warm_up.seconds / _steps(len(warm_data.split_indices["train"]), settings, 1)
    low, high = CALIBRATION_STEPS
    return min(high, max(low, round(CALIBRATION_TRAIN_SECONDS / per_step)))


def _first_rows(data: TrainingData, train_rows: int, others: int | None = None) -> TrainingData:
    """``data`` with its splits cut to their first rows: ``train_rows`` of training, and of the
    other splits the same fraction (or ``others`` rows). The feature matrix stays whole, so
    minibatch gathers reach as far into memory as in the real run."""
    fraction = min(1.0, train_rows / len(data.split_indices["train"]))
    kept = {
        name: train_rows if name == "train" else others or max(1, round(len(rows) * fraction))
        for name, rows in data.split_indices.items()
    }
    return replace(
        data, split_indices={name: rows[: kept[name]] for name, rows in data.split_indices.items()}
    )


def _flatness_seconds(
    pack: Pack, trained: PackResult, data: TrainingData, flatness: FlatnessSettings | None
) -> float:
    """Seconds per model of the statistics of the briefly trained pack on the job's curvature
    set (their cost does not depend on the epochs). Timed on sub-packs of doubling size until
    one takes `FLATNESS_CALIBRATION_SECONDS` or is the whole pack: a model costs less in a
    larger pack, so the largest one timed is the closest to the real pack."""
    if flatness is None:
        return 0.0
    device = data.features.device
    family = build_family(pack.settings, data.example_shape, data.n_classes)
    params = [trained.parameters[name].to(device) for name in family.parameter_names()]
    buffers = [trained.parameters[name].to(device) for name in family.buffer_names()]
    initial, _ = family.init([m.spec.init_seed for m in pack.models], data.features.dtype, device)
    alive = torch.tensor([s == "ok" for s in trained.status], device=device)

    def timed(n_models: int) -> float:
        start = time.perf_counter()
        first = [p[:n_models] for p in params], [p[:n_models] for p in initial]
        pack_flatness(
            family, *first, alive[:n_models], data, flatness, [b[:n_models] for b in buffers]
        )
        return time.perf_counter() - start

    timed(1)  # the first call imports torch._dynamo (seconds, once per actor): not timed
    n_models = 1
    while True:
        n_models = min(2 * n_models, len(pack))
        seconds = timed(n_models)
        if n_models == len(pack) or seconds >= FLATNESS_CALIBRATION_SECONDS:
            return seconds / n_models


def _output_seconds(
    pack: Pack,
    evaluated: PackResult,
    trained: PackResult,
    sliced: TrainingData,
    payload: dict,
    job,
) -> tuple[float, float]:
    """Seconds to build and serialise, in memory, the predictions of the sliced splits and the
    pack's models rows and weights — what an actor does before its files are written."""
    example_ids = {
        name: payload["example_ids"][rows.cpu().numpy()]
        for name, rows in sliced.split_indices.items()
    }
    start = time.perf_counter()
    model_ids = [m.model_id for m in pack.models]
    parquet_bytes(
        predictions_table(model_ids, evaluated.probabilities, example_ids, payload["n_classes"])
    )
    predictions = time.perf_counter() - start
    start = time.perf_counter()
    parquet_bytes(models_table(pack.columns() | trained.metrics | {"status": trained.status}))
    if job.output.weights:
        safetensors_bytes({k: v.contiguous() for k, v in trained.parameters.items()})
    return predictions, time.perf_counter() - start


def _scaled_cost(kind: PackKind, costs: dict[PackKind, ModelCost], dataset) -> ModelCost:
    """An untimed kind's cost: the timed kind closest in FLOPs per step, scaled by FLOPs."""
    flops = _step_flops(kind, dataset)
    nearest = min(costs, key=lambda k: abs(math.log(_step_flops(k, dataset) / flops)))
    return costs[nearest].scaled(
        flops / _step_flops(nearest, dataset),
        _parameters(kind.settings, dataset) / _parameters(nearest.settings, dataset),
    )


def _calibration_device(job) -> torch.device:
    """The device a worker of this job trains on, if this machine has one."""
    on_gpu = job.resources.gpus_per_worker > 0 and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")


def _workload(settings: PackSettings, dataset, job) -> Workload:
    return Workload(
        steps=_steps(len(dataset.indices("train")), settings, settings.epochs),
        examples=sum(len(dataset.indices(s)) for s in SPLITS),
        prediction_rows=sum(len(dataset.indices(s)) for s in job.output.predictions),
    )


def _steps(train_rows: int, settings: PackSettings, epochs: int) -> int:
    return epochs * math.ceil(train_rows / settings.batch_size)


def _examples(data: TrainingData) -> int:
    return sum(len(rows) for rows in data.split_indices.values())


def _prediction_rows(data: TrainingData, splits: Sequence[str]) -> int:
    return sum(len(data.split_indices[s]) for s in splits)


def _step_flops(kind: PackKind, dataset) -> float:
    """Forward and backward FLOPs of one model's minibatch: 6 x parameters x batch for a dense
    network, 3 x its counted forward pass for the others (convolutions reuse their weights)."""
    family = _family(kind.settings, dataset)
    if isinstance(family, Architecture):
        return 6.0 * family.n_parameters * kind.settings.batch_size
    return 3.0 * max(family.forward_flops, 2.0 * family.n_parameters) * kind.settings.batch_size


def _parameters(settings: PackSettings, dataset) -> int:
    """Parameters of one model of a pack with these settings."""
    return _family(settings, dataset).n_parameters


def _family(settings: PackSettings, dataset) -> Family:
    return build_family(settings, dataset.example_shape, dataset.n_classes)


def _itemsize(settings: PackSettings) -> int:
    return 8 if settings.dtype == "float64" else 4


def _makespan(pack_seconds: Sequence[float], workers: int) -> float:
    """Wall time when every pack, in plan order, goes to the first worker to become free (as
    the driver deals them)."""
    free_at = [0.0] * max(1, workers)
    for seconds in pack_seconds:
        heapq.heapreplace(free_at, free_at[0] + seconds)
    return max(free_at)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"

"""``rashomon run --dry-run``: a job's plan and the size of its output; nothing is trained."""

from __future__ import annotations

import os
from pathlib import Path

from engine._driver import pending_models
from engine._families import Architecture
from engine._plan import plan_packs
from engine._store import ResultsDir
from jobs import prepare_job_dataset

# Measured on adult-mlp (zstd Parquet, 20 M rows): a prediction row costs about its float32
# probabilities plus ~1 byte for the dictionary-encoded id columns; a models row ~230 bytes.
PREDICTION_ROW_OVERHEAD = 1
MODEL_ROW_BYTES = 230


def describe_plan(job, out: Path) -> str:
    dataset = prepare_job_dataset(job)
    results = ResultsDir(out)
    if results.identity() is not None:
        pending, total, _ = pending_models(job, results)
    else:
        from jobs import expand

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
    )
    sizes = [len(p) for p in packs] or [0]
    n_predicted = sum(len(dataset.indices(s)) for s in job.output.predictions)
    prediction_bytes = (
        len(pending) * n_predicted * (4 * dataset.n_classes + PREDICTION_ROW_OVERHEAD)
    )
    weight_bytes = 0
    if job.output.weights:
        for pack in packs:
            arch = Architecture(dataset.n_features, pack.settings.hidden, dataset.n_classes)
            weight_bytes += (
                len(pack) * arch.n_parameters * (8 if pack.settings.dtype == "float64" else 4)
            )
    lines = [
        f"job {job.name}: {total} models, {len(pending)} to train, {total - len(pending)} done",
        f"dataset {dataset.name}: {dataset.n_examples} examples x {dataset.n_features} features, "
        f"{dataset.n_classes} classes",
        f"packs: {len(packs)} (models per pack {min(sizes)}-{max(sizes)}, "
        f"{len({p.settings for p in packs})} distinct architectures/settings), "
        f"planned for {workers} local workers",
        f"estimated output: predictions {_bytes(prediction_bytes)}, "
        f"weights {_bytes(weight_bytes)}, models {_bytes(len(pending) * MODEL_ROW_BYTES)} -> {out}",
    ]
    return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"

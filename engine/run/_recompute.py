"""``rashomon flatness DIR``: (re)compute the flat-minima and simplicity statistics from saved
weights.

A population trained with ``flatness: {enabled: false}``, or one whose statistics a researcher
wants with other settings (more probes, a larger curvature set), needs no retraining: the weights
are in ``weights/<pack>.safetensors`` and the initial weights follow from the init seeds. Each pack
is measured as one batch, exactly as the trainer does, and its ``models`` file is rewritten whole
and atomically, so an interrupted run leaves every file either old or new and can simply be run
again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import torch
from pydantic import ValidationError

from rashomon.engine.model import (
    FlatnessSettings,
    curvature_rows,
    family_from_weights,
    flatness_statistics,
    keep_freed_memory,
    simplicity_statistics,
)
from rashomon.engine.store import ResultsDir
from rashomon.jobs import FLATNESS_COLUMNS, SIMPLICITY_COLUMNS, FlatnessConfig, UserError

STATISTICS = FLATNESS_COLUMNS + SIMPLICITY_COLUMNS


def recompute_flatness(location: str, overrides: Mapping[str, str]) -> tuple[int, FlatnessConfig]:
    """Write the SPEC §8 columns of every pack with saved weights; returns (models, settings)."""
    results = ResultsDir(location)
    job = results.job()
    config = _settings(job.flatness, overrides)
    dataset = results.dataset()
    settings = FlatnessSettings.from_config(config)
    keep_freed_memory()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with results.lock("`rashomon flatness`"):
        return _recompute(results, dataset, config, settings, device), config


def _recompute(results: ResultsDir, dataset, config, settings, device) -> int:
    """Rewrite each pack's models file with new statistics; returns the models measured."""
    pack_ids = results.pack_ids()
    if not pack_ids:
        raise UserError(f"{results.location}: no trained models yet; run `rashomon run` first")
    measured = 0
    for pack_id in pack_ids:
        models = results.read_models(pack_id)
        if set(models["status"].to_pylist()) <= {"failed"}:
            continue
        stats = _pack_statistics(results, pack_id, models, dataset, settings, device)
        columns = {name: models[name] for name in models.column_names}
        columns |= {name: pa.array(stats[name]) for name in STATISTICS}
        metadata = (models.schema.metadata or {}) | {b"flatness": json.dumps(config.model_dump())}
        table = pa.table(columns, schema=models.schema).replace_schema_metadata(metadata)
        results.rewrite_models(pack_id, table)
        measured += int(np.isfinite(stats["weight_norm"]).sum())
    return measured


def _settings(config: FlatnessConfig, overrides: Mapping[str, str]) -> FlatnessConfig:
    values = config.model_dump()
    for key, text in overrides.items():
        if key not in values or key == "enabled":
            known = ", ".join(k for k in values if k != "enabled")
            raise UserError(f"--set {key}: not a flatness setting (choose from {known})")
        values[key] = _value(text)
    try:
        return FlatnessConfig.model_validate(values)
    except ValidationError as error:
        problem = error.errors()[0]
        raise UserError(f"--set {problem['loc'][0]}: {problem['msg']}") from None


def _value(text: str):
    """``64`` -> 64, ``1e-3`` -> 0.001, ``true`` -> True; anything else stays text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pack_statistics(results, pack_id, models, dataset, settings, device) -> dict[str, np.ndarray]:
    """The statistics of one pack, its family rebuilt from the weights file alone (a module
    family imports the user's class again, from the folders its run recorded, checking the
    source's hash)."""
    model_ids, tensors, metadata = results.read_weights(pack_id)
    where = results.pack_file("weights", pack_id)
    if model_ids != models["model_id"].to_pylist():
        raise UserError(f"{where}: weights and models table disagree")
    try:
        family = family_from_weights(metadata, tensors)
        params = [tensors[name].to(device) for name in family.parameter_names()]
        buffers = [tensors[name].to(device) for name in family.buffer_names()]
    except (UserError, KeyError) as error:
        raise UserError(f"{where}: cannot rebuild its models: {error}") from None
    if math.prod(family.in_shape) != dataset.n_features:
        raise UserError(
            f"{where}: the models take {math.prod(family.in_shape)} features but the job's "
            f"dataset now has {dataset.n_features}; the dataset changed since the run"
        )
    initial, _ = family.init(models["init_seed"].to_pylist(), params[0].dtype, device)
    features = torch.as_tensor(dataset.features, dtype=params[0].dtype, device=device)
    labels = torch.as_tensor(dataset.labels, dtype=torch.int64, device=device)
    train = torch.as_tensor(dataset.indices("train"), device=device)
    rows = curvature_rows(train, settings)
    ok = np.array(models["status"].to_pylist()) == "ok"
    stats = {name: np.full(len(ok), np.nan) for name in STATISTICS}
    keep = torch.as_tensor(np.flatnonzero(ok), device=device)
    if len(keep):
        kept, kept_buffers = [p[keep] for p in params], [b[keep] for b in buffers]
        found = flatness_statistics(
            family,
            kept,
            [p[keep] for p in initial],
            features[rows],
            labels[rows],
            settings,
            kept_buffers,
        )
        found |= simplicity_statistics(family, kept, features[rows], kept_buffers)
        for name, values in found.items():
            stats[name][ok] = values
    return stats

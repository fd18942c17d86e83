"""One pack's flat-minima and simplicity statistics measured again from its saved weights
(``rashomon flatness``), on a trainer.

The family is rebuilt from the weights file alone (a module family imports the user's class
again, from the folders its run recorded, checking the source's hash) and the initial weights
follow from the init seeds; the statistics are the trainer's own (`pack_flatness`) on the
trainer's copy of the dataset. The pack's ``models`` file is rewritten whole and atomically, with
the settings in its metadata: a pack that already carries them is left as it is, so an
interrupted recompute run again continues where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from rashomon.engine.model import (
    DTYPES,
    FlatnessSettings,
    TrainingData,
    family_from_weights,
    pack_flatness,
)
from rashomon.engine.store import ResultsDir
from rashomon.jobs import FLATNESS_COLUMNS, SIMPLICITY_COLUMNS, UserError

SETTINGS_KEY = b"flatness"  # the models file's metadata: the settings its statistics used
STATISTICS = FLATNESS_COLUMNS + SIMPLICITY_COLUMNS  # what `pack_flatness` measures


def remeasure_pack(
    results: ResultsDir,
    pack_id: str,
    data: Callable[[str], TrainingData],
    settings: FlatnessSettings,
    recorded: str,
) -> dict[str, int]:
    """Rewrite the statistics of ``pack_id`` (``data``: the dataset in a dtype) unless its
    models file already records the settings ``recorded`` (JSON). Returns its models and how
    many of them have finite statistics."""
    models = results.read_models(pack_id)
    status = models["status"].to_pylist()
    if set(status) <= {"failed"}:
        return {"models": len(status), "measured": 0}
    if (models.schema.metadata or {}).get(SETTINGS_KEY) != recorded.encode():
        stats = _statistics(results, pack_id, models, data, settings)
        columns = {name: models[name] for name in models.column_names}
        columns |= {name: pa.array(stats[name]) for name in STATISTICS}
        metadata = (models.schema.metadata or {}) | {SETTINGS_KEY: recorded.encode()}
        models = pa.table(columns, schema=models.schema).replace_schema_metadata(metadata)
        results.rewrite_models(pack_id, models)
    measured = pc.sum(pc.is_finite(models["weight_norm"])).as_py() or 0
    return {"models": len(status), "measured": measured}


def _statistics(
    results: ResultsDir,
    pack_id: str,
    models: pa.Table,
    data: Callable[[str], TrainingData],
    settings: FlatnessSettings,
) -> dict[str, np.ndarray]:
    model_ids, tensors, metadata = results.read_weights(pack_id)
    where = results.pack_file("weights", pack_id)
    if model_ids != models["model_id"].to_pylist():
        raise UserError(f"{where}: weights and models table disagree")
    try:
        family = family_from_weights(metadata, tensors)
        names = family.parameter_names()
        dtype = next(k for k, v in DTYPES.items() if v == tensors[names[0]].dtype)
    except (UserError, KeyError, StopIteration) as error:
        raise UserError(f"{where}: cannot rebuild its models: {error}") from None
    pack_data = data(dtype)
    n_features = pack_data.features.shape[1]
    if math.prod(family.in_shape) != n_features:
        raise UserError(
            f"{where}: the models take {math.prod(family.in_shape)} features but the job's "
            f"dataset now has {n_features}; the dataset changed since the run"
        )
    device = pack_data.features.device
    params = [tensors[name].to(device) for name in names]
    buffers = [tensors[name].to(device) for name in family.buffer_names()]
    initial, _ = family.init(models["init_seed"].to_pylist(), params[0].dtype, device)
    alive = torch.tensor([s == "ok" for s in models["status"].to_pylist()], device=device)
    return pack_flatness(family, params, initial, alive, pack_data, settings, buffers)

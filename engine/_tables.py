"""The Arrow tables of SPEC §5, built column-wise from a trained pack.

Every pack file has exactly the same schema, whatever its contents, so that a results folder reads
as one Parquet dataset (``pd.read_parquet(DIR + "/models")``) without schema merging.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from engine._plan import Pack
from engine._trainer import SPLITS, PackResult
from jobs import FLATNESS_COLUMNS, HYPERPARAMETERS

_ARROW_TYPES: dict[type, pa.DataType] = {
    str: pa.string(),
    tuple: pa.string(),  # hidden sizes, written as "[64, 32]"
    float: pa.float64(),
    int: pa.int64(),
    bool: pa.bool_(),
}
HYPERPARAMETER_TYPES = {name: _ARROW_TYPES[hp.type] for name, hp in HYPERPARAMETERS.items()}
METRICS = [f"{split}_{kind}" for split in SPLITS for kind in ("loss", "acc")]

MODELS_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("pack_id", pa.string()),
        ("init_seed", pa.int64()),
        ("order_seed", pa.int64()),
        ("data_seed", pa.int64()),
        ("trial", pa.int64()),
        *[(f"hp_{name}", kind) for name, kind in HYPERPARAMETER_TYPES.items()],
        *[(name, pa.float64()) for name in METRICS],
        *[(name, pa.float64()) for name in FLATNESS_COLUMNS],
        ("train_seconds", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)


def predictions_schema(n_classes: int) -> pa.Schema:
    return pa.schema(
        [
            ("model_id", pa.string()),
            ("example_id", pa.int64()),
            ("split", pa.string()),
            ("pred", pa.int32()),
            *[(f"prob_{k}", pa.float32()) for k in range(n_classes)],
        ]
    )


def _strings(indices: np.ndarray, values: pa.Array) -> pa.Array:
    """``values[indices]`` as a plain string column, without a Python string per row."""
    return pa.DictionaryArray.from_arrays(pa.array(indices), values).cast(pa.string())


def hparam_value(name: str, value):
    if name == "hidden":
        return "[" + ", ".join(str(int(v)) for v in value) + "]"
    return value


def models_table(
    pack: Pack,
    status: Sequence[str],
    metrics: dict[str, np.ndarray] | None,
    seconds: float,
    error: str | None = None,
) -> pa.Table:
    """One row per model; ``metrics`` None (with ``error``) records a pack that failed."""
    n = len(pack)
    columns = {
        "model_id": [m.model_id for m in pack.models],
        "pack_id": [pack.pack_id] * n,
        "init_seed": [m.spec.init_seed for m in pack.models],
        "order_seed": [m.spec.order_seed for m in pack.models],
        "data_seed": [m.spec.data_seed for m in pack.models],
        "trial": [m.trial for m in pack.models],
    }
    for name in HYPERPARAMETER_TYPES:
        columns[f"hp_{name}"] = [hparam_value(name, m.hparams[name]) for m in pack.models]
    for name in (*METRICS, *FLATNESS_COLUMNS):
        values = None if metrics is None else metrics.get(name)
        columns[name] = values if values is not None else np.full(n, np.nan)
    columns["train_seconds"] = np.full(n, seconds / n)
    columns["status"] = list(status)
    columns["error"] = [error] * n
    return pa.table(columns, schema=MODELS_SCHEMA)


def predictions_table(
    pack: Pack, result: PackResult, example_ids: dict[str, np.ndarray], n_classes: int
) -> pa.Table:
    """Rows ordered by split, then model, then example id: a model's rows of a split are
    contiguous, so a split loads straight into a (models, examples, classes) array."""
    model_ids = pa.array([m.model_id for m in pack.models], pa.string())
    parts = []
    for split, probs in result.probabilities.items():
        n_models, n_examples, _ = probs.shape
        finite = np.isfinite(probs).all(axis=-1)
        pred = np.where(finite, np.nan_to_num(probs, nan=-1.0).argmax(axis=-1), -1)
        columns = [
            _strings(np.repeat(np.arange(n_models, dtype=np.int32), n_examples), model_ids),
            pa.array(np.tile(example_ids[split], n_models)),
            _strings(np.zeros(n_models * n_examples, np.int32), pa.array([split])),
            pa.array(pred.reshape(-1).astype(np.int32)),
            *[pa.array(probs[:, :, k].reshape(-1)) for k in range(n_classes)],
        ]
        parts.append(pa.Table.from_arrays(columns, schema=predictions_schema(n_classes)))
    if not parts:
        return predictions_schema(n_classes).empty_table()
    return pa.concat_tables(parts)

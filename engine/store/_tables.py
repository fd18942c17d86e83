"""The Arrow tables of a results folder, built column-wise from plain arrays.

Every pack file has exactly the same schema, whatever its contents, so that a results folder reads
as one Parquet dataset (``pd.read_parquet(DIR + "/models")``) without schema merging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from rashomon.jobs import (
    FLATNESS_COLUMNS,
    HISTORY_COLUMNS,
    HYPERPARAMETERS,
    SIMPLICITY_COLUMNS,
    SPLITS,
)

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
        *[(name, pa.float64()) for name in SIMPLICITY_COLUMNS],
        ("train_seconds", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)
_MEASURED = (*METRICS, *FLATNESS_COLUMNS, *SIMPLICITY_COLUMNS, "train_seconds")
#: The columns every models file has had. Any other column (a hyperparameter or a statistic added
#: since) may be missing from a file an earlier rashomon wrote; it reads as null.
CORE_COLUMNS = (
    "model_id",
    "pack_id",
    "init_seed",
    "order_seed",
    "data_seed",
    "trial",
    *METRICS,
    "train_seconds",
    "status",
    "error",
)


#: One row per model and epoch (SPEC §5): a model's rows contiguous, epochs 1 … E in order.
HISTORY_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("epoch", pa.int64()),
        *[(name, pa.float64()) for name in HISTORY_COLUMNS],
    ]
)
#: The models file's metadata key that says its pack has a history file (a pack written before
#: histories has none).
HISTORY_FLAG = "history"


def conform_models(table: pa.Table) -> pa.Table:
    """A models table in today's schema: columns an earlier version did not write are null (its
    metadata kept)."""
    if table.schema.remove_metadata().equals(MODELS_SCHEMA):
        return table
    n = table.num_rows
    columns = [
        table[field.name] if field.name in table.column_names else pa.nulls(n, field.type)
        for field in MODELS_SCHEMA
    ]
    schema = MODELS_SCHEMA.with_metadata(table.schema.metadata)
    return pa.Table.from_arrays(columns, schema=schema)


def has_history(models: pa.Table) -> bool:
    """Whether a models table's pack was written with a history file."""
    return HISTORY_FLAG.encode() in (models.schema.metadata or {})


def history_table(model_ids: Sequence[str], columns: Mapping[str, np.ndarray]) -> pa.Table:
    """The history rows of a pack from ``columns``, each (models, epochs); a column left out
    (``hessian_top_eig`` when nothing tracked it) is null."""
    n_models, n_epochs = columns["train_loss"].shape
    ids = pa.array(list(model_ids), pa.string())
    values = {
        name: pa.array(np.asarray(columns[name], np.float64).reshape(-1))
        if name in columns
        else pa.nulls(n_models * n_epochs, pa.float64())
        for name in HISTORY_COLUMNS
    }
    return pa.table(
        {
            "model_id": _strings(np.repeat(np.arange(n_models, dtype=np.int32), n_epochs), ids),
            "epoch": pa.array(np.tile(np.arange(1, n_epochs + 1, dtype=np.int64), n_models)),
            **values,
        },
        schema=HISTORY_SCHEMA,
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


def models_table(columns: Mapping[str, Sequence | np.ndarray]) -> pa.Table:
    """One row per model from ``columns`` (the schema's names); measured columns left out are
    NaN (a pack that failed has none) and a missing ``error`` is null."""
    n = len(columns["model_id"])
    filled = dict(columns)
    for name in _MEASURED:
        if filled.get(name) is None:
            filled[name] = np.full(n, np.nan)
    filled.setdefault("error", [None] * n)
    return pa.table({name: filled[name] for name in MODELS_SCHEMA.names}, schema=MODELS_SCHEMA)


def _strings(indices: np.ndarray, values: pa.Array) -> pa.Array:
    """``values[indices]`` as a plain string column, without a Python string per row."""
    return pa.DictionaryArray.from_arrays(pa.array(indices), values).cast(pa.string())


def predictions_table(
    model_ids: Sequence[str],
    probabilities: Mapping[str, np.ndarray],
    example_ids: Mapping[str, np.ndarray],
    n_classes: int,
) -> pa.Table:
    """Rows ordered by split, then model, then example id: a model's rows of a split are
    contiguous, so a split loads straight into a (models, examples, classes) array.
    ``probabilities`` maps a split to float32 (models, examples, classes)."""
    ids = pa.array(list(model_ids), pa.string())
    parts = []
    for split, probs in probabilities.items():
        n_models, n_examples, _ = probs.shape
        finite = np.isfinite(probs).all(axis=-1)
        pred = np.where(finite, np.nan_to_num(probs, nan=-1.0).argmax(axis=-1), -1)
        columns = [
            _strings(np.repeat(np.arange(n_models, dtype=np.int32), n_examples), ids),
            pa.array(np.tile(example_ids[split], n_models)),
            _strings(np.zeros(n_models * n_examples, np.int32), pa.array([split])),
            pa.array(pred.reshape(-1).astype(np.int32)),
            *[pa.array(probs[:, :, k].reshape(-1)) for k in range(n_classes)],
        ]
        parts.append(pa.Table.from_arrays(columns, schema=predictions_schema(n_classes)))
    if not parts:
        return predictions_schema(n_classes).empty_table()
    return pa.concat_tables(parts)

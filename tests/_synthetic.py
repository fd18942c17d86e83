"""Write a results folder in the SPEC §5 schema from plain arrays, for tests and benchmarks.

The analysis layer must not depend on how the engine trains, only on the files it writes; building
populations with known properties (a disagreement that comes only from init seeds, 10,000 models
in seconds) needs a writer that takes the probabilities directly. The schemas are the engine's own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rashomon.engine.store import MODELS_SCHEMA, parquet_bytes, predictions_schema


def write_examples(root: Path, examples: pd.DataFrame, classes: Sequence[str]) -> None:
    """``examples.parquet``: example_id, split, label and any group columns."""
    root.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(examples, preserve_index=False)
    pq.write_table(
        table.replace_schema_metadata({"classes": json.dumps(list(classes))}),
        root / "examples.parquet",
    )


def write_pack(
    root: Path,
    pack_id: str,
    models: pd.DataFrame,
    probabilities: Mapping[str, np.ndarray],
    example_ids: Mapping[str, np.ndarray] | None = None,
) -> str:
    """One pack: its ``models`` rows (missing columns null) and (models, examples, classes)
    probabilities per split, rows in ``example_id`` order (default ``0 … n−1``). A ``pack_id``
    that is not one (16 hex digits, as readers require) is a label hashed into one; returns it."""
    if not re.fullmatch(r"[0-9a-f]{16}", pack_id):
        pack_id = hashlib.sha256(pack_id.encode()).hexdigest()[:16]
    n = len(models)
    columns = {name: pa.nulls(n, MODELS_SCHEMA.field(name).type) for name in MODELS_SCHEMA.names}
    columns["pack_id"] = pa.array([pack_id] * n)
    for name in models.columns:
        columns[name] = pa.array(models[name].to_numpy(), MODELS_SCHEMA.field(name).type)
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "predictions").mkdir(parents=True, exist_ok=True)
    parts = []
    for split, probs in probabilities.items():
        n_models, n_examples, n_classes = probs.shape
        ids = np.arange(n_examples) if example_ids is None else example_ids[split]
        model_index = np.repeat(np.arange(n_models, dtype=np.int32), n_examples)
        model_ids = pa.array(list(models["model_id"]))
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.DictionaryArray.from_arrays(pa.array(model_index), model_ids).cast(
                        pa.string()
                    ),
                    pa.array(np.tile(np.asarray(ids, np.int64), n_models)),
                    pa.array([split] * (n_models * n_examples)),
                    pa.array(probs.argmax(axis=-1).reshape(-1).astype(np.int32)),
                    *[
                        pa.array(probs[:, :, k].reshape(-1).astype(np.float32))
                        for k in range(n_classes)
                    ],
                ],
                schema=predictions_schema(n_classes),
            )
        )
    predictions = parquet_bytes(pa.concat_tables(parts))  # as the engine writes them
    (root / "predictions" / f"{pack_id}.parquet").write_bytes(predictions)
    models = parquet_bytes(pa.table(columns, schema=MODELS_SCHEMA))
    (root / "models" / f"{pack_id}.parquet").write_bytes(models)
    return pack_id

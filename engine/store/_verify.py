"""The checks a pack's files must pass before anything trusts them (SPEC §5).

A file that fails one is damaged: ``status`` and ``analyze`` report it, and the next run trains
its pack again. The checks follow from how packs are written: exact schemas, the pack id of the
file name in every row, one predictions row per model and example of each stored split (a model's
rows contiguous and in ``example_id`` order, in the models file's model order), class
probabilities of ``ok`` models finite and summing to 1, weights of exactly the pack's models.
Flipped bytes are caught by the Parquet page checksums and the weights digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rashomon.engine.store._tables import CORE_COLUMNS, HISTORY_SCHEMA, MODELS_SCHEMA

if TYPE_CHECKING:
    import torch

PROBABILITY_TOLERANCE = 1e-3
MODEL_STATUSES = ("ok", "diverged", "failed")
MARKER = "rashomon"  # schema metadata of our pack files: {"pack_id": ..., "file": ...}
DIGEST = "content_sha256"  # safetensors metadata: sha256 of the tensors (`weights_digest`)


class Damaged(Exception):
    """A pack file fails a check; the message says what is wrong with it."""


@dataclass(frozen=True)
class Layout:
    """What every predictions file of a folder must hold."""

    n_classes: int
    split_ids: Mapping[str, np.ndarray]  # split -> its example ids, in order
    stored: tuple[str, ...] | None  # the splits every file holds (None: not known)
    weights: bool | None = None  # whether every trained pack has a weights file


def marker(pack_id: str, file: str) -> dict[str, str]:
    return {MARKER: json.dumps({"pack_id": pack_id, "file": file})}


def marked_as(metadata: Mapping | None, pack_id: str, file: str) -> bool:
    """Whether a file's metadata says we wrote it as ``file`` of pack ``pack_id``."""
    text = (metadata or {}).get(MARKER) or (metadata or {}).get(MARKER.encode())
    try:
        return json.loads(text) == {"pack_id": pack_id, "file": file}
    except (TypeError, ValueError):
        return False


def _plain(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def check_schema(schema: pa.Schema, expected: pa.Schema, required: tuple[str, ...] = ()) -> None:
    """Exactly ``expected``'s columns and types (a dictionary-read column counts as its values);
    with ``required``, columns outside it may be missing (a file of an earlier version)."""
    found = [(f.name, _plain(f.type)) for f in schema]
    wanted = [(f.name, f.type) for f in expected]
    if required:
        wanted = [(n, t) for n, t in wanted if n in required or n in schema.names]
    if found != wanted:
        extra = [n for n, _ in found if n not in expected.names]
        missing = [n for n, _ in wanted if n not in schema.names]
        what = (
            f"missing columns {missing[:3]}"
            if missing
            else f"unknown columns {extra[:3]}"
            if extra
            else "columns of other types or order"
        )
        raise Damaged(f"not rashomon's schema ({what})")


def check_models(table: pa.Table, pack_id: str) -> None:
    """A models file: our schema, rows of this pack only, unique model ids, known statuses."""
    check_schema(table.schema, MODELS_SCHEMA, required=CORE_COLUMNS)
    if table.num_rows == 0:
        raise Damaged("no models")
    for name in ("model_id", "pack_id", "status"):
        if table[name].null_count:
            raise Damaged(f"null {name}")
    others = pc.unique(table["pack_id"]).to_pylist()
    if others != [pack_id]:
        shown = next(p for p in others if p != pack_id)
        raise Damaged(f"a row names pack {shown[:40]!r}, not the file's {pack_id}")
    if pc.count_distinct(table["model_id"]).as_py() != table.num_rows:
        raise Damaged("a model_id is repeated")
    statuses = set(pc.unique(table["status"]).to_pylist())
    if not statuses <= set(MODEL_STATUSES):
        raise Damaged(f"unknown status {sorted(statuses - set(MODEL_STATUSES))[0][:40]!r}")


def check_history(table: pa.Table, model_ids: Sequence[str], epochs: int | None) -> None:
    """A history file: our schema, one row per model of the models file (in its order) and
    epoch 1 … ``epochs`` (when known), each model's rows contiguous. Its values are what training
    measured: a diverged model's may be NaN."""
    check_schema(table.schema, HISTORY_SCHEMA)
    n = len(model_ids)
    if epochs is None:
        epochs = table.num_rows // n if n and table.num_rows % n == 0 else -1
    if table.num_rows != n * epochs:
        raise Damaged(f"{table.num_rows} rows, not {n} models × {epochs} epochs")
    if table["model_id"].null_count or table["epoch"].null_count:
        raise Damaged("null model_id or epoch")
    ids = table["model_id"].to_numpy(zero_copy_only=False).reshape(n, epochs)
    if not (ids == np.asarray(list(model_ids), dtype=object)[:, None]).all():
        raise Damaged("rows do not follow the models file's models")
    wanted = np.arange(1, epochs + 1)
    if not (table["epoch"].to_numpy().reshape(n, epochs) == wanted).all():
        raise Damaged("a model's epochs are not 1 … epochs in order")


def expects_files(statuses: Sequence[str]) -> bool:
    """A trained pack has predictions (and weights); one recorded as failed has neither."""
    return any(s != "failed" for s in statuses)


def expected_rows(n_models: int, layout: Layout) -> int | None:
    if layout.stored is None:
        return None
    return n_models * sum(len(layout.split_ids.get(s, ())) for s in layout.stored)


def check_predictions(
    table: pa.Table, model_ids: Sequence[str], ok: np.ndarray, layout: Layout
) -> dict[str, tuple[int, int]]:
    """Rows, order and probabilities of a predictions table read with ``model_id`` and ``split``
    as dictionaries (any subset of columns holding those, ``example_id`` and every ``prob_``).
    Returns each split's row range."""
    n = len(model_ids)
    table = table.unify_dictionaries()
    for name in ("model_id", "example_id", "split"):
        if table[name].null_count:
            raise Damaged(f"null {name}")
    split_codes, split_names = _codes(table["split"])
    edges = np.flatnonzero(np.diff(split_codes)) + 1
    starts = np.r_[0, edges] if len(split_codes) else edges
    ends = np.r_[edges, len(split_codes)] if len(split_codes) else edges
    runs = [split_names[int(split_codes[a])].as_py() for a in starts]
    if len(set(runs)) != len(runs):
        raise Damaged("the rows of a split are not contiguous")
    if layout.stored is not None:  # a split without examples has no rows to show for it
        stored = sorted(s for s in layout.stored if len(layout.split_ids.get(s, ())))
        if sorted(runs) != stored:
            raise Damaged(f"holds the splits {sorted(runs)}, not {stored}")
    model_codes, model_names = _codes(table["model_id"])
    example_ids = table["example_id"].to_numpy()
    ranges: dict[str, tuple[int, int]] = {}
    ok_rows = np.zeros(len(split_codes), bool)
    for split, start, end in zip(runs, starts, ends, strict=False):
        ids = layout.split_ids.get(split)
        if ids is None:
            raise Damaged(f"split {split[:20]!r} is not one of examples.parquet")
        n_examples = len(ids)
        if end - start != n * n_examples:
            raise Damaged(f"{end - start} {split} rows, not {n} models × {n_examples} examples")
        ranges[split] = (int(start), int(end))
        if n_examples == 0:
            continue
        if not (example_ids[start:end].reshape(n, n_examples) == ids).all():
            raise Damaged(f"{split} rows are not in the example_id order of examples.parquet")
        models = model_codes[start:end].reshape(n, n_examples)
        names = model_names.take(pa.array(models[:, 0])).to_pylist()
        if not (models == models[:, :1]).all() or names != list(model_ids):
            raise Damaged(f"{split} rows do not follow the models file's models")
        ok_rows[start:end] = np.repeat(ok, n_examples)
    _check_probabilities(table, layout.n_classes, ok_rows, model_names, model_codes)
    return ranges


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Row codes and the values they index, of a dictionary column."""
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    combined = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return combined.indices.to_numpy(zero_copy_only=False), combined.dictionary


def _check_probabilities(table, n_classes, ok_rows, model_names, model_codes) -> None:
    """Every ``ok`` row's probabilities in [0, 1] and summing to 1 (NaN or inf fail both)."""
    if not ok_rows.any():
        return
    total = np.zeros(len(ok_rows), np.float32)
    low = np.full(len(ok_rows), np.inf, np.float32)
    for k in range(n_classes):
        if f"prob_{k}" not in table.column_names:
            raise Damaged(f"no prob_{k} column")
        values = table[f"prob_{k}"].to_numpy()
        total += values
        np.minimum(low, values, out=low)
    good = (np.abs(total - 1.0) <= PROBABILITY_TOLERANCE) & (low >= 0)
    bad = np.flatnonzero(ok_rows & ~good)
    if len(bad):
        model = model_names[int(model_codes[bad[0]])].as_py()
        raise Damaged(
            f"{len(bad)} rows of ok models with probabilities that are not finite or do not sum "
            f"to 1 (first: model {model}, sum {total[bad[0]]:.6g})"
        )


def safetensors_header(data: bytes) -> tuple[dict, int]:
    """A safetensors file's JSON header and the offset of its data (8 + header length)."""
    if len(data) < 8:
        raise Damaged("not a safetensors file (too short)")
    length = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + length])
    except ValueError:
        raise Damaged("not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise Damaged("not a safetensors file (unreadable header)")
    return header, 8 + length


def check_weights_header(header: dict, data_size: int, model_ids: Sequence[str]) -> None:
    """The header's models are the pack's, every tensor holds one row per model, and the file
    holds all the data its header announces."""
    metadata = header.get("__metadata__") or {}
    try:
        ids = json.loads(metadata.get("model_ids", "null"))
    except ValueError:
        ids = None
    if ids != list(model_ids):
        raise Damaged("holds the weights of other models than the models file")
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    try:
        end = max((int(t["data_offsets"][1]) for t in tensors), default=0)
        rows = {int(t["shape"][0]) for t in tensors}
    except (KeyError, TypeError, ValueError, IndexError):
        raise Damaged("not a safetensors file (unreadable header)") from None
    if end != data_size:
        raise Damaged(f"{data_size} bytes of tensor data, the header announces {end}")
    if rows - {len(model_ids)}:
        raise Damaged(f"tensors of {sorted(rows)} models, not {len(model_ids)}")


def weights_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors' bytes in name order: safetensors itself has no checksum."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()

"""Read a results folder (SPEC §5) for analysis: lazily, column-wise, without a pandas pivot.

A folder may be a local path or any URL ``pyarrow.fs`` understands (``s3://``, ``gs://``,
``hdfs://``, ``file://``). Nothing is read when it is opened; each table is read when first asked
for. Predictions are the big part (models × examples × classes): the engine writes a model's rows
of a split contiguously and in ``example_id`` order, so a pack file's probability columns reshape
straight into an array, and only the packs holding the wanted models are read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rashomon.engine.store import display_location, list_files, resolve_location
from rashomon.jobs import UserError

SPLITS = ("train", "val", "test")


def _positions(model_ids: Sequence[str]) -> dict[str, int]:
    return {model_id: row for row, model_id in enumerate(model_ids)}


def _rows_of(table: pa.Table, split: str) -> pa.Table:
    """The rows of one split: a zero-copy slice, as the engine writes splits contiguously."""
    column = table["split"].combine_chunks()
    codes = column.dictionary.to_pylist()
    if split not in codes:
        return table.slice(0, 0)
    positions = np.flatnonzero(column.indices.to_numpy() == codes.index(split))
    if len(positions) and positions[-1] - positions[0] + 1 == len(positions):
        return table.slice(int(positions[0]), len(positions))
    return table.take(pa.array(positions))


def open_results(location: str | os.PathLike) -> Results:
    """Open a results folder written by ``rashomon run`` (nothing is read yet)."""
    return Results(location)


class Results:
    """One results folder. Tables are read on first use and kept."""

    def __init__(self, location: str | os.PathLike) -> None:
        self.filesystem, self.root = resolve_location(location)
        self.location = display_location(location)
        if self._info("examples.parquet").type != pafs.FileType.File:
            raise UserError(
                f"{self.location}: not a rashomon results folder (no examples.parquet); "
                "give the --out folder of a `rashomon run`"
            )

    @cached_property
    def examples(self) -> pd.DataFrame:
        """One row per example of every split: example_id, split, label, group columns."""
        return self._table("examples.parquet").to_pandas()

    @cached_property
    def classes(self) -> list[str]:
        metadata = self._table("examples.parquet").schema.metadata or {}
        return json.loads(metadata[b"classes"])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def group_columns(self) -> list[str]:
        return [c for c in self.examples.columns if c not in ("example_id", "split", "label")]

    @cached_property
    def models(self) -> pd.DataFrame:
        """The ``models`` table (every recorded model, whatever its status), by ``model_id``."""
        files = self._parquet_files("models")
        if not files:
            raise UserError(f"{self.location}: no trained models yet; run `rashomon run` first")
        table = pq.ParquetDataset(files, filesystem=self.filesystem).read()
        return table.to_pandas().sort_values("model_id", ignore_index=True)

    def split_examples(self, split: str) -> pd.DataFrame:
        """The examples of one split, in the order of the prediction arrays (``example_id``)."""
        if split not in SPLITS:
            raise UserError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        chosen = self.examples[self.examples["split"] == split]
        return chosen.sort_values("example_id", ignore_index=True)

    def probabilities(
        self,
        split: str,
        model_ids: Sequence[str],
        examples: slice = slice(None),
    ) -> np.ndarray:
        """Class probabilities of ``model_ids`` on ``split``: float32 (models, examples, classes).

        Rows follow ``model_ids``; columns follow `split_examples`, restricted to ``examples``
        (a slice, to read a large split in chunks of examples).
        """
        row_of = _positions(model_ids)
        out = None
        for ids, block in self.iter_split(split, model_ids, examples):
            if out is None:
                out = np.empty((len(model_ids), *block.shape[1:]), np.float32)
            out[[row_of[m] for m in ids]] = block
        if out is None:
            n_examples = len(self.split_examples(split)["example_id"].to_numpy()[examples])
            out = np.empty((0, n_examples, self.n_classes), np.float32)
        return out

    def iter_split(
        self, split: str, model_ids: Sequence[str], examples: slice = slice(None)
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Per pack file: (its models among ``model_ids``, float32 (models, examples, classes)).

        Each file is read once, whatever the number of wanted models in it; every wanted model
        is yielded exactly once, or a `UserError` says which split or file is missing.
        """
        expected_ids = self.split_examples(split)["example_id"].to_numpy()
        wanted = set(model_ids)
        if len(wanted) != len(model_ids):
            raise ValueError("model_ids holds duplicates")
        found = 0
        packs = self.models.set_index("model_id").loc[list(model_ids), "pack_id"].unique()
        for pack_id in packs:
            path = f"{self.root}/predictions/{pack_id}.parquet"
            block_ids, block = self._read_split(path, split, expected_ids)
            keep = np.array([m in wanted for m in block_ids], bool)
            found += int(keep.sum())
            yield [m for m, k in zip(block_ids, keep, strict=True) if k], block[keep][:, examples]
        if found != len(model_ids):
            raise UserError(
                f"{self.location}: no {split} predictions for {len(model_ids) - found} models; "
                f"this run stored the splits of its job's output.predictions "
                f"({self._stored_splits()})"
            )

    def _read_split(
        self, path: str, split: str, expected_ids: np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """(model ids, float32 (models, examples, classes)) of one pack file's ``split`` rows."""
        if self._info_path(path).type != pafs.FileType.File:
            raise UserError(f"{self.location}: {path} is missing; rerun `rashomon run` to redo it")
        probabilities = [f"prob_{k}" for k in range(self.n_classes)]
        table = pq.read_table(
            path,
            columns=["model_id", "split", "example_id", *probabilities],
            filesystem=self.filesystem,
            read_dictionary=["model_id", "split"],
        )
        table = _rows_of(table, split)
        n_examples = len(expected_ids)
        if n_examples == 0 or table.num_rows % n_examples:
            raise UserError(
                f"{path}: {table.num_rows} {split} rows is not a whole number of models"
            )
        n_models = table.num_rows // n_examples
        example_ids = table["example_id"].to_numpy().reshape(n_models, n_examples)
        if not (example_ids == expected_ids).all():
            raise UserError(f"{path}: {split} rows are not in example_id order of examples.parquet")
        model_column = table["model_id"].combine_chunks()
        starts = model_column.indices.to_numpy()[::n_examples]
        block_ids = model_column.dictionary.take(pa.array(starts)).to_pylist()
        block = np.empty((n_models, n_examples, self.n_classes), np.float32)
        for k, column in enumerate(probabilities):
            block[:, :, k] = table[column].to_numpy().reshape(n_models, n_examples)
        return block_ids, block

    def _stored_splits(self) -> str:
        files = self._parquet_files("predictions")
        if not files:
            return "none"
        table = pq.read_table(files[0], columns=["split"], filesystem=self.filesystem)
        return ", ".join(sorted(set(table["split"].to_pylist())))

    def _table(self, name: str) -> pa.Table:
        return pq.read_table(f"{self.root}/{name}", filesystem=self.filesystem)

    def _info(self, name: str) -> pafs.FileInfo:
        return self._info_path(f"{self.root}/{name}")

    def _info_path(self, path: str) -> pafs.FileInfo:
        return self.filesystem.get_file_info(path)

    def _parquet_files(self, folder: str) -> list[str]:
        return sorted(
            info.path
            for info in list_files(self.filesystem, f"{self.root}/{folder}")
            if info.base_name.endswith(".parquet") and not info.base_name.startswith((".", "_"))
        )

"""Read a results folder (SPEC §5) for analysis: lazily, column-wise, without a pandas pivot.

A folder may be a local path or any URL ``pyarrow.fs`` understands (``s3://``, ``gs://``,
``hdfs://``, ``file://``). Files are found, named and checked by the store's `ResultsDir`; this
module adds the analysis views. Nothing is read when a folder is opened; each table is read when
first asked for. Predictions are the big part (models × examples × classes): the engine writes a
model's rows of a split contiguously and in ``example_id`` order, so a pack file's probability
columns reshape straight into an array, and only the packs holding the wanted models are read.
Every file read is checked (page checksums, rows, probabilities); damaged packs are a user error
that names them and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

from rashomon.engine.store import HISTORY_SCHEMA, Damaged, Layout, ResultsDir
from rashomon.jobs import SPLITS, UserError, redact


def _positions(model_ids: Sequence[str]) -> dict[str, int]:
    return {model_id: row for row, model_id in enumerate(model_ids)}


def open_results(dir: str | os.PathLike) -> Results:
    """Open a results folder written by ``rashomon run`` or ``rashomon tune``.

    Nothing is read yet: each table is read when first asked for, and kept.

    Parameters
    ----------
    dir : str or path-like
        The folder: a local path or a ``pyarrow.fs`` URL (``s3://bucket/prefix``, ``file://``).

    Returns
    -------
    Results
        The folder's tables (``models``, ``examples``) and predictions (``probabilities``).

    Raises
    ------
    rashomon.jobs.UserError
        The folder is not a results folder (it has no ``examples.parquet``).

    Examples
    --------
    >>> results = rashomon.open_results("results/quickstart")  # doctest: +SKIP
    >>> results.probabilities("test").shape  # (ok models, test examples, classes)  # doctest: +SKIP
    (128, 114, 2)
    """
    return Results(dir)


class Results:
    """One results folder (SPEC §5), read lazily through the store's `ResultsDir`.

    Attributes
    ----------
    models : pandas.DataFrame
        One row per recorded model, whatever its status, sorted by ``model_id``.
    examples : pandas.DataFrame
        One row per example of every split: ``example_id``, ``split``, ``label`` and the job's
        ``groups`` columns.
    model_ids : list of str
        The models with status ``ok``, sorted by ``model_id``: the rows of `probabilities`.
    classes : list of str
        The class names; column k of `probabilities` is ``classes[k]``.
    history : pandas.DataFrame
        The learning curves: one row per model and epoch (``model_id``, ``epoch``,
        ``train_loss``, ``val_loss``, ``val_acc``, ``lr``, ``hessian_top_eig``), of every pack
        written with them, sorted by ``model_id`` and ``epoch``.
    """

    def __init__(self, location: str | os.PathLike) -> None:
        self.store = ResultsDir(location)
        self.location = self.store.location
        if not self.store.is_results_folder():
            raise UserError(
                f"{self.location}: not a rashomon results folder (no examples.parquet); "
                "give the --out folder of a `rashomon run`"
            )

    def __repr__(self) -> str:
        where = redact(self.location)
        try:
            statuses = self.models["status"].value_counts()
            splits = self.examples["split"].value_counts()
        except UserError:  # damaged or not trained yet: the location is all there is to say
            return f"Results({where!r})"
        counts = ", ".join(f"{n} {status}" for status, n in statuses.items())
        sizes = " / ".join(f"{splits[s]} {s}" for s in SPLITS if s in splits)
        return (
            f"Results({where!r}: {len(self.models)} models ({counts}), {self.n_classes} classes, "
            f"examples {sizes})"
        )

    @cached_property
    def examples(self) -> pd.DataFrame:
        """One row per example of every split: example_id, split, label, group columns."""
        return self._checked(self.store.examples).to_pandas()

    @cached_property
    def classes(self) -> list[str]:
        return self._checked(self.store.classes)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def group_columns(self) -> list[str]:
        return [c for c in self.examples.columns if c not in ("example_id", "split", "label")]

    @cached_property
    def _packs(self) -> dict[str, pa.Table]:
        """Each intact pack's models table, in file order; damaged models files are an error."""
        scan = self.store.scan()
        if scan.damaged:
            raise self.store.damage_error(scan.damaged)
        return scan.packs

    @cached_property
    def _layout(self) -> Layout:
        return self._checked(self.store.layout)

    @cached_property
    def models(self) -> pd.DataFrame:
        """The ``models`` table (every recorded model, whatever its status), by ``model_id``."""
        if not self._packs:
            raise UserError(f"{self.location}: no trained models yet; run `rashomon run` first")
        table = pa.concat_tables(self._packs.values())
        return table.to_pandas().sort_values("model_id", ignore_index=True)

    @cached_property
    def history(self) -> pd.DataFrame:
        """The learning curves of every model whose pack recorded them (SPEC §5), checked;
        empty for a run that predates them."""
        tables, damaged = [], {}
        for pack_id, models in self._packs.items():
            try:
                table = self.store.read_history(pack_id, models)
            except Damaged as error:
                damaged[pack_id] = str(error)
                continue
            if table is not None:
                tables.append(table.replace_schema_metadata(None))
        if damaged:
            raise self.store.damage_error(damaged)
        table = pa.concat_tables(tables) if tables else HISTORY_SCHEMA.empty_table()
        frame = table.to_pandas()
        return frame.sort_values(["model_id", "epoch"], ignore_index=True)

    @property
    def model_ids(self) -> list[str]:
        """The models with status ``ok``, by ``model_id``: the rows of `probabilities`.

        Diverged models are left out (their probabilities may be NaN) and failed ones have none;
        ask for them by id with ``probabilities(split, model_ids)``.
        """
        models = self.models
        return models.loc[models["status"] == "ok", "model_id"].tolist()

    @cached_property
    def n_pending(self) -> int:
        """Models of the job not trained yet (0 for a searched folder or one without a job)."""
        if self.store.identity() is None:
            return 0
        try:
            return self.store.progress(self.models).pending or 0
        except UserError:  # a job.yaml this version cannot read: the size is unknown
            return 0

    def split_examples(self, split: str) -> pd.DataFrame:
        """The examples of one split, in the order of the prediction arrays (``example_id``)."""
        if split not in SPLITS:
            raise UserError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        chosen = self.examples[self.examples["split"] == split]
        return chosen.sort_values("example_id", ignore_index=True)

    def probabilities(
        self,
        split: str,
        model_ids: Sequence[str] | None = None,
        examples: slice = slice(None),
    ) -> np.ndarray:
        """Class probabilities on ``split``: float32, shape (models, examples, classes).

        Parameters
        ----------
        split : {"train", "val", "test"}
            A split the run stored (its job's ``output.predictions``).
        model_ids : sequence of str, optional
            The models, in the order of the rows; default `model_ids` (the ok models).
        examples : slice, optional
            Columns to keep, to read a large split in chunks; the columns follow
            ``split_examples(split)`` (``example_id`` order).
        """
        model_ids = self.model_ids if model_ids is None else list(model_ids)
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
        if split not in SPLITS:
            raise UserError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        wanted = set(model_ids)
        if len(wanted) != len(model_ids):
            raise ValueError("model_ids holds duplicates")
        found = 0
        damaged: dict[str, str] = {}
        packs = self.models.set_index("model_id").loc[list(model_ids), "pack_id"].unique()
        for pack_id in packs:
            try:
                read = self.store.read_split(pack_id, self._packs[pack_id], split, self._layout)
            except Damaged as error:
                damaged[pack_id] = str(error)
                continue
            if read is None:
                continue
            block_ids, block = read
            keep = np.array([m in wanted for m in block_ids], bool)
            found += int(keep.sum())
            yield [m for m, k in zip(block_ids, keep, strict=True) if k], block[keep][:, examples]
        if damaged:
            raise self.store.damage_error(damaged)
        if found != len(model_ids):
            raise UserError(
                f"{self.location}: no {split} predictions for {len(model_ids) - found} models; "
                f"this run stored the splits of its job's output.predictions "
                f"({', '.join(self._layout.stored or ()) or 'none'})"
            )

    def _checked(self, read):
        """``read()``, with a damaged or missing examples.parquet as a user error."""
        try:
            return read()
        except Damaged as error:
            raise UserError(
                f"{self.location}: {error}; run the same `rashomon run` again to rebuild it"
            ) from None

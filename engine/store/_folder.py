"""The results folder of SPEC §5: layout, identity of the job it holds, pack files.

A folder may be a local or shared path, or any ``pyarrow.fs`` URL (``s3://``, ``gs://``): the
trainer actors write their pack files there directly. Every file appears whole or not at all
(`_location.put`). A pack's files are named by its pack id and rewritten whole, which makes a
retried or resumed pack idempotent. The ``models`` file is written last and is the pack's commit
marker: predictions or weights without it belong to a writer that died and are never read.

Nothing read back is trusted: a pack id must be 16 hex digits before it becomes a path, and every
pack file is checked (`_verify`) before its rows count. One writer at a time holds the folder's
lock (`_lock`). A writer deletes only what it can prove it wrote: a pack file with our name, our
marker in its metadata and no models file, or a temporary of `put`. A damaged file it cannot prove
its own is moved aside to ``DIR/quarantine/``, which no reader lists; anything else is left alone,
and a folder that holds files but no rashomon ``job.yaml`` is refused before anything is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rashomon.engine.store._location import (
    delete,
    display_location,
    list_files,
    put,
    resolve_location,
    temporary_target,
)
from rashomon.engine.store._lock import LOCK_NAME, FolderLock, Owner
from rashomon.engine.store._tables import (
    HISTORY_FLAG,
    HISTORY_SCHEMA,
    MODELS_SCHEMA,
    conform_models,
    has_history,
    predictions_schema,
)
from rashomon.engine.store._verify import (
    DIGEST,
    Damaged,
    Layout,
    check_history,
    check_models,
    check_predictions,
    check_schema,
    check_weights_header,
    expected_rows,
    expects_files,
    marked_as,
    marker,
    safetensors_header,
    weights_digest,
)
from rashomon.jobs import SPLITS, Job, UserError, count_models, load_job_text, prepare_job_dataset

if TYPE_CHECKING:  # torch is loaded only where weights are read or written
    import torch

    from rashomon.jobs import PreparedDataset

PACK_ID = re.compile(r"[0-9a-f]{16}")
PACK_FILES = {
    "models": ".parquet",
    "predictions": ".parquet",
    "weights": ".safetensors",
    "history": ".parquet",
}
QUARANTINE = "quarantine"
_HEADER = re.compile(r"# (\w+): (.*)")
_JOB_HASH = re.compile(r"[0-9a-f]{64}")
_DICTIONARY = ("model_id", "split")
_ROOT_FILES = ("job.yaml", "examples.parquet")


@dataclass
class Scan:
    """The committed packs: the models of the intact ones, and what is wrong with the others
    (with their models where the models file itself is readable)."""

    packs: dict[str, pa.Table] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)
    suspect: dict[str, pa.Table] = field(default_factory=dict)

    def models(self) -> pa.Table:
        tables = list(self.packs.values())
        return pa.concat_tables(tables) if tables else MODELS_SCHEMA.empty_table()


@dataclass(frozen=True)
class Progress:
    """How far the job of a folder is: ``total`` and ``pending`` are None for a searched folder
    (``rashomon tune`` trains as many cohorts as it is asked for: there is no fixed total)."""

    total: int | None
    pending: int | None
    ok: int
    diverged: int
    failed: int
    trials: int


class ResultsDir:
    def __init__(self, location: str | os.PathLike) -> None:
        self.location = display_location(location)
        self.filesystem, self.root = resolve_location(location)
        self.is_local = isinstance(self.filesystem, pafs.LocalFileSystem)
        self._examples: pa.Table | None = None

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def pack_file(self, folder: str, pack_id: str) -> str:
        if not PACK_ID.fullmatch(pack_id):  # never a path from a crafted id
            raise ValueError(f"not a pack id: {pack_id[:40]!r}")
        return self.path(folder, pack_id + PACK_FILES[folder])

    # --- the job the folder holds -------------------------------------------------------------

    def identity(self) -> dict[str, str] | None:
        """The job hash and dataset fingerprint recorded in ``job.yaml``, if there is one."""
        header = self._header()
        if header is None:
            return None
        return {k: header[k] for k in ("job_hash", "dataset_fingerprint") if k in header}

    def job(self) -> Job:
        """The job these results were trained from (as recorded in ``job.yaml``), reading its
        relative dataset path against the folder of the job file it was run from."""
        text = self._job_text()
        if text is None:
            raise UserError(
                f"{self.location}: not a rashomon results folder (no job.yaml); give the --out "
                "folder of a `rashomon run`"
            )
        base_dir = Path(self.root) if self.is_local else Path.cwd()
        with contextlib.suppress(KeyError, ValueError, TypeError):
            base_dir = Path(json.loads(self._header()["base_dir"]))
        return load_job_text(text, f"{self.location}/job.yaml", base_dir=base_dir, recorded=True)

    def dataset(self) -> PreparedDataset:
        """The job's dataset prepared as for training, refused if its file changed since."""
        job = self.job()
        try:
            dataset = prepare_job_dataset(job)
        except UserError as error:
            raise UserError(
                f"{self.location}: cannot prepare the job's dataset ({error})"
            ) from None
        recorded = (self.identity() or {}).get("dataset_fingerprint")
        if recorded not in (None, dataset.fingerprint):
            raise UserError(
                f"{self.location}/job.yaml: the dataset file changed since the run (fingerprint "
                f"{dataset.fingerprint[:12]} now, {recorded[:12]} recorded); restore the "
                "original file to use the saved results with it"
            )
        return dataset

    def _header(self) -> dict[str, str] | None:
        """The ``# key: value`` lines that open ``job.yaml``."""
        text = self._job_text()
        if text is None:
            return None
        fields = {}
        for line in text.splitlines():
            match = _HEADER.fullmatch(line)
            if match is None:
                break
            fields[match[1]] = match[2]
        return fields

    def _job_text(self) -> str | None:
        try:
            with self.filesystem.open_input_stream(self.path("job.yaml")) as stream:
                return stream.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise UserError(
                f"{self.location}: cannot read this results folder ({error}); check the URL, "
                "that the bucket exists and the credentials in the environment (AWS_*, GOOGLE_*)"
            ) from None

    def is_results_folder(self) -> bool:
        """Written by a run (its job.yaml), or at least holding examples for analysis."""
        if _JOB_HASH.fullmatch((self._header() or {}).get("job_hash", "")):
            return True
        return self._exists(self.path("examples.parquet"))

    # --- writing: one writer, who deletes only what it wrote ----------------------------------

    @contextlib.contextmanager
    def lock(self, purpose: str) -> Iterator[FolderLock]:
        """Hold the folder's lock for a whole run; a folder that holds anything but results is
        refused first, before anything is written."""
        self.refuse_foreign()
        lock = FolderLock(self.filesystem, self.root, self.location, purpose)
        try:
            lock.acquire()
        except OSError as error:
            raise self._unwritable(error) from None
        try:
            yield lock
        finally:
            lock.release()

    def refuse_foreign(self) -> None:
        """Refuse a folder that holds files and no job.yaml of a rashomon run."""
        try:
            kind = self.filesystem.get_file_info(self.root).type
            if kind == pafs.FileType.NotFound:
                return
            if kind == pafs.FileType.File:
                raise UserError(f"{self.location}: is a file, not a folder; choose another --out")
            if _JOB_HASH.fullmatch((self._header() or {}).get("job_hash", "")):
                return
            found = self._first_file(self.root)
        except OSError as error:
            raise self._unwritable(error) from None
        if found is not None:
            raise UserError(
                f"{self.location}: not empty and not a rashomon results folder (it holds "
                f"{found[:200]!r} and no job.yaml of a rashomon run); choose a new or empty "
                "--out folder: nothing here was changed"
            )

    def _first_file(self, folder: str) -> str | None:
        selector = pafs.FileSelector(folder, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            if info.base_name.startswith(LOCK_NAME) or _our_temporary(info.base_name):
                continue  # what another run writes while it claims this folder
            if info.type == pafs.FileType.Directory:
                inner = self._first_file(info.path)
                if inner is not None:
                    return inner
            else:
                return info.path[len(self.root) + 1 :]
        return None

    def claim(self, job, dataset) -> dict[str, str]:
        """Make this folder hold ``job``'s results, or refuse if it holds another job's. Under the
        lock: rebuild a missing or damaged examples.parquet, retire every damaged pack (its models
        train again) and remove what killed writers left. Returns the retired packs and why."""
        wanted = {"job_hash": job.job_hash, "dataset_fingerprint": dataset.fingerprint}
        header = self._header()
        found = None if header is None else {k: header.get(k) for k in wanted}
        if found is not None and found != wanted:
            if found["job_hash"] != job.job_hash:
                what = (
                    f"a different job (job hash {(found['job_hash'] or '?')[:12]}, this job "
                    f"{job.job_hash[:12]})"
                )
            else:
                what = (
                    f"a different dataset file (fingerprint "
                    f"{(found['dataset_fingerprint'] or '?')[:12]} recorded, "
                    f"{dataset.fingerprint[:12]} now)"
                )
            raise UserError(
                f"{self.location}: holds the results of {what}; choose another --out, or delete "
                "the folder to start over"
            )
        try:
            if self.is_local:
                for folder in PACK_FILES:
                    self.filesystem.create_dir(self.path(folder))
            if header is None or "base_dir" not in header:  # written first: it marks the folder
                wanted["base_dir"] = json.dumps(str(Path(job.base_dir).absolute()))
                text = "".join(f"# {k}: {v}\n" for k, v in wanted.items()) + job.to_yaml()
                put(self.filesystem, self.path("job.yaml"), text.encode())
            self._write_examples(dataset)
            damaged = self.scan("deep").damaged
            for pack_id in damaged:
                self._retire(pack_id)
            self.remove_uncommitted()
        except OSError as error:
            raise self._unwritable(error) from None
        return damaged

    def _unwritable(self, error: OSError) -> UserError:
        return UserError(
            f"{self.location}: cannot write the results here ({error}); choose a writable "
            "--out, or check the bucket and the credentials in the environment"
        )

    def _write_examples(self, dataset) -> None:
        """Write examples.parquet unless it already holds exactly the dataset's examples."""
        table = pa.table(
            {
                "example_id": dataset.example_ids,
                "split": np.asarray(SPLITS, dtype=object)[dataset.split],
                "label": dataset.labels,
                **{name: dataset.groups[name].to_numpy() for name in dataset.groups.columns},
            }
        ).replace_schema_metadata({"classes": json.dumps(list(dataset.classes))})
        with contextlib.suppress(Damaged):
            found = self.examples()
            if found.equals(table) and found.schema.metadata == table.schema.metadata:
                return
        if self._exists(self.path("examples.parquet")):
            self._quarantine(self.path("examples.parquet"), "")
        put(self.filesystem, self.path("examples.parquet"), parquet_bytes(table))
        self._examples = None

    def remove_uncommitted(self) -> None:
        """Remove what writers killed mid-pack left: temporaries of `put`, and predictions or
        weights of packs without a models file. Call only when no writer of this folder is at
        work (a killed run's actors may die a little after it: a run calls this at its start and
        end, under the lock)."""
        committed = set(self.pack_ids())
        for folder in ("", *PACK_FILES):
            for info in list_files(self.filesystem, self.path(folder) if folder else self.root):
                target = temporary_target(info.base_name)
                if target is not None:
                    ours = _pack_id(folder, target) if folder else target in _ROOT_FILES
                    if ours:
                        delete(self.filesystem, info.path)
                elif folder in ("predictions", "weights", "history"):
                    pack_id = _pack_id(folder, info.base_name)
                    if pack_id is not None and pack_id not in committed:
                        self._remove_pack_file(folder, pack_id)

    def discard_packs(self, pack_ids) -> None:
        """Forget packs whose models are about to be trained again under other pack ids."""
        for pack_id in pack_ids:
            self._retire(pack_id)

    def _retire(self, pack_id: str) -> None:
        """Uncommit a pack (its models file goes first), then remove its other files."""
        for folder in PACK_FILES:
            self._remove_pack_file(folder, pack_id)

    def _remove_pack_file(self, folder: str, pack_id: str) -> None:
        """Delete a pack file we can prove we wrote; move any other aside to quarantine/."""
        path = self.pack_file(folder, pack_id)
        if not self._exists(path):
            return
        if self._marked(path, folder, pack_id):
            delete(self.filesystem, path)
        else:
            self._quarantine(path, folder)

    def _marked(self, path: str, folder: str, pack_id: str) -> bool:
        try:
            with self.filesystem.open_input_file(path) as stream:
                if folder == "weights":
                    metadata = _safetensors_header(stream)[0].get("__metadata__")
                else:
                    metadata = pq.ParquetFile(stream).schema_arrow.metadata
            return marked_as(metadata, pack_id, folder)
        except (OSError, ValueError, pa.ArrowException, Damaged):
            return False

    def _quarantine(self, path: str, folder: str) -> None:
        """Move a file aside, into quarantine/ (never read, never deleted by us)."""
        name = path.rsplit("/", 1)[1]
        target = self.path(QUARANTINE, *([folder] if folder else []), name)
        if self._exists(target):
            target = f"{target}.{uuid.uuid4().hex[:8]}"
        if self.is_local:
            self.filesystem.create_dir(target.rsplit("/", 1)[0])
        self.filesystem.move(path, target)

    def quarantined(self) -> int:
        selector = pafs.FileSelector(self.path(QUARANTINE), recursive=True, allow_not_found=True)
        return sum(i.type == pafs.FileType.File for i in self.filesystem.get_file_info(selector))

    def holder(self) -> Owner | None:
        """Who writes this folder now, if anyone."""
        return FolderLock(self.filesystem, self.root, self.location, "status").holder()

    def write_pack(
        self,
        pack_id: str,
        models: pa.Table,
        predictions: pa.Table | None = None,
        weights: Mapping | None = None,
        weights_metadata: Mapping[str, str] | None = None,
        history: pa.Table | None = None,
    ) -> None:
        """Write a pack's files, its models file last: the commit. A pack with a ``history``
        records so in its models file, whose checks then look for it."""
        if history is not None:
            data = parquet_bytes(_marked_table(history, pack_id, "history"))
            put(self.filesystem, self.pack_file("history", pack_id), data)
            models = _with_metadata(models, {HISTORY_FLAG: "1"})
        if weights is not None:
            from safetensors.torch import save

            tensors = {k: v.contiguous() for k, v in weights.items()}
            metadata = {**(weights_metadata or {}), **marker(pack_id, "weights")}
            metadata[DIGEST] = weights_digest(tensors)
            put(self.filesystem, self.pack_file("weights", pack_id), save(tensors, metadata))
        if predictions is not None:
            data = parquet_bytes(_marked_table(predictions, pack_id, "predictions"))
            put(self.filesystem, self.pack_file("predictions", pack_id), data)
        self.rewrite_models(pack_id, models)

    def rewrite_models(self, pack_id: str, models: pa.Table) -> None:
        """Write (or replace) a pack's models file: the pack's commit."""
        data = parquet_bytes(_marked_table(models, pack_id, "models"))
        put(self.filesystem, self.pack_file("models", pack_id), data)

    # --- reading: every file checked ----------------------------------------------------------

    def pack_ids(self) -> list[str]:
        """The committed packs: those with a models file (of our name)."""
        names = (i.base_name for i in list_files(self.filesystem, self.path("models")))
        return sorted(p for p in (_pack_id("models", n) for n in names) if p is not None)

    def has_weights(self) -> bool:
        names = (i.base_name for i in list_files(self.filesystem, self.path("weights")))
        return any(_pack_id("weights", name) is not None for name in names)

    def examples(self) -> pa.Table:
        """examples.parquet, checked; `Damaged` when it is missing or not ours."""
        if self._examples is None:
            try:
                table = self._read_parquet(self.path("examples.parquet"))[0]
            except Damaged as error:
                raise Damaged(f"examples.parquet {error}") from None
            text = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)  # noqa: E731
            types = {"example_id": pa.types.is_integer, "split": text, "label": pa.types.is_integer}
            for name, kind in types.items():
                if name not in table.column_names or not kind(table.schema.field(name).type):
                    raise Damaged(f"examples.parquet has no {name} column of the right type")
            if table["example_id"].null_count or table["split"].null_count:
                raise Damaged("examples.parquet has null example ids or splits")
            self._examples = table
        return self._examples

    def classes(self) -> list[str]:
        """The class names, or 0 … C−1 when examples.parquet does not record them (SPEC §5)."""
        metadata = self.examples().schema.metadata or {}
        with contextlib.suppress(KeyError, ValueError, TypeError):
            names = json.loads(metadata[b"classes"])
            if isinstance(names, list) and names:
                return [str(name) for name in names]
        for pack_id in self.pack_ids():
            with contextlib.suppress(Damaged):
                schema = self._read_parquet(self.pack_file("predictions", pack_id), footer=True)[1]
                count = sum(name.startswith("prob_") for name in schema.names)
                if count:
                    return [str(k) for k in range(count)]
        labels = self.examples()["label"]
        return [str(k) for k in range(int(pc.max(labels).as_py() or 0) + 1)]

    def layout(self) -> Layout:
        """What each predictions file must hold (`Damaged` when examples.parquet is)."""
        examples = self.examples()
        split = examples["split"].to_numpy(zero_copy_only=False)
        ids = examples["example_id"].to_numpy()
        job = self._recorded_job()
        return Layout(
            n_classes=len(self.classes()),
            split_ids={s: np.sort(ids[split == s]) for s in SPLITS},
            stored=tuple(job.output.predictions) if job is not None else self._stored_splits(),
            weights=job.output.weights if job is not None else None,
        )

    def _stored_splits(self) -> tuple[str, ...] | None:
        """Without a job: the splits of the first readable predictions file."""
        for pack_id in self.pack_ids():
            with contextlib.suppress(Damaged):
                path = self.pack_file("predictions", pack_id)
                table = self._read_parquet(path, ["split"], dictionary=("split",))[0]
                return tuple(pc.unique(table["split"]).cast(pa.string()).to_pylist())
        return None

    def _recorded_job(self) -> Job | None:
        try:
            return self.job()
        except UserError:
            return None

    def scan(self, level: str = "models") -> Scan:
        """Check the committed packs: ``"models"`` reads the models files; ``"files"`` adds the
        footers of the predictions and the headers of the weights (cheap: what ``status``
        does); ``"deep"`` reads every byte (page checksums, rows, probabilities, digests)."""
        layout = None
        if level != "models":
            with contextlib.suppress(Damaged):
                layout = self.layout()
        scan = Scan()
        for pack_id in self.pack_ids():
            try:
                models = self._read_models(pack_id)
            except Damaged as error:
                scan.damaged[pack_id] = f"models file {error}"
                continue
            try:
                if layout is not None and expects_files(models["status"].to_pylist()):
                    self._check_files(pack_id, models, layout, deep=level == "deep")
            except Damaged as error:
                scan.damaged[pack_id] = str(error)
                scan.suspect[pack_id] = models
                continue
            scan.packs[pack_id] = models
        _reject_repeated_models(scan)
        return scan

    def _read_models(self, pack_id: str) -> pa.Table:
        table, schema, _ = self._read_parquet(self.pack_file("models", pack_id))
        if (schema.metadata or {}).get(b"rashomon") and not marked_as(
            schema.metadata, pack_id, "models"
        ):
            raise Damaged("is marked as another pack's file")
        try:
            check_models(table, pack_id)
        except Damaged as error:
            raise Damaged(f"{error}") from None
        return conform_models(table)

    def read_models(self, pack_id: str) -> pa.Table:
        """One pack's models table; a damaged one is a user error that says how to fix it."""
        try:
            return self._read_models(pack_id)
        except Damaged as error:
            raise self.damage_error({pack_id: f"models file {error}"}) from None

    def _check_files(self, pack_id: str, models: pa.Table, layout: Layout, deep: bool) -> None:
        model_ids = models["model_id"].to_pylist()
        ok = np.asarray(models["status"].to_pylist()) == "ok"
        if deep:
            self._predictions(pack_id, model_ids, ok, layout)
        else:
            try:
                path = self.pack_file("predictions", pack_id)
                _, schema, rows = self._read_parquet(path, footer=True)
                check_schema(schema, predictions_schema(layout.n_classes))
            except Damaged as error:
                raise Damaged(f"predictions file {error}") from None
            wanted = expected_rows(len(model_ids), layout)
            if wanted is not None and rows != wanted:
                raise Damaged(f"predictions file has {rows} rows, not {wanted}")
        if layout.weights:
            self._weights(pack_id, model_ids, deep)
        if has_history(models):
            self._history(pack_id, models, footer=not deep)

    def _history(self, pack_id: str, models: pa.Table, footer: bool = False) -> pa.Table | None:
        """A pack's history file checked against its models (only its footer: schema and row
        count, when ``footer``); None when only the footer was read."""
        model_ids = models["model_id"].to_pylist()
        epochs = pc.unique(models["hp_epochs"]).to_pylist()
        epochs = epochs[0] if len(epochs) == 1 and epochs[0] is not None else None
        try:
            path = self.pack_file("history", pack_id)
            table, schema, rows = self._read_parquet(path, footer=footer)
            if footer:
                check_schema(schema, HISTORY_SCHEMA)
                if epochs is not None and rows != len(model_ids) * epochs:
                    raise Damaged(f"{rows} rows, not {len(model_ids)} models × {epochs} epochs")
                return None
            check_history(table, model_ids, epochs)
            return table
        except Damaged as error:
            raise Damaged(f"history file {error}") from None

    def read_history(self, pack_id: str, models: pa.Table) -> pa.Table | None:
        """A pack's history (checked), or None for a pack written before histories."""
        if not has_history(models):
            return None
        return self._history(pack_id, models)

    def _predictions(
        self, pack_id: str, model_ids, ok: np.ndarray, layout: Layout, columns=None
    ) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
        """A predictions file (all or ``columns``) checked against its models and the layout."""
        try:
            path = self.pack_file("predictions", pack_id)
            table, schema, _ = self._read_parquet(path, columns, dictionary=_DICTIONARY)
            check_schema(schema, predictions_schema(layout.n_classes))
            return table, check_predictions(table, model_ids, ok, layout)
        except Damaged as error:
            raise Damaged(f"predictions file {error}") from None

    def read_split(
        self, pack_id: str, models: pa.Table, split: str, layout: Layout
    ) -> tuple[list[str], np.ndarray] | None:
        """(model ids, float32 (models, examples, classes)) of one pack's ``split``, checked, or
        None when the file holds no such split; `Damaged` when it fails a check."""
        model_ids = models["model_id"].to_pylist()
        ok = np.asarray(models["status"].to_pylist()) == "ok"
        probabilities = [f"prob_{k}" for k in range(layout.n_classes)]
        columns = ["model_id", "split", "example_id", *probabilities]
        table, ranges = self._predictions(pack_id, model_ids, ok, layout, columns)
        if split not in ranges:
            return None
        start, end = ranges[split]
        n_models, n_examples = len(model_ids), len(layout.split_ids[split])
        block = np.empty((n_models, n_examples, layout.n_classes), np.float32)
        for k, name in enumerate(probabilities):
            values = table[name].slice(start, end - start).to_numpy()
            block[:, :, k] = values.reshape(n_models, n_examples)
        return model_ids, block

    def _weights(self, pack_id: str, model_ids, deep: bool) -> tuple[dict, dict] | None:
        """Check a weights file; when ``deep``, return its tensors and metadata."""
        path = self.pack_file("weights", pack_id)
        try:
            with self.filesystem.open_input_file(path) as stream:
                size = stream.size()
                if deep:
                    data = stream.read()
                    header, offset = safetensors_header(data)
                else:
                    header, offset = _safetensors_header(stream)
            check_weights_header(header, size - offset, model_ids)
            if not deep:
                return None
            from safetensors import SafetensorError
            from safetensors.torch import load

            try:
                tensors = load(data)
            except SafetensorError as error:
                raise Damaged(f"unreadable ({error})") from None
            metadata = header.get("__metadata__") or {}
            if DIGEST in metadata and metadata[DIGEST] != weights_digest(tensors):
                raise Damaged("its bytes changed since they were written (digest differs)")
            return tensors, metadata
        except FileNotFoundError:
            raise Damaged("weights file is missing") from None
        except OSError as error:
            raise Damaged(f"weights file unreadable ({_first_line(error)})") from None
        except Damaged as error:
            raise Damaged(f"weights file {error}") from None

    def read_weights(
        self, pack_id: str
    ) -> tuple[list[str], dict[str, torch.Tensor], dict[str, str]]:
        """A pack's saved weights, checked: model ids, its stacked tensors by name (parameters
        and buffers, a leading model axis) and the metadata (the family that rebuilds them, as
        JSON). safetensors only: nothing is unpickled."""
        path = self.pack_file("weights", pack_id)
        if not self._exists(path):
            raise UserError(
                f"{path}: no saved weights for pack {pack_id}; run the job with "
                "output.weights: true (if it did, run it again: the pack is trained again)"
            )
        model_ids = self.read_models(pack_id)["model_id"].to_pylist()
        try:
            tensors, metadata = self._weights(pack_id, model_ids, deep=True)
        except Damaged as error:
            raise self.damage_error({pack_id: str(error)}) from None
        return model_ids, tensors, metadata

    def _read_parquet(
        self, path: str, columns=None, footer: bool = False, dictionary: tuple[str, ...] = ()
    ) -> tuple[pa.Table | None, pa.Schema, int]:
        """(table, schema, rows) of a Parquet file read with its page checksums verified, or only
        its footer (table None); ``dictionary`` columns are read dictionary-encoded."""
        try:
            with self.filesystem.open_input_file(path) as stream:
                parquet = pq.ParquetFile(
                    stream, page_checksum_verification=True, read_dictionary=dictionary
                )
                table = None if footer else parquet.read(columns=columns)
                return table, parquet.schema_arrow, parquet.metadata.num_rows
        except FileNotFoundError:
            raise Damaged("is missing") from None
        except (OSError, pa.ArrowException) as error:
            raise Damaged(f"is unreadable ({_first_line(error)})") from None

    def _exists(self, path: str) -> bool:
        return self.filesystem.get_file_info(path).type == pafs.FileType.File

    def recorded_models(self) -> pd.DataFrame:
        """``model_id``, ``pack_id``, ``status``, ``error``, ``trial`` of every model with a
        record in an intact models file."""
        columns = ["model_id", "pack_id", "status", "error", "trial"]
        return self.scan().models().select(columns).to_pandas()

    def recorded_metrics(self, model_ids) -> pd.DataFrame:
        """``model_id``, ``status``, ``val_acc`` of the given models that have a record."""
        table = self.scan().models().select(["model_id", "status", "val_acc"])
        wanted = pa.array(list(model_ids), pa.string())
        return table.filter(pc.is_in(table["model_id"], value_set=wanted)).to_pandas()

    def progress(self, models: pd.DataFrame) -> Progress:
        """Counts for ``status`` and ``analyze`` from the recorded ``models`` (``trial`` and
        ``status`` columns) and the job's size."""
        searched = models["trial"].notna().to_numpy()
        counts = models["status"].value_counts()
        ok, diverged, failed = (int(counts.get(s, 0)) for s in ("ok", "diverged", "failed"))
        trials = int(models.loc[searched, "trial"].nunique())
        if searched.any() and searched.all():
            return Progress(None, None, ok, diverged, failed, trials)
        total = count_models(self.job())
        pending = max(0, total - int((~searched).sum()))
        return Progress(total, pending, ok, diverged, failed, trials)

    def damage_error(self, damaged: Mapping[str, str]) -> UserError:
        """One line for damaged packs, with the fix."""
        first = next(iter(damaged))
        more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
        return UserError(
            f"{self.location}: {len(damaged)} damaged pack{'s' * (len(damaged) > 1)} (pack "
            f"{first}: {damaged[first]}{more}); run the same `rashomon run` (or `tune`) "
            "again: it trains exactly these packs again (`rashomon status` lists them)"
        )


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    """A table as the Parquet bytes every file here is made of (zstd, one row group, page
    checksums so that flipped bytes are caught on read)."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table, sink, compression="zstd", row_group_size=1 << 20, write_page_checksum=True
    )
    return sink.getvalue()


def _marked_table(table: pa.Table, pack_id: str, file: str) -> pa.Table:
    return _with_metadata(table, marker(pack_id, file))


def _with_metadata(table: pa.Table, extra: Mapping[str, str]) -> pa.Table:
    """``table`` with ``extra`` added to its schema metadata (the rest kept)."""
    metadata = {
        (k.decode() if isinstance(k, bytes) else k): v
        for k, v in (table.schema.metadata or {}).items()
    }
    return table.replace_schema_metadata(metadata | dict(extra))


def _pack_id(folder: str, name: str) -> str | None:
    """The pack id a file name of ``folder`` carries, if it is one of our names."""
    suffix = PACK_FILES[folder]
    stem = name[: -len(suffix)] if name.endswith(suffix) else ""
    return stem if PACK_ID.fullmatch(stem) else None


def _safetensors_header(stream) -> tuple[dict, int]:
    """A safetensors file's header, read without its tensors."""
    length = int.from_bytes(stream.read_at(8, 0), "little")
    if 8 + length > stream.size():
        raise Damaged("not a safetensors file (header longer than the file)")
    return safetensors_header(bytes(stream.read_at(8 + length, 0)))


def _our_temporary(name: str) -> bool:
    """A temporary of `put` for a file of ours (job.yaml, examples.parquet, a pack file)."""
    target = temporary_target(name)
    return target is not None and (
        target in _ROOT_FILES or any(_pack_id(folder, target) for folder in PACK_FILES)
    )


def _reject_repeated_models(scan: Scan) -> None:
    """A model recorded by two packs: both are suspect (a rerun trains it once again)."""
    if len(scan.packs) < 2:
        return
    owners = np.repeat(list(scan.packs), [t.num_rows for t in scan.packs.values()])
    ids = pd.Series(pa.concat_tables(scan.packs.values())["model_id"].to_numpy())
    for pack_id in sorted(set(owners[ids.duplicated(keep=False).to_numpy()])):
        scan.damaged[pack_id] = "models file records a model that another pack records too"
        scan.suspect[pack_id] = scan.packs.pop(pack_id)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__

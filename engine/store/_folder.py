"""The results folder of SPEC §5: layout, identity of the job it holds, pack files.

A folder may be a local or shared path, or any ``pyarrow.fs`` URL (``s3://``, ``gs://``): the
trainer actors write their pack files there directly. Every file appears whole or not at all
(`engine._location.put`). A pack's files are named by its pack id and rewritten whole, which makes
a retried or resumed pack idempotent. The ``models`` file is written last and is the pack's commit
marker: predictions or weights without it belong to a writer that died, are never read, and are
deleted when the next run starts or ends (`remove_uncommitted`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
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
)
from rashomon.jobs import Job, UserError, load_job_text

if TYPE_CHECKING:  # torch is loaded only where weights are read or written
    import torch

HEADER = re.compile(r"^# (job_hash|dataset_fingerprint): ([0-9a-f]+)$", re.M)
SPLIT_NAMES = ("train", "val", "test")
PACK_FILES = {"models": ".parquet", "predictions": ".parquet", "weights": ".safetensors"}


class ResultsDir:
    def __init__(self, location: str | os.PathLike) -> None:
        self.location = display_location(location)
        self.filesystem, self.root = resolve_location(location)
        self.is_local = isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def pack_file(self, folder: str, pack_id: str) -> str:
        return self.path(folder, pack_id + PACK_FILES[folder])

    def identity(self) -> dict[str, str] | None:
        """The job hash and dataset fingerprint recorded in ``job.yaml``, if there is one."""
        text = self._job_text()
        return None if text is None else dict(HEADER.findall(text))

    def job(self) -> Job:
        """The job these results were trained from (as recorded in ``job.yaml``)."""
        text = self._job_text()
        if text is None:
            raise UserError(
                f"{self.location}: not a rashomon results folder (no job.yaml); give the --out "
                "folder of a `rashomon run`"
            )
        base_dir = Path(self.root) if self.is_local else Path.cwd()
        return load_job_text(text, f"{self.location}/job.yaml", base_dir=base_dir)

    def _job_text(self) -> str | None:
        try:
            with self.filesystem.open_input_stream(self.path("job.yaml")) as stream:
                return stream.read().decode()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise UserError(
                f"{self.location}: cannot read this results folder ({error}); check the URL, "
                "that the bucket exists and the credentials in the environment (AWS_*, GOOGLE_*)"
            ) from None

    def claim(self, job, dataset) -> None:
        """Make this folder hold ``job``'s results, or refuse if it holds another job's."""
        wanted = {"job_hash": job.job_hash, "dataset_fingerprint": dataset.fingerprint}
        found = self.identity()
        if found is not None and found != wanted:
            what = "job" if found.get("job_hash") != job.job_hash else "dataset file"
            raise UserError(
                f"{self.location}: holds the results of a different {what} "
                f"(job hash {found.get('job_hash', '?')[:12]}, this job {job.job_hash[:12]}); "
                "choose another --out, or delete the folder to start over"
            )
        try:
            if self.is_local:
                for folder in PACK_FILES:
                    self.filesystem.create_dir(self.path(folder))
            self.remove_uncommitted()
            if found is None:
                self._write_examples(dataset)
                header = "".join(f"# {k}: {v}\n" for k, v in wanted.items())
                put(self.filesystem, self.path("job.yaml"), (header + job.to_yaml()).encode())
        except OSError as error:
            raise UserError(
                f"{self.location}: cannot write the results here ({error}); choose a writable "
                "--out, or check the bucket and the credentials in the environment"
            ) from None

    def _write_examples(self, dataset) -> None:
        table = pa.table(
            {
                "example_id": dataset.example_ids,
                "split": np.asarray(SPLIT_NAMES, dtype=object)[dataset.split],
                "label": dataset.labels,
                **{name: dataset.groups[name].to_numpy() for name in dataset.groups.columns},
            }
        ).replace_schema_metadata({"classes": json.dumps(list(dataset.classes))})
        put(self.filesystem, self.path("examples.parquet"), parquet_bytes(table))

    def remove_uncommitted(self) -> None:
        """Delete what writers killed mid-pack left: temporary files, and predictions or weights
        of packs without a models file. Call only when no writer of this folder is at work (a
        killed run's actors may die a little after it: a run calls this at its start and end)."""
        committed = set(self.pack_ids())
        for folder, suffix in PACK_FILES.items():
            for info in list_files(self.filesystem, self.path(folder)):
                name = info.base_name
                uncommitted = name.endswith(suffix) and name[: -len(suffix)] not in committed
                if name.endswith(".tmp") or (folder != "models" and uncommitted):
                    delete(self.filesystem, info.path)

    def pack_ids(self) -> list[str]:
        """The committed packs: those with a models file."""
        suffix = PACK_FILES["models"]
        return sorted(
            info.base_name[: -len(suffix)]
            for info in list_files(self.filesystem, self.path("models"))
            if info.base_name.endswith(suffix) and not info.base_name.startswith(".")
        )

    def has_weights(self) -> bool:
        return any(
            info.base_name.endswith(PACK_FILES["weights"])
            for info in list_files(self.filesystem, self.path("weights"))
        )

    def _models_dataset(self) -> pq.ParquetDataset | None:
        files = [self.pack_file("models", pack_id) for pack_id in self.pack_ids()]
        return pq.ParquetDataset(files, filesystem=self.filesystem) if files else None

    def recorded_models(self) -> pd.DataFrame:
        """``model_id``, ``pack_id``, ``status``, ``error`` of every model with a record."""
        columns = ["model_id", "pack_id", "status", "error"]
        dataset = self._models_dataset()
        if dataset is None:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return dataset.read(columns=columns).to_pandas()

    def recorded_metrics(self, model_ids) -> pd.DataFrame:
        """``model_id``, ``status``, ``val_acc`` of the given models that have a record."""
        table = self._models_dataset().read(columns=["model_id", "status", "val_acc"])
        wanted = pa.array(list(model_ids), pa.string())
        return table.filter(pc.is_in(table["model_id"], value_set=wanted)).to_pandas()

    def read_models(self, pack_id: str) -> pa.Table:
        return pq.read_table(self.pack_file("models", pack_id), filesystem=self.filesystem)

    def write_pack(
        self,
        pack_id: str,
        models: pa.Table,
        predictions: pa.Table | None = None,
        weights: Mapping | None = None,
        weights_metadata: Mapping[str, str] | None = None,
    ) -> None:
        if weights is not None:
            from safetensors.torch import save

            tensors = {k: v.contiguous() for k, v in weights.items()}
            data = save(tensors, dict(weights_metadata or {}))
            put(self.filesystem, self.pack_file("weights", pack_id), data)
        if predictions is not None:
            put(self.filesystem, self.pack_file("predictions", pack_id), parquet_bytes(predictions))
        self.rewrite_models(pack_id, models)

    def rewrite_models(self, pack_id: str, models: pa.Table) -> None:
        """Write (or replace) a pack's models file: the pack's commit."""
        put(self.filesystem, self.pack_file("models", pack_id), parquet_bytes(models))

    def read_weights(
        self, pack_id: str
    ) -> tuple[list[str], dict[str, torch.Tensor], dict[str, str]]:
        """A pack's saved weights: model ids, its stacked tensors by name (parameters and
        buffers, a leading model axis) and the metadata (the family that rebuilds them, as
        JSON). safetensors only: nothing is unpickled."""
        from safetensors.torch import load

        path = self.pack_file("weights", pack_id)
        try:
            with self.filesystem.open_input_stream(path) as stream:
                data = stream.read()
        except FileNotFoundError:
            raise UserError(
                f"{path}: no saved weights for pack {pack_id}; run the job with "
                "output.weights: true"
            ) from None
        metadata = _safetensors_metadata(data)
        return json.loads(metadata["model_ids"]), load(data), metadata

    def discard_packs(self, pack_ids) -> None:
        """Forget packs whose models are about to be trained again under other pack ids."""
        for pack_id in pack_ids:
            for folder in ("models", "predictions", "weights"):
                delete(self.filesystem, self.pack_file(folder, pack_id))


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    """A table as the Parquet bytes every pack file is made of (zstd, one row group)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=1 << 20)
    return sink.getvalue()


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file: a little-endian u64 length, then JSON."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]).get("__metadata__") or {}

"""The results folder of SPEC §5: layout, identity of the job it holds, atomic pack files.

Every file becomes visible under its final name only once it is complete (written under a hidden
temporary name, then renamed), so a reader — or a rerun after a crash — never sees half a file;
Parquet readers skip the hidden names. A pack's files are named by its pack id and rewritten
whole, which makes a retried or resumed pack idempotent. The ``models`` file is written last: it
is what marks a pack as finished.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from jobs import UserError

HEADER = re.compile(r"^# (job_hash|dataset_fingerprint): ([0-9a-f]+)$", re.M)
SPLIT_NAMES = ("train", "val", "test")


class ResultsDir:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.job_file = self.root / "job.yaml"
        self.examples_file = self.root / "examples.parquet"
        self.models_dir = self.root / "models"
        self.predictions_dir = self.root / "predictions"
        self.weights_dir = self.root / "weights"

    def identity(self) -> dict[str, str] | None:
        """The job hash and dataset fingerprint recorded in ``job.yaml``, if there is one."""
        if not self.job_file.exists():
            return None
        return dict(HEADER.findall(self.job_file.read_text()))

    def claim(self, job, dataset) -> None:
        """Make this folder hold ``job``'s results, or refuse if it holds another job's."""
        wanted = {"job_hash": job.job_hash, "dataset_fingerprint": dataset.fingerprint}
        found = self.identity()
        if found is not None and found != wanted:
            what = "job" if found.get("job_hash") != job.job_hash else "dataset file"
            raise UserError(
                f"{self.root}: holds the results of a different {what} "
                f"(job hash {found.get('job_hash', '?')[:12]}, this job {job.job_hash[:12]}); "
                "choose another --out, or delete the folder to start over"
            )
        for folder in (self.models_dir, self.predictions_dir, self.weights_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.remove_temporaries()
        if found is None:
            self._write_examples(dataset)
            header = "".join(f"# {k}: {v}\n" for k, v in wanted.items())
            self._atomic(self.job_file, lambda p: p.write_text(header + job.to_yaml()))

    def _write_examples(self, dataset) -> None:
        table = pa.table(
            {
                "example_id": dataset.example_ids,
                "split": np.asarray(SPLIT_NAMES, dtype=object)[dataset.split],
                "label": dataset.labels,
                **{name: dataset.groups[name].to_numpy() for name in dataset.groups.columns},
            }
        ).replace_schema_metadata({"classes": json.dumps(list(dataset.classes))})
        self._atomic(self.examples_file, lambda p: pq.write_table(table, p))

    def remove_temporaries(self) -> None:
        """Delete hidden temporary files left by writers killed mid-file (a killed run's actors
        can die a little after it); call only when no writer of this folder is at work."""
        for folder in (self.models_dir, self.predictions_dir, self.weights_dir):
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def recorded_models(self) -> pd.DataFrame:
        """``model_id``, ``pack_id``, ``status``, ``error`` of every model with a record."""
        columns = ["model_id", "pack_id", "status", "error"]
        files = sorted(self.models_dir.glob("*.parquet")) if self.models_dir.exists() else []
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return pq.ParquetDataset(files).read(columns=columns).to_pandas()

    def recorded_metrics(self, model_ids) -> pd.DataFrame:
        """``model_id``, ``status``, ``val_acc`` of the given models that have a record."""
        files = sorted(self.models_dir.glob("*.parquet"))
        wanted = pa.array(list(model_ids), pa.string())
        table = pq.ParquetDataset(files).read(columns=["model_id", "status", "val_acc"])
        return table.filter(pc.is_in(table["model_id"], value_set=wanted)).to_pandas()

    def write_pack(
        self,
        pack_id: str,
        models: pa.Table,
        predictions: pa.Table | None = None,
        weights: Mapping | None = None,
        weights_metadata: Mapping[str, str] | None = None,
    ) -> None:
        if weights is not None:
            from safetensors.torch import save_file

            target = self.weights_dir / f"{pack_id}.safetensors"
            self._atomic(
                target,
                lambda p: save_file(
                    {k: v.contiguous() for k, v in weights.items()},
                    str(p),
                    dict(weights_metadata or {}),
                ),
            )
        if predictions is not None:
            target = self.predictions_dir / f"{pack_id}.parquet"
            self._atomic(target, lambda p: _write_parquet(predictions, p))
        self._atomic(self.models_dir / f"{pack_id}.parquet", lambda p: _write_parquet(models, p))

    def rewrite_models(self, pack_id: str, models: pa.Table) -> None:
        """Replace a finished pack's models file (atomically, like every write)."""
        self._atomic(self.models_dir / f"{pack_id}.parquet", lambda p: _write_parquet(models, p))

    def read_weights(self, pack_id: str) -> tuple[list[str], list[torch.Tensor], dict[str, str]]:
        """A pack's saved weights: model ids, stacked ``[W0, b0, W1, b1, …]`` and the metadata
        (``hidden``, ``activation`` as JSON/text). safetensors only: nothing is unpickled."""
        from safetensors import safe_open

        path = self.weights_dir / f"{pack_id}.safetensors"
        if not path.exists():
            raise UserError(
                f"{path}: no saved weights for pack {pack_id}; run the job with "
                "output.weights: true"
            )
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            n_layers = len(handle.keys()) // 2
            params = [
                handle.get_tensor(f"layers.{i}.{kind}")
                for i in range(n_layers)
                for kind in ("weight", "bias")
            ]
        return json.loads(metadata["model_ids"]), params, metadata

    def discard_packs(self, pack_ids) -> None:
        """Forget packs whose models are about to be trained again under other pack ids."""
        for pack_id in pack_ids:
            for path in (
                self.models_dir / f"{pack_id}.parquet",
                self.predictions_dir / f"{pack_id}.parquet",
                self.weights_dir / f"{pack_id}.safetensors",
            ):
                path.unlink(missing_ok=True)

    @staticmethod
    def _atomic(target: Path, write: Callable[[Path], object]) -> None:
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            write(temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd", row_group_size=1 << 20)

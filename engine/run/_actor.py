"""The trainer actor: a long-lived Ray worker that holds the dataset and trains packs.

The dataset arrives once, through the object store, when the actor starts; afterwards each call
carries only a pack description (a few hundred bytes per model). The actor writes the pack's files
itself, straight into the results folder, so predictions never travel back through the driver.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from rashomon.engine.model import (
    DTYPES,
    FlatnessSettings,
    TrainingData,
    build_family,
    device_slice,
    keep_freed_memory,
    train_pack,
    weights_metadata,
)
from rashomon.engine.run._plan import Pack
from rashomon.engine.store import ResultsDir, history_table, models_table, predictions_table
from rashomon.jobs import SPLITS


class PackTrainer:
    def __init__(
        self,
        dataset: dict,
        out_dir: str,
        prediction_splits: tuple[str, ...],
        save_weights: bool,
        threads: int,
        flatness: FlatnessSettings | None = None,
    ) -> None:
        torch.set_num_threads(max(1, threads))
        keep_freed_memory()
        self.device = torch.device("cuda" if _assigned_gpu() else "cpu")
        self.dataset = dataset
        self.example_ids = {
            name: dataset["example_ids"][dataset["split"] == code]
            for code, name in enumerate(SPLITS)
        }
        self.results = ResultsDir(out_dir)
        self.prediction_splits = prediction_splits
        self.save_weights = save_weights
        self.flatness = flatness
        self._data: dict[str, TrainingData] = {}

    def training_data(self, dtype: str) -> TrainingData:
        if dtype not in self._data:
            d = self.dataset
            self._data[dtype] = TrainingData.from_arrays(
                d["features"],
                d["labels"],
                d["split"],
                d["n_classes"],
                DTYPES[dtype],
                self.device,
                d["shape"],
            )
        return self._data[dtype]

    def train(self, pack: Pack) -> dict:
        """Train ``pack``, write its files and return its counts (the driver's progress)."""
        data = self.training_data(pack.settings.dtype)
        result = train_pack(
            pack.settings,
            [m.spec for m in pack.models],
            data,
            self.prediction_splits,
            self.flatness,
            max_models=device_slice(pack.settings, data, self.flatness),
        )
        model_ids = [m.model_id for m in pack.models]
        models = models_table(
            pack.columns()
            | result.metrics
            | {"train_seconds": np.full(len(pack), result.seconds / len(pack))}
            | {"status": result.status}
        )
        predictions = predictions_table(
            model_ids, result.probabilities, self.example_ids, data.n_classes
        )
        family = build_family(pack.settings, data.example_shape, data.n_classes)
        metadata = {"model_ids": json.dumps(model_ids)} | weights_metadata(family)
        self.results.write_pack(
            pack.pack_id,
            models,
            predictions,
            result.parameters if self.save_weights else None,
            metadata,
            history_table(model_ids, result.history),
        )
        return {
            "pack_id": pack.pack_id,
            "models": len(pack),
            "diverged": result.status.count("diverged"),
            "seconds": result.seconds,
        }


def _assigned_gpu() -> bool:
    import ray

    return bool(ray.get_gpu_ids()) and torch.cuda.is_available()


def dataset_payload(dataset) -> dict:
    """What the driver puts in the object store once for every actor."""
    return {
        "features": np.ascontiguousarray(dataset.features),
        "labels": dataset.labels,
        "split": dataset.split,
        "example_ids": dataset.example_ids,
        "n_classes": dataset.n_classes,
        "shape": dataset.shape,
    }

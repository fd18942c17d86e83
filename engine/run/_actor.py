"""The trainer actor: a long-lived Ray worker that holds the dataset and trains packs.

The dataset arrives once, through the object store, when the actor starts; afterwards each call
carries only a pack description (a few hundred bytes per model). The actor writes the pack's files
itself, straight into the results folder, so predictions never travel back through the driver.
The same code trains the estimate's timed packs (`calibrate`) and measures the flatness
statistics of trained packs again (`remeasure`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace

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
from rashomon.engine.run._measure import remeasure_pack
from rashomon.engine.run._plan import Pack
from rashomon.engine.store import (
    PACK_FILES,
    ResultsDir,
    history_table,
    models_table,
    predictions_table,
)
from rashomon.jobs import SPLITS


class PackTrainer:
    def __init__(
        self,
        dataset: dict,
        out_dir: str | None,
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
        self.results = None if out_dir is None else ResultsDir(out_dir)
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
        """Train ``pack``, write its files and return its counts (the driver's progress) and
        the seconds of each phase."""
        data = self.training_data(pack.settings.dtype)
        return self._train(pack, data, self.flatness, self.results)

    def calibrate(
        self, pack: Pack, rows: Mapping[str, int], flatness: FlatnessSettings | None
    ) -> dict:
        """`train` for the estimate: ``pack`` on the first ``rows`` of each split, with these
        ``flatness`` settings, written to a scratch folder removed after. A warm-up of one
        step on one minibatch first pays the one-off costs (imports, first allocations), which
        a run pays once per trainer."""
        data = self.training_data(pack.settings.dtype)
        warm_up = {name: 1 for name in SPLITS} | {"train": pack.settings.batch_size}
        least = flatness and replace(
            flatness, curvature_examples=1, trace_probes=2, adaptive_probes=2, eig_iterations=1,
            avg_pairs=1,
        )  # fmt: skip
        runs = [
            (replace(pack, settings=replace(pack.settings, epochs=1)), warm_up, least),
            (pack, rows, flatness),
        ]
        with tempfile.TemporaryDirectory(prefix="rashomon-estimate-") as scratch:
            results = ResultsDir(scratch)
            for folder in PACK_FILES:
                os.makedirs(results.path(folder))
            for timed, cut, settings in runs:
                outcome = self._train(timed, _first_rows(data, cut), settings, results)
        return outcome

    def remeasure(self, pack_id: str, recorded: str) -> dict:
        """Measure a trained pack's flatness statistics again (``rashomon flatness``), recording
        the settings ``recorded`` with them."""
        return remeasure_pack(self.results, pack_id, self.training_data, self.flatness, recorded)

    def _train(self, pack: Pack, data: TrainingData, flatness, results: ResultsDir) -> dict:
        result = train_pack(
            pack.settings,
            [m.spec for m in pack.models],
            data,
            self.prediction_splits,
            flatness,
            max_models=device_slice(pack.settings, data, flatness),
        )
        start = time.perf_counter()
        model_ids = [m.model_id for m in pack.models]
        models = models_table(
            pack.columns()
            | result.metrics
            | {"train_seconds": np.full(len(pack), result.seconds / len(pack))}
            | {"status": result.status}
        )
        example_ids = {  # a calibration's splits are their first rows
            name: self.example_ids[name][: len(rows)] for name, rows in data.split_indices.items()
        }
        predictions = predictions_table(
            model_ids, result.probabilities, example_ids, data.n_classes
        )
        family = build_family(pack.settings, data.example_shape, data.n_classes)
        metadata = {"model_ids": json.dumps(model_ids)} | weights_metadata(family)
        results.write_pack(
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
            "timings": result.timings | {"output": time.perf_counter() - start},
        }


def _first_rows(data: TrainingData, rows: Mapping[str, int]) -> TrainingData:
    """``data`` with each split cut to its first ``rows``. The feature matrix stays whole, so
    minibatch gathers reach as far into memory as in the real run."""
    kept = {name: indices[: rows[name]] for name, indices in data.split_indices.items()}
    return replace(data, split_indices=kept)


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

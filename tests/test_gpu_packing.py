"""GPU workers (issue #6): fractional `gpus_per_worker` becomes Ray's `num_gpus`, and a pack
larger than a device's free memory trains in slices with the same results.

No GPU here: scheduling is tested with logical GPU resources (`ray.init(num_gpus=...)`), and the
slicing that a GPU's memory triggers is run on the CPU, where it must change nothing.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from _jobs import write_job

from rashomon.engine.cli import main
from rashomon.engine.model import (
    DEVICE_MEMORY_FRACTION,
    FlatnessSettings,
    ModelSpec,
    PackSettings,
    TrainingData,
    model_memory_bytes,
    models_fitting,
    train_pack,
)
from rashomon.engine.run import run_job
from rashomon.jobs import load_job, prepare_dataset

SETTINGS = PackSettings(
    family="mlp",
    hidden=(16,),
    activation="relu",
    epochs=3,
    batch_size=16,
    optimizer="adam",
    nesterov=False,
    schedule="cosine",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float64",
)
FLATNESS = FlatnessSettings(
    curvature_examples=64,
    trace_probes=8,
    adaptive_probes=4,
    eig_iterations=5,
    eig_tolerance=1e-3,
    sam_rho=0.05,
    asam_rho=0.5,
    asam_eta=0.01,
    avg_sigma=0.05,
    avg_pairs=2,
    seed=0,
)


def wine_data() -> TrainingData:
    dataset = prepare_dataset("wine", None, (), (), val=0.25, test=0.25, seed=1)
    return TrainingData.from_arrays(
        dataset.features, dataset.labels, dataset.split, dataset.n_classes, torch.float64
    )


@pytest.mark.parametrize("max_elements", [FLATNESS.max_elements, 64 * 16 * 5])
def test_a_pack_trained_in_slices_equals_the_whole_pack(max_elements):
    """Training and predictions are the same arithmetic per model whatever the pack's size:
    bitwise equal. Losses and flatness statistics reduce over tensors whose shapes change with
    the slice (and with how probes are chunked): equal to float64 rounding."""
    models = [
        ModelSpec(init, order, data, lr, 0.9, 1e-4, dropout)
        for init, order, data, lr, dropout in zip(
            range(7), [0, 1] * 4, [0, 0, 1, 2] * 2, [1e-2, 3e-3] * 4, [0.0, 0.2] * 4, strict=False
        )
    ]
    data = wine_data()
    flatness = dataclasses.replace(FLATNESS, max_elements=max_elements)
    whole = train_pack(SETTINGS, models, data, flatness=flatness)
    sliced = train_pack(SETTINGS, models, data, flatness=flatness, max_models=3)
    assert sliced.status == whole.status
    for name, values in whole.parameters.items():
        assert torch.equal(sliced.parameters[name], values), name
    for split, values in whole.probabilities.items():
        np.testing.assert_array_equal(sliced.probabilities[split], values)
    for key, values in whole.metrics.items():
        if key.endswith("_acc"):  # counts of correct predictions over n
            np.testing.assert_array_equal(sliced.metrics[key], values, err_msg=key)
        else:
            np.testing.assert_allclose(sliced.metrics[key], values, rtol=1e-10, err_msg=key)


def test_models_fitting_keeps_the_headroom_and_at_least_one_model():
    per_model = 1000
    assert models_fitting(100_000, per_model) == int(DEVICE_MEMORY_FRACTION * 100)
    assert models_fitting(10, per_model) == 1


def test_memory_estimate_grows_with_what_a_model_holds():
    base = model_memory_bytes(SETTINGS, 13, 3, 1000)
    single = dataclasses.replace(SETTINGS, dtype="float32")
    wider = dataclasses.replace(SETTINGS, hidden=(256, 256))
    assert model_memory_bytes(single, 13, 3, 1000) < base
    assert model_memory_bytes(wider, 13, 3, 1000) > 10 * base
    assert model_memory_bytes(SETTINGS, 13, 3, 1000, FLATNESS) > base
    assert model_memory_bytes(SETTINGS, 13, 3, 100_000) - base == 8 * 99_000  # training rows


JOB = """
name: gpus
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [8], activation: relu}
train: {epochs: 3, batch_size: 16, optimizer: sgd, lr: 0.05}
population:
  seeds: {init: 4, order: 2}
resources: {cpus_per_worker: 0.5, gpus_per_worker: GPUS, models_per_pack: 2}
output: {predictions: [test]}
flatness: {enabled: false}
"""


@pytest.fixture(scope="module")
def ray_with_a_logical_gpu():
    import ray

    ray.shutdown()  # the shared Ray of other modules, if it runs: this one has a GPU
    ray.init(
        address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR"
    )
    yield ray
    ray.shutdown()


def test_fractional_gpus_are_what_each_trainer_actor_holds(ray_with_a_logical_gpu, tmp_path):
    """Two actors of half a GPU each hold the whole logical GPU while the run trains."""
    ray = ray_with_a_logical_gpu
    seen: list[float] = []
    finished = threading.Event()

    def watch() -> None:
        while not finished.is_set():
            seen.append(ray.available_resources().get("GPU", 0.0))
            finished.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = run_job(
            load_job(write_job(tmp_path, JOB.replace("GPUS", "0.5"))), tmp_path / "out", None, False
        )
    finally:
        finished.set()
        watcher.join()
    assert summary.trained == 8 and summary.failed == 0
    assert min(seen) == 0.0 and max(seen) == 1.0


def test_more_gpus_per_worker_than_the_cluster_has_is_one_clear_error(
    ray_with_a_logical_gpu, tmp_path, capsys
):
    job = write_job(tmp_path, JOB.replace("GPUS", "2"))
    assert main(["run", str(job), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "gpus_per_worker" in error and "1.0 GPUs" in error

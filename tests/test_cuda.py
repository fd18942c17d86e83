"""A real CUDA device (issue 15, item 5): packs trained on the GPU agree with the CPU, slices of
a GPU pack with the whole pack, and `rashomon run` trains on the GPU it is given. Skipped where
torch sees no CUDA device (run by benchmarks/gpu_check.sh on a GPU machine).

A GPU's kernels sum in their own order, so GPU against CPU is equal to float64 rounding, not
bitwise; so are slices of a GPU pack, as the library may pick another kernel for another batch
count."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from rashomon.engine.cli import main
from rashomon.engine.model import ModelSpec, PackSettings, TrainingData, train_pack
from rashomon.jobs import prepare_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SETTINGS = PackSettings(
    family="mlp",
    hidden=(16, 8),
    activation="tanh",
    epochs=3,
    batch_size=16,
    optimizer="sgd",
    nesterov=True,
    schedule="cosine",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float64",
)
MODELS = [
    ModelSpec(init, order, data, lr, 0.9, wd, dropout)
    for init, order, data, lr, wd, dropout in zip(
        range(6),
        [0, 1] * 3,
        [0, 0, 1] * 2,
        [1e-2, 3e-2] * 3,
        [0.0, 1e-3] * 3,
        [0.0, 0.2] * 3,
        strict=True,
    )
]
EXPLODING = dataclasses.replace(MODELS[0], lr=1e6)


def wine(device: str) -> TrainingData:
    dataset = prepare_dataset("wine", None, (), (), val=0.25, test=0.25, seed=1)
    return TrainingData.from_arrays(
        dataset.features, dataset.labels, dataset.split, dataset.n_classes, torch.float64, device
    )


def assert_same_models(gpu, cpu) -> None:
    """The same statuses, and the same trained models to float64 rounding (a diverged model's
    frozen values amplify rounding without bound: only its status is compared)."""
    assert gpu.status == cpu.status
    ok = [i for i, s in enumerate(cpu.status) if s == "ok"]
    for name, values in cpu.parameters.items():
        np.testing.assert_allclose(gpu.parameters[name][ok].numpy(), values[ok].numpy(),
                                   rtol=0, atol=1e-9, err_msg=name)  # fmt: skip
    for split, values in cpu.probabilities.items():
        np.testing.assert_allclose(gpu.probabilities[split][ok], values[ok], rtol=0, atol=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "sam"])
def test_a_pack_on_the_gpu_matches_the_cpu_and_freezes_the_same_diverged_model(optimizer):
    settings = dataclasses.replace(SETTINGS, optimizer=optimizer)
    models = [*MODELS, EXPLODING]
    if optimizer == "sam":
        models = [dataclasses.replace(m, rho=0.05) for m in models]
    gpu = train_pack(settings, models, wine("cuda"))
    cpu = train_pack(settings, models, wine("cpu"))
    assert gpu.status[-1] == "diverged"
    assert_same_models(gpu, cpu)


def test_a_gpu_pack_in_slices_equals_the_whole_pack():
    data = wine("cuda")
    whole = train_pack(SETTINGS, MODELS, data)
    sliced = train_pack(SETTINGS, MODELS, data, max_models=4)
    assert_same_models(sliced, whole)


JOB = """
name: cuda
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [8], activation: relu}
train: {epochs: 3, batch_size: 16, optimizer: sgd, lr: 0.05, dtype: float64}
population:
  seeds: {init: 4, order: 2}
resources: {cpus_per_worker: 1, gpus_per_worker: 0.5, models_per_pack: 4}
output: {predictions: [test]}
flatness: {enabled: false}
"""


def test_rashomon_run_trains_on_the_gpu_it_is_given(tmp_path):
    """Two actors of half the real GPU train the population; the same job on the CPU (no GPU
    asked for) gives the same predictions to float64 rounding."""
    import ray

    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(JOB))
    cpu_job = tmp_path / "cpu.yaml"
    cpu_job.write_text(textwrap.dedent(JOB).replace("gpus_per_worker: 0.5", "gpus_per_worker: 0"))
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
             logging_level="ERROR")  # fmt: skip
    try:
        assert main(["run", str(job), "--out", str(tmp_path / "gpu"), "--quiet"]) == 0
        assert main(["run", str(cpu_job), "--out", str(tmp_path / "cpu"), "--quiet"]) == 0
    finally:
        ray.shutdown()
    on_gpu, on_cpu = (
        pd.read_parquet(tmp_path / name / "predictions").sort_values(["model_id", "example_id"])
        for name in ("gpu", "cpu")
    )
    assert len(on_gpu) == len(on_cpu) == 8 * (len(on_gpu) // 8) > 0
    probabilities = [c for c in on_cpu.columns if c.startswith("prob_")]
    np.testing.assert_allclose(on_gpu[probabilities].to_numpy(), on_cpu[probabilities].to_numpy(),
                               rtol=0, atol=1e-6)  # fmt: skip

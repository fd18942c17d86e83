"""Training throughput: the batched pack trainer against a plain sequential PyTorch loop.

Reference workload (issue #2): an MLP with one hidden layer of 64, batch 256, SGD with momentum,
on the built-in ``adult`` dataset (29,305 training rows x 107 features after encoding). Both sides
run in this process with the same number of torch threads, and the fp32 matmul peak that model
FLOP utilisation is divided by is measured here too, so every figure is a ratio within one run:

    MFU = 6 x parameters x samples seen / seconds / peak

Usage: python benchmarks/bench_training.py [--models 128] [--epochs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from rashomon.engine.model import Architecture, ModelSpec, PackSettings, TrainingData, train_pack
from rashomon.jobs import prepare_dataset


def matmul_peak(threads: int, size: int = 2048, repeats: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def batched(settings, models, data, pack_size) -> float:
    start = time.perf_counter()
    for first in range(0, len(models), pack_size):
        train_pack(settings, models[first : first + pack_size], data)
    return time.perf_counter() - start


def sequential(settings, models, data) -> float:
    """What a researcher writes by hand: one nn.Module and one torch.optim per model."""
    train_rows = data.split_indices["train"]
    features, labels = data.features, data.labels
    start = time.perf_counter()
    for model in models:
        torch.manual_seed(model.init_seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(features.shape[1], settings.hidden[0]),
            torch.nn.ReLU(),
            torch.nn.Linear(settings.hidden[0], data.n_classes),
        )
        optimizer = torch.optim.SGD(net.parameters(), lr=model.lr, momentum=model.momentum)
        for _ in range(settings.epochs):
            order = train_rows[torch.randperm(len(train_rows))]
            for first in range(0, len(order), settings.batch_size):
                rows = order[first : first + settings.batch_size]
                loss = torch.nn.functional.cross_entropy(net(features[rows]), labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            for split in ("train", "val", "test"):
                net(features[data.split_indices[split]]).softmax(-1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=128)
    parser.add_argument("--sequential-models", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pack-size", type=int, default=54)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    dataset = prepare_dataset("adult", None, (), (), 0.2, 0.2, 0)
    data = TrainingData.from_arrays(
        dataset.features, dataset.labels, dataset.split, dataset.n_classes
    )
    settings = PackSettings(
        "mlp",
        (64,),
        "relu",
        args.epochs,
        256,
        "sgd",
        False,
        "constant",
        (0.9, 0.999),
        1e-8,
        "float32",
    )
    models = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0) for i in range(args.models)]
    arch = Architecture(dataset.n_features, (64,), dataset.n_classes)
    n_train = len(data.split_indices["train"])

    peak = matmul_peak(args.threads)
    batched_seconds = batched(settings, models, data, args.pack_size)
    sequential_seconds = sequential(settings, models[: args.sequential_models], data)
    peak_after = matmul_peak(args.threads)

    def row(name, n_models, seconds):
        flops = 6 * arch.n_parameters * n_models * args.epochs * n_train
        per_minute = n_models / seconds * 60
        mfu = flops / seconds / ((peak + peak_after) / 2)
        return name, per_minute, mfu

    rows = [
        row(
            f"sequential torch loop ({args.sequential_models} models)",
            args.sequential_models,
            sequential_seconds,
        ),
        row(
            f"batched packs of {args.pack_size} ({args.models} models)",
            args.models,
            batched_seconds,
        ),
    ]
    print(
        f"workload: adult {n_train} train rows x {dataset.n_features} features, MLP "
        f"[64] ({arch.n_parameters} parameters), batch 256, {args.epochs} epochs, "
        f"{args.threads} threads"
    )
    print(f"fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s before, {peak_after / 1e9:.0f} after")
    print(f"{'':45s} {'models/min':>10s} {'MFU':>6s} {'speed-up':>9s}")
    for name, per_minute, mfu in rows:
        print(f"{name:45s} {per_minute:10.1f} {mfu:6.1%} {per_minute / rows[0][1]:8.1f}x")


if __name__ == "__main__":
    main()

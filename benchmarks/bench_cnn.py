"""Convolutional packs against a per-model torch.nn loop, and the generic nn.Module path against
the hand-written dense one, all in one run (issue #13).

1. MNIST-1D CNNs (channels [32, 32, 32], kernel 5, pool 2, then the output layer; 4,000 training
   rows of the built-in split, batch 100, SGD with momentum): `train_pack` at several pack sizes
   against a plain loop of the same `ConvNet` models, each with its own `torch.optim.SGD`, same
   threads. Both evaluate every split at the end, as a run does. Models per minute, MFU — FLOPs
   of the convolutions and matmuls (torch's FlopCounterMode on one example) × 3 for forward and
   backward × samples seen, over the fp32 peak of a 2048² `torch.mm` measured in this run (before
   and after) — and the ratio to the loop. Rounds alternate the contenders and each keeps its best
   round, so a burst of load on a shared machine does not decide the comparison.
2. The reference MLP workload of bench_training.py (adult, 107→64→2, batch 256): the hand-written
   dense path against the generic path (the same network as an nn.Module, vmap(functional_call)),
   and the largest difference between their logits and gradients on the same weights (float64).

    python benchmarks/bench_cnn.py [--threads 2] [--packs 8,16,32,64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from rashomon.engine.model import (
    ConvNet,
    ModelSpec,
    PackSettings,
    TrainingData,
    _random,
    build_family,
    train_pack,
)
from rashomon.jobs import ModuleRef, prepare_dataset
from rashomon.jobs._modules import locate_module

CNN = PackSettings(
    family="cnn",
    hidden=(),
    activation="relu",
    epochs=1,
    batch_size=100,
    optimizer="sgd",
    nesterov=False,
    schedule="constant",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float32",
    channels=(32, 32, 32),
    kernel=5,
    stride=1,
    pool=2,
)
MLP_SOURCE = """
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_shape, n_classes, width=64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_shape[0], width), nn.ReLU(), nn.Linear(width, n_classes)
        )

    def forward(self, x):
        return self.layers(x)
"""


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def torch_loop(models: list[ModelSpec], data: TrainingData, shape) -> float:
    """What a researcher writes by hand: one ConvNet and one torch.optim.SGD per model."""
    s = CNN
    train = data.split_indices["train"]
    start = time.perf_counter()
    for model in models:
        torch.manual_seed(_random.stream_seed(_random.INIT, model.init_seed))
        net = ConvNet(shape, data.n_classes, s.channels, s.kernel, s.stride, s.pool, s.hidden,
                      s.activation)  # fmt: skip
        optimizer = torch.optim.SGD(net.parameters(), lr=model.lr, momentum=model.momentum)
        for epoch in range(s.epochs):
            generator = _random.generator(_random.ORDER, model.order_seed, epoch)
            order = train[torch.randperm(len(train), generator=generator)]
            for first in range(0, len(order), s.batch_size):
                rows = order[first : first + s.batch_size]
                inputs = data.features[rows].view(-1, *shape)
                loss = F.cross_entropy(net(inputs), data.labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            for split in ("train", "val", "test"):
                net(data.features[data.split_indices[split]].view(-1, *shape)).softmax(-1)
    return time.perf_counter() - start


def packs(models: list[ModelSpec], data: TrainingData, size: int, settings=CNN) -> float:
    start = time.perf_counter()
    for first in range(0, len(models), size):
        train_pack(settings, models[first : first + size], data, ("val", "test"))
    return time.perf_counter() - start


def conv_flops(shape, n_classes: int) -> float:
    """Forward FLOPs of one example (torch's count of the convolutions and matmuls)."""
    s = CNN
    net = ConvNet(shape, n_classes, s.channels, s.kernel, s.stride, s.pool, s.hidden, s.activation)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


def best_of(contenders: dict, rounds: int) -> dict[str, float]:
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, run in contenders.items():
            best[name] = min(best[name], run())
    return best


def cnn_table(args, peak_before: float) -> list[str]:
    dataset = prepare_dataset("mnist1d", None, (), (), 0.2, 0.2, 0)
    shape = dataset.shape
    data = TrainingData.from_arrays(
        dataset.features, dataset.labels, dataset.split, dataset.n_classes, shape=shape
    )
    sizes = [int(n) for n in args.packs.split(",")]
    models = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0) for i in range(max(sizes))]
    packs(models[:2], data, 2)  # warm-up: one-off costs of a first call
    loop = models[: args.loop_models]
    contenders = {"loop": lambda: torch_loop(loop, data, shape) / len(loop)}
    for size in sizes:
        contenders[f"packs of {size}"] = lambda n=size: packs(models[:n], data, n) / n
    best = best_of(contenders, args.rounds)
    peak = (peak_before + matmul_peak()) / 2
    n_train = len(data.split_indices["train"])
    flops_per_model = 3 * conv_flops(shape, dataset.n_classes) * n_train * CNN.epochs
    lines = [
        f"MNIST-1D CNN [32, 32, 32], kernel 5, pool 2 ({n_train} train rows, batch 100, "
        f"{CNN.epochs} epoch, SGD), {args.threads} threads, fp32 peak {peak / 1e9:.0f} GFLOP/s",
        f"{'':24s} {'models/min':>10s} {'MFU':>6s} {'vs loop':>8s}",
    ]
    for name, seconds in best.items():
        mfu = flops_per_model / seconds / peak
        lines.append(f"{name:24s} {60 / seconds:10.1f} {mfu:6.1%} {best['loop'] / seconds:7.2f}x")
    return lines


def mlp_table(args) -> list[str]:
    dataset = prepare_dataset("adult", None, (), (), 0.2, 0.2, 0)
    data = TrainingData.from_arrays(
        dataset.features, dataset.labels, dataset.split, dataset.n_classes
    )
    folder = Path(tempfile.mkdtemp())
    (folder / "bench_mlp.py").write_text(MLP_SOURCE)
    _, sha256 = locate_module("bench_mlp", [folder])
    module = ModuleRef("bench_mlp:MLP", "{}", sha256, (str(folder),))
    dense = PackSettings("mlp", (64,), "relu", 1, 256, "sgd", False, "constant",
                         (0.9, 0.999), 1e-8, "float32")  # fmt: skip
    generic = PackSettings("module", (), "", 1, 256, "sgd", False, "constant",
                           (0.9, 0.999), 1e-8, "float32", module=module)  # fmt: skip
    models = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0) for i in range(args.mlp_models)]
    size = args.mlp_models
    best = best_of(
        {
            "hand-written (baddbmm)": lambda: packs(models, data, size, dense) / size,
            "generic (vmap)": lambda: packs(models, data, size, generic) / size,
        },
        args.rounds,
    )
    difference = _same_weights_difference(dense, generic, dataset)
    ratio = best["generic (vmap)"] / best["hand-written (baddbmm)"]
    return [
        f"adult MLP 107→64→2, batch 256, 1 epoch, packs of {size}: "
        + ", ".join(f"{name} {60 / s:.0f} models/min" for name, s in best.items())
        + f"; generic / hand-written time {ratio:.2f}",
        f"  same weights (float64): largest difference of logits and gradients {difference:.1e}",
    ]


def _same_weights_difference(dense, generic, dataset) -> float:
    shape = (dataset.n_features,)
    hand = build_family(dense, shape, dataset.n_classes)
    module = build_family(generic, shape, dataset.n_classes)
    params, _ = module.init(range(4), torch.float64, "cpu")  # nn.Linear layout (out, in)
    as_dense = [p.transpose(1, 2) if p.dim() == 3 else p.unsqueeze(1) for p in params]
    inputs = torch.as_tensor(dataset.features[:512], dtype=torch.float64).expand(4, -1, -1)
    labels = torch.as_tensor(dataset.labels[:512]).expand(4, -1)
    results = []
    for family, weights in ((module, params), (hand, as_dense)):
        weights = [w.clone().requires_grad_(True) for w in weights]
        logits = family.forward(weights, inputs)
        loss = F.cross_entropy(logits.transpose(1, 2), labels)
        grads = torch.autograd.grad(loss, weights)
        results.append((logits, grads))
    (a, ga), (b, gb) = results
    gb = [g.transpose(1, 2) if g.shape[1] != 1 else g.squeeze(1) for g in gb]
    differences = [(a - b).abs().max()] + [(x - y).abs().max() for x, y in zip(ga, gb, strict=True)]
    return float(torch.stack(differences).max().detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--packs", default="8,16,32,64")
    parser.add_argument("--loop-models", type=int, default=8)
    parser.add_argument("--mlp-models", type=int, default=54)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    peak = matmul_peak()
    for line in cnn_table(args, peak) + mlp_table(args):
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

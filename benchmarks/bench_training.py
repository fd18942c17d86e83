"""Training throughput: the batched pack trainer against a plain sequential PyTorch loop.

Reference workload (issue #2): an MLP with one hidden layer of 64, batch 256, SGD with momentum,
on the built-in ``adult`` dataset (29,305 training rows x 107 features after encoding). Both sides
run in this process with the same number of torch threads (or on the same GPU), and the fp32
matmul peak that model FLOP utilisation is divided by is measured on the same device, before and
after each round, so every figure is a ratio within one round:

    MFU = 3 x forward FLOPs per example x samples seen / seconds / peak

(for the MLP: 6 x weights, biases aside). ``--family cnn`` runs the MNIST-1D
CNN of bench_cnn.py instead (channels [32, 32, 32], kernel 5, pool 2, batch 100), its forward
FLOPs counted by torch's FlopCounterMode. Rounds repeat the whole measurement and each prints the
load average, as a shared machine moves every figure.

``--profile`` prints instead where one pack's time goes (torch.profiler: the operators with the
most self time, by input shape; on a shared machine one thread gives the steadiest shares).

Usage: python benchmarks/bench_training.py [--family mlp] [--models 128] [--epochs 5]
           [--threads 2] [--device cpu] [--rounds 3] [--sequential-models 8] [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from rashomon.engine.model import (
    ModelSpec,
    PackSettings,
    TrainingData,
    build_family,
    train_pack,
)
from rashomon.jobs import prepare_dataset

MLP = PackSettings(
    "mlp", (64,), "relu", 5, 256, "sgd", False, "constant", (0.9, 0.999), 1e-8, "float32"
)
CNN = dataclasses.replace(
    MLP, family="cnn", hidden=(), batch_size=100, channels=(32, 32, 32), kernel=5, stride=1, pool=2
)
WORKLOADS = {"mlp": (MLP, "adult", 54), "cnn": (CNN, "mnist1d", 32)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, size: int = 4096, repeats: int = 10) -> float:
    """fp32 FLOP/s of a square matmul on ``device`` (TF32 off: the trainer's float32 is fp32)."""
    size = size if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def forward_flops(settings: PackSettings, data: TrainingData) -> float:
    """FLOPs of one model's forward pass on one example (FlopCounterMode: matmuls, convs)."""
    family = build_family(settings, data.example_shape, data.n_classes)
    params, buffers = family.init([0], torch.float32, "cpu")
    with FlopCounterMode(display=False) as counter:
        family.forward(params, torch.zeros(1, 1, data.features.shape[1]), buffers=buffers)
    return float(counter.get_total_flops())


def batched(settings, models, data, pack_size) -> float:
    synchronize(data.features.device)
    start = time.perf_counter()
    for first in range(0, len(models), pack_size):
        train_pack(settings, models[first : first + pack_size], data)
    synchronize(data.features.device)
    return time.perf_counter() - start


def sequential(settings, models, data) -> float:
    """What a researcher writes by hand: one nn.Module and one torch.optim per model (MLP)."""
    train_rows = data.split_indices["train"]
    features, labels = data.features, data.labels
    synchronize(features.device)
    start = time.perf_counter()
    for model in models:
        torch.manual_seed(model.init_seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(features.shape[1], settings.hidden[0]),
            torch.nn.ReLU(),
            torch.nn.Linear(settings.hidden[0], data.n_classes),
        ).to(features.device)
        optimizer = torch.optim.SGD(net.parameters(), lr=model.lr, momentum=model.momentum)
        for _ in range(settings.epochs):
            order = train_rows[torch.randperm(len(train_rows), device=train_rows.device)]
            for first in range(0, len(order), settings.batch_size):
                rows = order[first : first + settings.batch_size]
                loss = torch.nn.functional.cross_entropy(net(features[rows]), labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            for split in ("train", "val", "test"):
                net(features[data.split_indices[split]]).softmax(-1)
    synchronize(features.device)
    return time.perf_counter() - start


def profile(settings, models, data, rows: int = 20) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if data.features.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as prof:
        train_pack(settings, models, data)
    events = sorted(prof.key_averages(group_by_input_shape=True),
                    key=lambda e: -e.self_device_time_total - e.self_cpu_time_total)  # fmt: skip
    total = sum(e.self_cpu_time_total + e.self_device_time_total for e in events)
    for e in events[:rows]:
        share = (e.self_cpu_time_total + e.self_device_time_total) / total
        print(f"{e.key[:28]:28s} {share:6.1%} {e.count:6d}  {str(e.input_shapes)[:70]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(WORKLOADS), default="mlp")
    parser.add_argument("--models", type=int, default=128)
    parser.add_argument("--sequential-models", type=int, default=8, help="0: no loop (MLP only)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pack-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one pack instead")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(args.device)
    base, source, default_pack = WORKLOADS[args.family]
    settings = dataclasses.replace(base, epochs=args.epochs)
    pack_size = args.pack_size or default_pack
    dataset = prepare_dataset(source, None, (), (), 0.2, 0.2, 0)
    data = TrainingData.from_arrays(
        dataset.features,
        dataset.labels,
        dataset.split,
        dataset.n_classes,
        device=device,
        shape=dataset.shape,
    )
    models = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0) for i in range(args.models)]
    n_train = len(data.split_indices["train"])
    per_example = 3 * forward_flops(settings, data)
    loop = args.sequential_models if args.family == "mlp" else 0
    print(
        f"workload: {args.family} on {source}, {n_train} train rows, batch "
        f"{settings.batch_size}, {args.epochs} epochs, {per_example / 1e6:.3f} MFLOP per "
        f"example (fwd+bwd), device {device}, {args.threads} threads"
    )
    train_pack(settings, models[:2], data)  # warm-up: first-call costs are not training
    if args.profile:
        return profile(settings, models[:pack_size], data)
    print(f"{'round':>5s} {'contender':40s} {'models/min':>10s} {'MFU':>6s} {'peak GF/s':>9s} "
          f"{'load':>5s}")  # fmt: skip
    for round_ in range(1, args.rounds + 1):
        runs = [(f"batched packs of {pack_size} ({args.models} models)", args.models,
                 lambda: batched(settings, models, data, pack_size))]  # fmt: skip
        if loop:
            runs.append((f"sequential torch loop ({loop} models)", loop,
                         lambda: sequential(settings, models[:loop], data)))  # fmt: skip
        for name, n_models, work in runs:
            before = matmul_peak(device)
            seconds = work()
            peak = (before + matmul_peak(device)) / 2
            flops = per_example * n_models * args.epochs * n_train
            print(
                f"{round_:5d} {name:40s} {n_models / seconds * 60:10.1f} "
                f"{flops / seconds / peak:6.1%} {peak / 1e9:9.0f} {os.getloadavg()[0]:5.2f}"
            )


if __name__ == "__main__":
    main()

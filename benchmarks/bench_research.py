"""What the research procedures cost: SAM against SGD in packs and in a per-model loop, the
learning curves' per-epoch validation pass, and sharpness tracking (``flatness.track``).

Reference workload (issue #14, as benchmarks/bench_training.py): an MLP 107→64→2 on the
built-in ``adult`` dataset (29,305 training rows), batch 256, SGD with momentum 0.9, float32,
packs of 54 models (what ``models_per_pack: auto`` gives on a CPU). Every figure is a ratio of
times measured in this process with the same number of torch threads; each timing is the best of
``--repeats`` runs.

- SAM per step: a pack's training time with ``optimizer: sam`` over its time with ``sgd`` (two
  gradient evaluations per step instead of one), and the seconds per model-step of a plain
  per-model loop (torch.nn + torch.optim.SGD, Foret et al.'s two passes) against the pack's.
- Per-epoch records: the time of ``flatness: {track: true}`` (Lanczos warm-started at the end of
  every epoch on the curvature set), at several ``track_iterations``, and of the history's
  validation pass at the end of every epoch but the last (the last one is the models table's
  own, and every run pays it), each timed inside a real run over the rest of its training loop
  (the steps), so that another process's load weighs on both sides alike.

Usage: python benchmarks/bench_research.py [--models 54] [--epochs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from rashomon.engine.model import (
    FlatnessSettings,
    ModelSpec,
    PackSettings,
    TrainingData,
    _history,
    _trainer,
    train_pack,
)
from rashomon.jobs import FlatnessConfig, prepare_dataset


def best(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def per_model_sam(settings: PackSettings, models, data: TrainingData, steps: int) -> float:
    """Seconds per model-step of SAM written per model with torch.nn and torch.optim.SGD."""
    train = data.split_indices["train"]
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
        order = train[torch.randperm(len(train))]
        for step in range(steps):
            rows = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            x, y = features[rows], labels[rows]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            with torch.no_grad():
                params = list(net.parameters())
                norm = torch.sqrt(sum(p.grad.square().sum() for p in params)) + 1e-12
                ascent = [model.rho * p.grad / norm for p in params]
                for p, e in zip(params, ascent, strict=True):
                    p.add_(e)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            with torch.no_grad():
                for p, e in zip(params, ascent, strict=True):
                    p.sub_(e)
            optimizer.step()
    return (time.perf_counter() - start) / (len(models) * steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=54)
    parser.add_argument("--loop-models", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int, nargs="+", default=[5, 10, 20])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = prepare_dataset("adult", None, (), (), 0.2, 0.2, 0)
    data = TrainingData.from_arrays(
        dataset.features, dataset.labels, dataset.split, dataset.n_classes
    )
    sgd = PackSettings("mlp", (64,), "relu", args.epochs, 256, "sgd", False, "constant",
                       (0.9, 0.999), 1e-8, "float32")  # fmt: skip
    sam = dataclasses.replace(sgd, optimizer="sam")
    models = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0, rho=0.05) for i in range(args.models)]
    n_train = len(data.split_indices["train"])
    steps = args.epochs * -(-n_train // 256)
    print(
        f"workload: adult {n_train} train rows x {dataset.n_features} features, MLP [64], batch "
        f"256, {args.epochs} epochs ({steps} steps), a pack of {args.models} models, "
        f"{args.threads} threads, best of {args.repeats}"
    )

    sgd_seconds = best(lambda: train_pack(sgd, models, data), args.repeats)
    sam_seconds = best(lambda: train_pack(sam, models, data), args.repeats)
    loop = per_model_sam(sgd, models[: args.loop_models], data, steps=40)
    pack_step = sam_seconds / (args.models * steps)
    print("\nSAM in packs (training and evaluation, no statistics):")
    print(f"  sgd pack       {sgd_seconds:7.2f} s   {sgd_seconds / args.models / steps * 1e6:8.1f}"
          " µs per model-step")  # fmt: skip
    print(f"  sam pack       {sam_seconds:7.2f} s   {pack_step * 1e6:8.1f} µs per model-step"
          f"   {sam_seconds / sgd_seconds:.2f}x sgd")  # fmt: skip
    print(f"  sam per model  {loop * 1e6:18.1f} µs per model-step   {loop / pack_step:.1f}x the"
          " pack's (torch.nn loop)")  # fmt: skip

    print("\nper-epoch records, inside one training run with statistics (median of repeats):")
    for iterations in args.iterations:
        tracked = FlatnessSettings.from_config(
            FlatnessConfig(track=True, track_iterations=iterations)
        )
        shares = [_shares(sgd, models, data, tracked) for _ in range(args.repeats)]
        history, tracking = (sorted(s[k] for s in shares)[len(shares) // 2] for k in (0, 1))
        print(f"  track_iterations {iterations:3d}: tracking {tracking:6.1%}, validation pass "
              f"{history:5.1%} of the training loop's own time")  # fmt: skip


def _shares(settings, models, data, flatness) -> tuple[float, float]:
    """(validation passes, tracking) over the rest of the training loop, timed inside a run."""
    spent = {"fit": 0.0, "validation": 0.0, "tracking": 0.0}
    originals = (_trainer._fit, _trainer._split_metrics, _history.SharpnessTracker.measure)

    def timed(function, key):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        return run

    _trainer._fit = timed(originals[0], "fit")
    _trainer._split_metrics = timed(originals[1], "validation")
    _history.SharpnessTracker.measure = timed(originals[2], "tracking")
    try:
        train_pack(settings, models, data, flatness=flatness)
    finally:
        _trainer._fit, _trainer._split_metrics, _history.SharpnessTracker.measure = originals
    loop = spent["fit"] - spent["validation"] - spent["tracking"]
    return spent["validation"] / loop, spent["tracking"] / loop


if __name__ == "__main__":
    main()

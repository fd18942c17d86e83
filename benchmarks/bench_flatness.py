"""Benchmark the flat-minima statistics (issue #4) against a per-model loop, all in one run.

1. Reference workload: 64 MLPs 100→64→2 (ReLU, float32) on a 2,048-example curvature set, the
   32-probe Hutchinson trace. Baseline: a per-model loop of double-backward Hessian-vector
   products (what PyHessian does), over the same probes. MFU counts an HVP as 4 forward passes
   (2 × parameters × examples FLOPs each) over the fp32 matmul peak measured here (2048² mm).
   The torch.func path (vmap over probes of forward-over-reverse) is timed as well.
2. Small models: 256 MLPs 30→32→2 on 455 examples (breast_cancer / COMPAS size).
3. Cost at the default settings: every statistic of SPEC §8 for a pack of the training benchmark's
   workload (adult, MLP 107→64→2, 5 epochs, batch 256) against training that pack.

    python benchmarks/bench_flatness.py [--threads 1] [--loop-models 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rashomon.engine.model import (
    Architecture,
    FlatnessSettings,
    _second_order,
    forward,
    init_parameters,
    keep_freed_memory,
)
from rashomon.engine.model._flatness import _Problem, _rademacher
from rashomon.jobs import FlatnessConfig

PROBES = 32


def matmul_peak() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    start, repeats = time.perf_counter(), 8
    for _ in range(repeats):
        a @ b
    return 2 * 2048**3 * repeats / (time.perf_counter() - start)


def per_model_loop(arch, params, inputs, labels, probes, n_models) -> float:
    """Seconds per model of the PyHessian-style loop: one model, one probe at a time."""
    start = time.perf_counter()
    for model in range(n_models):
        weights = [p[model : model + 1].clone().requires_grad_(True) for p in params]
        logits = forward(arch, weights, inputs)[0]
        loss = F.cross_entropy(logits, labels)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        for probe in range(len(probes[0])):
            pairs = zip(grads, probes, strict=True)
            dot = sum((g * v[probe, model : model + 1]).sum() for g, v in pairs)
            torch.autograd.grad(dot, weights, retain_graph=True)
    return (time.perf_counter() - start) / n_models


def batched(arch, params, inputs, labels, probes, method) -> float:
    """Seconds per model of the pack's batched Hutchinson trace."""
    settings = FlatnessSettings.from_config(FlatnessConfig())
    problem = _Problem(arch, params, inputs, labels, settings, method)
    problem.hutchinson([v[:2] for v in probes])  # warm up
    start = time.perf_counter()
    problem.hutchinson(probes)
    return (time.perf_counter() - start) / len(params[0])


def trace_comparison(name, widths, n_models, n_examples, loop_models, peak) -> None:
    arch = Architecture(widths[0], widths[1:-1], widths[-1], "relu")
    params = init_parameters(arch, range(n_models), torch.float32, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(n_examples, widths[0], generator=gen)
    labels = torch.randint(0, widths[-1], (n_examples,), generator=gen)
    settings = FlatnessSettings.from_config(FlatnessConfig())
    probes = _rademacher(params, settings, 0, PROBES)
    loop = per_model_loop(arch, params, inputs, labels, probes, loop_models)
    analytic = batched(arch, params, inputs, labels, probes, "analytic")
    functional = batched(arch, params, inputs, labels, probes, "forward-over-reverse")
    flops = PROBES * 4 * 2 * arch.n_parameters * n_examples
    print(f"{name}: {n_models} MLPs {'→'.join(map(str, widths))}, {n_examples} examples, "
          f"{PROBES}-probe Hutchinson trace")  # fmt: skip
    for label, seconds in [("per-model loop (PyHessian style)", loop),
                           ("torch.func vmap(jvp(grad)) batched", functional),
                           ("R-operator batched (default)", analytic)]:  # fmt: skip
        print(f"  {label:<36} {seconds * 1e3:8.1f} ms/model  MFU {flops / seconds / peak:6.1%}"
              f"  {loop / seconds:5.1f}× the loop")  # fmt: skip


def default_cost_vs_training(threads: int, peak: float) -> None:
    from rashomon.engine.model import (
        ModelSpec,
        PackSettings,
        TrainingData,
        pack_flatness,
        train_pack,
    )
    from rashomon.jobs import prepare_dataset

    dataset = prepare_dataset("adult", None, (), (), 0.2, 0.2, 0)
    data = TrainingData.from_arrays(
        dataset.features, dataset.labels, dataset.split, dataset.n_classes
    )
    settings = PackSettings("mlp", (64,), "relu", 5, 256, "sgd", False, "constant",
                            (0.9, 0.999), 1e-8, "float32")  # fmt: skip
    models = [ModelSpec(i, i, 0, 0.1, 0.9, 0.0, 0.0) for i in range(54)]
    start = time.perf_counter()
    result = train_pack(settings, models, data)
    training = time.perf_counter() - start
    flatness = FlatnessSettings.from_config(FlatnessConfig())
    arch = Architecture(dataset.n_features, (64,), dataset.n_classes, "relu")
    params = [result.parameters[name] for name in arch.parameter_names()]
    initial = init_parameters(arch, range(54), torch.float32, torch.device("cpu"))
    counted = _count_probes()
    start = time.perf_counter()
    pack_flatness(arch, params, initial, torch.ones(54, dtype=torch.bool), data, flatness)
    statistics = time.perf_counter() - start
    # an HVP counts 4 forward passes; gradient 3, SAM + ASAM 2, noise pairs 2 each, the loss
    # 1, the Fisher trace 1 + 2 per class
    others = 3 + 2 + 2 * flatness.avg_pairs + 1 + 1 + 2 * dataset.n_classes
    forwards = 4 * counted[0] + others * 54
    flops = forwards * 2 * arch.n_parameters * flatness.curvature_examples
    print(f"default settings ({flatness.curvature_examples} curvature examples, "
          f"{flatness.trace_probes}+{flatness.adaptive_probes} probes, ≤{flatness.eig_iterations} "
          f"Lanczos steps, {flatness.avg_pairs} antithetic noise pairs), a pack of 54 adult MLPs "
          f"107→64→2, {threads} thread(s):")  # fmt: skip
    print(f"  training (5 epochs)   {training:6.2f} s")
    print(f"  all SPEC §8 statistics {statistics:6.2f} s  = {statistics / training:.0%} of training"
          f"  ({counted[0] // 54} Hessian-vector products per model, "
          f"{counted[0] / 54 - flatness.trace_probes - flatness.adaptive_probes:.1f} of them "
          f"Lanczos steps, MFU {flops / statistics / peak:.0%})")  # fmt: skip


def _count_probes() -> list[int]:
    """Count the probe vectors the R-operator processes (to report the statistics' MFU)."""
    counted = [0]
    original = _second_order.MLPHessian.products

    def products(self, probes):
        counted[0] += probes[0].shape[0] * probes[0].shape[1]
        return original(self, probes)

    _second_order.MLPHessian.products = products
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loop-models", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as in the trainer actors, for the loop and the batched passes alike
    peak = matmul_peak()
    print(f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s ({args.threads} thread(s))")
    trace_comparison("reference", (100, 64, 2), 64, 2048, args.loop_models, peak)
    trace_comparison("small models", (30, 32, 2), 256, 455, 4 * args.loop_models, peak)
    default_cost_vs_training(args.threads, peak)


if __name__ == "__main__":
    main()

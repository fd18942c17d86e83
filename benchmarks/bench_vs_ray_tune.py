"""End to end: one population trained by `rashomon run`, as Ray Tune trials, and as an in-process
``torch.func`` ensemble, in one run.

Workloads (issue #15): ``breast_cancer``, 512 MLPs 30→32→2, 20 epochs, batch 32; ``adult`` (the
reference workload), MLPs 107→64→2, 5 epochs, batch 256. Every side trains the same models: SGD
with momentum 0.9, lr 0.1, model i with init and minibatch-order seed i, on the same split
(``prepare_dataset``: val 0.2, test 0.2, seed 0). The sides:

- ``rashomon``: ``rashomon run JOB --quiet`` as a user runs it (embedded Ray, packs, predictions
  of val and test, weights, flatness statistics: the defaults), and ``rashomon lean`` with
  ``flatness.enabled: false`` and ``output.weights: false``;
- ``tune``: Ray Tune trials, one model each (a function trainable with ``tune.with_parameters``,
  a plain ``nn.Module`` and ``torch.optim.SGD``, val accuracy reported at the end), Tune's
  default settings; ``tune reuse`` the same with ``TuneConfig(reuse_actors=True)``;
- ``vmap``: the idiom of PyTorch's model-ensembling tutorial: ``stack_module_state``,
  ``vmap(grad(functional_call))`` over every model (each its own minibatches), ``torch._foreach``
  SGD, then the probabilities of every split; in one process, no Ray.

Each side runs in a fresh interpreter and is timed from outside (interpreter start and imports
included), in wall seconds and in CPU seconds of its whole process tree (Ray's processes and
workers too), twice: with 2 models and with n models. The difference gives the marginal cost per
model and the fixed start (Ray start, actors, imports, dataset); the Tune sides train fewer
models (``Workload.tune_models``, ``tune_default_models``) and are extrapolated to the population
as fixed + size × marginal, marked ``*``. Each table gives the load of the machine: other work
inflates wall times, CPU times much less. Ray runs on loopback, dashboard off, every core.

    python benchmarks/bench_vs_ray_tune.py [--workload breast_cancer adult] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.pop("RAY_ADDRESS", None)


@dataclass(frozen=True)
class Workload:
    source: str
    hidden: int
    epochs: int
    batch_size: int
    models: int  # the population size
    tune_models: int  # trials of `tune reuse`
    tune_default_models: int  # trials of `tune`


WORKLOADS = {
    "breast_cancer": Workload("breast_cancer", 32, 20, 32, 512, 128, 24),
    "adult": Workload("adult", 64, 5, 256, 256, 24, 8),
}
LR, MOMENTUM = 0.1, 0.9
SIDES = ("rashomon", "rashomon lean", "tune reuse", "tune", "vmap")


def job_yaml(w: Workload, n_models: int, lean: bool) -> str:
    lean_keys = "flatness: {enabled: false}\noutput: {weights: false}\n" if lean else ""
    return (
        f"name: bench-{w.source}\ndataset: {{source: {w.source}}}\n"
        f"model: {{family: mlp, hidden: [{w.hidden}], activation: relu}}\n"
        f"train: {{epochs: {w.epochs}, batch_size: {w.batch_size}, optimizer: sgd, lr: {LR}, "
        f"momentum: {MOMENTUM}}}\npopulation: {{seeds: {n_models}}}\n{lean_keys}"
    )


def load(w: Workload):
    """(features, labels, train rows, {split: rows}) as torch tensors, rashomon's split."""
    import torch

    from rashomon.jobs import prepare_dataset

    data = prepare_dataset(w.source, None, (), (), 0.2, 0.2, 0)
    rows = {name: torch.from_numpy((data.split == k).nonzero()[0]) for k, name in enumerate(
        ("train", "val", "test"))}  # fmt: skip
    return torch.from_numpy(data.features), torch.from_numpy(data.labels), rows, data.n_classes


def make_net(n_features: int, hidden: int, n_classes: int):
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes)
    )


def train_one(config: dict, data=None) -> float:
    """One Tune trial: one model, trained as a researcher writes it by hand."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    features, labels, rows, n_classes, w = data
    seed = config["seed"]
    torch.manual_seed(seed)
    net = make_net(features.shape[1], w.hidden, n_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    order = torch.Generator().manual_seed(seed)
    train = rows["train"]
    for _ in range(w.epochs):
        shuffled = train[torch.randperm(len(train), generator=order)]
        for first in range(0, len(shuffled), w.batch_size):
            batch = shuffled[first : first + w.batch_size]
            loss = torch.nn.functional.cross_entropy(net(features[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        val = rows["val"]
        accuracy = float((net(features[val]).argmax(1) == labels[val]).float().mean())
    tune.report({"val_acc": accuracy})
    return accuracy


def run_tune(w: Workload, n_models: int, reuse: bool) -> None:
    import ray
    from ray import tune

    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=os.cpu_count(),
        logging_level="ERROR",
        log_to_driver=False,
    )
    features, labels, rows, n_classes = load(w)
    trainable = tune.with_parameters(train_one, data=(features, labels, rows, n_classes, w))
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            trainable,
            param_space={"seed": tune.grid_search(list(range(n_models)))},
            tune_config=tune.TuneConfig(reuse_actors=reuse),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        results = tuner.fit()
    if results.num_errors or len(results) != n_models:
        sys.exit(f"Tune: {results.num_errors} trials failed of {len(results)}")


def run_vmap(w: Workload, n_models: int) -> None:
    """PyTorch's model-ensembling idiom, trained: every model its own minibatches."""
    import copy

    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    torch.set_num_threads(os.cpu_count())
    features, labels, rows, n_classes = load(w)
    nets = []
    for seed in range(n_models):
        torch.manual_seed(seed)
        nets.append(make_net(features.shape[1], w.hidden, n_classes))
    params, buffers = stack_module_state(nets)
    params = {k: v.detach() for k, v in params.items()}  # updated in place, by hand
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def loss(p, b, x, y):
        return torch.nn.functional.cross_entropy(functional_call(skeleton, (p, b), (x,)), y)

    step = vmap(grad(loss))
    names = list(params)
    weights = [params[k] for k in names]
    velocity = [torch.zeros_like(t) for t in weights]
    generators = [torch.Generator().manual_seed(seed) for seed in range(n_models)]
    train = rows["train"]
    for _ in range(w.epochs):
        order = train[torch.stack([torch.randperm(len(train), generator=g) for g in generators])]
        for first in range(0, len(train), w.batch_size):
            batch = order[:, first : first + w.batch_size]  # (models, batch)
            grads = step(params, buffers, features[batch], labels[batch])
            torch._foreach_mul_(velocity, MOMENTUM)
            torch._foreach_add_(velocity, [grads[k] for k in names])
            torch._foreach_add_(weights, velocity, alpha=-LR)
    forward = vmap(lambda p, b, x: functional_call(skeleton, (p, b), (x,)), in_dims=(0, 0, None))
    with torch.no_grad():
        for split in ("train", "val", "test"):
            forward(params, buffers, features[rows[split]]).softmax(-1)


def side(name: str, w: Workload, n_models: int, scratch: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (of the whole process tree: Ray's processes and workers
    too, sampled every 0.1 s) of one side training ``n_models`` in a fresh interpreter."""
    import psutil

    if name.startswith("rashomon"):
        job = scratch / f"{name.replace(' ', '-')}-{n_models}.yaml"
        job.write_text(job_yaml(w, n_models, lean=name.endswith("lean")))
        out = scratch / job.stem
        command = [str(Path(sys.executable).with_name("rashomon")), "run", str(job), "--quiet"]
        command += ["--out", str(out)]
    else:
        out = None
        command = [sys.executable, __file__, "--inner", name, w.source, str(n_models)]
    cpu: dict[int, float] = {}
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = psutil.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            for member in [process, *process.children(recursive=True)]:
                try:
                    times = member.cpu_times()
                    cpu[member.pid] = times.user + times.system
                except psutil.Error:
                    pass
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        if process.returncode:
            log.seek(0)
            sys.exit(f"{name} ({n_models} models) failed:\n{log.read()[-4000:].decode()}")
    if out is not None:
        subprocess.run(["rm", "-rf", str(out)], check=True)  # the next run trains afresh
    return seconds, sum(cpu.values())


def _split(small: float, large: float, n: int, population: int) -> tuple[float, float, float]:
    """(fixed, marginal per model, total for the population) from runs of 2 and n models."""
    marginal = max(large - small, 0.0) / (n - 2)
    fixed = small - 2 * marginal
    return fixed, marginal, large if n == population else fixed + population * marginal


def measure(w: Workload, scratch: Path) -> dict[str, dict]:
    sizes = {"tune": w.tune_default_models, "tune reuse": w.tune_models}
    figures = {}
    for name in SIDES:
        n = sizes.get(name, w.models)
        (small, small_cpu), (large, large_cpu) = (
            side(name, w, 2, scratch),
            side(name, w, n, scratch),
        )
        fixed, marginal, total = _split(small, large, n, w.models)
        cpu_fixed, cpu_marginal, cpu_total = _split(small_cpu, large_cpu, n, w.models)
        figures[name] = {"n": n, "seconds": large, "fixed": fixed, "marginal": marginal,
                         "total": total, "cpu": large_cpu, "cpu_fixed": cpu_fixed,
                         "cpu_marginal": cpu_marginal, "cpu_total": cpu_total,
                         "extrapolated": n != w.models, "noisy": large <= small}  # fmt: skip
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        name, source, n_models = sys.argv[2], sys.argv[3], int(sys.argv[4])
        w = WORKLOADS[source]
        if name == "vmap":
            run_vmap(w, n_models)
        else:
            run_tune(w, n_models, reuse=name == "tune reuse")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; s = seconds; * = extrapolated from fewer models")
    for source in args.workload:
        w = WORKLOADS[source]
        runs = []
        for run in range(args.runs):
            before = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as scratch:
                figures = measure(w, Path(scratch))
            runs.append(figures)
            print(
                f"\n{source}: {w.models} MLPs {w.hidden} hidden, {w.epochs} epochs, batch "
                f"{w.batch_size}; run {run + 1} (load {before:.1f} → {os.getloadavg()[0]:.1f})\n"
                f"{'':14} {'':>7} {'wall':>27} {'CPU':>26} {'models/min':>11} {'÷ rashomon':>16}"
                f"\n{'side':14} {'trained':>7} {'s':>8} {'fixed s':>8} {'s/model':>9} "
                f"{'s':>8} {'fixed s':>8} {'s/model':>8} {'wall':>11} {'wall':>7} {'CPU':>7}"
            )
            base = figures["rashomon"]
            for name, f in figures.items():
                star = "*" if f["extrapolated"] else " "
                print(
                    f"{name:14} {f['n']:7d} {f['seconds']:8.1f} {f['fixed']:8.1f} "
                    f"{f['marginal']:9.4f} {f['cpu']:8.1f} {f['cpu_fixed']:8.1f} "
                    f"{f['cpu_marginal']:8.4f} {60 * w.models / f['total']:10.0f}{star} "
                    f"{f['total'] / base['total']:6.1f}{star} "
                    f"{f['cpu_total'] / base['cpu_total']:6.1f}{star}"
                    + ("  (noise: n models ran no slower than 2)" if f["noisy"] else "")
                )
        print(f"{source}, median over {len(runs)} runs, time ÷ rashomon's:")
        for key, label in (
            ("total", "wall, end to end"),
            ("marginal", "wall, per model"),
            ("cpu_total", "CPU, end to end"),
            ("cpu_marginal", "CPU, per model"),
        ):
            ratios = {
                name: statistics.median(r[name][key] / max(r["rashomon"][key], 1e-9) for r in runs)
                for name in SIDES
            }
            print(f"  {label:17} " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()

"""Benchmark `rashomon analyze --json` on a synthetic population of 10,000 models × 10,000 examples.

The population is written in the SPEC §5 schema (one Parquet file per pack of 100 models) as a
full factorial design, 10 init × 10 order × 10 data seeds × 10 learning rates, binary labels, a
group column and the flatness statistics a run records by default, so every part of `analyze`
runs: all measures, Rashomon capacity, the source decomposition with its chance levels,
subgroups and the flatness summary, with every file's checks (page checksums, rows,
probabilities).

The yardstick is the fastest reasonable pyarrow read of the same test probabilities into one
float32 (models, examples, classes) array: every predictions file read on all cores (a thread per
core), only the ``split`` and ``prob_*`` columns (``split`` as a dictionary), the split's rows
taken as the slice they are (SPEC §5: contiguous) and copied once into the array. Both sides run
in fresh interpreters, in turn, ``--runs`` times; each line gives the wall time, the CPU time of
all threads and the peak resident memory, then the ratios, and the load of the machine (other
work on a shared machine inflates wall times; CPU times less so). Target (issue #15): analyze ≤ 3×
the read, ≤ 1 GB peak.

    python benchmarks/bench_analysis.py [--models 10000] [--examples 10000] [--runs 3]
        [--dir /tmp/bench] [--profile]

``--profile`` runs `analyze` once more in this process under cProfile (CPU time of the main
thread: the files are read in a background thread) and prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic writer

from _synthetic import write_examples, write_pack

FLATNESS = ("grad_norm", "hessian_trace", "hessian_top_eig", "sam_sharpness", "weight_norm")


def write_population(root: Path, n_models: int, n_examples: int, seed: int = 0) -> None:
    """A factorial population whose logits add example, seed-axis and learning-rate effects."""
    rng = np.random.default_rng(seed)
    levels = round(n_models ** (1 / 4))
    axes = np.stack(np.unravel_index(np.arange(n_models), (levels,) * 4), axis=1)
    example_logit = rng.normal(0, 2.0, n_examples).astype(np.float32)
    effects = rng.normal(0, [0.4, 0.2, 0.6, 0.3], (levels, n_examples, 4)).astype(np.float32)
    labels = (rng.random(n_examples) < 1 / (1 + np.exp(-example_logit))).astype(np.int64)
    examples = pd.DataFrame(
        {
            "example_id": np.arange(n_examples),
            "split": "test",
            "label": labels,
            "group": np.where(rng.random(n_examples) < 0.3, "a", "b"),
        }
    )
    write_examples(root, examples, classes=["0", "1"])
    lrs = np.geomspace(0.01, 0.1, levels)
    for start in range(0, n_models, 100):
        rows = np.arange(start, min(start + 100, n_models))
        logit = example_logit + sum(effects[axes[rows, a], :, a] for a in range(4))
        logit += rng.normal(0, 0.1, logit.shape).astype(np.float32)
        p1 = 1 / (1 + np.exp(-logit))
        accuracy = ((p1 > 0.5) == labels).mean(axis=1)
        sharpness = rng.lognormal(0, 0.5, len(rows)) * (1.5 - accuracy)
        models = pd.DataFrame(
            {
                "model_id": [f"m{r:07d}" for r in rows],
                "init_seed": axes[rows, 0],
                "order_seed": axes[rows, 1],
                "data_seed": axes[rows, 2],
                "hp_lr": lrs[axes[rows, 3]],
                "val_acc": accuracy,
                "val_loss": 1 - accuracy,
                "train_loss": 0.8 * (1 - accuracy),
                "test_acc": accuracy,
                **{name: sharpness * (1 + i) for i, name in enumerate(FLATNESS)},
                "status": "ok",
            }
        )
        write_pack(root, f"p{start:07d}", models, {"test": np.stack([1 - p1, p1], axis=-1)})


MEASURED = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime, file=sys.stderr)
"""

READ_BASELINE = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np, pyarrow.parquet as pq

root, split, n_models, n_examples, n_classes = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
columns = sys.argv[6].split(",")
files = sorted((root + "/predictions/" + name) for name in os.listdir(root + "/predictions"))
out = np.empty((n_models, n_examples, len(columns)), np.float32)

def read(index):
    table = pq.ParquetFile(files[index], read_dictionary=["split"]).read(
        columns=["split", *columns], use_threads=False
    )
    splits = table["split"].chunk(0)
    codes = splits.indices.to_numpy()
    rows = np.flatnonzero(codes == splits.dictionary.to_pylist().index(split))
    first, count = int(rows[0]), len(rows)
    models = count // n_examples
    start = index * models  # the files hold the same number of models, in model order
    for k, name in enumerate(columns):
        values = table[name].chunk(0).to_numpy()[first : first + count]
        out[start : start + models, :, k] = values.reshape(models, n_examples)

with ThreadPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(read, range(len(files))))
print(out.shape)
"""


def _timed(script: str, *args: str) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds, peak resident GB and stdout of ``script`` in a fresh
    interpreter."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, script, *args], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{script} failed:\n{done.stderr}")
    peak_kb, cpu = done.stderr.strip().splitlines()[-1].split()
    return seconds, float(cpu), int(peak_kb) * 1024 / 1e9, done.stdout


def profile(root: Path, epsilon: float) -> None:
    import cProfile
    import pstats

    from rashomon.analysis import analyze

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    analyze(root, epsilon=epsilon).to_dict()
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(r"rashomon", 25)
    stats.sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rashomon-bench-analysis"))
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    root = args.dir / f"{args.models}x{args.examples}"
    if not (root / "examples.parquet").exists():
        start = time.perf_counter()
        write_population(root, args.models, args.examples)
        print(f"wrote {root} in {time.perf_counter() - start:.0f} s")
    baseline = args.dir / "read_baseline.py"
    baseline.write_text(READ_BASELINE)
    cli = str(Path(__file__).resolve().parents[1] / "engine" / "cli.py")
    shape = (str(args.models), str(args.examples), "2")
    print(
        f"{args.models} models × {args.examples} examples, binary, {os.cpu_count()} cores; "
        "wall s / CPU s / peak GB"
    )
    rows = []
    for run in range(args.runs):
        load = os.getloadavg()[0]
        read = _timed(str(baseline), str(root), "test", *shape, "prob_0,prob_1")
        read_1 = _timed(str(baseline), str(root), "test", *shape, "prob_1")
        measured = _timed(cli, "analyze", str(root), "--json", "--epsilon", str(args.epsilon))
        rows.append((read, read_1, measured))
        print(
            f"run {run + 1} (load {load:.1f} → {os.getloadavg()[0]:.1f}):  analyze "
            f"{measured[0]:5.1f} / {measured[1]:5.1f} / {measured[2]:.2f}   read "
            f"{read[0]:5.1f} / {read[1]:5.1f} / {read[2]:.2f}   read prob_1 only "
            f"{read_1[0]:5.1f} / {read_1[1]:5.1f} / {read_1[2]:.2f}   analyze / read: wall "
            f"{measured[0] / read[0]:.2f}×, CPU {measured[1] / read[1]:.2f}×"
        )
    result = json.loads(rows[-1][2][3])
    wall = statistics.median(m[0] / r[0] for r, _, m in rows)
    cpu = statistics.median(m[1] / r[1] for r, _, m in rows)
    print(
        f"Rashomon set {result['rashomon_set_size']} models at ε = {args.epsilon}; median "
        f"analyze / read: wall {wall:.2f}×, CPU {cpu:.2f}×; analyze peak "
        f"{max(m[2] for _, _, m in rows):.2f} GB"
    )
    print(f"  decomposition {result['source_decomposition']}")
    if args.profile:
        profile(root, args.epsilon)


if __name__ == "__main__":
    main()

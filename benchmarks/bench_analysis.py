"""Benchmark `rashomon analyze --json` on a synthetic population of 10,000 models × 10,000 examples.

The population is written in the SPEC §5 schema (one Parquet file per pack of 100 models) as a
full factorial design, 10 init × 10 order × 10 data seeds × 10 learning rates, binary labels, so
every measure runs, including Rashomon capacity and the source decomposition. The baseline,
measured in the same run, is the cost of only reading the test probabilities with
``pd.read_parquet(DIR/predictions, filters=[("split", "==", "test")])`` — what a user would do
first by hand. Targets (issue #3): ≤ 30 s and ≤ 2 GB peak memory on 2 cores.

    python benchmarks/bench_analysis.py [--models 10000] [--examples 10000] [--dir /tmp/bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic writer

from _synthetic import write_examples, write_pack


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
        models = pd.DataFrame(
            {
                "model_id": [f"m{r:07d}" for r in rows],
                "init_seed": axes[rows, 0],
                "order_seed": axes[rows, 1],
                "data_seed": axes[rows, 2],
                "hp_lr": lrs[axes[rows, 3]],
                "val_acc": accuracy,
                "val_loss": 1 - accuracy,
                "test_acc": accuracy,
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
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""

READ_BASELINE = """
import sys, pandas as pd
frame = pd.read_parquet(sys.argv[1] + "/predictions", columns=["model_id", "example_id", "prob_1"],
                        filters=[("split", "==", "test")])
print(len(frame))
"""


def _timed(script: str, *args: str) -> tuple[float, float, str]:
    """Wall seconds, peak resident GB and stdout of ``script`` run in a fresh interpreter."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, script, *args], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{script} failed:\n{done.stderr}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kb / 2**20, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rashomon-bench-analysis"))
    parser.add_argument("--epsilon", type=float, default=0.01)
    args = parser.parse_args()
    root = args.dir / f"{args.models}x{args.examples}"
    if not (root / "examples.parquet").exists():
        start = time.perf_counter()
        write_population(root, args.models, args.examples)
        print(f"wrote {root} in {time.perf_counter() - start:.0f} s")
    baseline_script = args.dir / "read_baseline.py"
    baseline_script.write_text(READ_BASELINE)
    cli = str(Path(__file__).resolve().parents[1] / "engine" / "cli.py")
    read_seconds, read_gb, _ = _timed(str(baseline_script), str(root))
    seconds, peak_gb, out = _timed(
        cli, "analyze", str(root), "--json", "--epsilon", str(args.epsilon)
    )
    result = json.loads(out)
    print(
        f"{args.models} models × {args.examples} examples, binary; Rashomon set "
        f"{result['rashomon_set_size']} models at ε = {args.epsilon}"
    )
    print(f"  rashomon analyze --json   {seconds:6.1f} s   peak {peak_gb:.2f} GB")
    print(f"  pandas read (baseline)    {read_seconds:6.1f} s   peak {read_gb:.2f} GB")
    print(f"  analyze / pandas read     {seconds / read_seconds:6.2f}×")
    print(f"  decomposition {result['source_decomposition']}")


if __name__ == "__main__":
    main()

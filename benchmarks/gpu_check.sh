#!/usr/bin/env bash
# One GPU, one script, one table (issue 15, item 5); budget: under 8 minutes on one GPU.
#
#   1. the GPU tests: a real CUDA device (tests/test_cuda.py: GPU against CPU, slices of a GPU
#      pack, `rashomon run` on half a GPU per actor) and the logical-GPU scheduling and slicing
#      tests (tests/test_gpu_packing.py);
#   2. the training benchmark (benchmarks/bench_training.py) for the MLP and the CNN on the
#      device, MFU against an fp32 matmul peak measured on the same device in the same process;
#   3. `rashomon run` of a 10,000-model population (breast_cancer MLPs 30→32→2, 20 epochs,
#      batch 32, test predictions) on one GPU.
#
# Usage: benchmarks/gpu_check.sh [--cpu]
#   --cpu   everything on the CPU at small sizes, the CUDA-only tests skipped: checks the script
#           itself on a machine without a GPU (tests/test_gpu_check.py runs it so).
# Environment: PYTHON (default .venv/bin/python), GPU_CHECK_OUT (keep the work folder there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RASHOMON=$(dirname "$PYTHON")/rashomon

if [[ "${1:-}" == "--cpu" ]]; then
    device=cpu gpus=0 run_models=8 tests=(tests/test_cuda.py)
    mlp=(--models 4 --pack-size 4 --epochs 1 --rounds 1 --sequential-models 1)
    cnn=(--models 2 --pack-size 2 --epochs 1 --rounds 1)
    seeds="{init: 4, order: 2}" epochs=2
elif [[ $# -gt 0 ]]; then
    echo "gpu_check.sh: unknown argument '$1'; the only option is --cpu" >&2
    exit 2
else
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        echo "gpu_check.sh: torch sees no CUDA device; on a machine without one run it with --cpu" >&2
        exit 2
    fi
    device=cuda gpus=1 run_models=10000 tests=(tests/test_cuda.py tests/test_gpu_packing.py)
    mlp=(--models 2048 --pack-size 1024 --epochs 5 --rounds 3 --sequential-models 2)
    cnn=(--models 512 --pack-size 256 --epochs 5 --rounds 3)
    seeds="{init: 100, order: 100}" epochs=20
fi

work=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$work"
table="$work/table.tsv"
: >"$table"
status=0

# part NAME COMMAND...: runs COMMAND with its output in $work/NAME.log, times it, records a row.
part() {
    local name=$1 start end code=0
    shift
    start=$(date +%s%N)
    "$@" >"$work/$name.log" 2>&1 || code=$?
    end=$(date +%s%N)
    if [[ $code -ne 0 ]]; then status=1; fi
    printf '%s\t%s\t%d.%d\n' "$name" "$([[ $code -eq 0 ]] && echo ok || echo "FAILED ($code)")" \
        $(((end - start) / 1000000000)) $(((end - start) / 100000000 % 10)) >>"$table"
}

"$PYTHON" - >"$work/device.txt" <<'EOF'
import torch
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch", torch.__version__)
EOF

part tests "$PYTHON" -m pytest -q -p no:cacheprovider "${tests[@]}"
part bench_mlp "$PYTHON" benchmarks/bench_training.py --family mlp --device "$device" "${mlp[@]}"
part bench_cnn "$PYTHON" benchmarks/bench_training.py --family cnn --device "$device" "${cnn[@]}"

cat >"$work/population.yaml" <<EOF
name: gpu-check
dataset: {source: breast_cancer, split: {val: 0.2, test: 0.2, seed: 0}}
model: {family: mlp, hidden: [32], activation: relu}
train: {epochs: $epochs, batch_size: 32, optimizer: sgd, lr: 0.05, momentum: 0.9}
population:
  seeds: $seeds
resources: {gpus_per_worker: $gpus}
output: {predictions: [test]}
flatness: {enabled: false}
EOF
rm -rf "$work/population"
part run "$RASHOMON" run "$work/population.yaml" --out "$work/population" --quiet

# One table: each part's status and wall time, with its figures.
"$PYTHON" - "$work" "$run_models" <<'EOF'
import sys
from pathlib import Path

work, run_models = Path(sys.argv[1]), int(sys.argv[2])
print(f"device: {(work / 'device.txt').read_text().strip()}")
print(f"{'part':10s} {'status':12s} {'seconds':>8s}  figures")
for line in (work / "table.tsv").read_text().splitlines():
    name, status, seconds = line.split("\t")
    log = (work / f"{name}.log").read_text().splitlines()
    if name == "tests":
        figures = [log[-1]] if log else []
    elif name.startswith("bench"):  # rows of "round contender models/min MFU peak load"
        rows = [r.split() for r in log if r[:5].strip().isdigit()]
        figures = [f"round {r[0]}: {r[-4]} models/min, MFU {r[-3]} of {r[-2]} GF/s ({' '.join(r[1:-4])})"
                   for r in rows]  # fmt: skip
    else:
        rate = run_models / float(seconds) * 60
        figures = [f"{run_models} models, {rate:.0f} models/min end to end"]
        if status != "ok":
            figures = log[-3:]
    print(f"{name:10s} {status:12s} {seconds:>8s}  " + ("\n" + " " * 34).join(figures or ["-"]))
print(f"logs: {work}")
EOF
exit $status

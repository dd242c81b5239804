#!/usr/bin/env bash
# scripts/gpu_check.sh OUT_DIR: the suite's CUDA paths and its figures, in one run.
#
# On a machine with a GPU it writes to OUT_DIR:
#   env.txt           the GPU (nvidia-smi), torch and CUDA versions, the date
#   benchmark.json    scripts/bench.py (ratios, loader speedup, throughput, peak memory)
#   families.tsv      a few training steps of every model family (conf/model/*.yaml) in
#                     bf16, without and with torch.compile: status and seconds per run
#   concurrency.json  N runs at once on one GPU through Hydra's joblib launcher (the
#                     local parallel launcher), N = 1 2 4 8: aggregate steps/s and the
#                     full ResNet-18 CIFAR-10 runs per hour that gives
#   logs/             every command's output; concurrency/, families/: the runs' files
# Without a GPU it runs the same stages on the CPU, smaller (quick benchmark, tiny runs,
# compile with the aot_eager backend, N = 1 2), so the script itself is tested anywhere.
# Data: synthetic CIFAR-10 files in the official format (no network needed). Families
# whose data set cannot be made here (text, audio) are listed with the error they give.
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_N ("1 2 4 8"),
# GPU_CHECK_BUDGET_S (seconds for the family stage, default 240), BENCH_SIZE.
set -u
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled HYDRA_FULL_ERROR=1

if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICE=cuda; COMPILE=true; N_LIST=${GPU_CHECK_N:-"1 2 4 8"}; SIZE=${BENCH_SIZE:-full}
  TRAIN_BATCHES=50; SMOKE="trainer.limit_train_batches=3"
else
  DEVICE=cpu; COMPILE=aot_eager; N_LIST=${GPU_CHECK_N:-"1 2"}; SIZE=${BENCH_SIZE:-quick}
  TRAIN_BATCHES=2; SMOKE="trainer.limit_train_batches=2 trainer.batch_size=16 model.width=4"
fi
BUDGET=${GPU_CHECK_BUDGET_S:-240}
DATA=$(mktemp -d)  # the synthetic data set stays out of OUT_DIR (150 MB)
trap 'rm -rf "$DATA"' EXIT
echo "gpu_check: device=$DEVICE compile=$COMPILE bench=$SIZE out=$OUT"

# 1. What machine this is.
{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  echo "device: $DEVICE"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda); \
[print('gpu', i, torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 2. Synthetic CIFAR-10 in the official pickle format (45k train after the 10% hold-out).
"$PYTHON" - "$DATA" > "$OUT/logs/data.log" 2>&1 <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "scripts")
import bench

bench.write_cifar10(Path(sys.argv[1]), 50_000)
EOF

# 3. The benchmark (make bench), on this device.
timeout 600 "$PYTHON" scripts/bench.py --size "$SIZE" --data-dir "$DATA" \
  --out "$OUT/benchmark.json" > "$OUT/logs/bench.log" 2>&1
echo "benchmark: rc=$? ($OUT/benchmark.json)"
tail -n 12 "$OUT/logs/bench.log"

# 4. Several runs on one device at once: Hydra's joblib launcher, N jobs in parallel.
for N in $N_LIST; do
  SEEDS=$(seq -s, 0 $((N - 1)))
  START=$(date +%s%N)
  timeout 600 "$PYTHON" -m lerac.suite.train -m hydra/launcher=joblib hydra.launcher.n_jobs="$N" \
    seed="$SEEDS" dataset=cifar10 model=resnet18 regime=lerac logger=none \
    trainer.device="$DEVICE" trainer.precision=bf16 trainer.max_epochs=2 \
    trainer.limit_train_batches=$TRAIN_BATCHES trainer.limit_eval_batches=2 \
    trainer.progress=false overwrite=true paths.data_dir="$DATA" \
    paths.output_dir="$OUT/concurrency/n$N" $([ "$DEVICE" = cpu ] && echo model.width=4) \
    > "$OUT/logs/concurrency_n$N.log" 2>&1
  RC=$?
  WALL_MS=$((($(date +%s%N) - START) / 1000000))
  echo "concurrency N=$N: rc=$RC wall=${WALL_MS}ms"
  mkdir -p "$OUT/concurrency/n$N" && echo "$WALL_MS" > "$OUT/concurrency/n$N/wall_ms"
done
"$PYTHON" - "$OUT" "$TRAIN_BATCHES" <<'EOF'
# Aggregate steps/s of N concurrent runs -> full ResNet-18 CIFAR-10 runs per hour.
import json, math, sys
from pathlib import Path

out, batches = Path(sys.argv[1]), int(sys.argv[2])
# A full run: Table 1 (ResNet-18) 200 epochs at batch 64 over 45k training images; early
# stopping usually ends runs sooner, so this is a lower bound on runs per hour.
full_steps = 200 * math.ceil(45_000 / 64)
result = {"full_run_steps": full_steps, "by_concurrent_runs": {}}
for folder in sorted((out / "concurrency").glob("n*"), key=lambda p: int(p.name[1:])):
    runs = [json.loads(p.read_text()) for p in folder.glob("*/metrics.json")]
    done = [r for r in runs if r.get("status") == "completed"]
    entry = {"runs": len(runs), "completed": len(done),
             "wall_s": int((folder / "wall_ms").read_text()) / 1000}
    if done:
        steps = sum(r["epochs"] * batches for r in done)
        slowest = max(r["train_seconds"] for r in done)  # they ran side by side
        entry["aggregate_steps_per_s"] = round(steps / slowest, 2)
        entry["runs_per_hour_full_resnet18"] = round(3600 * steps / slowest / full_steps, 3)
    result["by_concurrent_runs"][folder.name[1:]] = entry
(out / "concurrency.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result["by_concurrent_runs"], indent=1))
EOF

# 5. Every model family, a few steps in bf16, without and with compile (time budget).
"$PYTHON" - "$OUT" "$DEVICE" "$COMPILE" "$BUDGET" "$SMOKE" "$DATA" <<'EOF'
import subprocess, sys, time
from pathlib import Path

import yaml

out, device, compile_value, budget, smoke, data = sys.argv[1:7]
deadline = time.time() + float(budget)
conf = Path("conf")
datasets = {}
for path in sorted((conf / "dataset").glob("*.yaml")):
    spec = yaml.safe_load(path.read_text())
    datasets.setdefault(spec.get("modality", "image"), []).append(path.stem)
rows = ["model\tdataset\tcompile\tstatus\tseconds\tlast_line"]
for path in sorted((conf / "model").glob("*.yaml")):
    spec = yaml.safe_load(path.read_text())
    kinds = spec.get("modalities", ["image"])
    dataset = "cifar10" if "image" in kinds else next(
        (datasets[k][0] for k in kinds if datasets.get(k)), None)
    for compiled in ("false", compile_value):
        if dataset is None or time.time() > deadline:
            why = "no data set of its kind" if dataset is None else "not run (time budget)"
            rows.append(f"{path.stem}\t{dataset}\t{compiled}\tskipped\t0\t{why}")
            continue
        command = [sys.executable, "-m", "lerac.suite.train", f"model={path.stem}",
                   f"dataset={dataset}", f"trainer.device={device}", "trainer.precision=bf16",
                   f"trainer.compile={compiled}", "trainer.max_epochs=1",
                   "trainer.limit_eval_batches=2", "trainer.progress=false", "logger=none",
                   "overwrite=true", f"paths.data_dir={data}",
                   f"paths.output_dir={out}/families", f"tag=compile_{compiled}",
                   *smoke.split()]
        if path.stem != "resnet18":
            command = [c for c in command if not c.startswith("model.width")]
        start = time.time()
        try:
            run = subprocess.run(command, capture_output=True, text=True,
                                 timeout=max(30, deadline - time.time() + 60))
            status = "ok" if run.returncode == 0 else f"rc={run.returncode}"
            text = (run.stdout + run.stderr).strip()
        except subprocess.TimeoutExpired as err:
            status, text = "timeout", str(err)
        seconds = time.time() - start
        log = Path(out) / "logs" / f"family_{path.stem}_compile_{compiled}.log"
        log.write_text(text + "\n")
        # The run's outcome: its "test acc" line, else its "error:" line, else the last.
        lines = text.splitlines() or [""]
        key = "test acc" if status == "ok" else "error"
        last = next((ln for ln in reversed(lines) if key in ln), lines[-1])[:200]
        rows.append(f"{path.stem}\t{dataset}\t{compiled}\t{status}\t{seconds:.1f}\t{last}")
        print(rows[-1], flush=True)
(Path(out) / "families.tsv").write_text("\n".join(rows) + "\n")
EOF
echo "gpu_check: done; figures in $OUT"

#!/usr/bin/env bash
# Side-by-side on one GPU, in one call: the upstream train_gpt.py and our `train` stage, 200 steps
# of the baseline, identical hyperparameters, the same shards (wiki part-00 for training, part-07
# for validation, sp1024). Runs ON the GPU machine from the repo root, after
# scripts/device-build.sh prepared .device/ and .ref/ here (docs/GPU.md):
#
#   run(command="bash bench/train_side_by_side.sh", carry=[".device", ".ref"])
#
# Env: STEPS (200), WARMDOWN (100), OURS_ONLY=1 (skip the reference), EXTRA_PARAMS (JSON merged
# into our params, e.g. '{"precision":"bf16"}'). Results go to $OUT (or bench/.work/side_by_side).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-200}
WARMDOWN=${WARMDOWN:-100}
RESULTS=${OUT:-bench/.work/side_by_side}
WORK=/tmp/pgolf-sbs
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("python torch", torch.__version__)'

# 1. Data: our tokenize stage over part-07 (val: all its documents) then part-00 (train).
source bench/device_data.sh
ls -la "$DATA"
ldd target/release/train | grep -E "not found|torch_cuda" || true

# 2. Ours: the same hyperparameters (the stage's defaults are upstream's), a few undone warm-up
#    steps instead of the compile warm-up.
python3 - "$STEPS" "$WARMDOWN" "${EXTRA_PARAMS:-}" > "$WORK/train.json" <<'EOF'
import json, sys
p = {"iterations": int(sys.argv[1]), "warmdown_iters": int(sys.argv[2]), "max_wallclock_seconds": 0.0,
     "val_loss_every": 0, "train_log_every": 20, "warmup_steps": 5}
p.update(json.loads(sys.argv[3] or "{}"))
print(json.dumps(p))
EOF
cat "$WORK/train.json"
rm -rf "$WORK/ours"
timeout 300 target/release/train --out "$WORK/ours" --in data="$DATA" --params "$WORK/train.json" --device cuda | tee "$RESULTS/ours.txt" || echo "our run failed"
cp "$WORK/ours/manifest.json" "$RESULTS/ours_manifest.json" || true
cp "$WORK/ours/metrics.parquet" "$RESULTS/ours_metrics.parquet" || true

# 3. The reference: upstream train_gpt.py, torch.compile, 1 GPU (grad_accum 8), final val only.
if [ -z "${OURS_ONLY:-}" ]; then
  mkdir -p "$WORK/ref" && cp .ref/train_gpt.py "$WORK/ref/"
  (cd "$WORK/ref" && DATA_PATH="$DATA" TOKENIZER_PATH="$DATA/tokenizer.model" RUN_ID=ref \
    ITERATIONS=$STEPS WARMDOWN_ITERS=$WARMDOWN VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=20 MAX_WALLCLOCK_SECONDS=0 \
    timeout ${REF_TIMEOUT:-380} python3 train_gpt.py 2>&1 | grep -v "^$" | tail -n 40) | tee "$RESULTS/ref.txt" || echo "reference run failed"
  cp "$WORK/ref/logs/ref.txt" "$RESULTS/ref_full.log" 2>/dev/null || true
fi

# 4. The table.
python3 - "$RESULTS" "$STEPS" <<'EOF'
import json, re, sys
from pathlib import Path
res, steps = Path(sys.argv[1]), int(sys.argv[2])
def final(text):
    m = re.findall(rf"step:{steps}/{steps} val_loss:(\S+) val_bpb:(\S+) train_time:(\d+)ms step_avg:(\S+)ms", text)
    peak = re.findall(r"peak memory allocated: (\d+) MiB reserved: (\d+) MiB", text)
    return (m[-1] if m else None), (peak[-1] if peak else None)
ours, ours_peak = final((res / "ours.txt").read_text())
rows = []
if (res / "ref.txt").exists():
    ref, ref_peak = final((res / "ref.txt").read_text())
    if ref:
        rows.append(("reference train_gpt.py", float(ref[3]), float(ref[0]), float(ref[1]), ref_peak))
if (res / "ours_manifest.json").exists():
    h = json.loads((res / "ours_manifest.json").read_text())["headline"]
    rows.append(("ours (train stage)", h["ms_per_step"], h["val_loss"], h["val_bpb"], ours_peak))
print(f"| run | ms/step | val_loss @{steps} | val_bpb @{steps} | peak MiB alloc / reserved |")
print("|---|---|---|---|---|")
for name, ms, loss, bpb, peak in rows:
    print(f"| {name} | {ms:.1f} | {loss:.4f} | {bpb:.4f} | {peak[0] + ' / ' + peak[1] if peak else '-'} |")
if len(rows) == 2:
    print(f"ratio ours/reference ms/step: {rows[1][1] / rows[0][1]:.3f}; |Δ val_bpb| = {abs(rows[1][3] - rows[0][3]):.4f}")
EOF

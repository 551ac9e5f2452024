#!/usr/bin/env bash
# Our SP8192 presets' training on one GPU for a short budget (no record script beside them: the
# side by side against R0427 is bench work still to do, see bench/train.md §3d):
#
#   scripts/device-build.sh                                                        # here
#   run(command="BUDGET=45 bash bench/sp8192_gpu_smoke.sh", carry=[".device", ".ref"])   # there
#
# For each of PRESETS (default "r0427 headwise-gate"): the preset's tokenize (CaseOps on the
# carried part-00 / part-07, val = the first VAL_DOCS documents) and train from pipeline.yaml, with
# `max_wallclock_seconds=BUDGET` (the schedule's fractions scale with it: the loop switches on at
# 0.35 of it) and no intermediate validation. Prints per preset: steps, ms/step before and after
# the depth recurrence switched on (from metrics.parquet), peak GPU memory, CUDA-graph recaptures
# for larger batches of documents, and pre-quant val_bpb (raw bytes). EXTRA: one more `--set`
# (e.g. EXTRA=train.warmup_steps=2 for a shorter call).
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-45}
VAL_DOCS=${VAL_DOCS:-50}
PRESETS=${PRESETS:-"r0427 headwise-gate"}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
date -u +"date: %Y-%m-%d %H:%M UTC"
source bench/device_unpack.sh >/dev/null || exit 1
W=${WORK:-/tmp/pgolf-sp8192}
mkdir -p "$W"
sed -e "s#\.\./shared/data/enwiki2015/#$PWD/.device/data/#g" -e "s#\.\./shared/tokenizers/#$PWD/.device/data/#g" \
  pipeline.yaml > "$W/pipeline.yaml"
for preset in $PRESETS; do
  echo "=== $preset: ${BUDGET}s of training"
  t0=$(date +%s)
  target/release/pipeline -f "$W/pipeline.yaml" run train --profile "$preset" \
    --set "tokenize.val_docs=$VAL_DOCS" --set "train.max_wallclock_seconds=$BUDGET" \
    --set "train.val_loss_every=0" --set "train.train_log_every=25" ${EXTRA:+--set "$EXTRA"} || { echo "$preset: FAILED"; continue; }
  echo "$preset: chain to train in $(( $(date +%s) - t0 )) s"
  run=$(ls -td "$W"/out/train/*/ | head -1)
  grep -E "cuda_graph|layer_loop|warmup|stopping_early" "$run/train.log"
  python3 - "$run" "$preset" <<'EOF'
import json, sys
import pyarrow.parquet as pq
run, preset = sys.argv[1], sys.argv[2]
h = json.load(open(f"{run}/manifest.json"))["headline"]
rows = pq.read_table(f"{run}/metrics.parquet").to_pylist()
steps = [r for r in rows if r.get("step_ms") is not None and r.get("train_loss") is not None]
switch = h.get("recurrence_step")
def mean(rs):
    rs = rs[1:] if len(rs) > 2 else rs  # the first step after a (re)capture pays one-time costs
    return sum(r["step_ms"] for r in rs) / max(len(rs), 1)
before = [r for r in steps if switch is None or r["step"] <= switch]
after = [r for r in steps if switch is not None and r["step"] > switch]
print(f"| {preset} | {h['steps']} | {h['ms_per_step']:.1f} | {mean(before):.1f} | "
      f"{mean(after):.1f} | {switch} | {h.get('peak_gpu_mib')} | {h['val_bpb']:.4f} |")
EOF
done
echo "| preset | steps | ms/step (all) | before the loop | after | loop from step | peak MiB | pre-quant val_bpb |"

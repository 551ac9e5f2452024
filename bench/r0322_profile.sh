#!/usr/bin/env bash
# On the GPU machine (docs/GPU.md): where the time of our `r0322` step goes.
#   1. Two eager steps of the r0322 preset's train stage under libtorch's profiler (eager, so each
#      kernel maps to the op that launched it), split by bench/trace_summary.py into kernel classes,
#      kernels and launching ops;
#   2. the same preset with its CUDA graph and phase timing (a device sync after each phase of a
#      step: data, micro-batches, optimizers), so the optimizers' and the loop's share is seen.
#   run(command="bash bench/r0322_profile.sh", carry=[".device", ".ref"])
# Env: STEPS (graphed steps, default 12), OUT (results folder).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
RESULTS=${OUT:-bench/.work/r0322-profile}
W=/tmp/pgolf-r0322-profile
mkdir -p "$RESULTS" "$W"
source bench/device_unpack.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

sed -e "s#\.\./shared/data/enwiki2015/#$PWD/.device/data/#g" -e "s#\.\./shared/tokenizers/#$PWD/.device/data/#g" \
  pipeline.yaml > "$W/pipeline.yaml"
P=(target/release/pipeline -f "$W/pipeline.yaml")
COMMON=(--profile r0322 --set tokenize.val_docs=50 --set train.val_loss_every=0 --set train.train_log_every=1
        --set train.max_wallclock_seconds=0 --set train.warmdown_iters=0)
"${P[@]}" run tokenize "${COMMON[@]}" >/dev/null || exit 1

PGOLF_PROFILE_TRACE="$RESULTS/trace.json" PGOLF_PROFILE_FROM=3 PGOLF_PROFILE_STEPS=2 \
  "${P[@]}" run train "${COMMON[@]}" --set train.iterations=6 --set train.cuda_graphs=false >"$RESULTS/eager.txt" 2>&1 \
  || { tail -n 20 "$RESULTS/eager.txt"; exit 1; }
grep -E "step:[3-6]/" "$W"/out/train/*/train.log | head -n 8
python3 bench/trace_summary.py "$RESULTS/trace.json" 2 | tee "$RESULTS/summary.txt"
gzip -f "$RESULTS/trace.json"
rm -rf "$W"/out/train

"${P[@]}" run train "${COMMON[@]}" --set "train.iterations=${STEPS:-12}" --set train.phase_timing=true \
  >"$RESULTS/graphed.txt" 2>&1 || { tail -n 20 "$RESULTS/graphed.txt"; exit 1; }
grep -E "^step:" "$W"/out/train/*/train.log | tail -n 8
rm -rf "$W"/out/train
"${P[@]}" run train "${COMMON[@]}" --set "train.iterations=${STEPS:-12}" >"$RESULTS/graphed_plain.txt" 2>&1 \
  || { tail -n 20 "$RESULTS/graphed_plain.txt"; exit 1; }
echo "without phase timing:"
grep -E "^step:" "$W"/out/train/*/train.log | tail -n 3

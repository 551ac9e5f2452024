#!/usr/bin/env bash
# On the GPU machine (docs/GPU.md): records two steps of our train stage (baseline config, eager
# micro-batches so each kernel maps to the op that launched it) with libtorch's profiler and splits
# their GPU time by kernel class, kernel and launching op (bench/trace_summary.py) — the same
# classes as bench/profile_micro_batch.py prints for upstream.
#   run(command="bash bench/train_profile.sh", carry=[".device", ".ref"])
# Env: EXTRA_PARAMS (JSON object merged into the train params, e.g. '{"formulation": "literal"}').
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/device_data.sh
RESULTS=${OUT:-bench/.work/profile}
mkdir -p "$RESULTS"
python3 - "$WORK/profile.json" "${EXTRA_PARAMS:-{\}}" <<'PY'
import json, sys
params = {"iterations": 6, "warmdown_iters": 0, "max_wallclock_seconds": 0.0, "val_loss_every": 0,
          "val_max_tokens": 1048576, "train_log_every": 1, "warmup_steps": 2, "cuda_graphs": False}
params.update(json.loads(sys.argv[2]))
json.dump(params, open(sys.argv[1], "w"))
PY
rm -rf "$WORK/profile"
PGOLF_PROFILE_TRACE="$RESULTS/trace.json" PGOLF_PROFILE_FROM=3 PGOLF_PROFILE_STEPS=2 \
  "${BIN:-target/release}/train" --out "$WORK/profile" --in data="$DATA" --params "$WORK/profile.json" --device cuda \
  > "$RESULTS/train.txt" 2>&1 || { tail -n 20 "$RESULTS/train.txt"; exit 1; }
grep -E "step:[345]/" "$WORK/profile/train.log" || true
python3 bench/trace_summary.py "$RESULTS/trace.json" 2 | tee "$RESULTS/summary.txt"
gzip -f "$RESULTS/trace.json"

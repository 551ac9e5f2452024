#!/usr/bin/env bash
# On the GPU machine (docs/GPU.md): short runs of our train stage, baseline config, in each
# execution variant — the literal or the fast formulation, eager or CUDA-graph micro-batches — to
# see what the step costs and whether the host (kernel launches) or the GPU is the bottleneck.
# Writes $OUT/variants.md (the table), $OUT/variants.log (the runs' logs) and
# $WORK/best_params.json (the fastest variant that ran, for train_side_by_side.sh).
#   run(command="bash bench/train_variants.sh", carry=[".device", ".ref"])
# Env: STEPS (30 timed steps per variant, after 3 undone warm-up steps).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-30}
RESULTS=${OUT:-bench/.work/variants}
mkdir -p "$RESULTS"
source bench/device_data.sh
echo "| formulation | cuda_graphs | ms/step | host ms/step | train loss @$STEPS | peak MiB |" > "$RESULTS/variants.md"
echo "|---|---|---|---|---|---|" >> "$RESULTS/variants.md"
best=""; best_ms=1e9
for variant in "literal false" "literal true" "fast false" "fast true"; do
  set -- $variant
  name="$1-graphs_$2"
  params="{\"iterations\": $STEPS, \"warmdown_iters\": 0, \"max_wallclock_seconds\": 0.0, \"val_loss_every\": 0,
    \"val_max_tokens\": 1048576, \"train_log_every\": 1, \"warmup_steps\": 3, \"formulation\": \"$1\", \"cuda_graphs\": $2}"
  echo "$params" > "$WORK/$name.json"
  rm -rf "$WORK/$name"
  if timeout 150 target/release/train --out "$WORK/$name" --in data="$DATA" --params "$WORK/$name.json" --device cuda > "$WORK/$name.txt" 2>&1; then
    python3 - "$WORK/$name" "$1" "$2" "$STEPS" >> "$RESULTS/variants.md" <<'PY'
import json, re, sys
from pathlib import Path
run, formulation, graphs, steps = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
h = json.loads((run / "manifest.json").read_text())["headline"]
log = (run / "train.log").read_text()
host = [float(x) for x in re.findall(r"host_ms:(\S+)", log)][1:]  # the first step includes set-up
print(f"| {formulation} | {graphs} | {h['ms_per_step']:.1f} | {sum(host) / max(len(host), 1):.1f} | {h['final_train_loss']:.4f} | {h['peak_gpu_mib']} |")
PY
    ms=$(python3 -c "import json; print(json.load(open('$WORK/$name/manifest.json'))['headline']['ms_per_step'])")
    if python3 -c "import sys; sys.exit(0 if $ms < $best_ms else 1)"; then best_ms=$ms; best="{\"formulation\": \"$1\", \"cuda_graphs\": $2}"; fi
  else
    echo "| $1 | $2 | failed: $(tail -n 2 "$WORK/$name.txt" | tr '\n' ' ' | cut -c1-200) | | | |" >> "$RESULTS/variants.md"
  fi
  { echo "=== $name"; cat "$WORK/$name.txt"; } >> "$RESULTS/variants.log"
done
[ -n "$best" ] || best="{}"
echo "$best" > "$WORK/best_params.json"
cat "$RESULTS/variants.md"
echo "best: $best at $best_ms ms/step"

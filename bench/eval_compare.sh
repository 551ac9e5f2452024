#!/usr/bin/env bash
# Scores one artifact with ttt-eval and the same decoded weights with the upstream Python eval
# functions, in one call, and prints a markdown table (bench/eval.md keeps the measured ones).
#
#   bench/eval_compare.sh DATA_DIR ARTIFACT_DIR [DEVICE] [MODES]
#
# DATA_DIR: a tokenize output (val shards, docs.parquet, tokenizer.model; sp tokenizer).
# ARTIFACT_DIR: a quantize-pack output (artifact.pgq). DEVICE: cpu (default) or cuda.
# MODES: ttt-eval modes to time besides the upstream-compatible flat run (default "flat sliding";
#        add "ttt" for score-first TTT).
# Needs .ref/ (bench/eval_ref.sh) and the release ttt-eval binary (TTT_EVAL overrides its path).
# Fails if our upstream-compatible flat BPB under `compute: upstream` and upstream eval_val's (its model
# built as train_gpt.py builds it) differ by more than 1e-4. The table is also written to WORK/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/eval_compare.sh DATA_DIR ARTIFACT_DIR [DEVICE] [MODES]" >&2; exit 2; }
data=$(realpath "$1"); artifact=$(realpath "$2"); device=${3:-cpu}; modes=${4:-"flat sliding"}
bin=${TTT_EVAL:-target/release/ttt-eval}  # on a GPU machine: source bench/device_unpack.sh first
py=${PYTHON:-.venv/bin/python}; [ -x "$py" ] || py=python3
work=${EVAL_WORK:-target/eval-bench/$device-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$work"

run_eval() {  # name params-json
  echo "$2" > "$work/$1.json"
  echo "eval_compare: ttt-eval $1 ($2)" >&2
  "$bin" --out "$work/$1" --in "data=$data" --in "artifact=$artifact" --params "$work/$1.json" --device "$device" \
    >"$work/$1.log" 2>&1 || { tail -n 5 "$work/$1.log" >&2; exit 1; }
}

# 1. Ours, scored like upstream eval_val (truncated stream, LUT bytes): with upstream's eval
#    numerics (`compute: upstream`, the agreement check), and with our native ones (the decoded
#    weights are exported from this run).
run_eval upstream '{"mode": "flat", "upstream_compatible": true, "compute": "upstream"}'
run_eval upstream_native '{"mode": "flat", "upstream_compatible": true, "export_decoded": true}'
# 2. Upstream's functions on those very weights, its model built as train_gpt.py builds it (flat
#    eval_val; the SW record's sliding eval, timed).
"$py" bench/eval_upstream.py --data "$data" --weights "$work/upstream_native/decoded.safetensors" \
  --config "$work/upstream_native/config.json" --device "$device" --build train_gpt --sliding --stride 64 | tail -n 1 > "$work/python.json"
# 3. Our own modes (every target, raw UTF-8 bytes).
for mode in $modes; do
  case $mode in
    flat) run_eval flat '{"mode": "flat"}' ;;
    sliding) run_eval sliding '{"mode": "sliding", "stride": 64}' ;;
    ttt) run_eval ttt '{"mode": "ttt", "stride": 64}' ;;
    lora) run_eval lora '{"mode": "lora"}' ;;
    *) echo "eval_compare: unknown mode $mode" >&2; exit 2 ;;
  esac
done

echo "eval_compare: upstream Python done" >&2
"$py" - "$work" "$device" <<'PY' | tee "$work/table.md"
import json, sys
from pathlib import Path
work, device = Path(sys.argv[1]), sys.argv[2]
py = json.loads((work / "python.json").read_text())
rows = []
def ours(name, label):
    m = json.loads((work / name / "manifest.json").read_text())["headline"]
    rows.append((label, m["val_bpb"], m["val_loss"], m["scored_targets"], m["byte_denominator"].split(" ")[0], m["eval_seconds"], m["tokens_per_second"]))
    return m
up = ours("upstream", "ttt-eval flat, upstream_compatible, compute upstream")
ours("upstream_native", "ttt-eval flat, upstream_compatible, native numerics")
f = py["flat"]
rows.append((f"upstream eval_val (Python, {py['build']} build)", f["val_bpb"], f["val_loss"], f["scored_tokens"], "lut", f["seconds"], f["scored_tokens"] / f["seconds"]))
for name, label in [("flat", "ttt-eval flat"), ("sliding", "ttt-eval sliding s64"), ("ttt", "ttt-eval score-first TTT s64"), ("lora", "ttt-eval LoRA TTT")]:
    if (work / name / "manifest.json").exists():
        ours(name, label)
if "sliding" in py:
    s = py["sliding"]
    rows.append(("upstream eval_val_sliding s64 (Python, SW record)", s["val_bpb"], s["val_loss"], "(version A)", "lut", s["seconds"], s["tokens_per_second"]))
print(f"device: {device}; torch {py['torch']}; seq_len {py['seq_len']}; work dir {work}\n")
print("| evaluation | val_bpb | val_loss | scored targets | bytes | seconds | tokens/s |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.6f} | {r[2]:.6f} | {r[3]} | {r[4]} | {r[5]:.2f} | {r[6]:,.0f} |")
diff = abs(up["val_bpb"] - f["val_bpb"])
print(f"\nflat BPB, ours (upstream_compatible, compute upstream) vs upstream eval_val: |Δ| = {diff:.2e} (must be ≤ 1e-4)")
if up["scored_targets"] != f["scored_tokens"]:
    sys.exit(f"scored-token counts differ: {up['scored_targets']} vs {f['scored_tokens']}")
sys.exit(0 if diff <= 1e-4 else 1)
PY

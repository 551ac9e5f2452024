#!/usr/bin/env bash
# The flat-BPB agreement diagnostic, for one device call (bench/eval.md, issue #5):
#
#   bench/eval_diag.sh DATA_DIR ARTIFACT_DIR [DEVICE]
#
# Runs ttt-eval (upstream_compatible flat) on ARTIFACT_DIR under each precision policy — native
# (bf16, the default formulation: what bench/eval_gpu.sh measured), native literal formulation, `compute: upstream`
# (upstream's eval numerics op for op) and f32 — dumping every linear layer's input for the first
# 4 windows, then bench/eval_diag.py scores the exported decoded weights with upstream's eval_val
# under several constructions of upstream's model and prints BPB, |Δ| and the per-layer tables.
# Exit status 1 if `upstream` and upstream's train_gpt construction differ by more than 1e-4.
#
# On the GPU box: `source bench/device_unpack.sh` first (binaries in target/release, libtorch on
# LD_LIBRARY_PATH, .venv/bin/python); .ref/ from bench/eval_ref.sh. COMPILE=0 skips the
# torch.compile'd upstream variant (~1 min of compilation). Work dir: $OUT/eval_diag or
# target/eval-diag/<time>.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/eval_diag.sh DATA_DIR ARTIFACT_DIR [DEVICE]" >&2; exit 2; }
data=$(realpath "$1"); artifact=$(realpath "$2"); device=${3:-cuda}
bin=${TTT_EVAL:-target/release/ttt-eval}
py=${PYTHON:-.venv/bin/python}; [ -x "$py" ] || py=python3
[ -x "$bin" ] || { echo "eval_diag: $bin is missing (source bench/device_unpack.sh, or build ttt-eval)" >&2; exit 1; }
[ -f .ref/train_gpt.py ] || { echo "eval_diag: .ref/train_gpt.py is missing: run bench/eval_ref.sh here and carry .ref" >&2; exit 1; }
# Large files (decoded weights, activation dumps) stay in the work dir; with $OUT set, the work dir
# is under /tmp and only the small ones (params, manifests, summaries, report.md) go to $OUT/eval_diag.
stamp=$(date +%Y%m%d-%H%M%S)
if [ -n "${OUT:-}" ]; then work=/tmp/pgolf-eval-diag/$stamp; else work=target/eval-diag/$stamp; fi
mkdir -p "$work"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
date -u +"date: %Y-%m-%d %H:%M UTC"

run_eval() {  # name extra-params-json
  echo "{\"mode\": \"flat\", \"upstream_compatible\": true, \"dump_activations\": 4 $2}" > "$work/$1.json"
  "$bin" --out "$work/$1" --in "data=$data" --in "artifact=$artifact" --params "$work/$1.json" --device "$device" \
    >"$work/$1.log" 2>&1 || { tail -n 5 "$work/$1.log" >&2; exit 1; }
}
run_eval upstream ', "compute": "upstream"'
run_eval native ', "export_decoded": true'
run_eval native_literal ', "formulation": "literal"'
run_eval f32 ', "precision": "f32"'

compile=(); [ "${COMPILE:-1}" = 1 ] && [ "$device" != cpu ] && compile=(--compile)
status=0
"$py" bench/eval_diag.py --data "$data" --weights "$work/native/decoded.safetensors" --config "$work/native/config.json" \
  --device "$device" "${compile[@]}" --target "${TARGET:-train_gpt}" --report "$work/report.md" \
  --ours "upstream=$work/upstream" --ours "native=$work/native" --ours "native_literal=$work/native_literal" --ours "f32=$work/f32" \
  2>&1 | grep -v -e "UserWarning" -e "warnings.warn" -e "with torch.autocast" || status=$?
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/eval_diag"
  (cd "$work" && find . \( -name '*.json' -o -name '*.md' -o -name '*.log' \) -exec cp --parents {} "$OUT/eval_diag" \;)
  echo "eval_diag: report.md (with the per-layer tables), manifests and logs in \$OUT/eval_diag"
fi
exit $status

#!/usr/bin/env bash
# The GPU eval benchmark, for one device call (the lead runs it; it makes no network access):
#
#   bench/eval_gpu.sh DATA_DIR ARTIFACT_DIR [MODES]
#
# DATA_DIR: the tokenize output of the wiki corpus (sp1024); ARTIFACT_DIR: the quantize-pack output
# of a model from the `train` stage. MODES default "flat sliding ttt" (score-first TTT over the
# whole val stream takes much longer than flat/sliding: drop it or use a smaller val split if the
# call's time limit is near).
#
# Prerequisites on the device machine: target/release/ttt-eval built with CUDA torch, .ref/ from
# bench/eval_ref.sh (carry it: it is git-ignored), and a Python with torch + sentencepiece
# (PYTHON=..., default .venv/bin/python). Results: the markdown table on stdout, and every run
# directory (manifests, summary.json, results.parquet) under $OUT/eval (or target/eval-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/eval_gpu.sh DATA_DIR ARTIFACT_DIR [MODES]" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
date -u +"date: %Y-%m-%d %H:%M UTC"
[ -d .ref ] || { echo "eval_gpu: .ref/ is missing: run bench/eval_ref.sh here and carry .ref" >&2; exit 1; }
if [ -n "${OUT:-}" ]; then export EVAL_WORK="$OUT/eval"; fi
bench/eval_compare.sh "$1" "$2" cuda "${3:-flat sliding ttt}" 2>&1 | grep -v -e "UserWarning" -e "torch.autocast"

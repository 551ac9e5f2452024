#!/usr/bin/env bash
# The GPU eval benchmark, for one device call (the lead runs it; it makes no network access):
#
#   bench/eval_gpu.sh DATA_DIR ARTIFACT_DIR [MODES]
#
# DATA_DIR: the tokenize output of the wiki corpus (sp1024); ARTIFACT_DIR: the quantize-pack output
# of a model from the `train` stage. MODES default "flat sliding ttt". With a val split of ~1,000
# wiki docs (~5.35 M targets) on one H100 the whole call is ~4 min: flat ~3 s each (ours twice,
# upstream's once), sliding s64 ~35 s (ours) and ~60 s (upstream's SW record), score-first TTT
# (REFERENCE.md §5.3 defaults: 32,768-token chunks, 3 epochs, SGD 0.002) ~1–2 min (bench/eval.md
# has the estimate), plus process starts.
#
# Prerequisites on the device machine: `source bench/device_unpack.sh` (binaries from
# scripts/device-build.sh into target/release, libtorch on LD_LIBRARY_PATH, .venv/bin/python), .ref/
# from bench/eval_ref.sh (train_gpt.py and the SW record's; carry it: it is git-ignored), and a
# Python with torch + sentencepiece (PYTHON=..., default .venv/bin/python). Results: the markdown table on stdout, and every run
# directory (manifests, summary.json, results.parquet) under $OUT/eval (or target/eval-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/eval_gpu.sh DATA_DIR ARTIFACT_DIR [MODES]" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
date -u +"date: %Y-%m-%d %H:%M UTC"
for f in .ref/train_gpt.py .ref/sw_train_gpt.py; do
  [ -f "$f" ] || { echo "eval_gpu: $f is missing: run bench/eval_ref.sh here and carry .ref" >&2; exit 1; }
done
# The work dir keeps the large files (decoded weights); with $OUT set only the small ones (params,
# manifests, summaries, per-document results, logs, table.md) go to $OUT/eval.
export EVAL_WORK=${EVAL_WORK:-/tmp/pgolf-eval/$(date +%Y%m%d-%H%M%S)}
status=0
bench/eval_compare.sh "$1" "$2" cuda "${3:-flat sliding ttt}" 2>&1 | grep -v -e "UserWarning" -e "torch.autocast" || status=$?
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/eval"
  (cd "$EVAL_WORK" && find . \( -name '*.json' -o -name '*.md' -o -name '*.log' -o -name '*.parquet' \) -exec cp --parents {} "$OUT/eval" \;)
fi
exit $status

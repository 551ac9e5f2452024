#!/usr/bin/env bash
# Measures a no-op `pipeline run` (every node fresh) on a fresh project shaped like pipeline.yaml:
# the same nine nodes and edges, each run by the contract-honouring test stage `echo-stage` (the ML
# stages would only add their first-run time, not no-op time), the raw inputs the real wiki corpus
# (8 Parquet parts, 120 MB) and the sp1024 tokenizer from ../shared.
#
#   bench/pipeline_noop.sh [RUNS]      (default 11; prints the median, min and max in ms)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${1:-11}
shared=$(cd .. && pwd)/shared

cargo build --release --quiet -p pipeline -p pgolf-e2e
work=bench/.work/pipeline_noop
rm -rf "$work"
mkdir -p "$work"
cat > "$work/pipeline.yaml" <<YAML
stages:
  tokenize:
    exe: echo-stage
    inputs:
      documents: {files: ["$shared/data/enwiki2015/part-*.parquet"]}
      tokenizer: {file: $shared/tokenizers/fineweb_1024_bpe.model}
  train: {exe: echo-stage, inputs: {data: tokenize}}
  ema-finalize: {exe: echo-stage, inputs: {train: train}}
  gptq-calibrate: {exe: echo-stage, inputs: {weights: ema-finalize, data: tokenize}}
  quantize-pack: {exe: echo-stage, inputs: {weights: ema-finalize, hessians: gptq-calibrate}}
  eval-flat: {exe: echo-stage, inputs: {artifact: quantize-pack, data: tokenize}}
  eval-sliding: {exe: echo-stage, inputs: {artifact: quantize-pack, data: tokenize}}
  ngram: {exe: echo-stage, inputs: {artifact: quantize-pack, data: tokenize}}
  report:
    exe: echo-stage
    inputs:
      train: {gather: train}
      artifact: {gather: quantize-pack}
      eval-flat: {gather: eval-flat}
      eval-sliding: {gather: eval-sliding}
      ngram: {gather: ngram}
YAML

pipeline="$root/target/release/pipeline"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

cd "$work"
start=$(date +%s%N)
"$pipeline" run > first-run.txt
echo "first run (hashes 120 MB, runs 9 stages): $(ms "$start") ms"
grep -c ' ran ' first-run.txt > /dev/null

times=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "$pipeline" run > noop-run.txt
  times+=("$(ms "$start")")
  if grep -q ' ran ' noop-run.txt; then
    echo "error: a no-op run ran a stage:" >&2
    cat noop-run.txt >&2
    exit 1
  fi
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "no-op run over $runs runs: median ${sorted[$((runs / 2))]} ms, min ${sorted[0]} ms, max ${sorted[$((runs - 1))]} ms"

start=$(date +%s%N)
"$pipeline" status > /dev/null
echo "status (all fresh): $(ms "$start") ms"

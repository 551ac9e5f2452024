#!/usr/bin/env bash
# The whole evaluation benchmark of bench/eval.md in one GPU call: tokenize wiki (val = the first
# 1,000 docs of part-07, train = part-00), 200 baseline steps of our train stage, ema-finalize
# (auto), quantize-pack (int8 + zstd-22), then bench/eval_gpu.sh (flat, sliding s64, score-first
# TTT, the agreement with upstream) and, if time is left, bench/eval_diag.sh (COMPILE=0).
#   scripts/device-build.sh && bash bench/eval_ref.sh          # here
#   run(command="bash bench/eval_gpu_chain.sh", carry=[".device", ".ref"])
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
source bench/device_unpack.sh >/dev/null
W=${WORK:-/tmp/pgolf-eval-chain}
mkdir -p "$W"
echo '{"val_docs": 1000}' > "$W/tok.json"
echo '{"iterations": 200, "warmdown_iters": 100, "max_wallclock_seconds": 0, "val_loss_every": 0, "warmup_steps": 3}' > "$W/train.json"
target/release/tokenize --out "$W/tok" --in val_documents=.device/data/part-07.parquet \
  --in documents=.device/data/part-00.parquet --in tokenizer=.device/data/fineweb_1024_bpe.model \
  --params "$W/tok.json" > "$W/tok.txt" 2>&1 || { tail -3 "$W/tok.txt"; exit 1; }
target/release/train --out "$W/train" --in data="$W/tok" --params "$W/train.json" --device cuda \
  > "$W/train.txt" 2>&1 || { tail -5 "$W/train.txt"; exit 1; }
grep -E "step:200|peak|formulation" "$W/train/train.log"
target/release/ema-finalize --out "$W/ema" --in train="$W/train" 2>&1 | tail -2
target/release/quantize-pack --out "$W/q8" --in weights="$W/ema" > "$W/q8.txt" 2>&1 || { tail -3 "$W/q8.txt"; exit 1; }
echo "prepared in $(( $(date +%s) - started )) s"
bash bench/eval_gpu.sh "$W/tok" "$W/q8" 2>&1 | tail -30
if [ $(( $(date +%s) - started )) -lt 390 ]; then
  COMPILE=0 timeout $(( 570 - ($(date +%s) - started) )) bash bench/eval_diag.sh "$W/tok" "$W/q8" 2>&1 | tail -40
fi

#!/usr/bin/env bash
# R0322 side by side on one GPU: the record's own script and our `r0322` preset, the same sp1024
# wiki shards, the same wall-clock training budget. Runs ON the GPU machine from the repo root,
# after scripts/device-build.sh prepared .device/ and .ref/ here (docs/GPU.md):
#
#   run(command="SIDE=ref bash bench/r0322_side_by_side.sh", carry=[".device", ".ref"])
#   run(command="SIDE=ours bash bench/r0322_side_by_side.sh", carry=[".device", ".ref"])
#
# SIDE=ref: the record script (.ref/r0322_train_gpt.py, read from the mirror by device-build),
#   torch.compile on, 1 GPU (grad_accum 8). Where the machine has no FlashAttention-3
#   (`flash_attn_interface`), this bench's copy gets a stand-in module whose `flash_attn_func` is
#   PyTorch's SDPA (its flash/cuDNN backends on Hopper) — for that call only; the log says which
#   ran. It trains, applies its EMA, quantizes (GPTQ-lite int6 + zstd-22) and scores sliding s64.
# SIDE=ours: `pipeline run eval-sliding --profile r0322` on a copy of pipeline.yaml whose
#   ../shared paths point at .device/data: the preset's chain (tokenize → train → ema-finalize →
#   gptq-calibrate → quantize-pack → ttt-eval sliding s64), with only the budget overrides below.
# SIDE=both (default): both in one call (needs a budget that fits the 10-minute call).
#
# Both sides tokenize with our tokenize stage and the same params (val: the first VAL_DOCS
# documents of part-07; train: part-00, repeated as the loaders wrap), so their shards are
# identical; the shards' sha256 is printed for the record.
#
# Env: BUDGET (training seconds, 300), VAL_DOCS (300), WARMDOWN_REF / WARMDOWN_OURS (the
# warm-down in iterations, scaled to the budget: R0322's 3500 of its ~7000 steps is half the run,
# so each side gets half its expected steps; defaults from the step times measured on one H200).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
SIDE=${SIDE:-both}
BUDGET=${BUDGET:-300}
VAL_DOCS=${VAL_DOCS:-300}
WARMDOWN_REF=${WARMDOWN_REF:-$((BUDGET * 1000 / 740 / 2))}
WARMDOWN_OURS=${WARMDOWN_OURS:-$((BUDGET * 1000 / 620 / 2))}
RESULTS=${OUT:-bench/.work/r0322}
W=/tmp/pgolf-r0322
mkdir -p "$RESULTS" "$W"
source bench/device_unpack.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("python torch", torch.__version__)'

# The project's pipeline.yaml with the carried data in place of ../shared.
sed -e "s#\.\./shared/data/enwiki2015/#$PWD/.device/data/#g" -e "s#\.\./shared/tokenizers/#$PWD/.device/data/#g" \
  pipeline.yaml > "$W/pipeline.yaml"
SETS=(--set "tokenize.val_docs=$VAL_DOCS")
target/release/pipeline -f "$W/pipeline.yaml" run tokenize --profile r0322 "${SETS[@]}" || exit 1
DATA=$(ls -d "$W"/out/tokenize/*/ | head -1)
sha256sum "$DATA"/fineweb_*.bin | sed "s#$W/##"

if [ "$SIDE" != ours ]; then
  mkdir -p "$W/ref" && cp .ref/r0322_train_gpt.py "$W/ref/train_gpt.py"
  if python3 -c 'import flash_attn_interface' 2>/dev/null; then
    echo "attention: FlashAttention-3 (flash_attn_interface) as the record"
  else
    echo "attention: no flash_attn_interface here; the bench copy's stand-in runs PyTorch SDPA"
    cat > "$W/ref/flash_attn_interface.py" <<'PY'
"""Bench stand-in for FlashAttention-3's flash_attn_func: PyTorch SDPA, [B, T, heads, hd] layout."""
import torch.nn.functional as F


def flash_attn_func(q, k, v, causal=True, **_):
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=causal, enable_gqa=k.size(2) != q.size(2))
    return y.transpose(1, 2)
PY
  fi
  (cd "$W/ref" && DATA_PATH="$DATA" TOKENIZER_PATH="$DATA/tokenizer.model" RUN_ID=ref \
    MAX_WALLCLOCK_SECONDS=$BUDGET WARMDOWN_ITERS=$WARMDOWN_REF VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=50 \
    timeout ${REF_TIMEOUT:-560} python3 train_gpt.py 2>&1 | grep -v "^$" | tail -n 60) | tee "$RESULTS/ref.txt"
  cp "$W/ref/logs/ref.txt" "$RESULTS/ref_full.log" 2>/dev/null || true
fi

if [ "$SIDE" != ref ]; then
  SETS+=(--set "train.max_wallclock_seconds=$BUDGET" --set "train.warmdown_iters=$WARMDOWN_OURS"
         --set "train.val_loss_every=0" --set "train.train_log_every=50")
  start=$(date +%s)
  timeout ${OURS_TIMEOUT:-560} target/release/pipeline -f "$W/pipeline.yaml" run eval-sliding --profile r0322 "${SETS[@]}" \
    2>&1 | grep -v "^step:[0-9]*/[0-9]* train_loss" | tail -n 40 | tee "$RESULTS/ours.txt"
  echo "ours: chain wall time $(( $(date +%s) - start )) s"
  for stage in train ema-finalize gptq-calibrate quantize-pack ttt-eval; do
    for m in "$W"/out/$stage/*/manifest.json; do
      [ -f "$m" ] && python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print('$stage', json.dumps(m['headline']))" "$m"
    done
  done | tee "$RESULTS/ours_headlines.txt"
  cp "$W"/out/train/*/train.log "$RESULTS/ours_train.log" 2>/dev/null || true
fi

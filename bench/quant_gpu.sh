#!/usr/bin/env bash
# Time of gptq-calibrate + quantize-pack on one GPU, for issue #4's acceptance (goal: under 30 s
# each), on models trained by our `train` stage: the 9-layer baseline (9×512, MLP ×2) and an
# 11-layer 3×MLP model (11×512, R0322's shape). Each is trained for a few steps (the time of GPTQ
# does not depend on the weights' quality), then ema-finalize → gptq-calibrate → quantize-pack
# with the baseline int8 + zstd-22 and with full GPTQ int6 + SDClip + shuffle/brotli-11. Prints a
# markdown table (also $OUT/summary.md); every stage output stays under $OUT.
#
# On the GPU machine (binaries and data from scripts/device-build.sh; ~4 min):
#   run(command="source bench/device_unpack.sh && bash bench/quant_gpu.sh", carry=[".device"])
# Here, as a dry run with tiny settings (see the end of bench/quant.md):
#   DEVICE=cpu DATA=<a tokenize output> STEPS=2 DIM=64 HEADS=4 KV_HEADS=2 SEQ_LEN=64 \
#     TRAIN_BATCH_TOKENS=1024 VAL_MAX_TOKENS=1024 CAL_SEQS=4 CAL_BATCH=2 bash bench/quant_gpu.sh
#
# Env (defaults): DEVICE (cuda), DATA (a tokenize output; on cuda default bench/device_data.sh's
# sp1024 wiki), STEPS (20), DIM (512), HEADS (8), KV_HEADS (4), SEQ_LEN (1024), VOCAB (1024),
# TRAIN_BATCH_TOKENS (131072), VAL_MAX_TOKENS (131072), CAL_SEQS (256 calibration sequences),
# CAL_BATCH (16), MODELS ("l9x2:9:2 l11x3:11:3", label:layers:mlp_mult), BIN (target/release),
# OUT (bench/.work/quant_gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-20}
DIM=${DIM:-512}
HEADS=${HEADS:-8}
KV_HEADS=${KV_HEADS:-4}
SEQ_LEN=${SEQ_LEN:-1024}
VOCAB=${VOCAB:-1024}
TRAIN_BATCH_TOKENS=${TRAIN_BATCH_TOKENS:-131072}
VAL_MAX_TOKENS=${VAL_MAX_TOKENS:-131072}
CAL_SEQS=${CAL_SEQS:-256}
CAL_BATCH=${CAL_BATCH:-16}
MODELS=${MODELS:-"l9x2:9:2 l11x3:11:3"}
BIN=${BIN:-target/release}
OUT=${OUT:-bench/.work/quant_gpu}

for b in train ema-finalize gptq-calibrate quantize-pack; do
  [ -x "$BIN/$b" ] || { echo "quant_gpu: $BIN/$b is missing (on a GPU machine: source bench/device_unpack.sh; here: cargo build --release -p $b)" >&2; exit 1; }
done
if [ -z "${DATA:-}" ]; then
  [ "$DEVICE" = cuda ] || { echo "quant_gpu: set DATA to a tokenize output (the default data is for the GPU machine)" >&2; exit 1; }
  source bench/device_data.sh # sets DATA (sp1024 wiki, tokenized once per machine)
fi
[ -f "$DATA/manifest.json" ] || { echo "quant_gpu: DATA=$DATA is not a tokenize output (no manifest.json)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU visible"
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (+ working tree)"
  echo "device: $DEVICE; train: $STEPS steps of $TRAIN_BATCH_TOKENS tokens; calibration: $CAL_SEQS × $SEQ_LEN tokens"
} > "$OUT/machine.txt"
printf 'label\tstage\twall_s\n' > "$OUT/timings.tsv"

# timed LABEL STAGE OUTDIR [args...]: one stage run, wall clock including the process start.
timed() {
  local label=$1 stage=$2 dir=$3
  shift 3
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN/$stage" --out "$dir" "$@"
  t1=$(date +%s.%N)
  awk -v l="$label" -v s="$stage" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s\t%s\t%.2f\n", l, s, b - a }' | tee -a "$OUT/timings.tsv"
}

params() { # NAME JSON: a params file under $OUT
  echo "$2" > "$OUT/$1.json"
  echo "$OUT/$1.json"
}

INT8_ZSTD=$(params int8_zstd '{"non_record": true}')
GPTQ6_BROTLI=$(params gptq6_brotli '{"attn": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "mlp": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "embed": {"method": "gptq", "bits": 8, "clip_sigmas": 20.0},
  "small_float": "fp16", "compressor": "brotli", "non_record": true}')
CAL=$(params calibrate "{\"sequences\": $CAL_SEQS, \"batch_sequences\": $CAL_BATCH}")

for spec in $MODELS; do
  IFS=: read -r label layers mlp <<<"$spec"
  d="$OUT/$label"
  mkdir -p "$d"
  # A few steps with SWA on (snapshots every 5 steps below lr_mul 0.9), which also exercises it on
  # the device; ema-finalize's auto then takes the raw weights (the EMA is too young).
  train=$(params "train_$label" "{\"model\": {\"vocab_size\": $VOCAB, \"num_layers\": $layers, \"model_dim\": $DIM,
    \"num_heads\": $HEADS, \"num_kv_heads\": $KV_HEADS, \"mlp_mult\": $mlp, \"seq_len\": $SEQ_LEN},
    \"iterations\": $STEPS, \"warmdown_iters\": $(( (STEPS + 1) / 2 )), \"max_wallclock_seconds\": 0,
    \"train_batch_tokens\": $TRAIN_BATCH_TOKENS, \"val_batch_tokens\": $TRAIN_BATCH_TOKENS,
    \"val_max_tokens\": $VAL_MAX_TOKENS, \"val_loss_every\": 0, \"train_log_every\": 10,
    \"swa_every\": 5, \"swa_lr_threshold\": 0.9}")
  timed "$label" train "$d/train" --in data="$DATA" --params "$train" --device "$DEVICE" > "$d/train.out"
  tail -n 1 "$OUT/timings.tsv"
  timed "$label" ema-finalize "$d/ema" --in train="$d/train"
  timed "$label" gptq-calibrate "$d/calibrate" --in weights="$d/ema" --in data="$DATA" --params "$CAL" --device "$DEVICE"
  timed "$label int8_zstd" quantize-pack "$d/int8_zstd" --in weights="$d/ema" --params "$INT8_ZSTD" --device "$DEVICE"
  timed "$label gptq6_brotli" quantize-pack "$d/gptq6_brotli" --in weights="$d/ema" --in hessians="$d/calibrate" --params "$GPTQ6_BROTLI" --device "$DEVICE"
done

python3 - "$OUT" "$MODELS" <<'EOF' | tee "$OUT/summary.md"
import csv, json, os, sys
out, models = sys.argv[1], [m.split(":")[0] for m in sys.argv[2].split()]
def headline(path):
    with open(os.path.join(out, path, "manifest.json")) as f:
        return json.load(f)["headline"]
wall = {(r["label"], r["stage"]): float(r["wall_s"])
        for r in csv.DictReader(open(os.path.join(out, "timings.tsv")), delimiter="\t")}
print(open(os.path.join(out, "machine.txt")).read())
print("| model | params | train steps | swa snapshots | finalize | scheme | model_bytes | artifact_bytes | quantized_mse | mean_rel_output_err | calibrate s | pack s (quantize + compress) | calibrate + pack s | under 30 s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for label in models:
    t, e = headline(f"{label}/train"), headline(f"{label}/ema")
    cal = wall[(label, "gptq-calibrate")]
    for scheme in ["int8_zstd", "gptq6_brotli"]:
        h = headline(f"{label}/{scheme}")
        pack = wall[(f"{label} {scheme}", "quantize-pack")]
        c = cal if scheme.startswith("gptq") else 0.0
        err = h.get("mean_rel_output_err")
        print(f"| {label} | {t['params']:,} | {t['steps']} | {t.get('swa_snapshots')} | {e['source']} | {scheme} "
              f"| {h['model_bytes']:,} | {h['artifact_bytes']:,} | {h['quantized_mse']:.3e} "
              f"| {'—' if err is None else f'{err:.3e}'} | {c:.1f} "
              f"| {pack:.1f} ({h['quantize_seconds']:.1f} + {h['pack_seconds']:.1f}) | {c + pack:.1f} "
              f"| {'yes' if c + pack < 30 else 'no'} |")
EOF

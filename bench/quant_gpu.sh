#!/usr/bin/env bash
# Quantization on a GPU box, for bench/quant.md: from a train output, runs ema-finalize →
# gptq-calibrate → quantize-pack (the baseline int8 + zstd-22, and GPTQ int6 SDClip with zstd-22
# and with shuffle+brotli-11), times each stage, and measures the reference's int8+zlib-9 size of
# the same weights (bench/quant_reference.py). Then the same calibrate + pack timing for an
# 11-layer 3×MLP model (random weights: time only).
#
#   bench/quant_gpu.sh TRAIN_DIR DATA_DIR [DEVICE]
#
# TRAIN_DIR: a train stage output (model.safetensors, config.json, manifest.json); DATA_DIR: the
# tokenize output it was trained on; DEVICE: cuda (default) or cpu. Binaries must be built
# (`cargo build --release --workspace`). Results go to $OUT (default bench/.work/quant_gpu):
# one folder per stage run, timings.tsv, summary.md. CAL_SEQS (default 256) sets the calibration
# sequences of the model's seq_len each.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${1:?usage: bench/quant_gpu.sh TRAIN_DIR DATA_DIR [DEVICE]}
DATA=${2:?usage: bench/quant_gpu.sh TRAIN_DIR DATA_DIR [DEVICE]}
DEVICE=${3:-cuda}
OUT=${OUT:-bench/.work/quant_gpu}
CAL_SEQS=${CAL_SEQS:-256}
BIN=target/release
PY=.venv/bin/python
for b in ema-finalize gptq-calibrate quantize-pack; do
  [ -x "$BIN/$b" ] || { echo "error: $BIN/$b is missing: cargo build --release --workspace" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The upstream quantizer for the reference size, when the mirror is here (else the script's
# faithful re-implementation, verified bit-identical: bench/quant.md).
mirror=/work/.mirror/openai+parameter-golf/repo
if [ ! -f .ref/train_gpt.py ] && [ -d "$mirror" ]; then
  mkdir -p .ref && git -C "$mirror" show HEAD:train_gpt.py > .ref/train_gpt.py
fi

{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU visible"
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (+ working tree)"
} > "$OUT/machine.txt"
printf 'label\tstage\twall_s\n' > "$OUT/timings.tsv"

# run LABEL STAGE OUTDIR [args...]: one stage run, timed (wall clock, including process start).
run() {
  local label=$1 stage=$2 dir=$3
  shift 3
  rm -rf "$dir"
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

INT8=$(params int8_zstd '{"non_record": true}')
INT8_NONE=$(params int8_none '{"compressor": "none", "non_record": true}')
GPTQ6='"attn": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "mlp": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "embed": {"method": "gptq", "bits": 8, "clip_sigmas": 20.0},
  "small_float": "fp16", "non_record": true'
GPTQ6_ZSTD=$(params gptq6_zstd "{$GPTQ6}")
GPTQ6_BROTLI=$(params gptq6_brotli "{$GPTQ6, \"compressor\": \"brotli\"}")
CAL=$(params calibrate "{\"sequences\": $CAL_SEQS, \"batch_sequences\": 16}")

chain() { # LABEL TRAIN_DIR
  local label=$1 train=$2 d="$OUT/$1"
  mkdir -p "$d"
  run "$label" ema-finalize "$d/ema" --in train="$train"
  run "$label" gptq-calibrate "$d/calibrate" --in weights="$d/ema" --in data="$DATA" --params "$CAL" --device "$DEVICE"
  run "$label int8+zstd" quantize-pack "$d/int8_zstd" --in weights="$d/ema" --params "$INT8" --device "$DEVICE"
  run "$label gptq6+zstd" quantize-pack "$d/gptq6_zstd" --in weights="$d/ema" --in hessians="$d/calibrate" --params "$GPTQ6_ZSTD" --device "$DEVICE"
  run "$label gptq6+brotli" quantize-pack "$d/gptq6_brotli" --in weights="$d/ema" --in hessians="$d/calibrate" --params "$GPTQ6_BROTLI" --device "$DEVICE"
}

chain trained "$TRAIN"
# Uncompressed int8 artifact: every integer and scale compared with the upstream quantizer's.
run "trained int8+none" quantize-pack "$OUT/trained/int8_none" --in weights="$OUT/trained/ema" --params "$INT8_NONE"
$PY bench/quant_reference.py "$OUT/trained/ema/model.safetensors" --artifact "$OUT/trained/int8_none/artifact.pgq" > "$OUT/trained/reference.json"

# 11 layers × 512, MLP ×3 (R0322's shape, sp1024): random weights, for the time of the stages.
$PY bench/quant_random_weights.py "$OUT/l11_weights" --layers 11 --dim 512 --mlp-mult 3 --vocab 1024 --seq-len 1024
chain l11x3 "$OUT/l11_weights"

$PY - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import csv, json, os, sys
out = sys.argv[1]
def m(path):
    with open(os.path.join(out, path, "manifest.json")) as f:
        return json.load(f)
times = {}
for r in csv.DictReader(open(os.path.join(out, "timings.tsv")), delimiter="\t"):
    times[(r["label"], r["stage"])] = float(r["wall_s"])
print(open(os.path.join(out, "machine.txt")).read())
ref = json.load(open(os.path.join(out, "trained", "reference.json")))
print(f"reference int8 + torch.save + zlib-9 of the trained weights: {ref['zlib9_bytes']:,} B ({ref['reference_impl']})")
print(f"our int8 vs the reference's, tensor by tensor: {json.dumps(ref['crosscheck'])}\n")
print("| model | scheme | model_bytes | code_bytes | artifact_bytes | quantized_mse | calibrate s | pack s | calibrate + pack s |")
print("|---|---|---|---|---|---|---|---|---|")
for label in ["trained", "l11x3"]:
    cal = times[(label, "gptq-calibrate")]
    for scheme in ["int8_zstd", "gptq6_zstd", "gptq6_brotli"]:
        h = m(f"{label}/{scheme}")["headline"]
        pack = times[(f"{label} {scheme.replace('_', '+')}", "quantize-pack")]
        both = pack + (cal if scheme.startswith("gptq") else 0.0)
        print(f"| {label} | {scheme} | {h['model_bytes']:,} | {h['code_bytes']:,} | {h['artifact_bytes']:,} | {h['quantized_mse']:.3e} | {cal if scheme.startswith('gptq') else 0:.1f} | {pack:.1f} | {both:.1f} |")
EOF

#!/usr/bin/env bash
# Size and time of the artifact's compression by chunk count (frame version 2; bench/quant.md §4).
# Writes uncompressed int8 and GPTQ int6 artifacts (quantize-pack `compressor: none`) of
# baseline-shaped random weights (bench/quant_random_weights.py) and of any given weights, then
# re-compresses each body with zstd-22 and shuffle + brotli-11 at each chunk count in a rayon pool
# of THREADS threads (the `chunk_sweep` example), checking each reads back. Prints TSV rows; all
# under $WORK.
#
#   cargo build --release -p quantize-pack -p pgolf-quant --example chunk_sweep
#   DATA=<a tokenize output> bash bench/quant_chunks.sh [WEIGHTS_DIR...]
#
# WEIGHTS_DIR: ema-finalize outputs (trained models). Env (defaults): DATA (required: calibration
# tokens for the GPTQ bodies), SHAPES ("rand9:9:2 rand11x3:11:3", label:layers:mlp_mult at 512
# wide; "" for none), CHUNKS (1,4,8,16,32), THREADS (2), CAL_SEQS (16), BIN (target/release),
# PY (.venv/bin/python), WORK (bench/.work/quant_chunks).
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPES=${SHAPES-"rand9:9:2 rand11x3:11:3"}
CHUNKS=${CHUNKS:-1,4,8,16,32}
THREADS=${THREADS:-2}
CAL_SEQS=${CAL_SEQS:-16}
BIN=${BIN:-target/release}
PY=${PY:-.venv/bin/python}
WORK=${WORK:-bench/.work/quant_chunks}
for b in ema-finalize gptq-calibrate quantize-pack examples/chunk_sweep; do
  [ -x "$BIN/$b" ] || { echo "quant_chunks: $BIN/$b is missing (cargo build --release -p quantize-pack -p gptq-calibrate -p ema-finalize -p pgolf-quant --example chunk_sweep)" >&2; exit 1; }
done
[ -f "${DATA:-}/manifest.json" ] || { echo "quant_chunks: set DATA to a tokenize output (calibration tokens)" >&2; exit 1; }
mkdir -p "$WORK"

echo '{"compressor": "none", "chunks": 1, "non_record": true}' > "$WORK/int8_none.json"
echo '{"attn": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "mlp": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "embed": {"method": "gptq", "bits": 8, "clip_sigmas": 20.0},
  "small_float": "fp16", "compressor": "none", "chunks": 1, "non_record": true}' > "$WORK/gptq6_none.json"
echo "{\"sequences\": $CAL_SEQS, \"batch_sequences\": 8}" > "$WORK/calibrate.json"

# bodies LABEL WEIGHTS: calibrate, then the two uncompressed artifacts.
artifacts=()
bodies() {
  local d="$WORK/$1"
  rm -rf "$d/cal" "$d/int8_none" "$d/gptq6_none"
  "$BIN/gptq-calibrate" --out "$d/cal" --in weights="$2" --in data="$DATA" --params "$WORK/calibrate.json" >&2
  "$BIN/quantize-pack" --out "$d/int8_none" --in weights="$2" --params "$WORK/int8_none.json" >&2
  "$BIN/quantize-pack" --out "$d/gptq6_none" --in weights="$2" --in hessians="$d/cal" --params "$WORK/gptq6_none.json" >&2
  artifacts+=("$d/int8_none/artifact.pgq" "$d/gptq6_none/artifact.pgq")
}
for w in "$@"; do
  w=${w%/}
  bodies "given_${w//\//_}" "$w"
done
for spec in $SHAPES; do
  IFS=: read -r label layers mlp <<<"$spec"
  rm -rf "$WORK/$label"
  "$PY" bench/quant_random_weights.py "$WORK/$label/raw" --layers "$layers" --dim 512 --mlp-mult "$mlp" >&2
  "$BIN/ema-finalize" --out "$WORK/$label/ema" --in train="$WORK/$label/raw" >&2
  bodies "$label" "$WORK/$label/ema"
done
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/examples/chunk_sweep" --threads "$THREADS" --chunks "$CHUNKS" "${artifacts[@]}"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

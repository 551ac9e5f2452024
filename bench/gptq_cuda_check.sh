#!/usr/bin/env bash
# The smallest full-GPTQ run on a GPU: a random 2-layer model (bench/quant_random_weights.py) →
# ema-finalize → gptq-calibrate (self-generated sequences: no data needed) → quantize-pack with
# GPTQ int6 + SDClip, Cholesky on the device. Reproduces the old CUDA failure ("lazy wrapper should
# be called at most once", when libtorch_cuda_linalg was loaded lazily from parallel threads) and
# proves its fix: it prints "gptq_cuda_check: ok" and the pack headline, or the failing stage's
# one-line error, and exits non-zero.
#
#   run(command="source bench/device_unpack.sh && bash bench/gptq_cuda_check.sh", carry=[".device"])
#
# Env: DEVICE (cuda; cpu runs the same chain here), BIN (target/release), PY (python3, else the
# .venv one), WORK (/tmp/pgolf-gptq-check).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
BIN=${BIN:-target/release}
WORK=${WORK:-/tmp/pgolf-gptq-check}
PY=${PY:-$(command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null && echo python3 || echo .venv/bin/python)}
for b in ema-finalize gptq-calibrate quantize-pack; do
  [ -x "$BIN/$b" ] || { echo "gptq_cuda_check: $BIN/$b is missing (source bench/device_unpack.sh, or cargo build --release -p $b)" >&2; exit 1; }
done
rm -rf "$WORK"
mkdir -p "$WORK"
"$PY" bench/quant_random_weights.py "$WORK/raw" --layers 2 --dim 256 --heads 4 --kv-heads 2 --mlp-mult 2 --vocab 1024 --seq-len 128
echo '{"source": "self_generated", "sequences": 8, "batch_sequences": 4, "gen_batch": 8}' > "$WORK/calibrate.json"
echo '{"attn": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "mlp": {"method": "gptq", "bits": 6, "clip_sigmas": 12.85},
  "embed": {"method": "gptq", "bits": 8, "clip_sigmas": 20.0},
  "small_float": "fp16", "compressor": "brotli", "non_record": true}' > "$WORK/gptq6.json"
"$BIN/ema-finalize" --out "$WORK/ema" --in train="$WORK/raw"
"$BIN/gptq-calibrate" --out "$WORK/calibrate" --in weights="$WORK/ema" --params "$WORK/calibrate.json" --device "$DEVICE"
"$BIN/quantize-pack" --out "$WORK/pack" --in weights="$WORK/ema" --in hessians="$WORK/calibrate" --params "$WORK/gptq6.json" --device "$DEVICE"
"$PY" - "$WORK/pack" <<'EOF'
import json, sys
h = json.load(open(sys.argv[1] + "/manifest.json"))["headline"]
print("gptq_cuda_check: ok", json.dumps({k: h[k] for k in ["model_bytes", "quantized_mse", "mean_rel_output_err", "quantize_seconds"] if k in h}))
EOF

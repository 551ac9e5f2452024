#!/usr/bin/env bash
# LQER and the per-group layout on a trained model: artifact bytes and BPB with each of them off and
# on (bench/quant.md §6), then the layout's bytes under every compressor (the `layout_sweep`
# example on the artifacts just written).
#
#   cargo build --release --workspace && cargo build --release -p pgolf-quant --example layout_sweep
#   bash bench/quant_lqer.sh [PROFILE] [EVAL]
#
# PROFILE (default wiki-cpu: 3×128 sp1024 on CPU) is any pipeline.yaml profile; its quantize-pack
# params are replaced by R0427's recipe (GPTQ SDClip int6, attn k 13, MLP k 11.5, tied embedding
# int7 k 14, small tensors fp16, brotli), except SMALL_NUMEL (default 4096, so the CPU model's
# matrices are quantized; 65536 for the record-sized ones). EVAL (default eval-flat) is the
# evaluation node scored. The 2 × 2 sweep lqer.enabled × layout.per_group reuses every upstream
# run. Prints the TSV rows of each quantize-pack run (artifact and LQER bytes, BPB) and of
# layout_sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-wiki-cpu}
EVAL=${2:-eval-flat}
SMALL_NUMEL=${SMALL_NUMEL:-4096}
BIN=${BIN:-target/release}
[ -x "$BIN/examples/layout_sweep" ] || { echo "quant_lqer: $BIN/examples/layout_sweep is missing" >&2; exit 1; }
sets=(
  --set "quantize-pack.small_numel=$SMALL_NUMEL"
  --set "quantize-pack.small_float=fp16"
  --set quantize-pack.attn.method=gptq --set quantize-pack.attn.bits=6
  --set quantize-pack.attn.clip_sigmas=13.0
  --set quantize-pack.mlp.method=gptq --set quantize-pack.mlp.bits=6
  --set quantize-pack.mlp.clip_sigmas=11.5
  --set quantize-pack.embed.method=gptq --set quantize-pack.embed.bits=7
  --set quantize-pack.embed.clip_sigmas=14.0
  --set "quantize-pack.compressor=brotli"
  --set "quantize-pack.lqer.enabled=false,true"
  --set "quantize-pack.layout.per_group=false,true"
)
"$BIN/pipeline" run "$EVAL" --profile "$PROFILE" "${sets[@]}"
# Each evaluation of the sweep with its quantize-pack run (the eval's `artifact` input).
python3 - "$EVAL" <<'EOF'
import json, pathlib, sys
runs = {}
for m in pathlib.Path("out/quantize-pack").glob("*/manifest.json"):
    q = json.loads(m.read_text())
    runs[q["key"]] = q
print("lqer\tper_group\tmodel_bytes\tartifact_bytes\tlqer_tensors\tlqer_bytes\tval_bpb\tquantize_pack_key")
for m in sorted(pathlib.Path("out", sys.argv[1]).glob("*/manifest.json")):
    e = json.loads(m.read_text())
    q = runs.get(e["inputs"].get("artifact", {}).get("key"))
    if q is None or q["params"].get("compressor") != "brotli" or q["params"].get("small_float") != "fp16":
        continue
    p, h = q["params"], q["headline"]
    print("\t".join(str(x) for x in [
        p.get("lqer", {}).get("enabled", False), p.get("layout", {}).get("per_group", False),
        h["model_bytes"], h["artifact_bytes"], h.get("lqer_tensors", 0), h.get("lqer_bytes", 0),
        e["headline"].get("val_bpb"), q["key"]]))
EOF
# The plain-layout artifacts of the sweep, re-encoded by layout_sweep.
for q in out/quantize-pack/*/manifest.json; do
  python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["params"]; sys.exit(0 if p.get("compressor")=="brotli" and p.get("small_float")=="fp16" and not p.get("layout",{}).get("per_group") else 1)' "$q" \
    && "$BIN/examples/layout_sweep" "$(dirname "$q")/artifact.pgq"
done

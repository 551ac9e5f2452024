#!/usr/bin/env bash
# portable-eval (WGSL on wgpu, Vulkan through the NVIDIA driver) against ttt-eval (libtorch, CUDA)
# on the baseline-sized artifact of a 200-step run, in one GPU call:
#
#   scripts/device-build.sh                                                   # here
#   run(command="bash bench/portable_eval_gpu.sh", carry=[".device"])         # there
#
# 1. Vulkan: the loader libvulkan.so.1 from the machine, else the copy scripts/device-build.sh
#    carries (.device/vulkan/); the NVIDIA driver's ICD from the machine's icd.d, else a manifest
#    written here for the driver's libGLX_nvidia.so.0 (containers often mount the driver's Vulkan
#    library without its JSON). `portable-eval --device list` shows what wgpu then finds.
# 2. Tokenize (1,000 val docs of part-07, train part-00), 200 baseline steps of train, ema-finalize
#    (auto), quantize-pack (int8 + zstd-22): as bench/eval_gpu_chain.sh. WORK=DIR reuses a folder
#    that already holds them (tok/, q8/).
# 3. flat BPB and tokens/s: ttt-eval f32 (the reference for the 1e-4 bar), ttt-eval at its CUDA
#    default (bf16, the fast formulation), portable-eval on the GPU adapter. MODES="flat sliding"
#    adds sliding s64 (portable-eval's sliding pass is ~16× its flat one).
# Prints one table row per run and the BPB differences. OUT=DIR keeps the summaries.
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
MODES=${MODES:-flat}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
date -u +"date: %Y-%m-%d %H:%M UTC"
source bench/device_unpack.sh >/dev/null || exit 1
[ -x target/release/portable-eval ] || { echo "portable_eval_gpu: target/release/portable-eval is missing from .device/bins.tgz (scripts/device-build.sh)" >&2; exit 1; }

# --- 1. Vulkan -------------------------------------------------------------------------------
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
  if [ -f .device/vulkan/libvulkan.so.1 ]; then
    export LD_LIBRARY_PATH="$PWD/.device/vulkan${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "vulkan: loader from .device/vulkan (the machine has none)"
  else
    echo "portable_eval_gpu: no libvulkan.so.1 on this machine and none carried in .device/vulkan (scripts/device-build.sh copies it)" >&2
    exit 1
  fi
else
  echo "vulkan: loader $(ldconfig -p | grep 'libvulkan\.so\.1 ' | head -1 | sed 's/.*=> //')"
fi
icd=""
for f in /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json /usr/local/share/vulkan/icd.d/nvidia_icd*.json; do
  [ -f "$f" ] && { icd=$f; break; }
done
if [ -z "$icd" ]; then
  glx=$(ldconfig -p 2>/dev/null | grep 'libGLX_nvidia\.so\.0 ' | head -1 | sed 's/.*=> //')
  [ -n "$glx" ] || glx=$(find /usr/lib /usr/lib64 /usr/local/nvidia /usr/lib/x86_64-linux-gnu -name 'libGLX_nvidia.so.0' 2>/dev/null | head -1)
  if [ -n "$glx" ]; then
    icd=/tmp/pgolf-nvidia-icd.json
    printf '{"file_format_version": "1.0.1", "ICD": {"library_path": "%s", "api_version": "1.3"}}\n' "$glx" > "$icd"
    echo "vulkan: no NVIDIA ICD manifest on the machine; wrote $icd for $glx"
  else
    echo "vulkan: the NVIDIA driver's Vulkan library (libGLX_nvidia.so.0) is not on this machine; its NVIDIA libraries:"
    ldconfig -p 2>/dev/null | grep -i nvidia | sed 's/ (.*//' | sort -u | head -30
  fi
fi
if [ -n "$icd" ]; then
  export VK_ICD_FILENAMES=$icd VK_DRIVER_FILES=$icd
  echo "vulkan: ICD $icd"
fi
echo "--- portable-eval --device list"
if ! target/release/portable-eval --device list; then
  # Why the loader found no device: the driver's capabilities in this container, the ICD and the
  # library it names, and the loader's own account.
  echo "NVIDIA_DRIVER_CAPABILITIES=${NVIDIA_DRIVER_CAPABILITIES:-unset}"
  [ -n "$icd" ] && cat "$icd"
  lib=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ICD']['library_path'])" "$icd" 2>/dev/null)
  [ -n "$lib" ] && { ls -la "$lib" 2>&1; ldconfig -p | grep -F "$(basename "$lib")" || echo "$lib: not in the linker cache"; }
  ldconfig -p | grep -iE 'nvidia|libcuda' | sed 's/ (.*//' | sort -u | head -20
  VK_LOADER_DEBUG=error,warn,driver target/release/portable-eval --device list 2>&1 | tail -15
  exit 1
fi

# --- 2. The artifact --------------------------------------------------------------------------
W=${WORK:-/tmp/pgolf-portable}
mkdir -p "$W"
if [ ! -f "$W/q8/manifest.json" ]; then
  echo '{"val_docs": 1000}' > "$W/tok.json"
  echo '{"iterations": 200, "warmdown_iters": 100, "max_wallclock_seconds": 0, "val_loss_every": 0, "warmup_steps": 3}' > "$W/train.json"
  target/release/tokenize --out "$W/tok" --in val_documents=.device/data/part-07.parquet \
    --in documents=.device/data/part-00.parquet --in tokenizer=.device/data/fineweb_1024_bpe.model \
    --params "$W/tok.json" > "$W/tok.txt" 2>&1 || { tail -3 "$W/tok.txt"; exit 1; }
  target/release/train --out "$W/train" --in data="$W/tok" --params "$W/train.json" --device cuda \
    > "$W/train.txt" 2>&1 || { tail -5 "$W/train.txt"; exit 1; }
  target/release/ema-finalize --out "$W/ema" --in train="$W/train" > "$W/ema.txt" 2>&1 || { tail -3 "$W/ema.txt"; exit 1; }
  target/release/quantize-pack --out "$W/q8" --in weights="$W/ema" > "$W/q8.txt" 2>&1 || { tail -3 "$W/q8.txt"; exit 1; }
fi
echo "artifact ready after $(( $(date +%s) - started )) s"

# --- 3. The evaluations -----------------------------------------------------------------------
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
echo "| run | mode | device | val_bpb | scored targets | eval s | tokens/s |"
echo "|---|---|---|---|---|---|---|"
for mode in $MODES; do
  extra=""; [ "$mode" = sliding ] && extra=', "stride": 64'
  runs=("ttt-f32|ttt-eval|{\"mode\": \"$mode\", \"precision\": \"f32\"$extra}|cuda"
        "ttt-auto|ttt-eval|{\"mode\": \"$mode\"$extra}|cuda"
        "portable|portable-eval|{\"mode\": \"$mode\"$extra}|gpu")
  for spec in "${runs[@]}"; do
    IFS='|' read -r name exe params device <<<"$spec"
    out="$W/$name-$mode"
    rm -rf "$out"
    echo "$params" > "$W/$name-$mode.json"
    t0=$(date +%s.%N)
    if ! "target/release/$exe" --out "$out" --in artifact="$W/q8" --in data="$W/tok" \
        --params "$W/$name-$mode.json" --device "$device" > "$W/$name-$mode.txt" 2>&1; then
      echo "| $name | $mode | $device | failed: $(tail -1 "$W/$name-$mode.txt") | | | |"
      continue
    fi
    wall=$(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t0")
    s="$out/summary.json"
    dev=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['device']; print(', '.join(d['device_names']))" "$out/manifest.json")
    echo "| $name | $mode | $dev | $(field "$s" val_bpb) | $(field "$s" scored_targets) | $(field "$s" eval_seconds | xargs printf '%.2f') (process $wall) | $(field "$s" tokens_per_second | xargs printf '%.0f') |"
  done
  if [ -f "$W/portable-$mode/summary.json" ] && [ -f "$W/ttt-f32-$mode/summary.json" ]; then
    python3 - "$W" "$mode" <<'EOF'
import json, sys
w, mode = sys.argv[1], sys.argv[2]
s = {n: json.load(open(f"{w}/{n}-{mode}/summary.json")) for n in ("portable", "ttt-f32", "ttt-auto")
     if __import__("os").path.exists(f"{w}/{n}-{mode}/summary.json")}
p, f = s["portable"], s["ttt-f32"]
d = abs(p["val_bpb"] - f["val_bpb"])
print(f"{mode}: |portable - ttt-eval f32| = {d:.3e} ({'within' if d < 1e-4 else 'OUTSIDE'} 1e-4); "
      f"tokens/s portable / ttt-eval f32 = {p['tokens_per_second'] / f['tokens_per_second']:.3f}"
      + (f", / ttt-eval bf16 = {p['tokens_per_second'] / s['ttt-auto']['tokens_per_second']:.3f}" if "ttt-auto" in s else ""))
EOF
  fi
done
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/portable"
  (cd "$W" && find . -maxdepth 2 \( -name 'summary.json' -o -name '*.txt' -o -name '*.json' \) -not -path './tok/*' -exec cp --parents {} "$OUT/portable" \;)
fi
echo "done in $(( $(date +%s) - started )) s"

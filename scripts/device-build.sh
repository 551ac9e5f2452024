#!/usr/bin/env bash
# Prepares what a GPU machine needs, here, into git-ignored folders that `run` carries:
#   .device/bins.tgz  the release stage binaries the GPU benches run, stripped, in one gzip'd tar
#                     (raw they exceed the 64 MiB carry limit). The libtorch stages link libtorch
#                     with CUDA (the venv's PyPI torch 2.11.0+cu130, the version the GPU machines'
#                     Python has); there `source bench/device_unpack.sh` unpacks them into
#                     target/release/ and makes them find that Python's libtorch (docs/GPU.md).
#   .device/data/     wiki part-00 (train) and part-07 (val), the sp1024, sp8192 and sp8192 CaseOps
#                     models, from ../shared.
#   .ref/             the upstream train_gpt.py, read from the mirror (never committed).
#   .device/vulkan/   the Vulkan loader libvulkan.so.1 (Debian's libvulkan1), for portable-eval on a
#                     GPU machine that lacks it (bench/portable_eval_gpu.sh).
# Then: run(command="source bench/device_unpack.sh && bash bench/...", carry=[".device", ".ref"]).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared
MIRROR=${REF_REPO:-/work/.mirror/openai+parameter-golf/repo}

# Stage binaries (cargo package = binary name under target/release/).
STAGES=(train tokenize ema-finalize gptq-calibrate quantize-pack ttt-eval ngram-eval)
# Extra binaries and examples, each "CARGO BUILD ARGS|PATH UNDER target/release/"; they unpack to
# the same path there. E.g. "-p pgolf-kernels --example check_kernels|examples/check_kernels".
EXTRAS=(
  "-p pgolf-kernels --example check_kernels|examples/check_kernels"
  "-p pgolf-model --example check_model_gpu|examples/check_model_gpu"
  "-p pgolf-dist --bin pgolf-dist-check|pgolf-dist-check"
  "-p pipeline --bin pipeline|pipeline"
)

cargo build --release $(printf -- '-p %s ' "${STAGES[@]}")
# Again alone: in one build of several packages cargo unifies their features, which gives
# ema-finalize pgolf-quant's libtorch half (`torch` feature) and so a libtorch link it never uses.
cargo build --release -p ema-finalize
# portable-eval alone too: built beside ttt-eval it would get pgolf-eval's libtorch half (checked
# below: it must link no libtorch).
cargo build --release -p portable-eval
paths=("${STAGES[@]}" portable-eval)
for extra in "${EXTRAS[@]}"; do
  # shellcheck disable=SC2086  # the build args are words on purpose
  cargo build --release ${extra%%|*}
  paths+=("${extra#*|}")
done

stage_dir=$(mktemp -d)
trap 'rm -rf "$stage_dir"' EXIT
for path in "${paths[@]}"; do
  mkdir -p "$stage_dir/$(dirname "$path")"
  strip -o "$stage_dir/$path" "target/release/$path"
done

# Every binary that links libtorch_cuda must also link libtorch_cuda_linalg where this libtorch has
# it (pgolf_buildid::stage_with_torch): without the first, libtorch silently reports no CUDA
# device; without the second, CUDA Cholesky (GPTQ) goes through libtorch's lazy loader.
linalg=0
[ -f .venv/torch/lib/libtorch_cuda_linalg.so ] && linalg=1
torch_bins=0
for path in "${paths[@]}"; do
  needed=$(readelf -d "$stage_dir/$path" | grep NEEDED || true)
  grep -q 'libtorch_cpu.so' <<<"$needed" || continue
  torch_bins=$((torch_bins + 1))
  if ! grep -q 'libtorch_cuda.so' <<<"$needed"; then
    echo "device-build: $path links libtorch but not libtorch_cuda.so" >&2
    exit 1
  fi
  # (The stages; an example that does no linear algebra may leave it out.)
  if [ $linalg = 1 ] && [[ " ${STAGES[*]} " == *" $path "* ]] && ! grep -q 'libtorch_cuda_linalg.so' <<<"$needed"; then
    echo "device-build: $path links libtorch but not libtorch_cuda_linalg.so (stale build.rs output?)" >&2
    exit 1
  fi
done
if readelf -d "$stage_dir/portable-eval" | grep NEEDED | grep -q -e libtorch -e libc10 -e libcuda; then
  echo "device-build: portable-eval links libtorch or CUDA" >&2
  exit 1
fi
echo "device-build: $torch_bins libtorch binaries link libtorch_cuda$([ $linalg = 1 ] && echo ' and libtorch_cuda_linalg')"

mkdir -p .device/data .device/vulkan .ref
loader=$(ldconfig -p | grep 'libvulkan\.so\.1 ' | head -1 | sed 's/.*=> //')
[ -n "$loader" ] || { echo "device-build: no libvulkan.so.1 here (scripts/setup.sh installs libvulkan1)" >&2; exit 1; }
cp -L "$loader" .device/vulkan/libvulkan.so.1
rm -rf .device/bin # the unpacked layout of older builds: it would not fit the carry limit beside the tar
tar -C "$stage_dir" -czf .device/bins.tgz "${paths[@]}"
cp "$SHARED/data/enwiki2015/part-00.parquet" "$SHARED/data/enwiki2015/part-07.parquet" "$SHARED/tokenizers/fineweb_1024_bpe.model" \
  "$SHARED/tokenizers/fineweb_8192_bpe.model" "$SHARED/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model" .device/data/
git -C "$MIRROR" show HEAD:train_gpt.py > .ref/train_gpt.py
# Record scripts the benches run (bench/r0322_side_by_side.sh).
git -C "$MIRROR" show "HEAD:records/track_10min_16mb/2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233/train_gpt.py" > .ref/r0322_train_gpt.py
du -sh .device/bins.tgz .device/data .device/vulkan .ref
total=$(du -sbc .device .ref | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -bc 2>/dev/null | tail -1 | cut -f1)
echo "device-build: $((total / 1048576)) MiB to carry + $((tree / 1048576)) MiB of tracked files (limit 64 MiB in all)"

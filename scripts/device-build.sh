#!/usr/bin/env bash
# Prepares what a GPU machine needs, here, into git-ignored folders that `run` carries:
#   .device/bin/   the release `train` and `tokenize` stages, stripped. `train` links libtorch
#                  with CUDA (the venv's PyPI torch 2.11.0+cu130, the version the GPU machines'
#                  Python has); there it finds libtorch through LD_LIBRARY_PATH (docs/GPU.md).
#   .device/data/  wiki part-00 (train) and part-07 (val) and the sp1024 model, copied from ../shared.
#   .ref/          the upstream train_gpt.py, read from the mirror (never committed).
# Then: run(command="bash bench/train_side_by_side.sh", carry=[".device", ".ref"]).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared
MIRROR=${REF_REPO:-/work/.mirror/openai+parameter-golf/repo}

cargo build --release -p train -p tokenize
mkdir -p .device/bin .device/data .ref
for bin in train tokenize; do
  strip -o ".device/bin/$bin" "target/release/$bin"
done
# Without a NEEDED entry for libtorch_cuda, libtorch would silently report no CUDA device.
if ! readelf -d .device/bin/train | grep -q 'libtorch_cuda.so'; then
  echo "device-build: .device/bin/train does not link libtorch_cuda.so" >&2
  exit 1
fi
cp "$SHARED/data/enwiki2015/part-00.parquet" "$SHARED/data/enwiki2015/part-07.parquet" "$SHARED/tokenizers/fineweb_1024_bpe.model" .device/data/
git -C "$MIRROR" show HEAD:train_gpt.py > .ref/train_gpt.py
du -sh .device/bin/* .device/data .ref
total=$(du -sbc .device .ref | tail -1 | cut -f1)
echo "device-build: $((total / 1048576)) MiB to carry (limit 64 MiB with the working tree)"

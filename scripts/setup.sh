#!/usr/bin/env bash
# Sets up everything pgolf needs on a fresh Debian machine with Rust and Python, idempotently:
#   1. system packages (cmake builds the vendored SentencePiece C++; chromium renders reports in tests;
#      Mesa's software Vulkan runs portable-eval's shaders in tests),
#   2. .venv: PyPI torch==2.11.0 (libtorch for tch =0.24.0) and the Python reference packages,
#   3. the release build of every stage and the pipeline driver.
# A second run on a set-up machine only checks and rebuilds what changed (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v pkg-config >/dev/null || missing+=(pkg-config)
[ -e /usr/include/fontconfig/fontconfig.h ] || missing+=(libfontconfig1-dev)
[ -e /usr/include/freetype2/ft2build.h ] || missing+=(libfreetype6-dev)
command -v chromium >/dev/null || missing+=(chromium)
# Mesa's software Vulkan (lavapipe) and the Vulkan loader: portable-eval's tests run their shaders on it.
compgen -G "/usr/share/vulkan/icd.d/lvp_icd.*.json" >/dev/null || missing+=(mesa-vulkan-drivers libvulkan1)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is several GB (torch + CUDA runtime wheels), so it lives once per machine and per
# requirements.txt, outside the checkout, and every clone links to it (.venv).
want=$(sha256sum requirements.txt | cut -d' ' -f1)
venv=${PGOLF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pgolf/venv-${want:0:16}}
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating $venv (torch==2.11.0 and reference packages; a few GB on first run)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$venv/.requirements.sha256"
fi
if [ -d .venv ] && [ ! -L .venv ]; then
  echo "setup: .venv is a folder of an older setup; replacing it with a link to $venv"
  rm -rf .venv
fi
ln -sfn "$venv" .venv
# A stable name for the torch package folder: .cargo/config.toml points LIBTORCH and the rpath here.
ln -sfn "$(.venv/bin/python -c 'import torch, os; print(os.path.realpath(os.path.dirname(torch.__file__)))')" .venv/torch

cargo build --release --workspace --quiet

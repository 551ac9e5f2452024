# On the GPU machine, from the repo root, SOURCED (it exports LD_LIBRARY_PATH):
#
#   source bench/device_unpack.sh
#
# 1. unpacks .device/bins.tgz (scripts/device-build.sh) into target/release/;
# 2. points LD_LIBRARY_PATH at the libtorch of that machine's Python torch (the binaries' rpath
#    names .venv/torch/lib of the build checkout);
# 3. replaces the .venv link that comes with the checkout (it names a folder of the build machine)
#    by a .venv/bin/python *wrapper* that runs the machine's python3 (a symlink to python3 would
#    lose that Python's venv and its numpy), and .venv/torch linking its torch package.
# Idempotent; a second source only unpacks again.
pgolf_unpack() {
  local tarball=.device/bins.tgz torch_dir
  if [ ! -f "$tarball" ]; then
    echo "device_unpack: $tarball is missing: run scripts/device-build.sh and carry .device" >&2
    return 1
  fi
  mkdir -p target/release || return 1
  tar -xzf "$tarball" -C target/release || {
    echo "device_unpack: $tarball: cannot unpack" >&2
    return 1
  }
  torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.realpath(torch.__file__)))') || {
    echo "device_unpack: python3 cannot import torch" >&2
    return 1
  }
  case ":${LD_LIBRARY_PATH:-}:" in
    *":$torch_dir/lib:"*) ;;
    *) export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
  esac
  if [ -L .venv ] && [ -e .venv ]; then
    # A link that resolves is a build machine's venv (scripts/setup.sh): never write into it.
    echo "device_unpack: .venv links to an existing venv; left as it is"
  else
    [ -L .venv ] && rm .venv
    mkdir -p .venv/bin || return 1
    printf '#!/bin/sh\nexec python3 "$@"\n' > .venv/bin/python
    chmod +x .venv/bin/python
    ln -sfn "$torch_dir" .venv/torch
  fi
  echo "device_unpack: $(tar -tzf "$tarball" | grep -v '/$' | tr '\n' ' ')-> target/release/; libtorch from $torch_dir"
}
pgolf_unpack

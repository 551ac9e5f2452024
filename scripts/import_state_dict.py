#!/usr/bin/env python3
"""Imports a record script's `final_model.pt`-style state dict as a pgolf raw-weights folder.

    .venv/bin/python scripts/import_state_dict.py STATE.pt CONFIG.json OUT_DIR

STATE.pt must be what `torch.save(model.state_dict(), …)` writes: a flat dict of names to plain
tensors. It is read with `torch.load(weights_only=True)`, so nothing but tensors and containers is
unpickled; anything else (a nested dict, a quantized or sparse tensor, a non-tensor value) is
refused in one line naming the file and the entry. CONFIG.json is our model config for it (the
preset's `model` params). OUT_DIR gets `model.safetensors` (names and dtypes as in the state dict)
and `config.json`: a folder ema-finalize takes as its `train` input (`--in train=OUT_DIR`), which
checks every name and shape against the config and refuses a mismatch naming the tensor.

Writes into OUT_DIR.partial and renames it into place, so a failure leaves no half-written folder.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import torch

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64",
          torch.float64: "F64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8"}


def fail(msg: str):
    print(f"error: import_state_dict: {msg}", file=sys.stderr)
    sys.exit(1)


def write_safetensors(tensors: dict, path: Path):
    """The safetensors format: 8-byte little-endian header length, JSON header, raw data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def read_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the file's fault
        fail(f"{path}: not a weights-only torch state dict ({str(e).splitlines()[0]})")
    if not isinstance(state, dict) or not state:
        fail(f"{path}: not a state dict (a non-empty dict of names to tensors), got {type(state).__name__}")
    for name, t in state.items():
        if not isinstance(name, str):
            fail(f"{path}: entry {name!r} has a non-string name")
        if not isinstance(t, torch.Tensor):
            fail(f"{path}: entry {name} is a {type(t).__name__}, not a tensor")
        if t.layout != torch.strided or t.is_quantized or t.dtype not in DTYPES:
            fail(f"{path}: entry {name} is not a plain dense tensor ({t.dtype}, {t.layout})")
    return state


def main():
    if len(sys.argv) != 4:
        fail("usage: import_state_dict.py STATE.pt CONFIG.json OUT_DIR")
    state_path, config_path, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    state = read_state_dict(state_path)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        fail(f"{config_path}: not a JSON model config ({e})")
    if out.exists():
        fail(f"{out}: already exists")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_safetensors(state, tmp / "model.safetensors")
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    os.rename(tmp, out)
    print(f"{out}: {len(state)} tensors")


if __name__ == "__main__":
    main()

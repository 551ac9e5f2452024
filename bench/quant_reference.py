#!/usr/bin/env python3
"""The reference's int8+zlib size for our weights, and a bit-exact cross-check of our int8 artifact.

Usage:
    .venv/bin/python bench/quant_reference.py WEIGHTS.safetensors [--artifact ARTIFACT.pgq]

1. Quantizes WEIGHTS the upstream way (`quantize_state_dict_int8` of the upstream train_gpt.py,
   REFERENCE.md §4), `torch.save`s the object and compresses it with zlib level 9, exactly as the
   baseline writes `final_model.int8.ptz`; prints the sizes. The upstream functions are used when
   `.ref/train_gpt.py` exists (bench/quant_gpu.sh copies it there from the upstream mirror; the
   folder is git-ignored); otherwise the faithful re-implementation below (REFERENCE.md §4.1-4.2).
2. With --artifact (an artifact written with `compressor: none`, default int8_upstream routing),
   compares every integer, every fp16 scale and every passthrough value of our artifact with the
   upstream object's: the acceptance check that our int8 is "exactly as upstream".

Needs only torch and numpy (safetensors and our container are parsed by hand, from their
documented layouts: docs/ARTIFACT.md).
"""
import argparse
import io
import json
import os
import re
import struct
import sys
import zlib

import numpy as np
import torch

ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
OUR_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = bytearray(data[base + a : base + b])
        t = torch.frombuffer(raw, dtype=ST_DTYPES[info["dtype"]]) if raw else torch.empty(0, dtype=ST_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def upstream_order(names):
    """The baseline module's state_dict order: tok_emb, skip_weights, then per block c_q, c_k, c_v,
    proj, q_gain, mlp.fc, mlp.proj, attn_scale, mlp_scale, resid_mix; anything else after."""
    block_order = ["attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.proj.weight", "attn.q_gain",
                   "mlp.fc.weight", "mlp.proj.weight", "attn_scale", "mlp_scale", "resid_mix"]

    def key(n):
        if n == "tok_emb.weight":
            return (0, 0, 0, n)
        if n == "skip_weights":
            return (1, 0, 0, n)
        m = re.match(r"blocks\.(\d+)\.(.*)", n)
        if m:
            rest = m.group(2)
            return (2, int(m.group(1)), block_order.index(rest) if rest in block_order else 99, n)
        return (3, 0, 0, n)

    return sorted(names, key=key)


# --- faithful re-implementation of the upstream routine (used only without .ref/train_gpt.py) ---
CONTROL = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain", "skip_weight", "skip_weights")
INT8_CLIP_Q = 99.99984 / 100.0


def _quantize_float_tensor(t):
    t32 = t.float()
    if t32.ndim == 2:
        clip_abs = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1)
        clipped = torch.maximum(torch.minimum(t32, clip_abs[:, None]), -clip_abs[:, None])
        scale = (clip_abs / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8).contiguous()
        return q, scale.to(dtype=torch.float16).contiguous()
    clip_abs = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_Q).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip_abs / 127.0 if clip_abs > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip_abs, clip_abs) / scale), -127, 127).to(torch.int8).contiguous()
    return q, scale


def _quantize_state_dict_int8(sd):
    quantized, scales, dtypes, passthrough, orig, qmeta = {}, {}, {}, {}, {}, {}
    for name, tensor in sd.items():
        t = tensor.detach().to("cpu").contiguous()
        if not t.is_floating_point():
            passthrough[name] = t
            continue
        if t.numel() <= 65_536:
            if any(p in name for p in CONTROL):
                passthrough[name] = t.float().contiguous()
            elif t.dtype in {torch.float32, torch.bfloat16}:
                orig[name] = str(t.dtype).removeprefix("torch.")
                passthrough[name] = t.to(dtype=torch.float16).contiguous()
            else:
                passthrough[name] = t
            continue
        q, s = _quantize_float_tensor(t)
        if s.ndim > 0:
            qmeta[name] = {"scheme": "per_row", "axis": 0}
        quantized[name] = q
        scales[name] = s
        dtypes[name] = str(t.dtype).removeprefix("torch.")
    obj = {"__quant_format__": "int8_clean_per_row_v1", "quantized": quantized, "scales": scales, "dtypes": dtypes, "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    return obj


def quantizer():
    ref = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".ref")
    if os.path.isfile(os.path.join(ref, "train_gpt.py")):
        sys.path.insert(0, ref)
        import train_gpt  # noqa: E402  (the upstream file, copied at run time, never committed)

        return "upstream .ref/train_gpt.py", lambda sd: train_gpt.quantize_state_dict_int8(sd)[0]
    return "re-implementation (REFERENCE.md §4)", _quantize_state_dict_int8


def read_artifact(path):
    """Our container with compressor none (docs/ARTIFACT.md): name -> (entry, {field: bytes})."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"PGQA", "not a pgolf artifact"
    if data[5] != 0 or data[6] != 1:
        sys.exit(f"{path}: cross-check needs an artifact written with compressor none (no shuffle)")
    if data[4] == 1:
        body = data[56:]
    else:
        # Frame version 2: a chunk table (u32 count, u32 lengths), then the chunks, which for
        # compressor none are the body's bytes in order.
        (count,) = struct.unpack("<I", data[56:60])
        body = data[60 + 4 * count :]
    (dlen,) = struct.unpack("<I", body[:4])
    directory = json.loads(body[4 : 4 + dlen])
    payload = body[4 + dlen :]
    out = {}
    for e in directory["tensors"]:
        fields = {k: payload[v[0] : v[0] + v[1]] for k, v in e.items() if k in ("q", "scales", "scale", "data")}
        out[e["name"]] = (e, fields)
    return out


def crosscheck(obj, art):
    report = {"tensors": 0, "q_mismatches": 0, "scale_mismatches": 0, "passthrough_mismatches": 0, "missing": []}
    for name, q in obj["quantized"].items():
        report["tensors"] += 1
        if name not in art:
            report["missing"].append(name)
            continue
        e, f = art[name]
        ours_q = np.frombuffer(f["q"], dtype=np.int8)
        report["q_mismatches"] += int((ours_q != q.numpy().reshape(-1)).sum())
        s = obj["scales"][name]
        if e["enc"] == "rows":
            ours_s = np.frombuffer(f["scales"], dtype=np.float16)
            report["scale_mismatches"] += int((ours_s.view(np.uint16) != s.numpy().view(np.uint16)).sum())
        else:
            ours_s = np.frombuffer(f["scale"], dtype=np.float32)
            report["scale_mismatches"] += int(ours_s[0] != s.float().item())
    for name, t in obj["passthrough"].items():
        report["tensors"] += 1
        if name not in art:
            report["missing"].append(name)
            continue
        e, f = art[name]
        ours = torch.frombuffer(bytearray(f["data"]), dtype=OUR_DTYPES[e["stored"]])
        report["passthrough_mismatches"] += int((ours != t.reshape(-1)).sum()) + int(ours.dtype != t.dtype)
    return report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--artifact")
    args = ap.parse_args()
    sd = read_safetensors(args.weights)
    sd = {n: sd[n] for n in upstream_order(sd)}
    impl, quantize = quantizer()
    obj = quantize(sd)
    buf = io.BytesIO()
    torch.save(obj, buf)
    raw = buf.getvalue()
    result = {
        "weights": args.weights,
        "reference_impl": impl,
        "raw_state_dict_bytes": sum(t.numel() * t.element_size() for t in sd.values()),
        "torch_save_bytes": len(raw),
        "zlib9_bytes": len(zlib.compress(raw, level=9)),
    }
    if args.artifact:
        result["crosscheck"] = crosscheck(obj, read_artifact(args.artifact))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

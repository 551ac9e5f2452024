#!/usr/bin/env python3
"""Writes a randomly initialised model (upstream names, shapes and dtypes) for timing the
quantization stages on machines where training that model is out of reach (a 2-core CPU).

Usage:
    .venv/bin/python bench/quant_random_weights.py OUT_DIR --layers 9 --dim 512 --mlp-mult 2 [--vocab 1024]

OUT_DIR gets model.safetensors and config.json (pgolf-model's ModelConfig fields). Every matrix,
including the zero-initialised projections, is drawn from a Student-t (ν = 5) scaled to std 0.02,
so the integers have trained-like tails; sizes measured on these weights say nothing about a
trained model's, only the time does.
"""
import argparse
import json
import os
import struct

import torch


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        dtype = {torch.float32: "F32", torch.bfloat16: "BF16"}[t.dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=9)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--mlp-mult", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(a.seed)
    d, hd = a.dim, a.dim // a.heads
    kv = a.kv_heads * hd
    hidden = a.mlp_mult * d

    def mat(rows, cols):
        # Student-t from a normal over a chi-square, so the generator's seed decides everything.
        z = torch.randn(rows, cols, generator=g)
        chi = torch.randn(rows, cols, 5, generator=g).pow(2).sum(-1)
        t = z / torch.sqrt(chi / 5.0)
        return (t * (0.02 / (5.0 / 3.0) ** 0.5)).float()

    w = {"tok_emb.weight": mat(a.vocab, d).to(torch.bfloat16)}
    n_skip = min(a.layers // 2, a.layers - a.layers // 2)
    w["skip_weights"] = torch.ones(n_skip, d)
    for i in range(a.layers):
        p = f"blocks.{i}."
        w[p + "attn.c_q.weight"] = mat(d, d)
        w[p + "attn.c_k.weight"] = mat(kv, d)
        w[p + "attn.c_v.weight"] = mat(kv, d)
        w[p + "attn.proj.weight"] = mat(d, d)
        w[p + "attn.q_gain"] = torch.full((a.heads,), 1.5)
        w[p + "mlp.fc.weight"] = mat(hidden, d)
        w[p + "mlp.proj.weight"] = mat(d, hidden)
        w[p + "attn_scale"] = torch.ones(d)
        w[p + "mlp_scale"] = torch.ones(d)
        w[p + "resid_mix"] = torch.stack([torch.ones(d), torch.zeros(d)])
    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"), w)
    config = {"vocab_size": a.vocab, "num_layers": a.layers, "model_dim": d, "num_heads": a.heads, "num_kv_heads": a.kv_heads,
              "mlp_mult": a.mlp_mult, "seq_len": a.seq_len}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print(f"{a.out}: {sum(t.numel() for t in w.values())} parameters")


if __name__ == "__main__":
    main()

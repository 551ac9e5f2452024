#!/usr/bin/env python3
"""Bit-compatibility of our GPTQ (matrices and the tied embedding), LQER and row sort with the
record scripts' own functions, on fixed matrices and Hessians, on the CPU.

    cargo build --release -p pgolf-quant --example quant_probe
    /work/main/.venv/bin/python bench/quant_lqer_reference.py

The record scripts are read at run time from the upstream mirror into the git-ignored
bench/.work/ref/ (never committed) and imported (with a stand-in `flash_attn_interface`; neither
FlashAttention nor Triton kernels are called): R0405's `train_gpt.py` as it ran (the lzma/base85
one-liner) and R0427's. Ours runs through `target/release/examples/quant_probe`, which reads and
writes safetensors.

1. GPTQ with SDClip: `gptq_quantize_weight(W, H, k, R)` of R0405 and R0427 against ours, for int6
   matrices (k 12.85, 13, 11.5) and the tied embedding with the Hessian of the final-norm output
   (RMS-normalised rows: int8 k 20 as R0405, int7 k 14 as R0427, int6 k 20 as the headwise-gate
   submission). Reported: integers that differ, their largest |Δq|, scales that differ, and the
   largest |Δ| of the dequantized weights.
2. LQER: R0427's `gptq_mixed_quantize` (LQER on, rank 4, top 3, asymmetric group 64; and a second
   run with the asymmetric packing off: the symmetric INT4 fallback) on a small state dict. Its
   chosen matrices against ours from the same errors (E = W − Q·s of its own GPTQ), and for each
   chosen matrix our factors A, B (max |Δ|) and packed integers and scales (mismatches) from that E;
   the matrices it did not choose against its `torch.linalg.svd` + `_lqer_pack_asym` / `_lqer_pack`.
3. The per-group row sort: R0427's `_similarity_sort_l1` against ours on its int6 integers.

Prints one Markdown table (bench/quant.md §5). Exit status 1 if a packed integer, a scale or a
permutation differs where the inputs are the same (LQER from the same E, the sort).
"""
import importlib.util
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("REF_REPO", "/work/.mirror/openai+parameter-golf/repo"))
WORK = ROOT / "bench" / ".work" / "lqer_reference"
REF = ROOT / "bench" / ".work" / "ref"
PROBE = ROOT / "target" / "release" / "examples" / "quant_probe"
RECORDS = "HEAD:records/track_10min_16mb"
R0405 = f"{RECORDS}/2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2/train_gpt.py"
R0427 = f"{RECORDS}/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_gpt.py"

ST = {"F32": (torch.float32, 4), "F16": (torch.float16, 2)}


def reference(spec: str, name: str):
    """The record script `REV:PATH` copied from the mirror into bench/.work/ref/ and imported."""
    path = REF / f"{name}.py"
    if not path.exists():
        REF.mkdir(parents=True, exist_ok=True)
        path.write_bytes(subprocess.check_output(["git", "-C", str(MIRROR), "show", spec]))
    if "flash_attn_interface" not in sys.modules:
        shim = types.ModuleType("flash_attn_interface")
        shim.flash_attn_func = shim.flash_attn_varlen_func = None  # never called here
        sys.modules["flash_attn_interface"] = shim
    s = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module


def save(path: Path, tensors: dict):
    """safetensors (f32 only), written by hand: 8-byte header size, JSON header, data."""
    import json

    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = t.contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load(path: Path) -> dict:
    import json

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dtype, _ = ST[meta["dtype"]]
        out[name] = torch.frombuffer(bytearray(raw[8 + n + a : 8 + n + b]), dtype=dtype).reshape(meta["shape"]).float()
    return out


def probe(tag: str, args: list, tensors: dict) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    src, dst = WORK / f"{tag}.in.safetensors", WORK / f"{tag}.out.safetensors"
    save(src, tensors)
    subprocess.run([str(PROBE), args[0], str(src), str(dst), *map(str, args[1:])], check=True)
    return load(dst)


def weight(g, rows, cols):
    """Heavy-tailed weights: Gaussian with 1% of entries 4× larger."""
    w = torch.randn(rows, cols, generator=g) * 0.02
    return w * (1 + 3 * (torch.rand(rows, cols, generator=g) < 0.01))


def hessian(g, cols, n=4096, normed=False):
    """(1/batches)·Σ XᵀX of correlated inputs; `normed`: rows RMS-normalised, as the final norm's
    output that the tied head reads."""
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    h = torch.zeros(cols, cols)
    for _ in range(4):
        x = torch.randn(n // 4, cols, generator=g) @ mix
        if normed:
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        h.addmm_(x.T, x)
    return h / 4


def row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def gptq_rows(r0405, r0427):
    g = torch.Generator().manual_seed(1234)
    w_mat, h_mat = weight(g, 384, 256), hessian(g, 256)
    w_emb, h_emb = weight(g, 1024, 128), hessian(g, 128, normed=True)
    cases = [
        ("R0405", r0405, "matrix int6 k 12.85", w_mat, h_mat, 6, 12.85),
        ("R0427", r0427, "attn int6 k 13", w_mat, h_mat, 6, 13.0),
        ("R0427", r0427, "mlp int6 k 11.5", w_mat, h_mat, 6, 11.5),
        ("R0405", r0405, "tied embedding int8 k 20", w_emb, h_emb, 8, 20.0),
        ("R0427", r0427, "tied embedding int7 k 14", w_emb, h_emb, 7, 14.0),
        ("R0427", r0427, "tied embedding int6 k 20 (headwise gate)", w_emb, h_emb, 6, 20.0),
    ]
    out = []
    for rec, mod, what, w, h, bits, k in cases:
        q_ref, s_ref = mod.gptq_quantize_weight(w, h, clip_sigmas=k, clip_range=2 ** (bits - 1) - 1)
        ours = probe(f"gptq_{bits}_{k}_{w.shape[0]}", ["gptq", bits, k], {"w": w, "h": h})
        q, s = ours["q"], ours["s"]
        dq = (q - q_ref.float()).abs()
        deq = (q * s.view(-1, 1) - q_ref.float() * s_ref.float().view(-1, 1)).abs()
        out.append((rec, what, f"{w.shape[0]}×{w.shape[1]}", int((dq > 0).sum()), q.numel(),
                    int(dq.max()), int((s != s_ref.float()).sum()), f"{deq.max().item():.3g}"))
    return out


def hparams(asym: bool):
    return types.SimpleNamespace(
        embed_clip_sigmas=14.0, mlp_clip_sigmas=11.5, attn_clip_sigmas=13.0, matrix_clip_sigmas=12.85,
        embed_bits=7, matrix_bits=6, lqer_enabled=True, lqer_rank=4, lqer_top_k=3, lqer_factor_bits=4,
        lqer_asym_enabled=asym, lqer_asym_group=64, gated_attn_quant_gate=False)


def lqer_rows(r0427):
    g = torch.Generator().manual_seed(4321)
    shapes = {
        "tok_emb.weight": (1024, 128),
        "blocks.0.attn.c_q.weight": (384, 256),
        "blocks.0.mlp.fc.weight": (512, 256),
        "blocks.0.mlp.proj.weight": (256, 512),
        "blocks.1.mlp.fc.weight": (512, 256),
    }
    sd = {n: weight(g, *s) for n, s in shapes.items()}
    hs = {n: hessian(g, s[1], normed=n == "tok_emb.weight") for n, s in shapes.items()}
    out, bad = [], 0
    r0427.log = lambda *a, **k: None
    for asym in (True, False):
        result, meta = r0427.gptq_mixed_quantize(sd, hs, hparams(asym))
        chosen = [n for n in sd if "lqer" in meta[n]]
        errs = {n: sd[n] - result[n + ".q"].float() * result[n + ".scale"].float().view(-1, 1) for n in sd}
        norms = sorted(errs, key=lambda n: -float(errs[n].norm()))
        ours_chosen = norms[:3]
        sel = "same 3" if sorted(chosen) == sorted(ours_chosen) else f"DIFFER: {chosen} vs {ours_chosen}"
        bad += sel != "same 3"
        suffix = "_a" if asym else ""
        # The chosen ones as gptq_mixed_quantize stored them; the others (tok_emb among them) from
        # the record's own SVD call and packing function on their E.
        for n in chosen + [n for n in sd if n not in chosen]:
            e = errs[n]
            pack = ["asym", 64] if asym else ["sym", 4]
            ours = probe(f"lqer_{asym}_{n}", ["lqer", 4, *pack], {"e": e})
            U, S, Vh = torch.linalg.svd(e, full_matrices=False)
            a_ref, b_ref = (U[:, :4] * S[:4]).contiguous(), Vh[:4, :].contiguous()
            if n in chosen:
                qa, sa = result[n + ".lqA" + suffix], result[n + ".lqAs" + suffix]
                qb, sb = result[n + ".lqB" + suffix], result[n + ".lqBs" + suffix]
            elif asym:
                qa, sa, qb, sb = r0427._lqer_pack_asym(a_ref, b_ref, 64)
            else:
                qa, sa, qb, sb = r0427._lqer_pack(a_ref, b_ref, 4)
            qa, sa = qa.float(), sa.float().reshape(-1)
            qb, sb = qb.float(), sb.float().reshape(-1)
            mism = [int((ours["qa"] != qa).sum()), int((ours["sa"] != sa).sum()),
                    int((ours["qb"] != qb).sum()), int((ours["sb"] != sb).sum())]
            bad += sum(mism) > 0
            ab = f"{(ours['a'] - a_ref).abs().max().item():.3g} / {(ours['b'] - b_ref).abs().max().item():.3g}"
            how = sel if n in chosen else "not chosen (packed by its function)"
            out.append(("asym g64" if asym else "sym int4", n, how, ab, *mism, qa.numel() + qb.numel()))
    return out, bad, sd, result


def sort_row(r0427, result):
    name = "blocks.0.mlp.fc.weight"
    q = result[name + ".q"]
    ref = r0427._similarity_sort_l1(q.numpy())
    ours = probe("sort", ["sort"], {"q": q.float()})["perm"].to(torch.int64).numpy()
    same = int((ours != ref.astype(np.int64)).sum())
    return (name, f"{q.shape[0]}×{q.shape[1]}", same, len(ref)), same


def main():
    if not PROBE.is_file():
        sys.exit(f"{PROBE}: missing; run `cargo build --release -p pgolf-quant --example quant_probe`")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    r0405 = reference(R0405, "r0405_train_gpt")
    r0427 = reference(R0427, "r0427_train_gpt")
    print(f"torch {torch.__version__}")
    print()
    print("GPTQ with SDClip (ours vs the record's `gptq_quantize_weight`, same W and H):")
    print()
    print(row(["record", "tensor", "shape", "q differing", "of", "max |Δq|", "scales differing", "max |Δ| dequantized"]))
    print(row(["---"] * 8))
    for r in gptq_rows(r0405, r0427):
        print(row(r))
    print()
    lq, bad, _, result = lqer_rows(r0427)
    print("LQER (R0427's `gptq_mixed_quantize`, rank 4, top 3; ours from its E = W − Q·s):")
    print()
    print(row(["packing", "tensor", "chosen (top 3: same as ours?)", "max |Δ| A / B", "qA differing", "sA differing",
               "qB differing", "sB differing", "factor integers"]))
    print(row(["---"] * 9))
    for r in lq:
        print(row(r))
    print()
    s, diff = sort_row(r0427, result)
    print("Row sort (R0427's `_similarity_sort_l1` on its int6 integers):")
    print()
    print(row(["tensor", "shape", "positions differing", "of"]))
    print(row(["---"] * 4))
    print(row(s))
    sys.exit(1 if bad or diff else 0)


if __name__ == "__main__":
    main()

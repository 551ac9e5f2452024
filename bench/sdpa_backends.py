#!/usr/bin/env python3
"""Times causal attention forward+backward at the R0322 micro-batch's shape (48 × 2048 tokens,
8 query heads, 4 KV heads, head dim 64, bf16) through each PyTorch SDPA backend, GQA passed as
`enable_gqa` or by expanding K/V to every query head first (the expansion's copy included in the
time), so the train stage's attention call can take the fastest that runs.

    python3 bench/sdpa_backends.py [B T H HKV HD]
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

B, T, H, HKV, HD = (int(a) for a in sys.argv[1:6]) if len(sys.argv) > 5 else (48, 2048, 8, 4, 64)
dev = "cuda"
torch.manual_seed(0)
q = torch.randn(B, H, T, HD, device=dev, dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(B, HKV, T, HD, device=dev, dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(B, HKV, T, HD, device=dev, dtype=torch.bfloat16, requires_grad=True)
dy = torch.randn(B, H, T, HD, device=dev, dtype=torch.bfloat16)


def run(expand):
    if expand:
        kk = k.repeat_interleave(H // HKV, dim=1)
        vv = v.repeat_interleave(H // HKV, dim=1)
        y = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    y.backward(dy)
    return y


def timed(expand, backend, reps=20):
    ctx = sdpa_kernel([backend]) if backend is not None else torch.enable_grad()
    with ctx:
        try:
            for _ in range(3):
                y = run(expand)
        except RuntimeError as e:
            return None, str(e).splitlines()[0][:90]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            run(expand)
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3, y


print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, shape B={B} T={T} H={H} Hkv={HKV} hd={HD}")
ref = None
for expand in (False, True):
    for name, backend in (("default", None), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        q.grad = k.grad = v.grad = None
        ms, y = timed(expand, backend)
        label = f"{'expanded K/V' if expand else 'enable_gqa  '} {name:<9}"
        if ms is None:
            print(f"{label} unavailable: {y}")
            continue
        if ref is None:
            ref = y.detach().float()
        err = (y.detach().float() - ref).abs().max().item()
        print(f"{label} fwd+bwd {ms:7.3f} ms  max|Δy| vs the first {err:.2e}")

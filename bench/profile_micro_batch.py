#!/usr/bin/env python3
"""On the GPU machine: where does one micro-batch (64 × 1024 tokens, baseline config, forward +
backward, bf16 autocast) spend its GPU time? Profiles the upstream GPT (read from .ref/) in eager
mode, which issues the same ATen kernels as our literal path, and compiled (what the reference
trains with). Prints ms per micro-batch (CUDA events, median of 5) and the GPU time by kernel
class, from torch.profiler.

    python3 bench/profile_micro_batch.py        # after scripts/device-build.sh, carry .ref
"""
import re
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / ".ref"))
import train_gpt as ref  # noqa: E402

CLASSES = [
    ("gemm", r"gemm|nvjet|sm90_xmma|cutlass|cublas"),
    ("flash attention", r"flash"),
    ("rms norm", r"rms|layer_norm"),
    ("softmax / cross-entropy", r"softmax|nll_loss|cross_entropy"),
    ("reductions", r"reduce"),
    ("copies / casts", r"copy|cast|cat|memcpy|memset"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise|triton"),
]


def build():
    torch.manual_seed(0)
    model = ref.GPT(vocab_size=1024, num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=2,
                    tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=30.0, rope_base=10000.0,
                    qk_gain_init=1.5).cuda().bfloat16()
    for m in model.modules():
        if isinstance(m, ref.CastedLinear):
            m.float()
    ref.restore_low_dim_params_to_fp32(model)
    with torch.no_grad():  # non-zero projections, as after some training
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def micro(model, x, y):
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        loss = model(x, y)
    (loss / 8).backward()


def measure(name, model, x, y):
    for _ in range(3):
        micro(model, x, y)
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        micro(model, x, y)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        micro(model, x, y)
        torch.cuda.synchronize()
    kernels = [(e.key, e.self_device_time_total / 1000, e.count) for e in prof.key_averages() if e.self_device_time_total > 0]
    total = sum(t for _, t, _ in kernels)
    by_class = {}
    for key, t, n in kernels:
        cls = next((c for c, pat in CLASSES if re.search(pat, key, re.I)), "other")
        ms, count = by_class.get(cls, (0.0, 0))
        by_class[cls] = (ms + t, count + n)
    print(f"\n## {name}: {statistics.median(times):.1f} ms per micro-batch (events, median of 5); profiled GPU time {total:.1f} ms")
    print("| kernel class | GPU ms | kernels |\n|---|---|---|")
    for cls, (ms, n) in sorted(by_class.items(), key=lambda kv: -kv[1][0]):
        print(f"| {cls} | {ms:.1f} | {n} |")
    print("top kernels:")
    for key, t, n in sorted(kernels, key=lambda k: -k[1])[:12]:
        print(f"  {t:7.2f} ms  x{n:4d}  {key[:110]}")


def main():
    torch.backends.cuda.matmul.allow_tf32 = True
    x = torch.randint(0, 1024, (64, 1024), device="cuda")
    y = torch.randint(0, 1024, (64, 1024), device="cuda")
    model = build()
    measure("upstream GPT, eager (= our literal path's kernels)", model, x, y)
    measure("upstream GPT, torch.compile (what the reference trains with)", torch.compile(model, dynamic=False, fullgraph=True), x, y)


if __name__ == "__main__":
    main()

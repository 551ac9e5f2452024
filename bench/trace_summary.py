#!/usr/bin/env python3
"""Splits the GPU time in a Chrome trace from libtorch's profiler (our train stage with
PGOLF_PROFILE_TRACE set, docs/GPU.md) by kernel class, by kernel and by the ATen op that launched
each kernel, per recorded step. The classes are those of bench/profile_micro_batch.py, so the
numbers sit beside upstream's.

    python3 bench/trace_summary.py TRACE.json [STEPS]      # STEPS: steps recorded (default 2)
"""
import bisect
import collections
import json
import re
import sys

CLASSES = [
    ("gemm", r"gemm|nvjet|sm90_xmma|cutlass|cublas"),
    ("flash attention", r"flash|fmha|cudnn|attention"),
    ("rms norm", r"rms|layer_norm"),
    ("softmax / cross-entropy", r"softmax|nll_loss|cross_entropy"),
    ("reductions", r"reduce"),
    ("copies / casts", r"copy|cast|cat|memcpy|memset"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise|triton"),
]


def main():
    path = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    events = json.load(open(path))["traceEvents"]
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    # Innermost ATen op around each launch, per thread: ops sorted by start.
    ops = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op":
            ops[e["tid"]].append((e["ts"], e["ts"] + e.get("dur", 0), e["name"]))
    for v in ops.values():
        v.sort()
    starts = {tid: [o[0] for o in v] for tid, v in ops.items()}

    def launching_op(k):
        r = launches.get(k.get("args", {}).get("correlation"))
        if r is None:
            return "(graph replay or unknown)"
        v, s = ops.get(r["tid"], []), starts.get(r["tid"], [])
        best = None
        for i in range(bisect.bisect_right(s, r["ts"]) - 1, max(-1, bisect.bisect_right(s, r["ts"]) - 200), -1):
            a, b, name = v[i]
            if a <= r["ts"] <= b and (best is None or a >= best[0]):
                best = (a, name)
        return best[1] if best else "(no op)"

    by_class = collections.Counter()
    by_kernel = collections.Counter()
    by_op = collections.Counter()
    count = collections.Counter()
    for k in kernels:
        ms = k.get("dur", 0) / 1000 / steps
        name = k["name"]
        cls = next((c for c, pat in CLASSES if re.search(pat, name, re.I)), "other")
        by_class[cls] += ms
        by_kernel[name[:100]] += ms
        count[name[:100]] += 1
        by_op[launching_op(k)] += ms
    total = sum(by_class.values())
    print(f"GPU kernel time per step: {total:.1f} ms ({len(kernels)} kernels over {steps} steps)")
    print("| kernel class | GPU ms per step |\n|---|---|")
    for cls, ms in by_class.most_common():
        print(f"| {cls} | {ms:.1f} |")
    print("\ntop kernels (ms per step, launches per step):")
    for name, ms in by_kernel.most_common(25):
        print(f"  {ms:7.2f}  x{count[name] // steps:5d}  {name}")
    print("\ntop launching ops (ms per step):")
    for name, ms in by_op.most_common(30):
        print(f"  {ms:7.2f}  {name}")


if __name__ == "__main__":
    main()

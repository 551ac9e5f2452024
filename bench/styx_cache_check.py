#!/usr/bin/env python3
"""Which token does PROTEUS+STYX's n-gram cache score? (refs/pull/769/head, its `FastNgramCache`
and the lookup in its `eval_val_sliding`, read from the mirror at run time, never committed.)

A toy history teaches the cache the 5-gram (1 2 3 4 → 5) ten times and never (2 3 4 5 → 6). The
eval then scores a window whose model targets are 5 and 6, exactly as the script aligns them. A
cache that predicted the targets would give p(6 | 2 3 4 5) no match; STYX's gives 1.0 at order 5 —
the probability of 5, the token already in the model's input at that position. So the script
blends p_model(y_t) with p_cache(x_t): the cache's number is about the current input token, not the
next one, on top of not being a normalized distribution (REFERENCE.md §2, §7).

    .venv/bin/python bench/styx_cache_check.py      # exits 1 if the alignment is not as stated
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

MIRROR = Path(os.environ.get("REF_REPO", "/work/.mirror/openai+parameter-golf/repo"))
SCRIPT = "refs/pull/769/head:records/track_10min_16mb/2026-03-25_PROTEUS_STYX_Ngram_0.8508/train_gpt.py"


def main():
    src = subprocess.check_output(["git", "-C", str(MIRROR), "show", SCRIPT]).decode()
    ns = {"np": np}
    exec(src[src.index("class FastNgramCache"):src.index("def eval_val_sliding")], ns)
    cache = ns["FastNgramCache"](100, max_order=5, num_buckets=1 << 22)
    cache.update_batch(np.array([1, 2, 3, 4, 5] * 10, dtype=np.int64))
    # As its eval: the window's scored targets are val[abs_start+1 ..= abs_end].
    val = np.array([9, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    abs_start, abs_end, max_ctx = 8, 10, cache.max_order - 1
    span_start = max(0, abs_start - max_ctx)
    hits, totals, orders = cache.get_best_probs(val[span_start:abs_end + 1], min_count=2)
    offset, n = abs_start - span_start - max_ctx, abs_end - abs_start
    p = hits[offset:offset + n] / np.maximum(totals[offset:offset + n], 1)
    print("| position | model target y_t | token in the input x_t | STYX cache p | order |")
    print("|---|---|---|---|---|")
    for k in range(n):
        print(f"| {k} | {val[abs_start + 1 + k]} | {val[abs_start + k]} | {p[k]:.3f} | {orders[offset + k]} |")
    # y = 6 after (2 3 4 5) was never seen: a target-aligned cache has no match there.
    misaligned = p[1] == 1.0 and orders[offset + 1] == 5
    print("STYX's cache scores the input token x_t, not the target y_t" if misaligned else "aligned with the targets")
    sys.exit(0 if misaligned else 1)


if __name__ == "__main__":
    main()

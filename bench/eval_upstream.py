"""Scores our decoded weights with the upstream Python evaluation functions (copied into .ref/ by
bench/eval_ref.sh; never committed): root train_gpt.py `eval_val` (flat, the baseline's number)
and the SlidingWindowEval record's `eval_val_sliding` (throughput reference).

    eval_upstream.py --data TOKENIZE_DIR --weights decoded.safetensors --config config.json \
        [--device cpu|cuda] [--seq-len S] [--stride 64] [--sliding] [--build train_gpt]

Prints one JSON object: val_loss, val_bpb, scored tokens and seconds per evaluation.
"""

import argparse
import importlib.util
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

ROOT = Path(__file__).resolve().parent.parent


def load_ref(name: str, path: Path):
    if not path.is_file():
        sys.exit(f"error: eval_upstream: {path}: missing (run bench/eval_ref.sh first)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_safetensors(path: Path) -> dict:
    """Plain reader (the venv has no `safetensors` package): 8-byte header length, JSON header,
    then raw little-endian data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "F16": np.float16}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        buf = raw[base + start : base + end]
        if meta["dtype"] == "BF16":
            bits = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=dtypes[meta["dtype"]]).astype(np.float32)
        out[name] = torch.from_numpy(arr.copy()).reshape(meta["shape"])
    return out


# How upstream's GPT is given the decoded weights (eval_diag.py compares them all):
#   train_gpt        as train_gpt.py main() builds it: `.bfloat16()`, CastedLinear back to fp32,
#                    low-dim/control params restored to fp32; tok_emb and Rotary.inv_freq stay bf16
#                    (so RoPE positions and angles are bf16). What upstream evaluates; the default.
#   train_gpt_rope32 the same with Rotary.inv_freq back in fp32 (isolates the bf16-RoPE quirk).
#   fp32_params      every parameter and buffer fp32 (the residual stream then runs in fp32 under
#                    autocast: what this script built before; not what upstream evaluates).
BUILDS = ("train_gpt", "train_gpt_rope32", "fp32_params")


def build_model(module, cfg: dict, state: dict, device, build: str = "train_gpt"):
    if build not in BUILDS:
        sys.exit(f"error: eval_upstream: unknown build {build!r} (one of {', '.join(BUILDS)})")
    if cfg.get("activation", "relu2") != "relu2":
        sys.exit("error: eval_upstream: the upstream GPT has relu² only; config says " + json.dumps(cfg["activation"]))
    model = module.GPT(
        vocab_size=cfg["vocab_size"],
        num_layers=cfg["num_layers"],
        model_dim=cfg["model_dim"],
        num_heads=cfg["num_heads"],
        num_kv_heads=cfg["num_kv_heads"],
        mlp_mult=cfg["mlp_mult"],
        tie_embeddings=cfg["tie_embeddings"],
        tied_embed_init_std=cfg["tied_embed_init_std"],
        logit_softcap=cfg["logit_softcap"],
        rope_base=cfg["rope_base"],
        qk_gain_init=cfg["qk_gain_init"],
    ).to(device)
    if build.startswith("train_gpt"):
        model = model.bfloat16()
        for m in model.modules():
            if isinstance(m, module.CastedLinear):
                m.float()
        module.restore_low_dim_params_to_fp32(model)
    if build == "train_gpt_rope32":
        for m in model.modules():
            if isinstance(m, module.Rotary):
                m.inv_freq = m.inv_freq.float()
                m._cos_cached = m._sin_cached = None
    # load_state_dict copies into each parameter's own dtype (f32 -> bf16 rounds, as upstream's).
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    model.eval()
    return model


class Args:
    """The two Hyperparameters fields the eval functions read."""

    def __init__(self, seq_len: int, val_batch_size: int):
        self.train_seq_len = seq_len
        self.val_batch_size = val_batch_size


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--weights", required=True, type=Path)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq-len", type=int, default=0)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--val-batch-size", type=int, default=524_288)
    ap.add_argument("--sliding", action="store_true", help="also time the SW record's eval_val_sliding")
    ap.add_argument("--build", default="train_gpt", choices=BUILDS, help="how upstream's model holds the weights")
    a = ap.parse_args()

    device = torch.device(a.device)
    cfg = json.loads(a.config.read_text())
    seq_len = a.seq_len or cfg["seq_len"]
    state = read_safetensors(a.weights)
    root = load_ref("upstream_train_gpt", ROOT / ".ref" / "train_gpt.py")
    sp = spm.SentencePieceProcessor(model_file=str(a.data / "tokenizer.model"))
    luts = root.build_sentencepiece_luts(sp, cfg["vocab_size"], device)
    val_tokens = root.load_validation_tokens(str(a.data / "fineweb_val_*.bin"), seq_len)
    result = {"device": a.device, "seq_len": seq_len, "torch": torch.__version__, "build": a.build}

    model = build_model(root, cfg, state, device, a.build)
    args = Args(seq_len, max(a.val_batch_size, seq_len))
    sync(device)
    t0 = time.perf_counter()
    val_loss, val_bpb = root.eval_val(args, model, 0, 1, device, 1, val_tokens, *luts)
    sync(device)
    result["flat"] = {"val_loss": val_loss, "val_bpb": val_bpb, "scored_tokens": val_tokens.numel() - 1, "seconds": time.perf_counter() - t0}

    if a.sliding:
        sw = load_ref("upstream_sw_train_gpt", ROOT / ".ref" / "sw_train_gpt.py")
        sw_model = build_model(sw, cfg, state, device, a.build)
        sync(device)
        t0 = time.perf_counter()
        loss, bpb = sw.eval_val_sliding(args, sw_model, 0, 1, device, val_tokens, *luts, stride=a.stride)
        sync(device)
        seconds = time.perf_counter() - t0
        n = val_tokens.numel() - 1
        result["sliding"] = {"val_loss": loss, "val_bpb": bpb, "stride": a.stride, "seconds": seconds, "tokens_per_second": n / seconds}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

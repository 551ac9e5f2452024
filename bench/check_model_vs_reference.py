#!/usr/bin/env python3
"""Cross-check our GPT against the upstream reference on the CPU, in fp32.

For a few small configs: tokenize some Wikipedia text with sp1024, train OUR model for a few
steps with the `train` stage (so every weight, including the zero-initialised projections, is
non-trivial), load the resulting model.safetensors into the reference script's `GPT` (strict
load_state_dict), and compare logits, per-token NLL and mean loss on the same val tokens; also
compare the step-0 (initial) weights' loss. Prints a table; exits 1 if any difference exceeds 1e-4.

References: the baseline `train_gpt.py` for the baseline configs; R0322's record script
(records/track_10min_16mb/2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233/train_gpt.py)
for the configs with its options (partial RoPE with its NTK rescale at T > 1024, XSA, LN scale,
SmearGate, BigramHash, value embedding, orthogonal init, late QAT during training). The record
imports FlashAttention-3 (`flash_attn_interface`); this bench gives it a stand-in module whose
`flash_attn_func` is PyTorch's SDPA (the same causal GQA attention), for that call only.

    cargo build --release -p train -p pgolf-model --example logits
    .venv/bin/python bench/check_model_vs_reference.py

The upstream script is read at run time from the mirror into the git-ignored .ref/.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import sentencepiece as spm
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MIRROR = Path(os.environ.get("REF_REPO", "/work/.mirror/openai+parameter-golf/repo"))
WORK = ROOT / "bench" / ".work" / "check_model"
TOL = 1e-4


DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64, "F64": torch.float64}


def load_file(path: str) -> dict:
    """A safetensors file (8-byte little-endian header size, JSON header, raw data) as tensors."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=DTYPES[meta["dtype"]])
        out[name] = t.reshape(meta["shape"])
    return out


R0322 = "HEAD:records/track_10min_16mb/2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233/train_gpt.py"
R0323 = "HEAD:records/track_10min_16mb/2026-03-23_LeakyReLU_LegalTTT_ParallelMuon/train_gpt.py"
# PROTEUS EMA as its code ran: the script on its pull request whose size matches its logs.
PROTEUS_EMA = "refs/pull/95/head:records/track_10min_16mb/2026-03-19_PROTEUS_EMA/train_gpt.py"


def sdpa_flash_attn_func(q, k, v, causal=True, **_):
    """FlashAttention-3's `flash_attn_func` layout ([B, T, heads, hd]) on PyTorch's SDPA."""
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
        enable_gqa=k.size(2) != q.size(2))
    return y.transpose(1, 2)


def reference_module(spec: str = "HEAD:train_gpt.py", name: str = "train_gpt"):
    """The reference script `REV:PATH` read from the mirror into the git-ignored .ref/, imported as
    `name`."""
    import importlib.util
    import types

    ref = ROOT / ".ref" / f"{name}.py"
    if not ref.exists():
        ref.parent.mkdir(exist_ok=True)
        ref.write_bytes(subprocess.check_output(["git", "-C", str(MIRROR), "show", spec]))
    if "flash_attn_interface" not in sys.modules:
        shim = types.ModuleType("flash_attn_interface")
        shim.flash_attn_func = sdpa_flash_attn_func
        sys.modules["flash_attn_interface"] = shim
    spec = importlib.util.spec_from_file_location(name, ref)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_shard(path: Path, tokens: np.ndarray):
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def make_data(dir: Path):
    """sp1024 shards of a few wiki articles (train from part-00, val from part-07)."""
    if (dir / "tokenizer.json").exists():
        return
    dir.mkdir(parents=True, exist_ok=True)
    model = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    for split, part, docs in (("train", "part-00", 60), ("val", "part-07", 8)):
        texts = pq.read_table(SHARED / "data" / "enwiki2015" / f"{part}.parquet", columns=["text"]).column("text").to_pylist()[:docs]
        ids = []
        for t in texts:
            ids += [1] + sp.encode(t[:4000])
        write_shard(dir / f"fineweb_{split}_000000.bin", np.array(ids))
    (dir / "tokenizer.model").write_bytes(model.read_bytes())
    (dir / "tokenizer.json").write_text(json.dumps({"kind": "sentencepiece", "vocab_size": 1024, "bos_id": 1}))


def train(name: str, model: dict, data: Path, iterations: int, extra: dict) -> Path:
    out = WORK / name
    if (out / "manifest.json").exists():
        return out
    params = {
        "model": model, "iterations": iterations, "warmdown_iters": 0, "max_wallclock_seconds": 0.0,
        "train_batch_tokens": 8 * 4 * model["seq_len"], "val_batch_tokens": 8 * 8 * model["seq_len"],
        "val_loss_every": 0, "ema_decay": 0.0, "threads": 1, **extra,
    }
    pfile = WORK / f"{name}.json"
    pfile.write_text(json.dumps(params))
    subprocess.run([str(ROOT / "target/release/train"), "--out", str(out), "--in", f"data={data}", "--params", str(pfile)], check=True)
    return out


def ours(run: Path, shard: Path, n: int, formulation: str) -> dict:
    out = run / f"logits_{formulation}.safetensors"
    subprocess.run([str(ROOT / "target/release/examples/logits"), str(run / "config.json"), str(run / "model.safetensors"), str(shard), str(n), str(out), formulation], check=True)
    return load_file(str(out))


def record_kwargs(cfg: dict) -> dict:
    """R0322's GPT arguments for our config's options (its SmearGate is always on)."""
    assert cfg["smear_gate"], "R0322's GPT always has its SmearGate"
    hd = cfg["model_dim"] // cfg["num_heads"]
    rope_dims = cfg["rope_dims"] or hd
    assert cfg["rope_ntk_len"] == 1024, "R0322 builds Rotary with train_seq_len 1024"
    bigram, ve = cfg["bigram"], cfg["value_embed"]
    return dict(
        bigram_vocab_size=bigram["buckets"] if bigram else 0, bigram_dim=bigram["dim"] if bigram else 128,
        xsa_last_n=cfg["xsa_last_n"], rope_dims=0 if rope_dims == hd else rope_dims, ln_scale=cfg["ln_scale"],
        ve_enabled=ve is not None, ve_dim=ve["dim"] if ve else 128,
        ve_layers=",".join(str(l) for l in ve["layers"]) if ve else "",
    )


def reference(ref, cfg: dict, weights: Path, x: torch.Tensor, y: torch.Tensor, kind: str):
    extra = {"r0322": lambda: record_kwargs(cfg), "r0323": lambda: record_kwargs(cfg),
             "proteus": lambda: {"mlp_hidden": cfg["mlp_hidden"]}}
    model = ref.GPT(
        vocab_size=cfg["vocab_size"], num_layers=cfg["num_layers"], model_dim=cfg["model_dim"],
        num_heads=cfg["num_heads"], num_kv_heads=cfg["num_kv_heads"], mlp_mult=cfg["mlp_mult"],
        tie_embeddings=cfg["tie_embeddings"], tied_embed_init_std=cfg["tied_embed_init_std"],
        logit_softcap=cfg["logit_softcap"], rope_base=cfg["rope_base"], qk_gain_init=cfg["qk_gain_init"],
        **(extra[kind]() if kind in extra else {}),
    ).float()
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state, strict=True)
    captured = {}
    real_ce = F.cross_entropy

    def capture(logits, targets, **kw):  # the reference computes logits inline; take them at the CE
        captured["logits"] = logits.detach().clone()
        return real_ce(logits, targets, **kw)

    ref.F.cross_entropy = capture
    try:
        with torch.no_grad():
            loss = model(x, y)
    finally:
        ref.F.cross_entropy = real_ce
    logits = captured["logits"].view(*x.shape, -1)
    nll = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="none").view_as(y)
    return logits, nll, loss


# R0322's options at a CPU size: 11 layers would only be slower. seq 1280 > 1024 runs its NTK rescale;
# 64-wide matrices get its orthogonal init; the record's optimizer (Muon and AdamW decay, momentum
# warm-up, clipping) and late QAT from the first step so that QAT's straight-through training shapes
# the weights that are compared.
R0322_TINY = dict(
    vocab_size=1024, num_layers=5, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=3, seq_len=1280,
    rope_dims=8, rope_ntk_len=1024, xsa_last_n=2, ln_scale=True, smear_gate=True,
    bigram={"buckets": 256, "dim": 32}, value_embed={"dim": 16, "layers": [3, 4]}, init="orthogonal",
)
R0322_TRAIN = {
    "train_batch_tokens": 4 * 1280, "grad_accum_steps": 1, "val_batch_tokens": 4 * 1280, "muon_momentum": 0.99, "muon_momentum_warmup_start": 0.92,
    "muon_momentum_warmup_steps": 1500, "muon_weight_decay": 0.04, "adam_weight_decay": 0.04,
    "grad_clip_norm": 0.3, "late_qat_threshold": 1.5,
}


def main():
    torch.set_num_threads(2)
    refs = {
        "baseline": reference_module(),
        "r0322": reference_module(R0322, "r0322_train_gpt"),
        "r0323": reference_module(R0323, "r0323_train_gpt"),
        "proteus": reference_module(PROTEUS_EMA, "proteus_ema_train_gpt"),
    }
    data = WORK / "data"
    make_data(data)
    configs = {
        "gqa_tied_5L": (dict(vocab_size=1024, num_layers=5, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2, seq_len=64), {}, 8),
        "mha_untied_4L_mlp3": (dict(vocab_size=1024, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=4, mlp_mult=3, seq_len=64, tie_embeddings=False), {}, 8),
        "r0322_5L": (R0322_TINY, R0322_TRAIN, 4),
        # R0323: R0322's options with LeakyReLU(0.5)² and its parameter banks as the state dict
        # (qo_bank, kv_bank, mlp_up_bank, mlp_down_bank), its bank init.
        "r0323_5L": ({**R0322_TINY, "activation": {"leaky_relu2": 0.5}, "banks": True, "init": "orthogonal_banks"},
                     R0322_TRAIN, 4),
        # PROTEUS EMA's set MLP width (992 of 512 in its run) and its EMA cadence.
        "proteus_5L_h124": (dict(vocab_size=1024, num_layers=5, model_dim=64, num_heads=4, num_kv_heads=2, seq_len=64, mlp_hidden=124),
                            {"ema_every": 10, "ema_decay": 0.999, "tied_embed_lr": 0.04, "matrix_lr": 0.06, "scalar_lr": 0.06}, 8),
    }
    rows, worst = [], 0.0
    for name, (model, extra, seqs) in configs.items():
        kind = name.split("_")[0] if name.split("_")[0] in refs else "baseline"
        for steps in (1, 30):
            run = train(f"{name}_{steps}", model, data, steps, extra)
            cfg = json.loads((run / "config.json").read_text())
            for formulation in ("literal", "fast"):
                got = ours(run, data / "fineweb_val_000000.bin", seqs, formulation)
                x, y = got["x"], got["y"]
                logits, nll, loss = reference(refs[kind], cfg, run / "model.safetensors", x, y, kind)
                d_logits = (got["logits"] - logits).abs().max().item()
                d_nll = (got["nll"] - nll).abs().max().item()
                d_loss = abs(got["loss"].item() - loss.item())
                worst = max(worst, d_logits, d_nll, d_loss)
                rows.append((f"{name} after {steps} step(s), {formulation}", loss.item(), got["loss"].item(), d_logits, d_nll, d_loss))
    print(f"| model | reference loss | our loss | max abs Δ logits | max abs Δ NLL | Δ mean loss |")
    print(f"|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.6f} | {r[2]:.6f} | {r[3]:.2e} | {r[4]:.2e} | {r[5]:.2e} |")
    print(f"worst difference {worst:.2e} (tolerance {TOL:.0e}): {'PASS' if worst <= TOL else 'FAIL'}")
    sys.exit(0 if worst <= TOL else 1)


if __name__ == "__main__":
    main()

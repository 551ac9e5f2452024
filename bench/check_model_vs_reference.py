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
SmearGate, BigramHash, value embedding, orthogonal init, late QAT during training). The records
import FlashAttention-3 (`flash_attn_interface`); this bench gives them a stand-in module whose
`flash_attn_func` is PyTorch's SDPA (the same causal GQA attention), for that call only.

The SP8192 line (sp8192 shards): R0405's record script as it ran (the lzma/base85 one-liner,
executed as is) for depth recurrence and skip gates; R0427's for parallel lanes, SmearGate v2
with its BOS mask and the sparse attention gate (its README's run values: sparse gate scale 0.5);
the headwise-gate submission's (refs/pull/2071/head) for `attn_gate_w`. Each with the recurrence
on (the model as evaluated) and off (the plain U-Net training runs before it switches on). Their
GPT is built from the script's own `Hyperparameters` with our config's values set on it; the
logits come from its `forward_logits` (eval mode, so R0427's Triton MLP and CE are not called;
Triton is only imported).

    cargo build --release -p train -p pgolf-model --example logits
    .venv/bin/python bench/check_model_vs_reference.py [NAME_PREFIX...]

With prefixes, only the configs whose names start with one of them run.

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
R0405 = "HEAD:records/track_10min_16mb/2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2/train_gpt.py"
R0427 = "HEAD:records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_gpt.py"
HEADWISE = "refs/pull/2071/head:records/track_10min_16mb/2026-04-30_SP8192_PR1851_HeadwiseGate_EMA990_SmallBatch/train_gpt.py"
SP8192_KINDS = ("r0405", "r0427", "headwise")


def sdpa_flash_attn_func(q, k, v, causal=True, **_):
    """FlashAttention-3's `flash_attn_func` layout ([B, T, heads, hd]) on PyTorch's SDPA."""
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
        enable_gqa=k.size(2) != q.size(2))
    return y.transpose(1, 2)


def sdpa_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=0, max_seqlen_k=0, causal=True, **_):
    """FlashAttention's varlen layout ([total, heads, hd] and cumulative segment lengths) as one
    causal SDPA per segment (the padding entries repeat the total: empty segments, skipped)."""
    assert torch.equal(cu_seqlens_q, cu_seqlens_k)
    cu = cu_seqlens_q.tolist()
    pieces = [sdpa_flash_attn_func(q[None, a:b], k[None, a:b], v[None, a:b], causal)[0]
              for a, b in zip(cu[:-1], cu[1:]) if b > a]
    return torch.cat(pieces, 0)


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
        shim.flash_attn_varlen_func = sdpa_flash_attn_varlen_func
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


def make_data(dir: Path, vocab: int = 1024, val_docs: int = 8, val_chars: int = 4000):
    """sp1024 (or sp8192) shards of a few wiki articles (train from part-00, val from part-07, the
    first `val_chars` of each of `val_docs`)."""
    if (dir / "tokenizer.json").exists():
        return
    dir.mkdir(parents=True, exist_ok=True)
    model = SHARED / "tokenizers" / f"fineweb_{vocab}_bpe.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    for split, part, docs, chars in (("train", "part-00", 60, 4000), ("val", "part-07", val_docs, val_chars)):
        texts = pq.read_table(SHARED / "data" / "enwiki2015" / f"{part}.parquet", columns=["text"]).column("text").to_pylist()[:docs]
        ids = []
        for t in texts:
            ids += [1] + sp.encode(t[:chars])
        write_shard(dir / f"fineweb_{split}_000000.bin", np.array(ids))
    (dir / "tokenizer.model").write_bytes(model.read_bytes())
    (dir / "tokenizer.json").write_text(json.dumps({"kind": "sentencepiece", "vocab_size": vocab, "bos_id": 1}))


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


def ours(run: Path, shard: Path, n: int, formulation: str, looping: bool = True, packed: bool = False) -> dict:
    flags = [f for f, on in (("loop-off", not looping), ("packed", packed)) if on]
    out = run / f"logits_{formulation}{''.join('_' + f for f in flags)}.safetensors"
    extra = [",".join(flags)] if flags else []
    subprocess.run([str(ROOT / "target/release/examples/logits"), str(run / "config.json"), str(run / "model.safetensors"), str(shard), str(n), str(out), formulation, *extra], check=True)
    return load_file(str(out))


def sp8192_reference(ref, cfg: dict, weights: Path, x: torch.Tensor, y: torch.Tensor, looping: bool, packed: bool = False):
    """The SP8192 record's GPT(h) for our config: its Hyperparameters with our values, the
    recurrence active or not; logits from `forward_logits`, the NLL and loss as its eval computes
    them (soft-capped logits, fp32 cross-entropy). Packed: `x` is one row `[1, N·T]` and the
    documents' `cu_seqlens` come from the record's own `_build_cu_seqlens` (as its `eval_val`)."""
    assert cfg["activation"] == {"leaky_relu2": 0.5} and cfg["mlp_hidden"] is None
    h = ref.Hyperparameters()
    rec, par, smear, gate = cfg["recurrence"], cfg["parallel"], cfg["smear_gate_v2"], cfg["attn_gate"]
    hd = cfg["model_dim"] // cfg["num_heads"]
    values = dict(
        vocab_size=cfg["vocab_size"], num_layers=cfg["num_layers"], model_dim=cfg["model_dim"],
        num_heads=cfg["num_heads"], num_kv_heads=cfg["num_kv_heads"],
        mlp_mult=float(cfg["mlp_mult"]), tie_embeddings=cfg["tie_embeddings"],
        tied_embed_init_std=cfg["tied_embed_init_std"], logit_softcap=cfg["logit_softcap"],
        rope_base=cfg["rope_base"], qk_gain_init=cfg["qk_gain_init"],
        rope_dims=0 if (cfg["rope_dims"] or hd) == hd else cfg["rope_dims"],
        xsa_last_n=cfg["xsa_last_n"], ln_scale=cfg["ln_scale"], skip_gates_enabled=cfg["skip_gates"],
        num_loops=rec["loops"] if rec else 0, loop_start=rec["start"] if rec else 0,
        loop_end=rec["end"] if rec else 0,
    )
    if hasattr(h, "rope_yarn"):  # R0427's line: NTK rescale only with ROPE_YARN (off in its runs)
        assert cfg["rope_ntk_len"] is None, "R0427 runs without the NTK rescale"
        assert cfg["banks"], "R0427's state dict is its banks"
        windows = {w for w in (smear and smear["window"], gate and "sparse" in gate and gate["sparse"]["window"]) if w}
        assert len(windows) <= 1, "R0427 has one GATE_WINDOW for SmearGate and the sparse gate"
        values.update(
            train_seq_len=cfg["seq_len"], rope_yarn=False, fused_ce_enabled=False,
            parallel_start_layer=par["start_layer"] if par else 0,
            parallel_final_lane=par["final_lane"] if par else "mean",
            smear_gate_enabled=smear is not None, gate_window=windows.pop() if windows else 12,
            sparse_attn_gate_enabled=bool(gate and "sparse" in gate),
            sparse_attn_gate_scale=gate["sparse"]["scale"] if gate and "sparse" in gate else 1.0,
            gated_attn_enabled=bool(gate and "headwise" in gate),
        )
        if smear is not None:
            assert smear["bos_id"] == 1, "R0427 hard-codes BOS_ID = 1"
        ref.BOS_ID = 1  # set by its loaders at run time
    else:  # R0405: Rotary built for train_seq_len, rescaled past it
        assert par is None and smear is None and gate is None, "R0405 has none of R0427's add-ons"
        assert not cfg["banks"]
        values.update(train_seq_len=cfg["rope_ntk_len"] or 10**9, embedding_dim=cfg["model_dim"])
    for k, v in values.items():
        assert hasattr(h, k), f"the record's Hyperparameters has no {k}"
        setattr(h, k, v)
    model = ref.GPT(h).float().eval()
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state, strict=True)
    model.looping_active = looping
    with torch.no_grad():
        if packed:
            bos = (x[0] == 1).nonzero(as_tuple=True)[0].tolist()
            cu, max_seqlen = ref._build_cu_seqlens(bos, x.size(1), x.device, cfg["seq_len"], 64)
            logits = model.forward_logits(x, cu_seqlens=cu, max_seqlen=max_seqlen)
        else:
            logits = model.forward_logits(x)
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="none").view_as(y)
    return logits, nll, nll.mean()


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


# The SP8192 line at a CPU size (sp8192, 6 layers of 64, seq 128): R0405's recurrence (layers 2–3
# looped twice more: enc [0,1,2,3,2], dec [3,2,3,4,5]; off, the plain [0,1,2] / [3,4,5]) with skip gates,
# XSA on every layer, partial RoPE, LN scale, MLP 4× LeakyReLU(0.5)², QK gain 4 and its Rotary
# rescale past 64 (so seq 128 runs it); R0427's parallel lanes from layer 4, SmearGate v2 and sparse
# gate (window 12, scale 0.5), banks, no rescale; the headwise gate in place of those two.
SP8192_TINY = dict(
    vocab_size=8192, num_layers=6, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=4, seq_len=128,
    qk_gain_init=4.0, activation={"leaky_relu2": 0.5}, rope_dims=8, rope_ntk_len=64, xsa_last_n=6,
    ln_scale=True, init="orthogonal", recurrence={"start": 2, "end": 3, "loops": 2}, skip_gates=True,
)
R0427_TINY = {
    **SP8192_TINY, "qk_gain_init": 5.0, "rope_ntk_len": None, "init": "orthogonal_banks", "banks": True,
    "parallel": {"start_layer": 4, "final_lane": "mean"}, "smear_gate_v2": {"window": 12, "bos_id": 1},
    "attn_gate": {"sparse": {"window": 12, "scale": 0.5, "init_std": 0.0}},
}
HEADWISE_TINY = {**R0427_TINY, "smear_gate_v2": None, "attn_gate": {"headwise": {"init_std": 0.01}}}
SP8192_TRAIN = {
    "train_batch_tokens": 4 * 128, "grad_accum_steps": 1, "val_batch_tokens": 4 * 128, "muon_momentum": 0.97,
    "muon_weight_decay": 0.095, "adam_weight_decay": 0.02, "grad_clip_norm": 0.3, "tied_embed_lr": 0.03,
    "matrix_lr": 0.026, "scalar_lr": 0.02,
}


def main():
    torch.set_num_threads(2)
    only = sys.argv[1:]
    refs = {
        "baseline": reference_module(),
        "r0322": reference_module(R0322, "r0322_train_gpt"),
        "r0323": reference_module(R0323, "r0323_train_gpt"),
        "proteus": reference_module(PROTEUS_EMA, "proteus_ema_train_gpt"),
        "r0405": reference_module(R0405, "r0405_train_gpt"),
        "r0427": reference_module(R0427, "r0427_train_gpt"),
        "headwise": reference_module(HEADWISE, "headwise_gate_train_gpt"),
    }
    data = WORK / "data"
    make_data(data)
    # Short val documents (≈ 60 tokens), so every compared window crosses BOS tokens and SmearGate
    # v2's mask takes part.
    data8192 = WORK / "data8192"
    make_data(data8192, 8192, val_docs=40, val_chars=300)
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
        "r0405_6L_loop23": (SP8192_TINY, SP8192_TRAIN, 4),
        "r0427_6L_loop23_par4": (R0427_TINY, SP8192_TRAIN, 4),
        "headwise_6L_loop23_par4": (HEADWISE_TINY, SP8192_TRAIN, 4),
    }
    rows, worst = [], 0.0
    for name, (model, extra, seqs) in configs.items():
        if only and not any(name.startswith(o) for o in only):
            continue
        kind = name.split("_")[0] if name.split("_")[0] in refs else "baseline"
        sp8192 = kind in SP8192_KINDS
        for steps in (1, 30):
            run = train(f"{name}_{steps}", model, data8192 if sp8192 else data, steps, extra)
            cfg = json.loads((run / "config.json").read_text())
            val = (data8192 if sp8192 else data) / "fineweb_val_000000.bin"
            for formulation in ("literal", "fast"):
                # R0427's line also with packed documents (the reference's varlen attention).
                variants = [(True, False)]
                if sp8192:
                    variants.append((False, False))
                if kind in ("r0427", "headwise"):
                    variants.append((True, True))
                for looping, packed in variants:
                    got = ours(run, val, seqs, formulation, looping, packed)
                    x, y = got["x"], got["y"]
                    if sp8192:
                        logits, nll, loss = sp8192_reference(refs[kind], cfg, run / "model.safetensors", x, y, looping, packed)
                    else:
                        logits, nll, loss = reference(refs[kind], cfg, run / "model.safetensors", x, y, kind)
                    d_logits = (got["logits"] - logits).abs().max().item()
                    d_nll = (got["nll"] - nll).abs().max().item()
                    d_loss = abs(got["loss"].item() - loss.item())
                    worst = max(worst, d_logits, d_nll, d_loss)
                    loop = "" if not sp8192 else (", loop on" if looping else ", loop off") + (", packed" if packed else "")
                    rows.append((f"{name} after {steps} step(s), {formulation}{loop}", loss.item(), got["loss"].item(), d_logits, d_nll, d_loss))
    print(f"| model | reference loss | our loss | max abs Δ logits | max abs Δ NLL | Δ mean loss |")
    print(f"|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.6f} | {r[2]:.6f} | {r[3]:.2e} | {r[4]:.2e} | {r[5]:.2e} |")
    print(f"worst difference {worst:.2e} (tolerance {TOL:.0e}): {'PASS' if worst <= TOL else 'FAIL'}")
    sys.exit(0 if worst <= TOL else 1)


if __name__ == "__main__":
    main()

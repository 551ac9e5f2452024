#!/usr/bin/env python3
"""Cross-check our GPT against the upstream reference on the CPU, in fp32.

For a few small configs: tokenize some Wikipedia text with sp1024, train OUR model for a few
steps with the `train` stage (so every weight, including the zero-initialised projections, is
non-trivial), load the resulting model.safetensors into the upstream `GPT` (strict
load_state_dict), and compare logits, per-token NLL and mean loss on the same val tokens; also
compare the step-0 (initial) weights' loss. Prints a table; exits 1 if any difference exceeds 1e-4.

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


def reference_module():
    ref = ROOT / ".ref" / "train_gpt.py"
    if not ref.exists():
        ref.parent.mkdir(exist_ok=True)
        ref.write_bytes(subprocess.check_output(["git", "-C", str(MIRROR), "show", "HEAD:train_gpt.py"]))
    sys.path.insert(0, str(ref.parent))
    import train_gpt  # noqa: E402

    return train_gpt


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


def train(name: str, model: dict, data: Path, iterations: int) -> Path:
    out = WORK / name
    if (out / "manifest.json").exists():
        return out
    params = {
        "model": model, "iterations": iterations, "warmdown_iters": 0, "max_wallclock_seconds": 0.0,
        "train_batch_tokens": 8 * 4 * model["seq_len"], "val_batch_tokens": 8 * 8 * model["seq_len"],
        "val_loss_every": 0, "ema_decay": 0.0, "threads": 1,
    }
    pfile = WORK / f"{name}.json"
    pfile.write_text(json.dumps(params))
    subprocess.run([str(ROOT / "target/release/train"), "--out", str(out), "--in", f"data={data}", "--params", str(pfile)], check=True)
    return out


def ours(run: Path, shard: Path, n: int, formulation: str) -> dict:
    out = run / f"logits_{formulation}.safetensors"
    subprocess.run([str(ROOT / "target/release/examples/logits"), str(run / "config.json"), str(run / "model.safetensors"), str(shard), str(n), str(out), formulation], check=True)
    return load_file(str(out))


def reference(ref, cfg: dict, weights: Path, x: torch.Tensor, y: torch.Tensor):
    model = ref.GPT(
        vocab_size=cfg["vocab_size"], num_layers=cfg["num_layers"], model_dim=cfg["model_dim"],
        num_heads=cfg["num_heads"], num_kv_heads=cfg["num_kv_heads"], mlp_mult=cfg["mlp_mult"],
        tie_embeddings=cfg["tie_embeddings"], tied_embed_init_std=cfg["tied_embed_init_std"],
        logit_softcap=cfg["logit_softcap"], rope_base=cfg["rope_base"], qk_gain_init=cfg["qk_gain_init"],
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


def main():
    torch.set_num_threads(2)
    ref = reference_module()
    data = WORK / "data"
    make_data(data)
    configs = {
        "gqa_tied_5L": dict(vocab_size=1024, num_layers=5, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2, seq_len=64),
        "mha_untied_4L_mlp3": dict(vocab_size=1024, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=4, mlp_mult=3, seq_len=64, tie_embeddings=False),
    }
    rows, worst = [], 0.0
    for name, model in configs.items():
        for steps in (1, 30):
            run = train(f"{name}_{steps}", model, data, steps)
            cfg = json.loads((run / "config.json").read_text())
            for formulation in ("literal", "fast"):
                got = ours(run, data / "fineweb_val_000000.bin", 8, formulation)
                x, y = got["x"], got["y"]
                logits, nll, loss = reference(ref, cfg, run / "model.safetensors", x, y)
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

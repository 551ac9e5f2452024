"""Why does our flat BPB differ from upstream's? One call scores the same decoded weights with
upstream's `eval_val` under several ways of building upstream's model, compares our ttt-eval runs
(their manifests) with them, and, for ours that dumped activations (`dump_activations`), compares
every linear layer's input, the logits and the NLL with upstream forward hooks on the same windows.

    eval_diag.py --data TOKENIZE_DIR --weights decoded.safetensors --config config.json \
        --ours LABEL=TTT_EVAL_RUN_DIR ... [--device cuda] [--compile] [--target VARIANT]

Upstream variants (all call upstream's own `eval_val` from .ref/train_gpt.py):
  train_gpt        the model as train_gpt.py builds it: `.bfloat16()`, CastedLinear back to fp32,
                   low-dim/control params restored to fp32 (tok_emb and Rotary.inv_freq stay bf16);
                   eager, under eval_val's CUDA bf16 autocast. The default target.
  train_gpt_rope32 the same with Rotary.inv_freq put back to fp32 (isolates the bf16-RoPE quirk).
  fp32_params      every parameter fp32 (what bench/eval_upstream.py built), autocast as above.
  compiled         train_gpt under torch.compile(fullgraph) as train_gpt.py evaluates (--compile).
  fp32_reference   fp32 parameters with autocast disabled inside eval_val: the exact function.
Prints tables; exits 1 if the target variant and the first --ours run differ by more than 1e-4.
"""

import argparse
import contextlib
import json
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_upstream as eu  # noqa: E402  (same folder: loaders shared with the compare script)

ROOT = Path(__file__).resolve().parent.parent


def build(module, cfg, state, device, variant):
    """Upstream's GPT holding `state` as `variant` says (eval_upstream.BUILDS; compiled = train_gpt)."""
    return eu.build_model(module, cfg, state, device, "train_gpt" if variant == "compiled" else variant)


class NoAutocast(torch.nn.Module):
    """Runs the wrapped model with autocast off (eval_val turns it on around every call)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, y):
        with torch.autocast(device_type="cuda", enabled=False), torch.autocast(device_type="cpu", enabled=False):
            return self.inner(x, y)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def capture(module, model):
    """Forward hooks on every CastedLinear input (by weight name), the final norm's output (the
    tied head's input) and the logits upstream's forward hands to cross_entropy."""
    seen = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, module.CastedLinear):
            handles.append(m.register_forward_pre_hook(lambda _m, args, n=f"in.{name}.weight": seen.__setitem__(n, args[0].detach().clone())))
    if cfg_tied(model):
        handles.append(model.final_norm.register_forward_hook(lambda _m, _a, out: seen.__setitem__("in.tok_emb.weight", out.detach().clone())))
    real_f = module.F
    shim = types.SimpleNamespace(**{k: getattr(real_f, k) for k in dir(real_f) if not k.startswith("__")})

    def cross_entropy(logits, targets, **kw):
        seen["logits"] = logits.detach().clone()
        seen["nll"] = real_f.cross_entropy(logits, targets, reduction="none").detach()
        return real_f.cross_entropy(logits, targets, **kw)

    shim.cross_entropy = cross_entropy
    module.F = shim
    try:
        yield seen
    finally:
        module.F = real_f
        for h in handles:
            h.remove()


def cfg_tied(model):
    return model.lm_head is None


def layer_table(ours: dict, theirs: dict, windows: int, seq_len: int):
    """Per tensor: dtypes, exact-equal fraction, max |Δ|, RMS(Δ)/RMS(upstream)."""
    order = sorted(
        (k for k in ours if k.startswith("in.")),
        key=lambda k: (int(k.split(".")[2]) if k.startswith("in.blocks.") else 1_000, k),
    )
    rows = []
    for k in order + ["logits", "nll"]:
        if k not in theirs:
            rows.append((k, "-", "-", "missing upstream", "", ""))
            continue
        a, b = ours[k], theirs[k]
        a32 = a.float().reshape(-1, a.shape[-1]) if k != "nll" else a.float().reshape(-1)
        b32 = b.float().cpu().reshape(a32.shape)
        d = (a32 - b32).abs()
        rel = (d.square().mean().sqrt() / b32.square().mean().sqrt().clamp_min(1e-30)).item()
        eq = (a32 == b32).float().mean().item()
        rows.append((k, str(a.dtype).replace("torch.", ""), str(b.dtype).replace("torch.", ""), f"{eq:.4f}", f"{d.max().item():.3e}", f"{rel:.3e}"))
    mean_nll = (ours["nll"].float().mean().item(), theirs["nll"].float().mean().item())
    return rows, mean_nll


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--weights", required=True, type=Path)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--ours", action="append", default=[], help="LABEL=ttt-eval run dir (upstream_compatible flat)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true", help="also score the torch.compile'd train_gpt model")
    ap.add_argument("--target", default="train_gpt", help="the upstream variant our first run must match")
    ap.add_argument("--val-batch-size", type=int, default=524_288)
    ap.add_argument("--report", type=Path, help="also write everything printed, plus the full per-layer tables, here (markdown)")
    a = ap.parse_args()
    full = []  # the report file: every line, including the long per-layer tables

    def say(line=""):
        print(line, flush=True)
        full.append(line)

    device = torch.device(a.device)
    cfg = json.loads(a.config.read_text())
    seq_len = cfg["seq_len"]
    state = eu.read_safetensors(a.weights)
    up = eu.load_ref("upstream_train_gpt", ROOT / ".ref" / "train_gpt.py")
    sp = eu.spm.SentencePieceProcessor(model_file=str(a.data / "tokenizer.model"))
    luts = up.build_sentencepiece_luts(sp, cfg["vocab_size"], device)
    val_tokens = up.load_validation_tokens(str(a.data / "fineweb_val_*.bin"), seq_len)
    args = eu.Args(seq_len, max(a.val_batch_size, seq_len))
    say(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}; "
        f"val targets {val_tokens.numel() - 1:,}; seq_len {seq_len}; weights {a.weights}")

    variants = ["train_gpt", "train_gpt_rope32", "fp32_params", "fp32_reference"] + (["compiled"] if a.compile else [])
    models, bpb, up_rows = {}, {}, []
    for v in variants:
        model = build(up, cfg, state, device, "fp32_params" if v == "fp32_reference" else v)
        runner = NoAutocast(model) if v == "fp32_reference" else model
        if v == "compiled":
            runner = torch.compile(model, dynamic=False, fullgraph=True)
            t0 = time.perf_counter()
            try:
                up.eval_val(args, runner, 0, 1, device, 1, val_tokens, *luts)  # compiles each batch shape
            except Exception as e:  # a box without a working inductor toolchain: report, go on
                say(f"{v}: torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                continue
            say(f"(compile warm-up pass {time.perf_counter() - t0:.1f} s)")
        sync(device)
        t0 = time.perf_counter()
        loss, b = up.eval_val(args, runner, 0, 1, device, 1, val_tokens, *luts)
        sync(device)
        up_rows.append(f"| {v} | {b:.8f} | {loss:.8f} | {time.perf_counter() - t0:.2f} |")
        say(f"upstream {v}: val_bpb {b:.8f}")
        models[v], bpb[v] = model, b

    variants = [v for v in variants if v in bpb]
    our_rows = ["| ours (ttt-eval, upstream_compatible flat) | device description | val_bpb | seconds | " + " | ".join(f"Δ vs {v}" for v in variants) + " |",
                "|---|---|---|---|" + "---|" * len(variants)]
    ours = []
    for spec in a.ours:
        label, run = spec.split("=", 1)
        m = json.loads((Path(run) / "manifest.json").read_text())
        h = m["headline"]
        if h.get("scored_targets") != val_tokens.numel() - 1:
            sys.exit(f"error: eval_diag: {run}: scored {h.get('scored_targets')} targets, upstream {val_tokens.numel() - 1}")
        ours.append((label, Path(run), h["val_bpb"]))
        # The numerics are a headline figure; the device a record (older manifests: free text).
        dev = m.get("device")
        on = ", ".join(dev.get("device_names", [])) if isinstance(dev, dict) else str(dev or "")
        desc = f"{h.get('numerics', '')} on {on}" if h.get("numerics") else on
        our_rows.append(f"| {label} | {desc} | {h['val_bpb']:.8f} | {h['eval_seconds']:.2f} | " + " | ".join(f"{h['val_bpb'] - bpb[v]:+.2e}" for v in variants) + " |")

    # Layer by layer, on the windows each of ours dumped, against the target variant (and the
    # fp32-params one, which the earlier bench used).
    for label, run, _ in ours:
        dump = run / "activations.safetensors"
        if not dump.is_file():
            continue
        ours_t = read_native(dump)
        windows = ours_t["nll"].shape[0]
        x = val_tokens[: windows * seq_len + 1].to(device=device, dtype=torch.int64)
        xin, yin = x[:-1].reshape(windows, seq_len), x[1:].reshape(windows, seq_len)
        for v in [a.target, "fp32_params"]:
            model = models[v]
            with capture(up, model) as seen, torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                model(xin, yin)
            seen["nll"] = seen["nll"].reshape(windows, seq_len)
            rows, (mo, mu) = layer_table(ours_t, seen, windows, seq_len)
            # stdout: one line (the first tensor that is not bit-equal); the report: the table.
            first = next((r for r in rows if r[3] != "1.0000"), None)
            say(f"layers: ours `{label}` vs `{v}`, {windows} windows: mean NLL Δ {mo - mu:+.2e}; "
                + (f"first difference at {first[0]} ({first[1]} vs {first[2]}, equal {first[3]}, rel {first[5]})" if first else "every tensor bit-equal"))
            full.append(f"\n### ours `{label}` vs upstream `{v}` on the first {windows} windows (mean NLL ours {mo:.6f}, upstream {mu:.6f})\n")
            full.append("| tensor | ours dtype | upstream dtype | exactly equal | max abs Δ | rms Δ / rms |")
            full.append("|---|---|---|---|---|---|")
            full.extend("| " + " | ".join(r) + " |" for r in rows)

    # The summary last (a truncated log keeps its tail).
    say("\n| upstream eval_val on the decoded weights, model built as | val_bpb | val_loss | seconds |")
    say("|---|---|---|---|")
    for r in up_rows:
        say(r)
    say()
    for r in our_rows:
        say(r)
    status = 0
    if ours:
        diff = abs(ours[0][2] - bpb[a.target])
        say(f"\nflat BPB, ours `{ours[0][0]}` vs upstream `{a.target}`: |Δ| = {diff:.2e} (must be ≤ 1e-4)")
        status = 0 if diff <= 1e-4 else 1
    if a.report:
        a.report.write_text("\n".join(full) + "\n")
    sys.exit(status)


def read_native(path: Path) -> dict:
    """safetensors → CPU tensors in their stored dtype (bf16 kept as bf16)."""
    out = eu.read_safetensors(path)
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    for name, meta in header.items():
        if name != "__metadata__" and meta["dtype"] == "BF16":
            out[name] = out[name].to(torch.bfloat16)  # exact: the values are bf16
    return out


if __name__ == "__main__":
    main()

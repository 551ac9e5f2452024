//! The GPU checks that need pgolf-model (pgolf-kernels' own, op by op, are its
//! `examples/check_kernels.rs`): the fused ops inside a CUDA graph capture (this crate's
//! [`CudaGraph`], as the train stage uses it); the whole model in its two formulations, literal
//! and fast in bf16 against the f32 literal model, at the baseline's shapes (9×512, vocab 1024,
//! T 1024) and at R0322's (11×512, MLP 3×, T 2048, partial RoPE 16 of 64 with the NTK rescale
//! from 1024, XSA on the last 4, LN scale, SmearGate, BigramHash 2048×128, VE 128 on layers 9 and
//! 10, orthogonal init), and at R0427's and the headwise-gate submission's (`r0427_setup`; R0427
//! with its recurrence running and not); each fast model's training micro-step captured and
//! replayed; and the
//! time of a forward and backward in each formulation. Prints one line per comparison and a
//! summary; exits 1 on any failure.
//!
//!     check_model_gpu [--device cuda|cpu] [--reps N] [--only NAME[,NAME...]]
//!
//! `--device cpu` runs the model checks through the ops' CPU paths (tch formulas), to test this
//! harness without a GPU (the CUDA graph checks are skipped; timings there mean nothing), on a
//! tiny baseline and on R0322 at reduced width (11 layers of 128, two heads of 64 with 16 rotated,
//! T 32 with the rescale from 16, its options at reduced table sizes).
//!
//! The formulations' judge: in bf16 both differ from the f32 function by roundings; fast passes
//! when its relative error (max|Δ|/max|ref| against the f32 literal model) is at most twice the
//! literal formulation's, or below 2⁻⁸ (one bf16 rounding). For a gradient, "the literal's" is
//! the largest literal error among the parameters of its kind (`blocks.*.attn.q_gain`): a small
//! sum over every token has a cancellation-set error that varies by layer in both formulations.

use std::process::ExitCode;

use anyhow::{Context, Result};
use pgolf_kernels::check::{
    grad1, leaf, rope_tables, run_checks, trained_mix, Args, CheckFn, Harness,
};
use pgolf_kernels::ops::{mix_norm, qkv_norm_rope, relu_square, rms_norm, softcap_cross_entropy};
use pgolf_model::config::{
    AttnGate, BigramHash, FinalLane, InitScheme, ParallelLanes, Recurrence, SmearGateV2,
    ValueEmbedding,
};
use pgolf_model::cuda::CudaGraph;
use pgolf_model::{build, Formulation, Gpt, ModelConfig};
use tch::{nn, Device, Kind, Tensor};

/// The checks, in order.
const CHECKS: &[(&str, CheckFn<Harness>)] = &[
    ("ops_cuda_graph", check_ops_in_cuda_graph),
    ("norm_ops_cuda_graph", check_norm_ops_in_cuda_graph),
    ("model_formulations", |cx| {
        check_model_formulations(cx, Model::Baseline)
    }),
    ("model_cuda_graph", |cx| {
        check_model_in_cuda_graph(cx, Model::Baseline)
    }),
    ("model_timing", |cx| time_model(cx, Model::Baseline)),
    ("r0322_formulations", |cx| {
        check_model_formulations(cx, Model::R0322)
    }),
    ("r0322_cuda_graph", |cx| {
        check_model_in_cuda_graph(cx, Model::R0322)
    }),
    ("r0322_timing", |cx| time_model(cx, Model::R0322)),
    ("r0427_formulations", |cx| {
        check_model_formulations(cx, Model::R0427)
    }),
    ("r0427_cuda_graph", |cx| {
        check_model_in_cuda_graph(cx, Model::R0427)
    }),
    ("r0427_timing", |cx| time_model(cx, Model::R0427)),
    ("r0427_unlooped_formulations", |cx| {
        check_model_formulations(cx, Model::R0427Unlooped)
    }),
    ("r0427_unlooped_timing", |cx| {
        time_model(cx, Model::R0427Unlooped)
    }),
    ("headwise_formulations", |cx| {
        check_model_formulations(cx, Model::Headwise)
    }),
    ("headwise_cuda_graph", |cx| {
        check_model_in_cuda_graph(cx, Model::Headwise)
    }),
];

/// The model a model check runs.
#[derive(Clone, Copy, Debug)]
enum Model {
    Baseline,
    R0322,
    /// R0427's model with its depth recurrence running (as evaluated, and trained from 35 % on).
    R0427,
    /// R0427's model before its recurrence switches on (the plain U-Net).
    R0427Unlooped,
    /// The headwise-gate submission's model.
    Headwise,
}

impl Model {
    /// Whether the model's depth recurrence runs in the checks.
    fn looping(self) -> bool {
        !matches!(self, Model::R0427Unlooped)
    }
}

/// The baseline's shapes for the op checks (REFERENCE.md §3): rows = B·T of one micro-batch.
struct OpShapes {
    rows: i64,
    hidden: i64,
    vocab: i64,
    t: i64,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    dim: i64,
}

const OPS: OpShapes = OpShapes {
    rows: 65_536,
    hidden: 1024,
    vocab: 1024,
    t: 1024,
    heads: 8,
    kv_heads: 4,
    head_dim: 64,
    dim: 512,
};

/// One training-like step through the ops (or their references): returns (h, da, loss, dz).
fn graph_step(fused: bool, a: &Tensor, dh: &Tensor, z: &Tensor, t: &Tensor) -> Result<Vec<Tensor>> {
    let h = if fused {
        relu_square::relu_square(a, 0.5)?
    } else {
        relu_square::reference(a, 0.5)
    };
    let da = grad1(&h, dh, a)?;
    let nll = if fused {
        softcap_cross_entropy::softcap_cross_entropy(z, t, 30.0)?
    } else {
        softcap_cross_entropy::reference(z, t, 30.0)
    };
    let loss = nll.mean(Kind::Float);
    let dz = grad1(&loss, &Tensor::ones([], (Kind::Float, z.device())), z)?;
    Ok(vec![h, da, loss, dz])
}

/// The ops' forward and backward captured in a CUDA graph (after a warm-up on the graph's side
/// stream, as the train stage does), replayed on new input values, against the reference.
fn check_ops_in_cuda_graph(cx: &mut Harness) -> Result<()> {
    if cx.device == Device::Cpu {
        println!("  (skipped on the CPU)");
        return Ok(());
    }
    pgolf_kernels::ops::preload(cx.device).context("preloading every kernel")?;
    let (n, hidden, v) = (OPS.rows / 16, OPS.hidden, OPS.vocab);
    let bf = (Kind::BFloat16, cx.device);
    let a = leaf(Tensor::randn([n, hidden], bf));
    let dh = Tensor::randn([n, hidden], bf) * 1e-3;
    let z = leaf((Tensor::randn([n, v], (Kind::Float, cx.device)) * 0.3).to_kind(Kind::BFloat16));
    let t = Tensor::randint(v, [n], (Kind::Int64, cx.device));
    let mut graph = CudaGraph::new(cx.device)?;
    graph.on_side_stream(|| graph_step(true, &a, &dh, &z, &t))??;
    let captured = graph.capture(|| graph_step(true, &a, &dh, &z, &t))??;
    // New values in the captured inputs: the replay must compute with them.
    tch::no_grad(|| {
        a.detach().copy_(&Tensor::randn([n, hidden], bf));
        z.detach().copy_(
            &(Tensor::randn([n, v], (Kind::Float, cx.device)) * 0.5).to_kind(Kind::BFloat16),
        );
    });
    graph.replay()?;
    cx.sync();
    let [a_ref, z_ref] = [&a, &z].map(|t| leaf(t.detach().copy()));
    let want = graph_step(false, &a_ref, &dh, &z_ref, &t)?;
    let names = [
        "replayed relu_square h",
        "replayed relu_square da",
        "replayed loss",
        "replayed dz",
    ];
    let tols = [
        (1e-6, 1.0 / 128.0),
        (1e-6, 1.0 / 128.0),
        (1e-6, 1e-5),
        (1e-3, 1.0 / 64.0),
    ];
    cx.compare_each(&names, &tols, &captured, &want)?;
    // Replay speed of the captured step (no launch overhead), for comparison with eager.
    cx.time("graph replay of the step", None, || graph.replay())?;
    cx.time("eager step", None, || {
        graph_step(true, &a, &dh, &z, &t).map(drop)
    })?;
    Ok(())
}

/// One step through the three norm ops (or their references): the block entry's mix_norm, an
/// rms_norm of its xm, qkv_norm_rope; outputs, then the gradients of the inputs
/// `[qkv, q_gain, x, x0, mix]` for the output gradients `seeds`.
fn norms_step(
    fused: bool,
    (cos, sin): (&Tensor, &Tensor),
    seeds: &[Tensor],
    inputs: [&Tensor; 5],
) -> Result<Vec<Tensor>> {
    let eps = rms_norm::DEFAULT_EPS;
    let [qkv, gain, x, x0, mix] = inputs;
    let ((q, k, v), (xm, nn), y) = if fused {
        let (xm, nn) = mix_norm::mix_norm(x, x0, mix, eps, 1.0)?;
        let y = rms_norm::rms_norm(&xm, eps, 1.0)?;
        (
            qkv_norm_rope::qkv_norm_rope(qkv, cos, sin, gain, OPS.head_dim, eps)?,
            (xm, nn),
            y,
        )
    } else {
        let (xm, nn) = mix_norm::reference(x, x0, mix, eps, 1.0)?;
        let y = rms_norm::reference(&xm, eps, 1.0);
        (
            qkv_norm_rope::reference(qkv, cos, sin, gain, OPS.head_dim, eps)?,
            (xm, nn),
            y,
        )
    };
    let seeds: Vec<&Tensor> = seeds.iter().collect();
    let g = pgolf_kernels::grad(&[&q, &k, &v, &nn, &y, &xm], &seeds, &inputs)?;
    Ok([q, k, v, xm, nn, y].into_iter().chain(g).collect())
}

/// The three norm ops' forward and backward captured in one CUDA graph and replayed on new
/// input values, against the references.
fn check_norm_ops_in_cuda_graph(cx: &mut Harness) -> Result<()> {
    if cx.device == Device::Cpu {
        println!("  (skipped on the CPU)");
        return Ok(());
    }
    pgolf_kernels::ops::preload(cx.device).context("preloading every kernel")?;
    let (t, h, hkv, hd, d) = (OPS.t, OPS.heads, OPS.kv_heads, OPS.head_dim, OPS.dim);
    let b = (OPS.rows / t / 8).max(1);
    let bf = (Kind::BFloat16, cx.device);
    let f32o = (Kind::Float, cx.device);
    let (cos, sin) = rope_tables(t, hd, cx.device);
    let qkv = leaf(Tensor::randn([b, t, (h + 2 * hkv) * hd], bf));
    let gain = leaf(Tensor::randn([h], f32o) * 0.1 + 1.5);
    let x = leaf(Tensor::randn([b * t, d], bf));
    let x0 = leaf(Tensor::randn([b * t, d], bf));
    let mix = leaf(trained_mix(d, cx.device));
    // Output gradients for q, k, v, n, rms_norm(xm), xm.
    let seeds = [
        Tensor::randn([b, t, h, hd], bf),
        Tensor::randn([b, t, hkv, hd], bf),
        Tensor::randn([b, t, hkv, hd], bf),
        Tensor::randn([b * t, d], bf),
        Tensor::randn([b * t, d], bf),
        Tensor::randn([b * t, d], bf),
    ];
    let tables = (&cos, &sin);
    let inputs = [&qkv, &gain, &x, &x0, &mix];
    let mut graph = CudaGraph::new(cx.device)?;
    graph.on_side_stream(|| norms_step(true, tables, &seeds, inputs))??;
    let captured = graph.capture(|| norms_step(true, tables, &seeds, inputs))??;
    // New values in the captured inputs: the replay must compute with them.
    tch::no_grad(|| {
        qkv.detach().copy_(&(Tensor::randn(qkv.size(), bf) * 2.0));
        x.detach().copy_(&Tensor::randn(x.size(), bf));
        gain.detach().copy_(&(Tensor::randn([h], f32o) * 0.1 + 1.2));
    });
    graph.replay()?;
    cx.sync();
    let fresh = inputs.map(|t| leaf(t.detach().copy()));
    let want = norms_step(
        false,
        tables,
        &seeds,
        [&fresh[0], &fresh[1], &fresh[2], &fresh[3], &fresh[4]],
    )?;
    let names = [
        "q",
        "k",
        "v",
        "xm",
        "n",
        "rms_norm(xm)",
        "d qkv",
        "d q_gain",
        "dx",
        "dx0",
        "d mix",
    ];
    let tols = names.map(|name| {
        if name.starts_with('d') {
            (2e-3, 1.0 / 64.0)
        } else {
            (1e-3, 1.0 / 128.0)
        }
    });
    let labels = names.map(|name| format!("replayed {name}"));
    cx.compare_each(&labels, &tols, &captured, &want)?;
    Ok(())
}

/// The model of the checks and its batch sizes (sequences compared, sequences timed): on CUDA the
/// baseline (compared on 16 sequences, timed on a micro-batch of 64, as one GPU trains) or R0322
/// (8 and 48: 48 × 2048 = 98,304 tokens, an eighth of its 786,432-token step); on the CPU a tiny
/// baseline or R0322 at reduced width.
fn model_setup(device: Device, model: Model) -> (ModelConfig, i64, i64) {
    match model {
        Model::R0322 => return r0322_setup(device),
        Model::R0427 | Model::R0427Unlooped | Model::Headwise => return r0427_setup(device, model),
        Model::Baseline => {}
    }
    match device {
        Device::Cpu => (
            ModelConfig {
                vocab_size: 64,
                num_layers: 3,
                model_dim: 32,
                num_heads: 4,
                num_kv_heads: 2,
                seq_len: 16,
                ..Default::default()
            },
            2,
            2,
        ),
        _ => (ModelConfig::default(), 16, 64),
    }
}

/// R0322's model (its record script's `GPT` as pipeline.yaml's `r0322` profile configures it):
/// 11×512, 8 heads / 4 kv heads, MLP 3×, T 2048, partial RoPE 16 of 64 with the NTK rescale from
/// 1024, XSA on the last 4 layers, LN scale, SmearGate, BigramHash 2048×128, VE 128 on layers 9
/// and 10, orthogonal init. On the CPU the same options at width 128 (two heads of 64, one kv
/// head, 16 dims rotated: the kernels' partial-RoPE geometry), T 32 rescaled from 16, tables
/// BigramHash 64×32 and VE 32, vocab 64.
fn r0322_setup(device: Device) -> (ModelConfig, i64, i64) {
    let r0322 = ModelConfig {
        num_layers: 11,
        mlp_mult: 3,
        seq_len: 2048,
        rope_dims: Some(16),
        rope_ntk_len: Some(1024),
        xsa_last_n: 4,
        ln_scale: true,
        smear_gate: true,
        bigram: Some(BigramHash {
            buckets: 2048,
            dim: 128,
        }),
        value_embed: Some(ValueEmbedding {
            dim: 128,
            layers: vec![9, 10],
        }),
        init: InitScheme::Orthogonal,
        ..ModelConfig::default()
    };
    match device {
        Device::Cpu => (
            ModelConfig {
                vocab_size: 64,
                model_dim: 128,
                num_heads: 2,
                num_kv_heads: 1,
                seq_len: 32,
                rope_ntk_len: Some(16),
                bigram: Some(BigramHash {
                    buckets: 64,
                    dim: 32,
                }),
                value_embed: Some(ValueEmbedding {
                    dim: 32,
                    layers: vec![9, 10],
                }),
                ..r0322
            },
            2,
            2,
        ),
        _ => (r0322, 8, 48),
    }
}

/// R0427's model (its README's run): 11×512, vocab 8192, MLP 4× LeakyReLU(0.5)², T 2048, partial
/// RoPE 16 of 64 without rescale, XSA everywhere, LN scale, QK gain 5, layers 3–5 looped twice
/// more, skip gates, parallel lanes from layer 8, SmearGate v2 (window 12) and the sparse gate
/// (scale 0.5), banks; or the headwise-gate submission's (SmearGate and the sparse gate off, the
/// headwise gate on). Compared on 4 sequences, timed on 24 (a 2048-token micro-batch of 48 is
/// R0427's per-GPU share of 786,432 on 8 GPUs; 24 keeps the f32 reference's looped activations
/// in memory). On the CPU at width 128 (two heads of 64, one kv head), vocab 64, T 32.
fn r0427_setup(device: Device, model: Model) -> (ModelConfig, i64, i64) {
    let r0427 = ModelConfig {
        vocab_size: 8192,
        num_layers: 11,
        mlp_mult: 4,
        seq_len: 2048,
        qk_gain_init: 5.0,
        activation: pgolf_model::Activation::LeakyRelu2(0.5),
        rope_dims: Some(16),
        xsa_last_n: 11,
        ln_scale: true,
        init: InitScheme::OrthogonalBanks,
        banks: true,
        recurrence: Some(Recurrence {
            start: 3,
            end: 5,
            loops: 2,
        }),
        skip_gates: true,
        parallel: Some(ParallelLanes {
            start_layer: 8,
            final_lane: FinalLane::Mean,
        }),
        smear_gate_v2: Some(SmearGateV2 {
            window: 12,
            bos_id: 1,
        }),
        attn_gate: Some(AttnGate::Sparse {
            window: 12,
            scale: 0.5,
            init_std: 0.0,
        }),
        ..ModelConfig::default()
    };
    let cfg = match model {
        Model::Headwise => ModelConfig {
            smear_gate_v2: None,
            attn_gate: Some(AttnGate::Headwise { init_std: 0.01 }),
            ..r0427
        },
        _ => r0427,
    };
    match device {
        Device::Cpu => (
            ModelConfig {
                vocab_size: 64,
                model_dim: 128,
                num_heads: 2,
                num_kv_heads: 1,
                seq_len: 32,
                ..cfg
            },
            2,
            2,
        ),
        _ => (cfg, 4, 24),
    }
}

/// The model with every weight perturbed (so the zero-initialised projections take part), fp32
/// weights (the embedding too, so the f32 reference sees the same values), seeded.
fn perturbed_model(cfg: &ModelConfig, device: Device) -> Result<(nn::VarStore, Gpt)> {
    tch::manual_seed(7);
    let (vs, gpt) = build(cfg, device)?;
    tch::no_grad(|| {
        for (_, t) in gpt.named_parameters() {
            let _ = t.shallow_clone().g_add_(&(t.randn_like() * 0.02));
        }
    });
    Ok((vs, gpt))
}

fn tokens(cfg: &ModelConfig, rows: i64, device: Device) -> (Tensor, Tensor) {
    let shape = [rows, cfg.seq_len as i64];
    let v = cfg.vocab_size as i64;
    (
        Tensor::randint(v, shape, (Kind::Int64, device)),
        Tensor::randint(v, shape, (Kind::Int64, device)),
    )
}

fn zero_grads(gpt: &Gpt) {
    for (_, p) in gpt.named_parameters() {
        p.shallow_clone().zero_grad();
    }
}

/// The logits (no grad), the loss and every parameter's gradient in the model's current setting.
fn outputs(gpt: &Gpt, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor, Vec<Tensor>)> {
    let logits = tch::no_grad(|| gpt.logits(x));
    zero_grads(gpt);
    let loss = gpt.loss(x, y);
    loss.f_backward()?;
    let grads = gpt
        .named_parameters()
        .iter()
        // A copy: `.grad` is zeroed and refilled in place by the next run.
        .map(|(_, p)| p.grad().to_kind(Kind::Float).copy())
        .collect();
    Ok((logits, loss.detach(), grads))
}

/// max|got − want| / max|want|, in f32.
fn rel_error(got: &Tensor, want: &Tensor) -> Result<f64> {
    let (g, w) = (got.to_kind(Kind::Float), want.to_kind(Kind::Float));
    let scale = f64::try_from(w.abs().max())?.max(f64::MIN_POSITIVE);
    Ok(f64::try_from((&g - &w).abs().max())? / scale)
}

/// Judges fast against literal by their distances to the f32 reference (the module's rule), the
/// literal's distance taken as at least `literal_floor`. Prints failures and, with `verbose`,
/// passes too; returns the ratio fast/literal.
fn judge(
    cx: &mut Harness,
    what: &str,
    (literal, fast, reference): (&Tensor, &Tensor, &Tensor),
    literal_floor: f64,
    verbose: bool,
) -> Result<f64> {
    let (l, f) = (rel_error(literal, reference)?, rel_error(fast, reference)?);
    let finite = bool::try_from(fast.isfinite().all())?;
    let ok = finite && (f <= 2.0 * l.max(literal_floor) || f <= 1.0 / 256.0);
    if verbose || !ok {
        println!(
            "  {:<5} {what:<34} rel err vs f32: literal {l:.3e}  fast {f:.3e}{}",
            if ok { "ok" } else { "FAIL" },
            if finite { "" } else { "  (non-finite values!)" }
        );
    }
    cx.record(ok, what);
    Ok(f / l.max(f64::MIN_POSITIVE))
}

/// The whole model, literal and fast in bf16, against the f32 literal model: logits, loss and
/// every gradient (one line for the worst gradient, one per failing one).
fn check_model_formulations(cx: &mut Harness, model: Model) -> Result<()> {
    let device = cx.device;
    let (cfg, rows, _) = model_setup(device, model);
    println!(
        "  info  {model:?}: {} layers × {}, {} tokens",
        cfg.num_layers,
        cfg.model_dim,
        rows * cfg.seq_len as i64
    );
    let (_vs, mut gpt) = perturbed_model(&cfg, device)?;
    gpt.set_recurrence(model.looping());
    let (x, y) = tokens(&cfg, rows, device);
    gpt.set_compute_kind(Kind::Float);
    gpt.set_formulation(Formulation::Literal, device)?;
    let reference = outputs(&gpt, &x, &y)?;
    gpt.set_compute_kind(Kind::BFloat16);
    let literal = outputs(&gpt, &x, &y)?;
    gpt.set_formulation(Formulation::Fast, device)?;
    let fast = outputs(&gpt, &x, &y)?;
    println!(
        "  info  loss: f32 literal {:.6}  bf16 literal {:.6}  bf16 fast {:.6}",
        f64::try_from(&reference.1)?,
        f64::try_from(&literal.1)?,
        f64::try_from(&fast.1)?
    );
    judge(cx, "logits", (&literal.0, &fast.0, &reference.0), 0.0, true)?;
    judge(cx, "loss", (&literal.1, &fast.1, &reference.1), 0.0, true)?;
    // A gradient's literal error is the noise of bf16 for that kind of tensor, but for a small
    // sum over every token (a q gain: H numbers, each Σ dq·u over B·T·hd terms) it is set by
    // cancellation and varies from layer to layer by 10×, in both formulations alike; so each
    // gradient is judged against the largest literal error of its kind (the name without its
    // layer index) as well as its own.
    // The parallel lanes' ρ and π are gains of the same sort (each Σ over every token and
    // channel of a lane times its gradient): one kind with the q gains.
    // So are the BigramHash and value-embedding output scales (one number each, Σ over every
    // token of its table's projected output times its gradient).
    let kind = |name: &str| -> String {
        if name.starts_with("parallel_") || name == "bigram.scale" || name == "ve_shared.scale" {
            return "blocks.*.attn.q_gain".to_string();
        }
        name.split('.')
            .map(|p| match p.parse::<usize>() {
                Ok(_) => "*",
                Err(_) => p,
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    let mut floor = std::collections::HashMap::<String, f64>::new();
    for (i, (name, _)) in gpt.named_parameters().iter().enumerate() {
        let l = rel_error(&literal.2[i], &reference.2[i])?;
        let e = floor.entry(kind(name)).or_insert(0.0);
        *e = e.max(l);
    }
    let mut worst = (0.0, String::new());
    for (i, (name, _)) in gpt.named_parameters().iter().enumerate() {
        let ratio = judge(
            cx,
            &format!("grad {name}"),
            (&literal.2[i], &fast.2[i], &reference.2[i]),
            floor[&kind(name)],
            false,
        )?;
        if ratio > worst.0 {
            worst = (ratio, name.clone());
        }
    }
    println!(
        "  info  {} gradients judged; the worst fast/literal error ratio {:.2} ({})",
        literal.2.len(),
        worst.0,
        worst.1
    );
    Ok(())
}

/// One training micro-step as the train stage graphs it: forward, backward into `.grad`.
fn micro_step(gpt: &Gpt, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let loss = gpt.loss(x, y);
    loss.f_backward()?;
    Ok(loss.detach())
}

/// The fast model's micro-step captured as a CUDA graph (after a warm-up on the side stream, as
/// the train stage does), replayed on new tokens, against the same step run eagerly.
fn check_model_in_cuda_graph(cx: &mut Harness, model: Model) -> Result<()> {
    if cx.device == Device::Cpu {
        println!("  (skipped on the CPU)");
        return Ok(());
    }
    let device = cx.device;
    let (cfg, rows, _) = model_setup(device, model);
    let (_vs, mut gpt) = perturbed_model(&cfg, device)?;
    gpt.set_recurrence(model.looping());
    gpt.set_compute_kind(Kind::BFloat16);
    gpt.set_formulation(Formulation::Fast, device)?;
    let (x, y) = tokens(&cfg, rows, device);
    let mut graph = CudaGraph::new(device)?;
    graph.on_side_stream(|| (0..2).try_for_each(|_| micro_step(&gpt, &x, &y).map(drop)))??;
    zero_grads(&gpt);
    let loss = graph.capture(|| micro_step(&gpt, &x, &y))??;
    let (x2, y2) = tokens(&cfg, rows, device);
    x.shallow_clone().copy_(&x2);
    y.shallow_clone().copy_(&y2);
    zero_grads(&gpt);
    graph.replay()?;
    cx.sync();
    let replayed: Vec<Tensor> = gpt
        .named_parameters()
        .iter()
        .map(|(_, p)| p.grad().copy())
        .collect();
    let replayed_loss = loss.copy();
    // Eager runs differ among themselves where a gradient is a sum over every token made with
    // atomics; the graph is judged against that spread (three more eager runs), not against
    // bit-equality it cannot have.
    let mut eager: Vec<Vec<Tensor>> = vec![];
    let mut eager_loss = None;
    for _ in 0..4 {
        zero_grads(&gpt);
        eager_loss = Some(micro_step(&gpt, &x2, &y2)?);
        eager.push(
            gpt.named_parameters()
                .iter()
                .map(|(_, p)| p.grad().to_kind(Kind::Float))
                .collect(),
        );
    }
    let eager_loss = eager_loss.expect("four eager runs");
    cx.compare("replayed loss", &replayed_loss, &eager_loss, 1e-6, 1e-5)?;
    let mut worst = (0.0, String::new());
    let mut passed = 0;
    let mut within_spread = 0;
    for (i, ((name, p), g)) in gpt.named_parameters().iter().zip(&replayed).enumerate() {
        let e = rel_error(g, &p.grad())?;
        if e > worst.0 {
            worst = (e, name.clone());
        }
        // Silent when within tolerance: one line per parameter would bury the rest.
        let (g, want) = (g.to_kind(Kind::Float), p.grad().to_kind(Kind::Float));
        let scale = f64::try_from(want.abs().max())?;
        let bound = want.abs() * (1.0 / 64.0) + 1e-3 * scale;
        let bad = i64::try_from((&g - &want).abs().gt_tensor(&bound).sum(Kind::Int64))?;
        // The eager spread: the largest |Δ| between the last eager run and each earlier one.
        let spread = eager[..3]
            .iter()
            .map(|run| f64::try_from((&run[i] - &want).abs().max()))
            .collect::<Result<Vec<f64>, _>>()?
            .into_iter()
            .fold(0.0, f64::max);
        let replay_delta = f64::try_from((&g - &want).abs().max())?;
        if bad > 0 && spread > 0.0 && replay_delta <= 2.0 * spread {
            within_spread += 1;
            passed += 1;
        } else if bad > 0 {
            cx.compare(
                &format!("replayed grad {name}"),
                &g,
                &want,
                1e-3,
                1.0 / 64.0,
            )?;
        } else {
            passed += 1;
        }
    }
    println!(
        "  info  {passed} of {} replayed gradients within tolerance of eager ({within_spread} of them over the elementwise bound but within twice the spread of four eager runs); the largest max|Δ|/max|ref| {:.3e} ({})",
        replayed.len(),
        worst.0,
        worst.1
    );
    cx.time("graph replay of the micro-step", None, || graph.replay())?;
    Ok(())
}

/// Forward + backward of one micro-batch, and the forward alone without grad (evaluation), in
/// each formulation (bf16, eager); the fast formulation's speed-up.
fn time_model(cx: &mut Harness, model: Model) -> Result<()> {
    let device = cx.device;
    let (cfg, _, rows) = model_setup(device, model);
    let (_vs, mut gpt) = perturbed_model(&cfg, device)?;
    gpt.set_recurrence(model.looping());
    gpt.set_compute_kind(Kind::BFloat16);
    let (x, y) = tokens(&cfg, rows, device);
    let mut ms = vec![];
    for formulation in [Formulation::Literal, Formulation::Fast] {
        gpt.set_formulation(formulation, device)?;
        let name = formulation.name();
        let train = cx.time(&format!("{name} forward+backward"), None, || {
            micro_step(&gpt, &x, &y).map(drop)
        })?;
        let eval = cx.time(&format!("{name} forward (no grad)"), None, || {
            drop(tch::no_grad(|| gpt.logits(&x)));
            Ok(())
        })?;
        ms.push((train, eval));
    }
    let tokens = (rows * cfg.seq_len as i64) as f64;
    println!(
        "  speed {model:?} fast over literal: forward+backward {:.2}×, forward {:.2}× ({rows} × {} tokens); fast forward+backward {:.1} ms per 786,432 tokens",
        ms[0].0 / ms[1].0,
        ms[0].1 / ms[1].1,
        cfg.seq_len,
        ms[1].0 * 786_432.0 / tokens
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("check_model_gpu: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let args = Args::parse("check_model_gpu", std::env::args().skip(1))?;
    match args.describe_gpu()? {
        Some(gpu) => println!("device {gpu}"),
        None => println!("device cpu: a tiny model, the ops' CPU paths (tests this harness; timings mean nothing)"),
    }
    tch::manual_seed(1234);
    let mut cx = Harness::new(&args);
    Ok(run_checks(&mut cx, CHECKS, args.only.as_deref()))
}

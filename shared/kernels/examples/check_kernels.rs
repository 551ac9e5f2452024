//! The GPU check of pgolf-kernels: every fused op against its plain-tch reference under autograd,
//! at the baseline's shapes (B·T = 65,536 rows, d 512, 8 heads, 4 kv heads, head_dim 64,
//! hidden 1024, vocab 1024) and R0322's (partial RoPE 16 of 64 at T 2048 with the NTK rescale,
//! LN scale as the norms' output factor, XSA, SmearGate), forward and backward, with max errors
//! and timings against the tch ops each replaced; then an op on a fresh thread. Prints one line per comparison and a summary; exits 1 on any failure. The checks
//! that need pgolf-model (the ops inside a CUDA graph capture, the whole model's formulations)
//! are pgolf-model's `examples/check_model_gpu.rs`.
//!
//!     check_kernels [--device cuda|cpu] [--reps N] [--only NAME[,NAME...]]
//!
//! `--device cpu` runs the same comparisons at small shapes through the ops' CPU paths (tch
//! formulas), to test this harness without a GPU; timings there mean nothing.
//!
//! Tolerances ([`pgolf_kernels::check`]): outputs are bf16, so a fused result may differ from the
//! reference by a rounding or two (relative 2⁻⁸ each); a comparison passes when every element has
//! |Δ| ≤ atol + rtol·|ref|, with atol a fraction of the reference's largest magnitude.

use std::ops::{Deref, DerefMut};
use std::process::ExitCode;

use anyhow::Result;
use pgolf_kernels::check::{
    grad1, info_each, info_error, leaf, rope_tables, run_checks, trained_mix, Args, CheckFn,
    Harness,
};
use pgolf_kernels::ops::{relu_square, softcap_cross_entropy};
use tch::{Device, Kind, Tensor};

/// The checks, in order. Each op adds one line here and one function below.
const CHECKS: &[(&str, CheckFn<Ctx>)] = &[
    ("relu_square", check_relu_square),
    ("softcap_cross_entropy", check_softcap_cross_entropy),
    ("qkv_norm_rope", check_qkv_norm_rope),
    ("qkv_norm_rope_partial", check_qkv_norm_rope_partial),
    ("mix_norm", check_mix_norm),
    ("mix_norm_ln_scale", check_mix_norm_ln_scale),
    ("rms_norm", check_rms_norm),
    ("rms_norm_ln_scale", check_rms_norm_ln_scale),
    ("xsa", check_xsa),
    ("smear_gate", check_smear_gate),
    ("fresh_thread", check_fresh_thread),
];

/// Baseline shapes (REFERENCE.md §3): rows = B·T of one micro-batch.
struct Shapes {
    rows: i64,
    hidden: i64,
    vocab: i64,
}

/// The harness and the shapes of this device.
struct Ctx {
    harness: Harness,
    shapes: Shapes,
}

impl Deref for Ctx {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

impl DerefMut for Ctx {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.harness
    }
}

impl AsMut<Harness> for Ctx {
    fn as_mut(&mut self) -> &mut Harness {
        &mut self.harness
    }
}

fn check_relu_square(cx: &mut Ctx) -> Result<()> {
    let (n, hidden) = (cx.shapes.rows, cx.shapes.hidden);
    let opts = (Kind::BFloat16, cx.device);
    let a0 = Tensor::randn([n, hidden], opts);
    let dh = Tensor::randn([n, hidden], opts) * 1e-3;
    for slope in [0.0, 0.5] {
        println!(" slope {slope}:");
        let a = leaf(a0.copy());
        let h = relu_square::relu_square(&a, slope)?;
        let da = grad1(&h, &dh, &a)?;
        let ar = leaf(a0.copy());
        let hr = relu_square::reference(&ar, slope);
        let dar = grad1(&hr, &dh, &ar)?;
        cx.compare("forward h", &h, &hr, 1e-6, 1.0 / 128.0)?;
        cx.compare("backward da", &da, &dar, 1e-6, 1.0 / 128.0)?;
    }
    let elems = (n * hidden) as f64;
    let a = leaf(a0.copy());
    let ar = leaf(a0.copy());
    cx.time_pair(
        "forward",
        Some(4.0 * elems),
        || relu_square::relu_square(&a, 0.0).map(drop),
        || {
            drop(relu_square::reference(&ar, 0.0));
            Ok(())
        },
    )?;
    cx.time_pair(
        "forward+backward",
        Some(10.0 * elems),
        || grad1(&relu_square::relu_square(&a, 0.0)?, &dh, &a).map(drop),
        || grad1(&relu_square::reference(&ar, 0.0), &dh, &ar).map(drop),
    )?;
    // The literal formulation's (bf16 ops, shared/model gpt.rs `activation`) for context.
    let am = leaf(a0.copy());
    cx.time("model's bf16 relu().square() fwd+bwd", None, || {
        grad1(&am.relu().square(), &dh, &am).map(drop)
    })?;
    Ok(())
}

fn check_softcap_cross_entropy(cx: &mut Ctx) -> Result<()> {
    const CAP: f64 = 30.0;
    let (n, v) = (cx.shapes.rows, cx.shapes.vocab);
    // z = logits/c: mostly small, some saturating the tanh.
    let z0 = (Tensor::randn([n, v], (Kind::Float, cx.device)) * 0.3).to_kind(Kind::BFloat16);
    let t = Tensor::randint(v, [n], (Kind::Int64, cx.device));
    let mean_loss = |nll: Tensor| nll.mean(Kind::Float);
    let one = Tensor::ones([], (Kind::Float, cx.device));

    let z = leaf(z0.copy());
    let nll = softcap_cross_entropy::softcap_cross_entropy(&z, &t, CAP)?;
    let loss = mean_loss(nll.shallow_clone());
    let dz = grad1(&loss, &one, &z)?;
    let zr = leaf(z0.copy());
    let nll_r = softcap_cross_entropy::reference(&zr, &t, CAP);
    let loss_r = mean_loss(nll_r.shallow_clone());
    let dz_r = grad1(&loss_r, &one, &zr)?;
    cx.compare("forward nll (f32)", &nll, &nll_r, 1e-4, 1e-4)?;
    cx.compare("forward mean loss", &loss, &loss_r, 1e-6, 1e-5)?;
    cx.compare("backward dz (bf16)", &dz, &dz_r, 1e-3, 1.0 / 64.0)?;
    let eval = tch::no_grad(|| softcap_cross_entropy::softcap_cross_entropy(&z0, &t, CAP))?;
    cx.compare("eval nll without grad", &eval, &nll_r, 1e-4, 1e-4)?;

    let elems = (n * v) as f64;
    cx.time_pair(
        "forward (eval, no grad)",
        Some(2.0 * elems),
        || tch::no_grad(|| softcap_cross_entropy::softcap_cross_entropy(&z0, &t, CAP)).map(drop),
        || {
            drop(tch::no_grad(|| {
                softcap_cross_entropy::reference(&z0, &t, CAP)
            }));
            Ok(())
        },
    )?;
    cx.time_pair(
        "forward+backward (mean loss)",
        Some(6.0 * elems),
        || {
            let nll = softcap_cross_entropy::softcap_cross_entropy(&z, &t, CAP)?;
            grad1(&mean_loss(nll), &one, &z).map(drop)
        },
        || {
            grad1(
                &mean_loss(softcap_cross_entropy::reference(&zr, &t, CAP)),
                &one,
                &zr,
            )
            .map(drop)
        },
    )?;
    Ok(())
}

/// The ops run from a thread that has never touched CUDA (no current context), with backward
/// through tch's own `backward()` (accumulating into `.grad`).
fn check_fresh_thread(cx: &mut Ctx) -> Result<()> {
    let (n, hidden) = (cx.shapes.rows / 16, cx.shapes.hidden);
    let a0 = Tensor::randn([n, hidden], (Kind::BFloat16, cx.device));
    let a1 = a0.shallow_clone();
    let got = std::thread::spawn(move || -> Result<Tensor> {
        let a = leaf(a1.copy());
        relu_square::relu_square(&a, 0.0)?
            .to_kind(Kind::Float)
            .sum(Kind::Float)
            .f_backward()?;
        Ok(a.grad())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread panicked"))??;
    let a = leaf(a0.copy());
    relu_square::reference(&a, 0.0)
        .to_kind(Kind::Float)
        .sum(Kind::Float)
        .backward();
    cx.compare(
        "relu_square .grad from a new thread",
        &got,
        &a.grad(),
        1e-6,
        1.0 / 128.0,
    )?;
    Ok(())
}

use pgolf_kernels::ops::{mix_norm, qkv_norm_rope, rms_norm};
use pgolf_kernels::FusedFunction;

/// Attention shapes of the baseline on CUDA (8 heads, 4 kv heads, head_dim 64, T 1024, d 512);
/// small ones on the CPU. Returns (B, T, H, Hkv, hd, d).
fn norm_shapes(cx: &Ctx) -> (i64, i64, i64, i64, i64, i64) {
    let (t, h, hkv, hd, d) = match cx.device {
        Device::Cpu => (128, 4, 2, 16, 64),
        _ => (1024, 8, 4, 64, 512),
    };
    (cx.shapes.rows / t, t, h, hkv, hd, d)
}

/// The attention prologue in plain bf16 tch ops (one rms_norm over the q and k heads, RoPE as
/// x·C + rotate(x)·S with the gains folded into bf16 tables: what the op replaced; for partial
/// RoPE the rotated dims so, the rest passed through, as the fast formulation's former tch
/// path), for timing and context.
fn qkv_current(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    gain: &Tensor,
    h: i64,
    hkv: i64,
    hd: i64,
) -> [Tensor; 3] {
    let (b, t, _) = qkv.size3().unwrap();
    let ck = qkv.kind();
    let rd = 2 * cos.size()[1];
    let c = Tensor::cat(&[cos, cos], -1).to_kind(ck).view([1, t, 1, rd]);
    let s = Tensor::cat(&[sin, &(-sin)], -1)
        .to_kind(ck)
        .view([1, t, 1, rd]);
    let g = Tensor::cat(
        &[
            gain.shallow_clone(),
            Tensor::ones([hkv], (Kind::Float, qkv.device())),
        ],
        0,
    )
    .to_kind(ck)
    .view([1, 1, h + hkv, 1]);
    let qk = qkv.narrow(2, 0, (h + hkv) * hd).view([b, t, h + hkv, hd]);
    let v = qkv
        .narrow(2, (h + hkv) * hd, hkv * hd)
        .view([b, t, hkv, hd]);
    let qk = qk.rms_norm([hd], None::<Tensor>, None);
    let half = rd / 2;
    let part = qk.narrow(-1, 0, rd);
    let rotated = Tensor::cat(&[part.narrow(-1, half, half), part.narrow(-1, 0, half)], -1);
    let part = (&part * (&c * &g)).addcmul(&rotated, &(&s * &g));
    let qk = match rd == hd {
        true => part,
        false => Tensor::cat(&[part, qk.narrow(-1, rd, hd - rd) * &g], -1),
    };
    [qk.narrow(2, 0, h), qk.narrow(2, h, hkv), v]
}

/// R0322's partial RoPE tables `[T, rd/2]` in f32: rd of the head rotated, base rescaled by
/// (T/1024)^(rd/(rd−2)) (its NTK quirk: Rotary built for 1024 positions) when T > 1024.
fn partial_rope_tables(t: i64, rd: i64, device: Device) -> (Tensor, Tensor) {
    let opts = (Kind::Float, device);
    let base = match t > 1024 {
        true => 10_000.0 * (t as f64 / 1024.0).powf(rd as f64 / (rd as f64 - 2.0)),
        false => 10_000.0,
    };
    let inv_freq = Tensor::scalar_tensor(base, opts)
        .pow(&(Tensor::arange_start_step(0, rd, 2, opts) / rd as f64))
        .reciprocal();
    let freqs = Tensor::arange(t, opts).outer(&inv_freq);
    (freqs.cos(), freqs.sin())
}

/// Whole-head RoPE at the baseline's shapes.
fn check_qkv_norm_rope(cx: &mut Ctx) -> Result<()> {
    let (b, t, h, hkv, hd, _) = norm_shapes(cx);
    let (cos, sin) = rope_tables(t, hd, cx.device);
    qkv_norm_rope_case(cx, (b, t, h, hkv, hd), &cos, &sin)
}

/// R0322's partial RoPE: 16 of 64 dims at T 2048 with the NTK-rescaled tables (8 heads, 4 kv
/// heads, B·T = 65,536 rows on CUDA; T 128, 2 heads of 64 on the CPU).
fn check_qkv_norm_rope_partial(cx: &mut Ctx) -> Result<()> {
    let (t, h, hkv, hd, rd) = match cx.device {
        Device::Cpu => (128, 2, 1, 64, 16),
        _ => (2048, 8, 4, 64, 16),
    };
    let (cos, sin) = partial_rope_tables(t, rd, cx.device);
    qkv_norm_rope_case(cx, (cx.shapes.rows / t, t, h, hkv, hd), &cos, &sin)
}

/// qkv_norm_rope at `(B, T, H, Hkv, hd)` with tables `[T, rd/2]` (rd < hd: partial RoPE).
fn qkv_norm_rope_case(
    cx: &mut Ctx,
    (b, t, h, hkv, hd): (i64, i64, i64, i64, i64),
    cos: &Tensor,
    sin: &Tensor,
) -> Result<()> {
    use qkv_norm_rope::{qkv_norm_rope, reference, QKV_NORM_ROPE};
    let w = (h + 2 * hkv) * hd;
    println!(
        "  info  B {b}, T {t}, {h} heads, {hkv} kv heads of {hd}, {} dims rotated",
        2 * cos.size()[1]
    );
    let eps = rms_norm::DEFAULT_EPS;
    let bf = (Kind::BFloat16, cx.device);
    let qkv0 = Tensor::randn([b, t, w], bf);
    let (cos, sin) = (cos.shallow_clone(), sin.shallow_clone());
    let gain0 = Tensor::randn([h], (Kind::Float, cx.device)) * 0.1 + 1.5;
    // Output gradients in SDPA's layout ([B, H, T, hd] memory, seen as [B, T, H, hd]): strided.
    let grad_in = |n: i64| Tensor::randn([b, n, t, hd], bf).transpose(1, 2);
    let (dq, dk, dv) = (grad_in(h), grad_in(hkv), grad_in(hkv));

    let run = |which: &str, dq: &Tensor, dk: &Tensor, dv: &Tensor| -> Result<Vec<Tensor>> {
        let (qkv, gain) = (leaf(qkv0.copy()), leaf(gain0.copy()));
        let (q, k, v) = match which {
            "fused" => qkv_norm_rope(&qkv, &cos, &sin, &gain, hd, eps)?,
            "reference" => reference(&qkv, &cos, &sin, &gain, hd, eps)?,
            _ => qkv_current(&qkv, &cos, &sin, &gain, h, hkv, hd).into(),
        };
        let g = pgolf_kernels::grad(&[&q, &k, &v], &[dq, dk, dv], &[&qkv, &gain])?;
        Ok(vec![q, k, v, g[0].shallow_clone(), g[1].shallow_clone()])
    };
    let got = run("fused", &dq, &dk, &dv)?;
    let want = run("reference", &dq, &dk, &dv)?;
    let names = [
        "forward q",
        "forward k",
        "forward v (copy)",
        "backward d qkv",
        "backward d q_gain (f32)",
    ];
    let tols = [
        (1e-3, 1.0 / 128.0),
        (1e-3, 1.0 / 128.0),
        (0.0, 0.0),
        (2e-3, 1.0 / 64.0),
        (1e-4, 1e-4),
    ];
    cx.compare_each(&names, &tols, &got, &want)?;
    // The same with contiguous output gradients (the kernel's other input layout).
    let (dqc, dkc, dvc) = (dq.contiguous(), dk.contiguous(), dv.contiguous());
    let got_c = run("fused", &dqc, &dkc, &dvc)?;
    cx.compare(
        "backward d qkv, contiguous grads",
        &got_c[3],
        &want[3],
        2e-3,
        1.0 / 64.0,
    )?;
    cx.bitwise_equal(
        "d q_gain run to run",
        &got[4],
        &run("fused", &dq, &dk, &dv)?[4],
    )?;
    let current = run("current", &dq, &dk, &dv)?;
    info_each("current bf16 ops", &names, &current, &want)?;

    // What SDPA's backward actually hands the op (the layout the strided path is for).
    if cx.device != Device::Cpu {
        let (qkv, gain) = (leaf(qkv0.copy()), leaf(gain0.copy()));
        let (q, k, v) = qkv_norm_rope(&qkv, &cos, &sin, &gain, hd, eps)?;
        let y = Tensor::scaled_dot_product_attention(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            None::<Tensor>,
            0.0,
            true,
            None,
            hkv != h,
        );
        let g = pgolf_kernels::grad(&[&y], &[&Tensor::randn(y.size(), bf)], &[&q, &k, &v])?;
        for (name, t) in ["dq", "dk", "dv"].iter().zip(&g) {
            println!(
                "  info  SDPA's {name} as the op receives it: size {:?} strides {:?} contiguous {}",
                t.size(),
                t.stride(),
                t.is_contiguous()
            );
        }
    }

    let elems = (b * t * w) as f64;
    let inputs = [
        qkv0.shallow_clone(),
        cos.shallow_clone(),
        sin.shallow_clone(),
        gain0.shallow_clone(),
    ];
    let scalars = [hd as f64, eps];
    let fwd = QKV_NORM_ROPE.forward(&inputs, &scalars)?;
    cx.time_against(
        "forward",
        Some(4.0 * elems),
        || QKV_NORM_ROPE.forward(&inputs, &scalars).map(drop),
        vec![
            (
                "current bf16 ops forward",
                Box::new(|| {
                    tch::no_grad(|| drop(qkv_current(&qkv0, &cos, &sin, &gain0, h, hkv, hd)));
                    Ok(())
                }),
            ),
            (
                "f32 reference forward",
                Box::new(|| {
                    tch::no_grad(|| reference(&qkv0, &cos, &sin, &gain0, hd, eps)).map(drop)
                }),
            ),
        ],
    )?;
    let strided = [dq.shallow_clone(), dk.shallow_clone(), dv.shallow_clone()];
    let contiguous = [
        dqc.shallow_clone(),
        dkc.shallow_clone(),
        dvc.shallow_clone(),
    ];
    cx.time_against(
        "backward (SDPA-layout grads)",
        Some(6.0 * elems),
        || {
            QKV_NORM_ROPE
                .backward(&fwd.saved, &strided, &scalars)
                .map(drop)
        },
        vec![
            (
                "backward after .contiguous() of the grads",
                Box::new(|| {
                    let c: Vec<Tensor> = strided.iter().map(|g| g.contiguous()).collect();
                    QKV_NORM_ROPE.backward(&fwd.saved, &c, &scalars).map(drop)
                }),
            ),
            (
                "backward, contiguous grads",
                Box::new(|| {
                    QKV_NORM_ROPE
                        .backward(&fwd.saved, &contiguous, &scalars)
                        .map(drop)
                }),
            ),
        ],
    )?;
    let (qkv, gain) = (leaf(qkv0.copy()), leaf(gain0.copy()));
    cx.time_against(
        "forward+backward",
        Some(10.0 * elems),
        || {
            let (q, k, v) = qkv_norm_rope(&qkv, &cos, &sin, &gain, hd, eps)?;
            pgolf_kernels::grad(&[&q, &k, &v], &[&dq, &dk, &dv], &[&qkv, &gain]).map(drop)
        },
        vec![
            (
                "current bf16 ops forward+backward",
                Box::new(|| {
                    let [q, k, v] = qkv_current(&qkv, &cos, &sin, &gain, h, hkv, hd);
                    pgolf_kernels::grad(&[&q, &k, &v], &[&dq, &dk, &dv], &[&qkv, &gain]).map(drop)
                }),
            ),
            (
                "f32 reference forward+backward",
                Box::new(|| {
                    let (q, k, v) = reference(&qkv, &cos, &sin, &gain, hd, eps)?;
                    pgolf_kernels::grad(&[&q, &k, &v], &[&dq, &dk, &dv], &[&qkv, &gain]).map(drop)
                }),
            ),
        ],
    )?;
    Ok(())
}

/// R0322's LN scale of its last block (1/√11), the largest reduction it applies.
const LN_SCALE: f64 = 0.301_511_344_577_763_6;

fn check_mix_norm(cx: &mut Ctx) -> Result<()> {
    mix_norm_case(cx, 1.0)
}

/// The norm with R0322's LN scale as its output factor, against the norm then `× f` in bf16
/// (what the fast formulation did before).
fn check_mix_norm_ln_scale(cx: &mut Ctx) -> Result<()> {
    mix_norm_case(cx, LN_SCALE)
}

fn mix_norm_case(cx: &mut Ctx, scale: f64) -> Result<()> {
    use mix_norm::{mix_norm, reference, MIX_NORM};
    println!("  info  output factor {scale}");
    let (_, _, _, _, _, d) = norm_shapes(cx);
    let n = cx.shapes.rows;
    let eps = rms_norm::DEFAULT_EPS;
    let bf = (Kind::BFloat16, cx.device);
    let x0 = Tensor::randn([n, d], bf);
    let x00 = Tensor::randn([n, d], bf);
    let mix0 = trained_mix(d, cx.device);
    let (dxm, dn) = (Tensor::randn([n, d], bf), Tensor::randn([n, d], bf));
    // In plain bf16 tch ops (what the op replaced): x·m0 then addcmul, then libtorch's rms_norm.
    let current_fwd = |x: &Tensor, x0: &Tensor, mix: &Tensor| {
        let m = mix.to_kind(Kind::BFloat16);
        let xm = (x * m.get(0)).addcmul(&m.get(1), x0);
        let nn = xm.rms_norm([d], None::<Tensor>, None);
        let nn = match scale == 1.0 {
            true => nn,
            false => nn * scale,
        };
        (xm, nn)
    };

    let run = |which: &str| -> Result<Vec<Tensor>> {
        let (x, x0, mix) = (leaf(x0.copy()), leaf(x00.copy()), leaf(mix0.copy()));
        let (xm, nn) = match which {
            "fused" => mix_norm(&x, &x0, &mix, eps, scale)?,
            "reference" => reference(&x, &x0, &mix, eps, scale)?,
            _ => current_fwd(&x, &x0, &mix),
        };
        let g = pgolf_kernels::grad(&[&xm, &nn], &[&dxm, &dn], &[&x, &x0, &mix])?;
        Ok([xm, nn].into_iter().chain(g).collect())
    };
    let got = run("fused")?;
    let want = run("reference")?;
    let names = [
        "forward xm",
        "forward n",
        "backward dx",
        "backward dx0",
        "backward d mix (f32)",
    ];
    let tols = [
        (1e-3, 1.0 / 128.0),
        (1e-3, 1.0 / 128.0),
        (2e-3, 1.0 / 64.0),
        (2e-3, 1.0 / 64.0),
        (1e-4, 1e-3),
    ];
    cx.compare_each(&names, &tols, &got, &want)?;
    cx.bitwise_equal("d mix run to run", &got[4], &run("fused")?[4])?;
    info_each("current bf16 ops", &names, &run("current")?, &want)?;

    let elems = (n * d) as f64;
    let inputs = [
        x0.shallow_clone(),
        x00.shallow_clone(),
        mix0.shallow_clone(),
    ];
    let scalars = [eps, scale];
    let fwd = MIX_NORM.forward(&inputs, &scalars)?;
    let grads = [dxm.shallow_clone(), dn.shallow_clone()];
    cx.time_against(
        "forward",
        Some(8.0 * elems),
        || MIX_NORM.forward(&inputs, &scalars).map(drop),
        vec![
            (
                "current bf16 ops forward",
                Box::new(|| {
                    tch::no_grad(|| drop(current_fwd(&x0, &x00, &mix0)));
                    Ok(())
                }),
            ),
            (
                "f32 reference forward",
                Box::new(|| tch::no_grad(|| reference(&x0, &x00, &mix0, eps, scale)).map(drop)),
            ),
        ],
    )?;
    cx.time("fused backward", Some(12.0 * elems), || {
        MIX_NORM.backward(&fwd.saved, &grads, &scalars).map(drop)
    })?;
    let (x, x0, mix) = (leaf(x0.copy()), leaf(x00.copy()), leaf(mix0.copy()));
    cx.time_against(
        "forward+backward",
        Some(20.0 * elems),
        || {
            let (xm, nn) = mix_norm(&x, &x0, &mix, eps, scale)?;
            pgolf_kernels::grad(&[&xm, &nn], &[&dxm, &dn], &[&x, &x0, &mix]).map(drop)
        },
        vec![
            (
                "current bf16 ops forward+backward",
                Box::new(|| {
                    let (xm, nn) = current_fwd(&x, &x0, &mix);
                    pgolf_kernels::grad(&[&xm, &nn], &[&dxm, &dn], &[&x, &x0, &mix]).map(drop)
                }),
            ),
            (
                "f32 reference forward+backward",
                Box::new(|| {
                    let (xm, nn) = reference(&x, &x0, &mix, eps, scale)?;
                    pgolf_kernels::grad(&[&xm, &nn], &[&dxm, &dn], &[&x, &x0, &mix]).map(drop)
                }),
            ),
        ],
    )?;
    Ok(())
}

fn check_rms_norm(cx: &mut Ctx) -> Result<()> {
    rms_norm_case(cx, 1.0)
}

/// The MLP's input norm with R0322's LN scale as its output factor, against libtorch's norm then
/// `× f` (what the fast formulation did before).
fn check_rms_norm_ln_scale(cx: &mut Ctx) -> Result<()> {
    rms_norm_case(cx, LN_SCALE)
}

fn rms_norm_case(cx: &mut Ctx, scale: f64) -> Result<()> {
    use rms_norm::{reference, rms_norm, DEFAULT_EPS, RMS_NORM};
    println!("  info  output factor {scale}");
    let (_, _, _, _, _, d) = norm_shapes(cx);
    // libtorch's norm (as the literal formulation calls it), then the factor as its own op.
    let torch = |x: &Tensor| {
        let y = x.rms_norm([d], None::<Tensor>, None);
        match scale == 1.0 {
            true => y,
            false => y * scale,
        }
    };
    let n = cx.shapes.rows;
    let bf = (Kind::BFloat16, cx.device);
    let x0 = Tensor::randn([n, d], bf) * 3.0;
    let dy = Tensor::randn([n, d], bf);
    let run = |which: &str| -> Result<Vec<Tensor>> {
        let x = leaf(x0.copy());
        let y = match which {
            "fused" => rms_norm(&x, DEFAULT_EPS, scale)?,
            "reference" => reference(&x, DEFAULT_EPS, scale),
            _ => torch(&x),
        };
        let dx = grad1(&y, &dy, &x)?;
        Ok(vec![y, dx])
    };
    let (got, want) = (run("fused")?, run("reference")?);
    cx.compare("forward y", &got[0], &want[0], 1e-3, 1.0 / 128.0)?;
    cx.compare("backward dx", &got[1], &want[1], 2e-3, 1.0 / 64.0)?;
    let libtorch = run("libtorch")?;
    info_error("libtorch bf16 rms_norm: forward y", &libtorch[0], &want[0])?;
    info_error(
        "libtorch bf16 rms_norm: backward dx",
        &libtorch[1],
        &want[1],
    )?;

    let elems = (n * d) as f64;
    let inputs = [x0.shallow_clone()];
    let scalars = [DEFAULT_EPS, scale];
    let fwd = RMS_NORM.forward(&inputs, &scalars)?;
    let grads = [dy.shallow_clone()];
    cx.time_against(
        "forward",
        Some(4.0 * elems),
        || RMS_NORM.forward(&inputs, &scalars).map(drop),
        vec![(
            "libtorch rms_norm forward",
            Box::new(|| {
                tch::no_grad(|| drop(torch(&x0)));
                Ok(())
            }),
        )],
    )?;
    cx.time("fused backward", Some(6.0 * elems), || {
        RMS_NORM.backward(&fwd.saved, &grads, &scalars).map(drop)
    })?;
    let x = leaf(x0.copy());
    cx.time_against(
        "forward+backward",
        Some(10.0 * elems),
        || grad1(&rms_norm(&x, DEFAULT_EPS, scale)?, &dy, &x).map(drop),
        vec![(
            "libtorch rms_norm forward+backward",
            Box::new(|| grad1(&torch(&x), &dy, &x).map(drop)),
        )],
    )?;
    Ok(())
}

/// XSA in plain bf16 tch ops, as the literal formulation (pgolf-model's `addons::xsa`) runs it.
fn xsa_current(y: &Tensor, v: &Tensor) -> Tensor {
    let (b, t, h, hd) = y.size4().unwrap();
    let hkv = v.size()[2];
    let y = y.view([b, t, hkv, h / hkv, hd]);
    let norm = v.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12);
    let vn = (v / norm).unsqueeze(-2);
    let along = (&y * &vn).sum_dim_intlist(&[-1i64][..], true, None::<Kind>) * vn;
    (y - along).view([b, t, h, hd])
}

/// XSA at R0322's shapes (8 heads on 4 kv heads of 64, B·T = 65,536 rows at T 2048): `y` in
/// SDPA's output layout, `v` as qkv_norm_rope returns it, the output gradient contiguous (as the
/// output projection's backward gives it).
fn check_xsa(cx: &mut Ctx) -> Result<()> {
    use pgolf_kernels::ops::xsa::{reference, xsa, XSA};
    let (t, h, hkv, hd) = match cx.device {
        Device::Cpu => (128, 4, 2, 16),
        _ => (2048, 8, 4, 64),
    };
    let b = cx.shapes.rows / t;
    let bf = (Kind::BFloat16, cx.device);
    let y0 = Tensor::randn([b, h, t, hd], bf).transpose(1, 2);
    let v0 = Tensor::randn([b, t, hkv, hd], bf);
    let g = Tensor::randn([b, t, h, hd], bf);
    let run = |which: &str| -> Result<Vec<Tensor>> {
        let (y, v) = (leaf(y0.copy()), leaf(v0.copy()));
        let out = match which {
            "fused" => xsa(&y, &v)?,
            "reference" => reference(&y, &v)?,
            _ => xsa_current(&y, &v),
        };
        let grads = pgolf_kernels::grad(&[&out], &[&g], &[&y, &v])?;
        Ok([out].into_iter().chain(grads).collect())
    };
    let got = run("fused")?;
    let want = run("reference")?;
    let names = ["forward out", "backward dy", "backward dv"];
    let tols = [(1e-3, 1.0 / 128.0), (2e-3, 1.0 / 64.0), (2e-3, 1.0 / 64.0)];
    cx.compare_each(&names, &tols, &got, &want)?;
    println!(
        "  info  out contiguous {}; dy strides {:?} (y's {:?})",
        got[0].is_contiguous(),
        got[1].stride(),
        y0.stride()
    );
    info_each("current bf16 ops", &names, &run("current")?, &want)?;

    let (ey, ev) = ((b * t * h * hd) as f64, (b * t * hkv * hd) as f64);
    let inputs = [y0.shallow_clone(), v0.shallow_clone()];
    let fwd = XSA.forward(&inputs, &[])?;
    let grads = [g.shallow_clone()];
    cx.time_against(
        "forward",
        Some(2.0 * (2.0 * ey + ev)),
        || XSA.forward(&inputs, &[]).map(drop),
        vec![
            (
                "current bf16 ops forward",
                Box::new(|| {
                    tch::no_grad(|| drop(xsa_current(&y0, &v0)));
                    Ok(())
                }),
            ),
            (
                "f32 reference forward",
                Box::new(|| tch::no_grad(|| reference(&y0, &v0)).map(drop)),
            ),
        ],
    )?;
    cx.time("fused backward", Some(2.0 * (3.0 * ey + 2.0 * ev)), || {
        XSA.backward(&fwd.saved, &grads, &[]).map(drop)
    })?;
    let (y, v) = (leaf(y0.copy()), leaf(v0.copy()));
    // The transpose copy the projection needs without XSA (reshape of SDPA's layout), for scale.
    cx.time("y.reshape([B, T, d]) copy (no XSA)", Some(4.0 * ey), || {
        drop(y0.reshape([b, t, h * hd]));
        Ok(())
    })?;
    cx.time_against(
        "forward+backward",
        Some(2.0 * (5.0 * ey + 3.0 * ev)),
        || pgolf_kernels::grad(&[&xsa(&y, &v)?], &[&g], &[&y, &v]).map(drop),
        vec![
            (
                "current bf16 ops forward+backward",
                Box::new(|| {
                    pgolf_kernels::grad(&[&xsa_current(&y, &v)], &[&g], &[&y, &v]).map(drop)
                }),
            ),
            (
                "f32 reference forward+backward",
                Box::new(|| {
                    pgolf_kernels::grad(&[&reference(&y, &v)?], &[&g], &[&y, &v]).map(drop)
                }),
            ),
        ],
    )?;
    Ok(())
}

/// SmearGate in plain bf16 tch ops, as the literal formulation (pgolf-model's `Gpt::smear`) runs
/// it.
fn smear_current(x: &Tensor, gate: &Tensor) -> Tensor {
    let g = gate.to_kind(x.kind()).sigmoid();
    let t = x.size()[1];
    let prev = Tensor::cat(&[x.narrow(1, 0, 1).zeros_like(), x.narrow(1, 0, t - 1)], 1);
    (1f64 - &g) * x + g * prev
}

/// SmearGate at R0322's embedding (d 512, B·T = 65,536 rows at T 2048), a trained-looking gate.
fn check_smear_gate(cx: &mut Ctx) -> Result<()> {
    use pgolf_kernels::ops::smear_gate::{reference, smear_gate, SMEAR_GATE};
    let (_, _, _, _, _, d) = norm_shapes(cx);
    let t = match cx.device {
        Device::Cpu => 128,
        _ => 2048,
    };
    let b = cx.shapes.rows / t;
    let bf = (Kind::BFloat16, cx.device);
    let x0 = Tensor::randn([b, t, d], bf);
    let gate0 = Tensor::randn([d], (Kind::Float, cx.device)) - 2.0;
    let g = Tensor::randn([b, t, d], bf);
    let run = |which: &str| -> Result<Vec<Tensor>> {
        let (x, gate) = (leaf(x0.copy()), leaf(gate0.copy()));
        let out = match which {
            "fused" => smear_gate(&x, &gate)?,
            "reference" => reference(&x, &gate)?,
            _ => smear_current(&x, &gate),
        };
        let grads = pgolf_kernels::grad(&[&out], &[&g], &[&x, &gate])?;
        Ok([out].into_iter().chain(grads).collect())
    };
    let got = run("fused")?;
    let want = run("reference")?;
    let names = ["forward out", "backward dx", "backward d gate (f32)"];
    let tols = [(1e-3, 1.0 / 128.0), (1e-3, 1.0 / 128.0), (1e-4, 1e-3)];
    cx.compare_each(&names, &tols, &got, &want)?;
    cx.bitwise_equal("d gate run to run", &got[2], &run("fused")?[2])?;
    info_each("current bf16 ops", &names, &run("current")?, &want)?;

    let elems = (b * t * d) as f64;
    let inputs = [x0.shallow_clone(), gate0.shallow_clone()];
    let fwd = SMEAR_GATE.forward(&inputs, &[])?;
    let grads = [g.shallow_clone()];
    cx.time_against(
        "forward",
        Some(4.0 * elems),
        || SMEAR_GATE.forward(&inputs, &[]).map(drop),
        vec![
            (
                "current bf16 ops forward",
                Box::new(|| {
                    tch::no_grad(|| drop(smear_current(&x0, &gate0)));
                    Ok(())
                }),
            ),
            (
                "f32 reference forward",
                Box::new(|| tch::no_grad(|| reference(&x0, &gate0)).map(drop)),
            ),
        ],
    )?;
    cx.time("fused backward", Some(6.0 * elems), || {
        SMEAR_GATE.backward(&fwd.saved, &grads, &[]).map(drop)
    })?;
    let (x, gate) = (leaf(x0.copy()), leaf(gate0.copy()));
    cx.time_against(
        "forward+backward",
        Some(10.0 * elems),
        || pgolf_kernels::grad(&[&smear_gate(&x, &gate)?], &[&g], &[&x, &gate]).map(drop),
        vec![
            (
                "current bf16 ops forward+backward",
                Box::new(|| {
                    pgolf_kernels::grad(&[&smear_current(&x, &gate)], &[&g], &[&x, &gate]).map(drop)
                }),
            ),
            (
                "f32 reference forward+backward",
                Box::new(|| {
                    pgolf_kernels::grad(&[&reference(&x, &gate)?], &[&g], &[&x, &gate]).map(drop)
                }),
            ),
        ],
    )?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("check_kernels: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let args = Args::parse("check_kernels", std::env::args().skip(1))?;
    let shapes = match args.describe_gpu()? {
        Some(gpu) => {
            println!("device {gpu}");
            Shapes {
                rows: 65_536,
                hidden: 1024,
                vocab: 1024,
            }
        }
        None => {
            println!("device cpu: small shapes, the ops' CPU paths (tests this harness; timings mean nothing)");
            Shapes {
                rows: 512,
                hidden: 64,
                vocab: 96,
            }
        }
    };
    tch::manual_seed(1234);
    let mut cx = Ctx {
        harness: Harness::new(&args),
        shapes,
    };
    Ok(run_checks(&mut cx, CHECKS, args.only.as_deref()))
}

//! The GPU check of pgolf-kernels: every fused op against its plain-tch reference under autograd,
//! at the baseline's shapes (B·T = 65,536 rows, d 512, 8 heads, 4 kv heads, head_dim 64,
//! hidden 1024, vocab 1024), forward and backward, with max errors and timings; then the ops
//! inside a CUDA graph capture (pgolf-model's graph API, as the train stage uses it) and on a
//! fresh thread. Prints one line per comparison and a summary; exits 1 on any failure.
//!
//!     check_kernels [--device cuda|cpu] [--reps N] [--only NAME[,NAME...]]
//!
//! `--device cpu` runs the same comparisons at small shapes through the ops' CPU paths (tch
//! formulas), to test this harness without a GPU; timings there mean nothing.
//!
//! Tolerances: outputs are bf16, so a fused result may differ from the reference by a rounding
//! or two (relative 2⁻⁸ each); a comparison passes when every element has
//! |Δ| ≤ atol + rtol·|ref|, with atol a fraction of the reference's largest magnitude.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pgolf_kernels::ops::{relu_square, softcap_cross_entropy};
use tch::{Device, Kind, Tensor};

/// One op's check: compares (via [`Ctx::compare`]) and times (via [`Ctx::time`]).
type CheckFn = fn(&mut Ctx) -> Result<()>;

/// The checks, in order. Each op adds one line here and one function below.
const CHECKS: &[(&str, CheckFn)] = &[
    ("relu_square", check_relu_square),
    ("softcap_cross_entropy", check_softcap_cross_entropy),
    ("qkv_norm_rope", check_qkv_norm_rope),
    ("mix_norm", check_mix_norm),
    ("rms_norm", check_rms_norm),
    ("norms_cuda_graph", check_norms_in_cuda_graph),
    ("cuda_graph", check_cuda_graph),
    ("fresh_thread", check_fresh_thread),
];

/// Baseline shapes (REFERENCE.md §3): rows = B·T of one micro-batch.
struct Shapes {
    rows: i64,
    hidden: i64,
    vocab: i64,
}

struct Ctx {
    device: Device,
    reps: usize,
    shapes: Shapes,
    failures: Vec<String>,
    current: &'static str,
}

impl Ctx {
    /// Compares `got` with `want` elementwise (in f32); records a failure when some element has
    /// |Δ| > atol_frac·max|want| + rtol·|want|. Prints max |Δ|, max |Δ| relative to max|want|,
    /// and the worst element's own relative error.
    fn compare(
        &mut self,
        what: &str,
        got: &Tensor,
        want: &Tensor,
        atol_frac: f64,
        rtol: f64,
    ) -> Result<bool> {
        if got.size() != want.size() {
            bail!(
                "{what}: shape {:?}, reference {:?}",
                got.size(),
                want.size()
            );
        }
        let (g, w) = (got.to_kind(Kind::Float), want.to_kind(Kind::Float));
        let diff = (&g - &w).abs();
        let scale = f64::try_from(w.abs().max())?;
        let max_abs = f64::try_from(diff.max())?;
        let finite = bool::try_from(g.isfinite().all())?;
        let bound = w.abs() * rtol + atol_frac * scale;
        let bad = i64::try_from(diff.gt_tensor(&bound).sum(Kind::Int64))?;
        let worst = i64::try_from(diff.flatten(0, -1).argmax(0, false))?;
        let worst_rel = f64::try_from(diff.flatten(0, -1).get(worst))?
            / f64::try_from(w.flatten(0, -1).get(worst).abs())?.max(f64::MIN_POSITIVE);
        let ok = finite && bad == 0;
        println!(
            "  {:<5} {what:<34} max|Δ| {max_abs:.3e}  max|Δ|/max|ref| {:.3e}  worst elem rel {worst_rel:.2e}  \
             out of tol {bad}/{}{}",
            if ok { "ok" } else { "FAIL" },
            max_abs / scale.max(f64::MIN_POSITIVE),
            g.numel(),
            if finite { "" } else { "  (non-finite values!)" },
        );
        self.record(ok, what);
        Ok(ok)
    }

    /// [`Ctx::compare`] of each `got[i]` with `want[i]`, named `names[i]`, within `tols[i]`
    /// (atol_frac, rtol).
    fn compare_each(
        &mut self,
        names: &[impl AsRef<str>],
        tols: &[(f64, f64)],
        got: &[Tensor],
        want: &[Tensor],
    ) -> Result<()> {
        for ((name, &(atol, rtol)), (g, w)) in names.iter().zip(tols).zip(got.iter().zip(want)) {
            self.compare(name.as_ref(), g, w, atol, rtol)?;
        }
        Ok(())
    }

    /// Records a failure unless two runs gave bitwise the same tensor.
    fn bitwise_equal(&mut self, what: &str, a: &Tensor, b: &Tensor) -> Result<()> {
        let same = bool::try_from(a.eq_tensor(b).all())?;
        println!(
            "  {:<5} {what:<34} {}",
            if same { "ok" } else { "FAIL" },
            if same { "bitwise equal" } else { "differs" }
        );
        self.record(same, what);
        Ok(())
    }

    /// Notes a failed comparison of the current check (the run fails at the end).
    fn record(&mut self, ok: bool, what: &str) {
        if !ok {
            self.failures.push(format!("{}: {what}", self.current));
        }
    }

    /// Mean milliseconds of `f` over `reps` runs after 3 warm-ups, by a synchronised wall clock.
    fn time(
        &self,
        what: &str,
        bytes: Option<f64>,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        for _ in 0..3 {
            f()?;
        }
        self.sync();
        let start = Instant::now();
        for _ in 0..self.reps {
            f()?;
        }
        self.sync();
        let ms = start.elapsed().as_secs_f64() * 1e3 / self.reps as f64;
        let bw = bytes.map_or(String::new(), |b| {
            format!("  ({:.0} GB/s)", b / (ms * 1e-3) / 1e9)
        });
        println!("  time  {what:<34} {ms:8.3} ms{bw}");
        Ok(ms)
    }

    fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// `time` of the fused and the reference version of one phase, and their ratio.
    fn time_pair(
        &self,
        phase: &str,
        bytes: Option<f64>,
        fused: impl FnMut() -> Result<()>,
        reference: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let f = self.time(&format!("fused {phase}"), bytes, fused)?;
        let r = self.time(&format!("reference {phase}"), None, reference)?;
        println!("  speed {phase:<34} {:.2}× the reference", r / f);
        Ok(())
    }
}

/// A leaf that requires grad.
fn leaf(t: Tensor) -> Tensor {
    t.set_requires_grad(true)
}

fn grad1(out: &Tensor, dout: &Tensor, input: &Tensor) -> Result<Tensor> {
    Ok(pgolf_kernels::grad(&[out], &[dout], &[input])?.remove(0))
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
    // The model's current formulation (bf16 ops, shared/model gpt.rs `activation`) for context.
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
fn check_cuda_graph(cx: &mut Ctx) -> Result<()> {
    if cx.device == Device::Cpu {
        println!("  (skipped on the CPU)");
        return Ok(());
    }
    use pgolf_model::cuda::CudaGraph;
    pgolf_kernels::ops::preload(cx.device).context("preloading every kernel")?;
    let (n, hidden, v) = (cx.shapes.rows / 16, cx.shapes.hidden, cx.shapes.vocab);
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

// ---- Engineer D's ops: qkv_norm_rope, mix_norm, rms_norm -------------------------------------

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

/// Upstream's RoPE tables in f32 (REFERENCE.md §3.2): `[T, hd/2]` cos and sin of t·base^(−2i/hd).
fn rope_tables(t: i64, hd: i64, device: Device) -> (Tensor, Tensor) {
    let opts = (Kind::Float, device);
    let inv_freq = Tensor::scalar_tensor(10_000.0, opts)
        .pow(&(Tensor::arange_start_step(0, hd, 2, opts) / hd as f64))
        .reciprocal();
    let freqs = Tensor::arange(t, opts).outer(&inv_freq);
    (freqs.cos(), freqs.sin())
}

/// A trained-looking residual mix `[2, d]` f32: m0 near 1, m1 small (init is exactly (1, 0)).
fn trained_mix(d: i64, device: Device) -> Tensor {
    let opts = (Kind::Float, device);
    Tensor::stack(
        &[
            Tensor::randn([d], opts) * 0.2 + 1.0,
            Tensor::randn([d], opts) * 0.2,
        ],
        0,
    )
}

/// Prints (does not judge) how far another formulation is from the reference: for context.
fn info_error(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    let (g, w) = (got.to_kind(Kind::Float), want.to_kind(Kind::Float));
    let max_abs = f64::try_from((&g - &w).abs().max())?;
    let scale = f64::try_from(w.abs().max())?.max(f64::MIN_POSITIVE);
    println!(
        "  info  {what:<34} max|Δ| {max_abs:.3e}  max|Δ|/max|ref| {:.3e}",
        max_abs / scale
    );
    Ok(())
}

/// [`info_error`] of each `got[i]` against `want[i]`, labelled `{what}: {names[i]}`.
fn info_each(what: &str, names: &[&str], got: &[Tensor], want: &[Tensor]) -> Result<()> {
    for (name, (g, w)) in names.iter().zip(got.iter().zip(want)) {
        info_error(&format!("{what}: {name}"), g, w)?;
    }
    Ok(())
}

/// An alternative to time: its full label and one run.
type Alternative<'a> = (&'a str, Box<dyn FnMut() -> Result<()> + 'a>);

/// Times the fused op and the alternatives for one phase; speed-ups against each.
fn time_against(
    cx: &Ctx,
    phase: &str,
    bytes: Option<f64>,
    fused: impl FnMut() -> Result<()>,
    others: Vec<Alternative<'_>>,
) -> Result<()> {
    let f = cx.time(&format!("fused {phase}"), bytes, fused)?;
    for (label, g) in others {
        let ms = cx.time(label, None, g)?;
        println!("  speed fused {phase}: {:.2}× {label}", ms / f);
    }
    Ok(())
}

/// fused.rs's current attention prologue (bf16 tch ops: one rms_norm over the q and k heads,
/// RoPE as x·C + rotate(x)·S with the gains folded into bf16 tables), for timing and context.
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
    let c = Tensor::cat(&[cos, cos], -1).to_kind(ck).view([1, t, 1, hd]);
    let s = Tensor::cat(&[sin, &(-sin)], -1)
        .to_kind(ck)
        .view([1, t, 1, hd]);
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
    let half = hd / 2;
    let rotated = Tensor::cat(&[qk.narrow(-1, half, half), qk.narrow(-1, 0, half)], -1);
    let qk = (&qk * (&c * &g)).addcmul(&rotated, &(&s * &g));
    [qk.narrow(2, 0, h), qk.narrow(2, h, hkv), v]
}

fn check_qkv_norm_rope(cx: &mut Ctx) -> Result<()> {
    use qkv_norm_rope::{qkv_norm_rope, reference, QKV_NORM_ROPE};
    let (b, t, h, hkv, hd, _) = norm_shapes(cx);
    let w = (h + 2 * hkv) * hd;
    let eps = rms_norm::DEFAULT_EPS;
    let bf = (Kind::BFloat16, cx.device);
    let qkv0 = Tensor::randn([b, t, w], bf);
    let (cos, sin) = rope_tables(t, hd, cx.device);
    let gain0 = Tensor::randn([h], (Kind::Float, cx.device)) * 0.1 + 1.5;
    // Output gradients in SDPA's layout ([B, H, T, hd] memory, seen as [B, T, H, hd]): strided.
    let grad_in = |n: i64| Tensor::randn([b, n, t, hd], bf).transpose(1, 2);
    let (dq, dk, dv) = (grad_in(h), grad_in(hkv), grad_in(hkv));

    let run = |which: &str, dq: &Tensor, dk: &Tensor, dv: &Tensor| -> Result<Vec<Tensor>> {
        let (qkv, gain) = (leaf(qkv0.copy()), leaf(gain0.copy()));
        let (q, k, v) = match which {
            "fused" => qkv_norm_rope(&qkv, &cos, &sin, &gain, eps)?,
            "reference" => reference(&qkv, &cos, &sin, &gain, eps)?,
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
        let (q, k, v) = qkv_norm_rope(&qkv, &cos, &sin, &gain, eps)?;
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
    let fwd = QKV_NORM_ROPE.forward(&inputs, &[eps])?;
    time_against(
        cx,
        "forward",
        Some(4.0 * elems),
        || QKV_NORM_ROPE.forward(&inputs, &[eps]).map(drop),
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
                Box::new(|| tch::no_grad(|| reference(&qkv0, &cos, &sin, &gain0, eps)).map(drop)),
            ),
        ],
    )?;
    let strided = [dq.shallow_clone(), dk.shallow_clone(), dv.shallow_clone()];
    let contiguous = [
        dqc.shallow_clone(),
        dkc.shallow_clone(),
        dvc.shallow_clone(),
    ];
    time_against(
        cx,
        "backward (SDPA-layout grads)",
        Some(6.0 * elems),
        || {
            QKV_NORM_ROPE
                .backward(&fwd.saved, &strided, &[eps])
                .map(drop)
        },
        vec![
            (
                "backward after .contiguous() of the grads",
                Box::new(|| {
                    let c: Vec<Tensor> = strided.iter().map(|g| g.contiguous()).collect();
                    QKV_NORM_ROPE.backward(&fwd.saved, &c, &[eps]).map(drop)
                }),
            ),
            (
                "backward, contiguous grads",
                Box::new(|| {
                    QKV_NORM_ROPE
                        .backward(&fwd.saved, &contiguous, &[eps])
                        .map(drop)
                }),
            ),
        ],
    )?;
    let (qkv, gain) = (leaf(qkv0.copy()), leaf(gain0.copy()));
    time_against(
        cx,
        "forward+backward",
        Some(10.0 * elems),
        || {
            let (q, k, v) = qkv_norm_rope(&qkv, &cos, &sin, &gain, eps)?;
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
                    let (q, k, v) = reference(&qkv, &cos, &sin, &gain, eps)?;
                    pgolf_kernels::grad(&[&q, &k, &v], &[&dq, &dk, &dv], &[&qkv, &gain]).map(drop)
                }),
            ),
        ],
    )?;
    Ok(())
}

fn check_mix_norm(cx: &mut Ctx) -> Result<()> {
    use mix_norm::{mix_norm, reference, MIX_NORM};
    let (_, _, _, _, _, d) = norm_shapes(cx);
    let n = cx.shapes.rows;
    let eps = rms_norm::DEFAULT_EPS;
    let bf = (Kind::BFloat16, cx.device);
    let x0 = Tensor::randn([n, d], bf);
    let x00 = Tensor::randn([n, d], bf);
    let mix0 = trained_mix(d, cx.device);
    let (dxm, dn) = (Tensor::randn([n, d], bf), Tensor::randn([n, d], bf));
    // fused.rs now: bf16 mix (x·m0 then addcmul), then libtorch's rms_norm.
    let current_fwd = |x: &Tensor, x0: &Tensor, mix: &Tensor| {
        let m = mix.to_kind(Kind::BFloat16);
        let xm = (x * m.get(0)).addcmul(&m.get(1), x0);
        let nn = xm.rms_norm([d], None::<Tensor>, None);
        (xm, nn)
    };

    let run = |which: &str| -> Result<Vec<Tensor>> {
        let (x, x0, mix) = (leaf(x0.copy()), leaf(x00.copy()), leaf(mix0.copy()));
        let (xm, nn) = match which {
            "fused" => mix_norm(&x, &x0, &mix, eps)?,
            "reference" => reference(&x, &x0, &mix, eps)?,
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
    let fwd = MIX_NORM.forward(&inputs, &[eps])?;
    let grads = [dxm.shallow_clone(), dn.shallow_clone()];
    time_against(
        cx,
        "forward",
        Some(8.0 * elems),
        || MIX_NORM.forward(&inputs, &[eps]).map(drop),
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
                Box::new(|| tch::no_grad(|| reference(&x0, &x00, &mix0, eps)).map(drop)),
            ),
        ],
    )?;
    cx.time("fused backward", Some(12.0 * elems), || {
        MIX_NORM.backward(&fwd.saved, &grads, &[eps]).map(drop)
    })?;
    let (x, x0, mix) = (leaf(x0.copy()), leaf(x00.copy()), leaf(mix0.copy()));
    time_against(
        cx,
        "forward+backward",
        Some(20.0 * elems),
        || {
            let (xm, nn) = mix_norm(&x, &x0, &mix, eps)?;
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
                    let (xm, nn) = reference(&x, &x0, &mix, eps)?;
                    pgolf_kernels::grad(&[&xm, &nn], &[&dxm, &dn], &[&x, &x0, &mix]).map(drop)
                }),
            ),
        ],
    )?;
    Ok(())
}

fn check_rms_norm(cx: &mut Ctx) -> Result<()> {
    use rms_norm::{reference, rms_norm, DEFAULT_EPS, RMS_NORM};
    let (_, _, _, _, _, d) = norm_shapes(cx);
    let n = cx.shapes.rows;
    let bf = (Kind::BFloat16, cx.device);
    let x0 = Tensor::randn([n, d], bf) * 3.0;
    let dy = Tensor::randn([n, d], bf);
    let run = |which: &str| -> Result<Vec<Tensor>> {
        let x = leaf(x0.copy());
        let y = match which {
            "fused" => rms_norm(&x, DEFAULT_EPS)?,
            "reference" => reference(&x, DEFAULT_EPS),
            _ => x.rms_norm([d], None::<Tensor>, None), // libtorch's, as the model calls it now
        };
        let dx = grad1(&y, &dy, &x)?;
        Ok(vec![y, dx])
    };
    let (got, want) = (run("fused")?, run("reference")?);
    cx.compare("forward y", &got[0], &want[0], 1e-3, 1.0 / 128.0)?;
    cx.compare("backward dx", &got[1], &want[1], 2e-3, 1.0 / 64.0)?;
    let torch = run("libtorch")?;
    info_error("libtorch bf16 rms_norm: forward y", &torch[0], &want[0])?;
    info_error("libtorch bf16 rms_norm: backward dx", &torch[1], &want[1])?;

    let elems = (n * d) as f64;
    let inputs = [x0.shallow_clone()];
    let fwd = RMS_NORM.forward(&inputs, &[DEFAULT_EPS])?;
    let grads = [dy.shallow_clone()];
    time_against(
        cx,
        "forward",
        Some(4.0 * elems),
        || RMS_NORM.forward(&inputs, &[DEFAULT_EPS]).map(drop),
        vec![(
            "libtorch rms_norm forward",
            Box::new(|| {
                tch::no_grad(|| drop(x0.rms_norm([d], None::<Tensor>, None)));
                Ok(())
            }),
        )],
    )?;
    cx.time("fused backward", Some(6.0 * elems), || {
        RMS_NORM
            .backward(&fwd.saved, &grads, &[DEFAULT_EPS])
            .map(drop)
    })?;
    let x = leaf(x0.copy());
    time_against(
        cx,
        "forward+backward",
        Some(10.0 * elems),
        || grad1(&rms_norm(&x, DEFAULT_EPS)?, &dy, &x).map(drop),
        vec![(
            "libtorch rms_norm forward+backward",
            Box::new(|| grad1(&x.rms_norm([d], None::<Tensor>, None), &dy, &x).map(drop)),
        )],
    )?;
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
        let (xm, nn) = mix_norm::mix_norm(x, x0, mix, eps)?;
        let y = rms_norm::rms_norm(&xm, eps)?;
        (
            qkv_norm_rope::qkv_norm_rope(qkv, cos, sin, gain, eps)?,
            (xm, nn),
            y,
        )
    } else {
        let (xm, nn) = mix_norm::reference(x, x0, mix, eps)?;
        let y = rms_norm::reference(&xm, eps);
        (
            qkv_norm_rope::reference(qkv, cos, sin, gain, eps)?,
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
fn check_norms_in_cuda_graph(cx: &mut Ctx) -> Result<()> {
    if cx.device == Device::Cpu {
        println!("  (skipped on the CPU)");
        return Ok(());
    }
    use pgolf_model::cuda::CudaGraph;
    pgolf_kernels::ops::preload(cx.device).context("preloading every kernel")?;
    let (b, t, h, hkv, hd, d) = norm_shapes(cx);
    let b = (b / 8).max(1);
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
    let mut device = Device::Cuda(0);
    let mut reps = 50;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--device" => {
                device = match value()?.as_str() {
                    "cuda" => Device::Cuda(0),
                    "cpu" => Device::Cpu,
                    d => bail!("--device: cuda or cpu, not {d}"),
                }
            }
            "--reps" => reps = value()?.parse().context("--reps")?,
            "--only" => only = Some(value()?.split(',').map(str::to_string).collect()),
            a => bail!("unknown argument {a} (usage: check_kernels [--device cuda|cpu] [--reps N] [--only NAMES])"),
        }
    }
    let shapes = match device {
        Device::Cuda(i) => {
            if !tch::Cuda::is_available() {
                bail!(
                    "libtorch sees no CUDA device (is LD_LIBRARY_PATH pointing at torch's lib/, and \
                     libtorch_cuda linked?)"
                );
            }
            let (major, minor) = pgolf_kernels::nvrtc::context(i)?
                .compute_capability()
                .map_err(|e| anyhow::anyhow!("compute capability: {e}"))?;
            println!(
                "device cuda:{i}: {} (sm_{major}{minor}); torch's CUDA devices: {}",
                pgolf_model::cuda::gpu_name(device).unwrap_or_else(|| "unknown GPU".into()),
                tch::Cuda::device_count()
            );
            Shapes {
                rows: 65_536,
                hidden: 1024,
                vocab: 1024,
            }
        }
        _ => {
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
        device,
        reps,
        shapes,
        failures: Vec::new(),
        current: "",
    };
    let mut errors = Vec::new();
    for (name, check) in CHECKS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        println!("== {name}");
        cx.current = name;
        if let Err(e) = check(&mut cx) {
            println!("  ERROR {e:#}");
            errors.push(format!("{name}: {e:#}"));
        }
    }
    println!("== summary");
    for f in &cx.failures {
        println!("  FAIL  {f}");
    }
    for e in &errors {
        println!("  ERROR {e}");
    }
    let ok = cx.failures.is_empty() && errors.is_empty();
    println!(
        "  {}",
        if ok {
            "all checks passed"
        } else {
            "some checks FAILED"
        }
    );
    Ok(ok)
}

//! The harness of the GPU checks (`examples/check_kernels.rs` here, `examples/check_model_gpu.rs`
//! in pgolf-model): elementwise comparisons within a tolerance, synchronised timings, the list of
//! failures, and the command line and summary both share. One line per comparison; the caller
//! exits 1 when anything failed.
//!
//! A comparison passes when every element has |Δ| ≤ atol_frac·max|ref| + rtol·|ref| and the
//! result is finite: with bf16 outputs a result may differ from an f32 reference by a rounding or
//! two (relative 2⁻⁸ each), so `rtol` is a few of those and `atol_frac` covers elements near 0.

use anyhow::{bail, Context, Result};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// A check: compares (via [`Harness::compare`]) and times (via [`Harness::time`]). `C` is the
/// example's context: the harness, or a struct holding it (and dereferencing to it, for the
/// method calls).
pub type CheckFn<C> = fn(&mut C) -> Result<()>;

/// What the checks share: the device, the timing repetitions and the failures so far.
pub struct Harness {
    pub device: Device,
    pub reps: usize,
    pub failures: Vec<String>,
    /// The check running now (failures are recorded under its name).
    pub current: &'static str,
}

/// The command line of a check example: `[--device cuda|cpu] [--reps N] [--only NAME[,NAME...]]`.
pub struct Args {
    pub device: Device,
    pub reps: usize,
    pub only: Option<Vec<String>>,
}

impl Args {
    /// Parses `args` (without the program name); `program` names the example in the usage line.
    pub fn parse(program: &str, args: impl IntoIterator<Item = String>) -> Result<Args> {
        let mut parsed = Args {
            device: Device::Cuda(0),
            reps: 50,
            only: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--device" => {
                    parsed.device = match value()?.as_str() {
                        "cuda" => Device::Cuda(0),
                        "cpu" => Device::Cpu,
                        d => bail!("--device: cuda or cpu, not {d}"),
                    }
                }
                "--reps" => parsed.reps = value()?.parse().context("--reps")?,
                "--only" => {
                    parsed.only = Some(value()?.split(',').map(str::to_string).collect())
                }
                a => bail!(
                    "unknown argument {a} (usage: {program} [--device cuda|cpu] [--reps N] [--only NAMES])"
                ),
            }
        }
        Ok(parsed)
    }

    /// The name of the GPU (from the driver) and its compute capability, after checking that
    /// libtorch sees CUDA; `None` on the CPU.
    pub fn describe_gpu(&self) -> Result<Option<String>> {
        let Device::Cuda(i) = self.device else {
            return Ok(None);
        };
        if !tch::Cuda::is_available() {
            bail!(
                "libtorch sees no CUDA device (is LD_LIBRARY_PATH pointing at torch's lib/, and \
                 libtorch_cuda linked?)"
            );
        }
        let ctx = crate::nvrtc::context(i)?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| anyhow::anyhow!("compute capability: {e}"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        Ok(Some(format!(
            "cuda:{i}: {name} (sm_{major}{minor}); torch's CUDA devices: {}",
            tch::Cuda::device_count()
        )))
    }
}

impl Harness {
    pub fn new(args: &Args) -> Harness {
        Harness {
            device: args.device,
            reps: args.reps,
            failures: Vec::new(),
            current: "",
        }
    }

    /// Compares `got` with `want` elementwise (in f32); records a failure when some element has
    /// |Δ| > atol_frac·max|want| + rtol·|want|. Prints max |Δ|, max |Δ| relative to max|want|,
    /// and the worst element's own relative error.
    pub fn compare(
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

    /// [`Harness::compare`] of each `got[i]` with `want[i]`, named `names[i]`, within `tols[i]`
    /// (atol_frac, rtol).
    pub fn compare_each(
        &mut self,
        names: &[impl AsRef<str>],
        tols: &[(f64, f64)],
        got: &[Tensor],
        want: &[Tensor],
    ) -> Result<()> {
        if names.len() != got.len() || tols.len() != got.len() || want.len() != got.len() {
            bail!(
                "compare_each: {} names, {} tolerances, {} results, {} references",
                names.len(),
                tols.len(),
                got.len(),
                want.len()
            );
        }
        for ((name, &(atol, rtol)), (g, w)) in names.iter().zip(tols).zip(got.iter().zip(want)) {
            self.compare(name.as_ref(), g, w, atol, rtol)?;
        }
        Ok(())
    }

    /// Records a failure unless two runs gave bitwise the same tensor.
    pub fn bitwise_equal(&mut self, what: &str, a: &Tensor, b: &Tensor) -> Result<()> {
        let same = a.size() == b.size() && bool::try_from(a.eq_tensor(b).all())?;
        println!(
            "  {:<5} {what:<34} {}",
            if same { "ok" } else { "FAIL" },
            if same { "bitwise equal" } else { "differs" }
        );
        self.record(same, what);
        Ok(())
    }

    /// Notes a failed comparison of the current check (the run fails at the end).
    pub fn record(&mut self, ok: bool, what: &str) {
        if !ok {
            self.failures.push(format!("{}: {what}", self.current));
        }
    }

    /// Mean milliseconds of `f` over `reps` runs after 3 warm-ups, by a synchronised wall clock.
    pub fn time(
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
        let ms = start.elapsed().as_secs_f64() * 1e3 / self.reps.max(1) as f64;
        let bw = bytes.map_or(String::new(), |b| {
            format!("  ({:.0} GB/s)", b / (ms * 1e-3) / 1e9)
        });
        println!("  time  {what:<34} {ms:8.3} ms{bw}");
        Ok(ms)
    }

    pub fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// `time` of the fused and the reference version of one phase, and their ratio.
    pub fn time_pair(
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

    /// Times the fused op and the alternatives for one phase; speed-ups against each.
    pub fn time_against(
        &self,
        phase: &str,
        bytes: Option<f64>,
        fused: impl FnMut() -> Result<()>,
        others: Vec<Alternative<'_>>,
    ) -> Result<()> {
        let f = self.time(&format!("fused {phase}"), bytes, fused)?;
        for (label, g) in others {
            let ms = self.time(label, None, g)?;
            println!("  speed fused {phase}: {:.2}× {label}", ms / f);
        }
        Ok(())
    }
}

impl AsMut<Harness> for Harness {
    fn as_mut(&mut self) -> &mut Harness {
        self
    }
}

/// An alternative to time: its full label and one run.
pub type Alternative<'a> = (&'a str, Box<dyn FnMut() -> Result<()> + 'a>);

/// Runs the `checks` (those named in `only`, when given) on `cx`, an error in one not stopping
/// the others, then prints the summary. True when every comparison passed and no check failed.
pub fn run_checks<C: AsMut<Harness>>(
    cx: &mut C,
    checks: &[(&'static str, CheckFn<C>)],
    only: Option<&[String]>,
) -> bool {
    let mut errors = Vec::new();
    for (name, check) in checks {
        if only.is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        println!("== {name}");
        cx.as_mut().current = name;
        if let Err(e) = check(cx) {
            println!("  ERROR {e:#}");
            errors.push(format!("{name}: {e:#}"));
        }
    }
    let cx = cx.as_mut();
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
    ok
}

/// Prints (does not judge) how far another formulation is from the reference: for context.
pub fn info_error(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
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
pub fn info_each(what: &str, names: &[&str], got: &[Tensor], want: &[Tensor]) -> Result<()> {
    for (name, (g, w)) in names.iter().zip(got.iter().zip(want)) {
        info_error(&format!("{what}: {name}"), g, w)?;
    }
    Ok(())
}

/// A leaf that requires grad.
pub fn leaf(t: Tensor) -> Tensor {
    t.set_requires_grad(true)
}

/// The gradient of `input` for `out` seeded with `dout` ([`crate::grad`] of one tensor).
pub fn grad1(out: &Tensor, dout: &Tensor, input: &Tensor) -> Result<Tensor> {
    Ok(crate::grad(&[out], &[dout], &[input])?.remove(0))
}

/// Upstream's RoPE tables in f32 (REFERENCE.md §3.2): `[T, hd/2]` cos and sin of t·base^(−2i/hd).
pub fn rope_tables(t: i64, hd: i64, device: Device) -> (Tensor, Tensor) {
    let opts = (Kind::Float, device);
    let inv_freq = Tensor::scalar_tensor(10_000.0, opts)
        .pow(&(Tensor::arange_start_step(0, hd, 2, opts) / hd as f64))
        .reciprocal();
    let freqs = Tensor::arange(t, opts).outer(&inv_freq);
    (freqs.cos(), freqs.sin())
}

/// A trained-looking residual mix `[2, d]` f32: m0 near 1, m1 small (init is exactly (1, 0)).
pub fn trained_mix(d: i64, device: Device) -> Tensor {
    let opts = (Kind::Float, device);
    Tensor::stack(
        &[
            Tensor::randn([d], opts) * 0.2 + 1.0,
            Tensor::randn([d], opts) * 0.2,
        ],
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harness() -> Harness {
        Harness::new(&Args::parse("test", Vec::new()).unwrap())
    }

    /// A comparison fails exactly when some element leaves atol_frac·max|ref| + rtol·|ref|, or a
    /// value is not finite; each failure is recorded under the current check.
    #[test]
    fn compare_judges_by_the_elementwise_bound() {
        let mut h = harness();
        h.current = "demo";
        let want = Tensor::from_slice(&[1.0f32, -2.0, 0.0, 4.0]);
        let near = Tensor::from_slice(&[1.01f32, -2.0, 0.03, 4.0]);
        // |Δ| 0.01 ≤ 0.01·1 + 0.01·4 and 0.03 ≤ 0.01·4 (atol 0.04): passes.
        assert!(h.compare("near", &near, &want, 0.01, 0.01).unwrap());
        // Without the absolute part, 0.03 at a reference of 0 is out of tolerance.
        assert!(!h.compare("no atol", &near, &want, 0.0, 0.01).unwrap());
        let nan = Tensor::from_slice(&[f32::NAN, -2.0, 0.0, 4.0]);
        assert!(!h.compare("nan", &nan, &want, 1.0, 1.0).unwrap());
        assert_eq!(h.failures, ["demo: no atol", "demo: nan"]);
        assert!(h
            .compare("shape", &want.view([2, 2]), &want, 1.0, 1.0)
            .is_err());
        h.bitwise_equal("same", &want, &want.copy()).unwrap();
        h.bitwise_equal("differs", &want, &near).unwrap();
        assert_eq!(h.failures.len(), 3);
    }

    #[test]
    fn args_parse_the_shared_command_line() {
        let args = |a: &[&str]| Args::parse("t", a.iter().map(|s| s.to_string()));
        let a = args(&["--device", "cpu", "--reps", "3", "--only", "a,b"]).unwrap();
        assert_eq!(
            (a.device, a.reps, a.only),
            (Device::Cpu, 3, Some(vec!["a".to_string(), "b".to_string()]))
        );
        assert!(args(&["--device", "tpu"]).is_err());
        assert!(args(&["--reps"]).is_err());
        assert!(format!("{:#}", args(&["--fast"]).err().unwrap()).contains("usage: t"));
    }
}

//! Sample statistics and the one-sided Welch t-test behind the significance claim.
//!
//! The record rule (REFERENCE.md §7) asks for an improvement of at least δ = 0.005 nats at
//! p < 0.01. We test H0: μ_baseline − μ_ours ≤ δ against H1: μ_baseline − μ_ours > δ with
//! Welch's unequal-variance t statistic and Welch–Satterthwaite degrees of freedom; the p-value is
//! the upper tail of Student's t.

use anyhow::{bail, Result};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A sample reduced to what a t-test needs (a baseline is often published only in this form).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); 0 for a single run.
    pub std: f64,
    pub n: usize,
}

impl Sample {
    /// Mean and sample standard deviation of `xs` (std is 0 when there is a single value).
    pub fn of(xs: &[f64]) -> Result<Sample> {
        if xs.is_empty() {
            bail!("no values to summarise");
        }
        if let Some(bad) = xs.iter().find(|x| !x.is_finite()) {
            bail!("non-finite value {bad} in a sample");
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Ok(Sample { mean, std, n })
    }

    /// Squared standard error of the mean, s²/n.
    fn var_of_mean(&self) -> f64 {
        self.std * self.std / self.n as f64
    }
}

/// The outcome of a one-sided Welch test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Welch {
    /// Observed improvement, μ_baseline − μ_ours (positive = ours is lower, i.e. better).
    pub improvement: f64,
    pub t: f64,
    pub df: f64,
    /// P(T ≥ t) under H0 (improvement = δ exactly, the least favourable point of H0).
    pub p: f64,
}

/// One-sided Welch test that `ours` is lower than `baseline` by more than `delta`.
///
/// A sample with zero spread contributes nothing to the standard error or the degrees of freedom:
/// a baseline given as a single published number (n = 1, std = 0) turns this into a one-sample t
/// test of our runs against that number, which is the honest reading of such a baseline.
pub fn welch_improvement(baseline: Sample, ours: Sample, delta: f64) -> Result<Welch> {
    for (what, s) in [("baseline", baseline), ("our runs", ours)] {
        if s.n == 0 {
            bail!("{what}: no runs");
        }
        if !s.mean.is_finite() || !s.std.is_finite() || s.std < 0.0 {
            bail!(
                "{what}: mean {} and std {} must be finite, std ≥ 0",
                s.mean,
                s.std
            );
        }
        if s.n == 1 && s.std > 0.0 {
            bail!(
                "{what}: a std of {} from a single run is not a sample standard deviation",
                s.std
            );
        }
    }
    if ours.n < 2 {
        bail!("our runs: a t-test needs at least 2 runs (seeds), got 1");
    }
    let (vb, vo) = (baseline.var_of_mean(), ours.var_of_mean());
    let se2 = vb + vo;
    if se2 <= 0.0 {
        bail!("both samples have zero spread: the t statistic is undefined");
    }
    let improvement = baseline.mean - ours.mean;
    let t = (improvement - delta) / se2.sqrt();
    // Welch–Satterthwaite: (Σ vᵢ)² / Σ vᵢ²/(nᵢ − 1), over the samples that have spread.
    let denom: f64 = [(vb, baseline.n), (vo, ours.n)]
        .iter()
        .filter(|(v, _)| *v > 0.0)
        .map(|(v, n)| v * v / (*n as f64 - 1.0))
        .sum();
    let df = se2 * se2 / denom;
    let dist = StudentsT::new(0.0, 1.0, df)
        .map_err(|e| anyhow::anyhow!("Student t with {df} degrees of freedom: {e}"))?;
    // The upper tail as 1 − CDF loses precision far out; the CDF at −t is the same tail exactly.
    let p = dist.cdf(-t);
    Ok(Welch {
        improvement,
        t,
        df,
        p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn sample_mean_and_std_by_hand() {
        // 1, 2, 3, 4: mean 2.5, Σ(x−x̄)² = 2.25+0.25+0.25+2.25 = 5, s² = 5/3.
        let s = Sample::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.n, 4);
        assert!(close(s.mean, 2.5, 1e-15));
        assert!(close(s.std, (5.0f64 / 3.0).sqrt(), 1e-15));
        assert_eq!(Sample::of(&[7.0]).unwrap().std, 0.0);
        assert!(Sample::of(&[]).is_err());
        assert!(Sample::of(&[1.0, f64::NAN]).is_err());
    }

    // Reference values computed with mpmath (50 digits) from the definitions, not from this code:
    //   se2 = sb²/nb + so²/no;  t = (mb − mo − δ)/√se2
    //   df  = se2² / ((sb²/nb)²/(nb−1) + (so²/no)²/(no−1))
    //   p   = 1 − F_t(t; df) = ½·I_{df/(df+t²)}(df/2, ½) for t > 0   (regularised incomplete beta)
    // e.g. `mp.betainc(df/2, 0.5, 0, df/(df+t*t), regularized=True)/2`.

    #[test]
    fn welch_matches_hand_computed_reference_for_a_record_sized_gap() {
        // Baseline: 3 seeds around 2.0727 nats (std 0.0012); ours: 3 seeds 2.0600, 2.0615, 2.0590.
        // ours: mean 2.060166…, std 0.0012583…;  improvement 0.0125333…
        // se2 = 0.0012²/3 + 0.0012583²/3 = 1.00778e-6;  t = (0.0125333 − 0.005)/0.0010039 = 7.504207
        // df = 3.991030;  p = 8.511937e-4 (mpmath, by quadrature of the t density and by betainc).
        let base = Sample {
            mean: 2.0727,
            std: 0.0012,
            n: 3,
        };
        let ours = Sample::of(&[2.0600, 2.0615, 2.0590]).unwrap();
        let w = welch_improvement(base, ours, 0.005).unwrap();
        assert!(close(w.improvement, 0.012533333333333, 1e-9), "{w:?}");
        assert!(close(w.t, 7.50420683193139, 1e-9), "{w:?}");
        assert!(close(w.df, 3.99102969321939, 1e-9), "{w:?}");
        assert!(close(w.p, 8.51193670974279e-4, 1e-6), "{w:?}");
    }

    #[test]
    fn welch_matches_reference_for_a_gap_below_the_bar() {
        // Unequal n and spread: baseline 1.2244 ± 0.0020 (n 5), ours 1.2210 ± 0.0030 (n 3), δ = 0.005:
        // the observed gap 0.0034 is below δ, so t < 0 and p > ½.
        // se2 = 0.002²/5 + 0.003²/3 = 3.8e-6;  t = (0.0034 − 0.005)/0.0019494 = −0.8207827
        // df = (3.8e-6)² / ((8e-7)²/4 + (3e-6)²/2) = 1.444e-11/4.66e-12 = 3.098712;  p = 0.7649183 (mpmath).
        let base = Sample {
            mean: 1.2244,
            std: 0.0020,
            n: 5,
        };
        let ours = Sample {
            mean: 1.2210,
            std: 0.0030,
            n: 3,
        };
        let w = welch_improvement(base, ours, 0.005).unwrap();
        assert!(close(w.t, -0.820782681668123, 1e-9), "{w:?}");
        assert!(close(w.df, 3.09871244635193, 1e-9), "{w:?}");
        assert!(close(w.p, 0.76491830309772, 1e-6), "{w:?}");
    }

    #[test]
    fn a_single_published_baseline_number_is_a_one_sample_test() {
        // Baseline n = 1, std = 0: df = n_ours − 1 = 2 exactly and t = (b − x̄ − δ)/(s/√n).
        // ours 1.00, 1.01, 1.02: x̄ = 1.01, s = 0.01; b = 1.03, δ = 0.005:
        // t = 0.015/(0.01/√3) = 2.598076;  t(2) upper tail = ½(1 − t/√(t²+2)) = 0.0608418 (closed form).
        let w = welch_improvement(
            Sample {
                mean: 1.03,
                std: 0.0,
                n: 1,
            },
            Sample::of(&[1.00, 1.01, 1.02]).unwrap(),
            0.005,
        )
        .unwrap();
        assert!(close(w.df, 2.0, 1e-12), "{w:?}");
        let t = 0.015 / (0.01 / 3f64.sqrt());
        assert!(close(w.t, t, 1e-9), "{w:?}");
        assert!(
            close(w.p, 0.5 * (1.0 - t / (t * t + 2.0).sqrt()), 1e-9),
            "{w:?}"
        );
    }

    #[test]
    fn undefined_tests_are_errors() {
        let one = Sample {
            mean: 1.0,
            std: 0.0,
            n: 1,
        };
        assert!(welch_improvement(one, one, 0.0)
            .unwrap_err()
            .to_string()
            .contains("at least 2 runs"));
        let flat = Sample {
            mean: 1.0,
            std: 0.0,
            n: 3,
        };
        assert!(welch_improvement(flat, flat, 0.0)
            .unwrap_err()
            .to_string()
            .contains("zero spread"));
        let bad = Sample {
            mean: 1.0,
            std: 0.1,
            n: 1,
        };
        assert!(welch_improvement(bad, flat, 0.0).is_err());
    }
}

//! The significance claim: is the improvement over the baseline at least δ nats (0.005) at
//! p < α (0.01)? The rule's bar is on val_loss in nats per token (REFERENCE.md §7), so the test runs
//! in nats; a baseline given in BPB is converted with our own runs' nats-per-BPB factor
//! `val_loss / val_bpb = ln 2 · bytes / tokens` (exact for the same tokenizer and validation set).

use anyhow::{bail, Result};

use crate::params::{Params, Unit};
use crate::runs::{Role, Run, Runs};
use crate::stats::{welch_improvement, Sample, Welch};

/// The baseline as given, with where it came from.
#[derive(Debug, Clone)]
pub struct Baseline<'a> {
    pub label: String,
    pub sample: Sample,
    pub unit: Unit,
    /// When the baseline is another report: that run.
    pub run: Option<&'a Run>,
}

/// The baseline from params, or from a report given as an input; not both.
pub fn baseline<'a>(params: &Params, runs: &'a Runs) -> Result<Option<Baseline<'a>>> {
    let reports: Vec<&Run> = runs.with_role(&Role::Report).collect();
    match (&params.baseline, reports.as_slice()) {
        (Some(_), [_, ..]) => bail!("two baselines: params baseline and a report input; give one"),
        (None, [_, _, ..]) => bail!("{} report inputs: give one baseline report", reports.len()),
        (Some(b), []) => Ok(Some(Baseline {
            label: b
                .label
                .clone()
                .unwrap_or_else(|| "the baseline given in params".into()),
            sample: Sample {
                mean: b.mean,
                std: b.std,
                n: b.n,
            },
            unit: b.unit,
            run: None,
        })),
        (None, [report]) => {
            let n = report.require_f64("n_runs")?;
            let sample = Sample {
                mean: report.require_f64("val_loss")?,
                std: report.headline_f64("val_loss_std").unwrap_or(0.0),
                n: n as usize,
            };
            Ok(Some(Baseline {
                label: format!("report {}", report.short_key()),
                sample,
                unit: Unit::Nats,
                run: Some(report),
            }))
        }
        (None, []) => Ok(None),
    }
}

/// The outcome for one group of runs (the seeds of one configuration).
#[derive(Debug, Clone)]
pub struct Claim {
    /// Our runs' val_loss, nats per token.
    pub ours: Sample,
    /// Nats per BPB of our runs (ln 2 · bytes per token).
    pub nats_per_bpb: f64,
    /// The baseline in nats (converted when it was given in BPB).
    pub baseline_nats: Sample,
    /// The test, or why it could not be run.
    pub test: Result<Welch, String>,
    pub delta: f64,
    pub alpha: f64,
}

impl Claim {
    /// `Some(true)` only when the test ran and p < α.
    pub fn significant(&self) -> Option<bool> {
        self.test.as_ref().ok().map(|w| w.p < self.alpha)
    }

    /// The plain sentence the issue asks for.
    pub fn verdict(&self) -> String {
        let bar = format!("significant at p<{} for ≥ {} nats", self.alpha, self.delta);
        match self.significant() {
            Some(true) => format!("{bar}: yes"),
            Some(false) => format!("{bar}: no"),
            None => format!(
                "{bar}: not assessed ({})",
                self.test.as_ref().err().map(String::as_str).unwrap_or("")
            ),
        }
    }
}

/// Tests our runs (`val_loss`, `val_bpb` per seed) against the baseline.
pub fn assess(
    baseline: &Baseline,
    val_loss: &[f64],
    val_bpb: &[f64],
    delta: f64,
    alpha: f64,
) -> Result<Claim> {
    let ours = Sample::of(val_loss)?;
    let factors: Vec<f64> = val_loss.iter().zip(val_bpb).map(|(l, b)| l / b).collect();
    let nats_per_bpb = Sample::of(&factors)?.mean;
    let baseline_nats = match baseline.unit {
        Unit::Nats => baseline.sample,
        Unit::Bpb => Sample {
            mean: baseline.sample.mean * nats_per_bpb,
            std: baseline.sample.std * nats_per_bpb,
            n: baseline.sample.n,
        },
    };
    let test = welch_improvement(baseline_nats, ours, delta).map_err(|e| e.to_string());
    Ok(Claim {
        ours,
        nats_per_bpb,
        baseline_nats,
        test,
        delta,
        alpha,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(mean: f64, std: f64, n: usize, unit: Unit) -> Baseline<'static> {
        Baseline {
            label: "b".into(),
            sample: Sample { mean, std, n },
            unit,
            run: None,
        }
    }

    #[test]
    fn a_bpb_baseline_is_converted_with_our_bytes_per_token() {
        // Our runs: val_loss/val_bpb = 2.0 exactly (ln2·bytes/token = 2), so a BPB baseline of
        // 1.04 ± 0.0005 is 2.08 ± 0.001 nats; our mean 2.06 is 0.02 nats better.
        let claim = assess(
            &base(1.04, 0.0005, 3, Unit::Bpb),
            &[2.059, 2.06, 2.061],
            &[1.0295, 1.03, 1.0305],
            0.005,
            0.01,
        )
        .unwrap();
        assert!((claim.nats_per_bpb - 2.0).abs() < 1e-12);
        assert!(
            (claim.baseline_nats.mean - 2.08).abs() < 1e-12
                && (claim.baseline_nats.std - 0.001).abs() < 1e-12
        );
        let w = claim.test.as_ref().unwrap();
        assert!((w.improvement - 0.02).abs() < 1e-12);
        assert_eq!(claim.significant(), Some(true));
        assert!(claim.verdict().ends_with(": yes"), "{}", claim.verdict());
    }

    #[test]
    fn small_or_single_runs_say_so_plainly() {
        let claim = assess(
            &base(2.08, 0.001, 3, Unit::Nats),
            &[2.078, 2.079, 2.077],
            &[1.0, 1.0, 1.0],
            0.005,
            0.01,
        )
        .unwrap();
        assert_eq!(claim.significant(), Some(false));
        assert!(claim.verdict().ends_with(": no"));
        let one = assess(
            &base(2.08, 0.001, 3, Unit::Nats),
            &[2.0],
            &[1.0],
            0.005,
            0.01,
        )
        .unwrap();
        assert_eq!(one.significant(), None);
        assert!(
            one.verdict().contains("not assessed") && one.verdict().contains("at least 2 runs"),
            "{}",
            one.verdict()
        );
    }
}

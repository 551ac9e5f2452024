//! Integrity guards that fail an evaluation (or flag it) with a clear message:
//!
//! - [`Normalization`]: at sampled positions the evaluated distribution, summed in f64 over the
//!   whole vocabulary, is 1 within 1e-4, and the scored NLL is that distribution's (C2).
//! - [`entropy_guard`]: on a synthetic corpus with a known source, the model may not report fewer
//!   bits than the source's information content (a leak or a non-normalized score does).
//! - [`bytes_check`]: the raw UTF-8 byte denominator and the lookup-table count agree within 0.1%
//!   (flagged, not fatal: the raw count is the scored one).
//!
//! Exactly-once coverage and score-before-update live in the ledger (`ledger.rs`).

use anyhow::{bail, Result};
use serde::Serialize;
use std::f64::consts::LN_2;

use crate::bpb::relative_difference;
use crate::ledger::LedgerReport;
use crate::valset::ValSet;

/// Largest allowed |Σp − 1| at a probe.
pub const NORMALIZATION_TOLERANCE: f64 = 1e-4;
/// Kraft slack: a model beats the true source by k bits with probability ≤ 2^−k.
pub const ENTROPY_SLACK_BITS: f64 = 30.0;
/// Raw and LUT byte counts further apart than this (relative) are flagged.
pub const BYTES_FLAG_THRESHOLD: f64 = 0.001;

/// Running record of the normalization probes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Normalization {
    pub probes: u64,
    pub max_error: f64,
}

impl Normalization {
    /// Checks one full distribution `p` (over the whole vocabulary) at target `t` whose scored NLL
    /// was `nll` for token `target`.
    pub fn check(&mut self, what: &str, t: usize, p: &[f64], target: u16, nll: f64) -> Result<()> {
        let sum: f64 = p.iter().sum();
        let err = (sum - 1.0).abs();
        if !err.is_finite()
            || err > NORMALIZATION_TOLERANCE
            || p.iter()
                .any(|&q| !(0.0..=1.0 + NORMALIZATION_TOLERANCE).contains(&q))
        {
            bail!("{what} at target {t}: the distribution over all {} tokens sums to {sum} (|Σp−1| must be ≤ {NORMALIZATION_TOLERANCE}): not normalized", p.len());
        }
        let from_row = -p[target as usize].ln();
        if (from_row - nll).abs() > 1e-3 * (1.0 + nll.abs()) {
            bail!("{what} at target {t}: scored NLL {nll} but the distribution gives −ln p = {from_row}: the score is not this distribution's");
        }
        self.probes += 1;
        self.max_error = self.max_error.max(err);
        Ok(())
    }

    pub fn summary(&self) -> String {
        if self.probes == 0 {
            return "n/a (no probes)".into();
        }
        format!(
            "pass: {} sampled positions, max |Σp−1| = {:.1e}",
            self.probes, self.max_error
        )
    }
}

/// Outcome of the synthetic-source check.
#[derive(Clone, Debug, Serialize)]
pub struct EntropyCheck {
    pub docs: usize,
    pub model_bits: f64,
    pub source_bits: f64,
}

/// Over fully scored documents with a known source information content (all but the stream's last
/// document, whose end-of-document event is never scored), fails unless
/// `model bits ≥ Σ source_bits − 30`. `None` when the corpus has no source (real text).
pub fn entropy_guard(val: &ValSet, report: &LedgerReport) -> Result<Option<EntropyCheck>> {
    let mut check = EntropyCheck {
        docs: 0,
        model_bits: 0.0,
        source_bits: 0.0,
    };
    for (doc, sums) in val.docs.iter().zip(&report.docs) {
        let Some(bits) = doc.source_bits else {
            continue;
        };
        let targets = doc.targets();
        let complete = doc.end < val.tokens.len()
            && report.expected.start <= targets.start
            && targets.end <= report.expected.end;
        if !complete || sums.targets != targets.len() as u64 {
            continue;
        }
        check.docs += 1;
        check.model_bits += sums.nll / LN_2;
        check.source_bits += bits;
    }
    if check.docs == 0 {
        return Ok(None);
    }
    if check.model_bits < check.source_bits - ENTROPY_SLACK_BITS {
        bail!(
            "reported fewer bits than the source entropy: leak or non-normalized scoring ({:.1} model bits < {:.1} source bits over {} documents)",
            check.model_bits,
            check.source_bits,
            check.docs
        );
    }
    Ok(Some(check))
}

/// Raw vs lookup-table byte counts.
#[derive(Clone, Debug, Serialize)]
pub struct BytesCheck {
    pub raw_bytes: u64,
    pub lut_bytes: u64,
    pub disagreement: f64,
    pub flagged: bool,
}

pub fn bytes_check(raw_bytes: u64, lut_bytes: u64) -> BytesCheck {
    let disagreement = relative_difference(lut_bytes, raw_bytes);
    BytesCheck {
        raw_bytes,
        lut_bytes,
        disagreement,
        flagged: disagreement > BYTES_FLAG_THRESHOLD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_accepts_a_distribution_and_names_a_bad_one() {
        let mut n = Normalization::default();
        let p = vec![0.25; 4];
        n.check("model", 7, &p, 2, 4f64.ln()).unwrap();
        assert_eq!(n.probes, 1);
        let err = n
            .check("cache", 9, &[0.5, 0.5, 0.5, 0.5], 1, 2f64.ln())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache at target 9") && err.contains("sums to 2"),
            "{err}"
        );
        let err = n.check("model", 3, &p, 1, 0.1).unwrap_err().to_string();
        assert!(err.contains("not this distribution's"), "{err}");
        assert!(n.check("model", 3, &[f64::NAN, 1.0], 1, 0.0).is_err());
        assert!(n.summary().starts_with("pass: 1 sampled"));
    }

    #[test]
    fn bytes_disagreement_above_a_tenth_of_a_percent_is_flagged() {
        assert!(!bytes_check(100_000, 100_100).flagged);
        assert!(bytes_check(100_000, 100_101).flagged);
        assert!(bytes_check(100_000, 99_899).flagged);
    }
}

//! The ledger: where every score goes, and the only source of the tokens adaptive state may learn
//! from.
//!
//! - Each target may be recorded once (a second score is an error, C4); `finish` fails unless the
//!   count equals the expected number, so "every target scored exactly once" is checked, not hoped.
//! - A recorded NLL must be finite and non-negative (`p ≤ 1`); anything else means the scored
//!   distribution is not a distribution.
//! - Adaptive evaluation (TTT, LoRA, n-gram caches) receives tokens only as a [`ScoredSpan`], which
//!   only [`Ledger::span`] creates and only for targets already recorded. An update that would see
//!   a token before its score is final (C3) therefore cannot be written: there is no way to obtain
//!   the tokens to train on without first having recorded their scores.

use anyhow::{bail, Result};
use std::ops::Range;

use crate::bpb::BpbSums;
use crate::valset::ValSet;

/// Rounding slack for `−ln p` of a probability computed in f32 (p may round to 1 + ε).
const NEGATIVE_NLL_SLACK: f64 = 1e-5;

pub struct Ledger<'v> {
    val: &'v ValSet,
    expected: Range<usize>,
    scored: Vec<u64>,
    count: u64,
    total: BpbSums,
    docs: Vec<BpbSums>,
    per_target: Option<Vec<f64>>,
    spans: u64,
}

/// Tokens whose targets all have final scores: the only view of the val stream that adaptation
/// gets. It exposes the stream up to and including its last target and nothing after it.
#[derive(Clone, Debug)]
pub struct ScoredSpan<'v> {
    prefix: &'v [u16],
    targets: Range<usize>,
}

impl<'v> ScoredSpan<'v> {
    /// The scored targets (stream positions).
    pub fn targets(&self) -> Range<usize> {
        self.targets.clone()
    }

    /// The targets' tokens with the one input token before them: `x[start−1 .. end]`, i.e. a
    /// training sequence whose inputs are `[..len−1]` and targets `[1..]`.
    pub fn tokens(&self) -> &'v [u16] {
        &self.prefix[self.targets.start - 1..]
    }

    /// The whole stream up to the last scored target (all of it is prefix: C1 allows it as context).
    pub fn prefix(&self) -> &'v [u16] {
        self.prefix
    }
}

/// What a finished ledger proves and sums.
#[derive(Clone, Debug)]
pub struct LedgerReport {
    pub expected: Range<usize>,
    pub total: BpbSums,
    /// Sums per document (index as in `ValSet::docs`).
    pub docs: Vec<BpbSums>,
    /// Per-target NLL when recording was asked for (tests, causality probes).
    pub per_target: Option<Vec<f64>>,
    /// Scored spans handed to adaptive state.
    pub spans: u64,
}

impl<'v> Ledger<'v> {
    /// A ledger expecting every target in `expected` (a sub-range of `1 ..= N−1`) to be scored.
    pub fn new(val: &'v ValSet, expected: Range<usize>) -> Result<Ledger<'v>> {
        if expected.start < 1 || expected.end > val.tokens.len() || expected.is_empty() {
            bail!(
                "expected targets {expected:?} are not a non-empty part of 1..{}",
                val.tokens.len()
            );
        }
        Ok(Ledger {
            val,
            expected,
            scored: vec![0; val.tokens.len().div_ceil(64)],
            count: 0,
            total: BpbSums::default(),
            docs: vec![BpbSums::default(); val.docs.len()],
            per_target: None,
            spans: 0,
        })
    }

    /// Also keep each target's NLL (8 bytes per target; for tests and diagnostics).
    pub fn keep_per_target(mut self) -> Self {
        self.per_target = Some(vec![f64::NAN; self.val.tokens.len()]);
        self
    }

    pub fn val(&self) -> &'v ValSet {
        self.val
    }

    /// Records the scores of the consecutive targets `first, first+1, …`.
    pub fn record(&mut self, first: usize, nll: &[f64]) -> Result<()> {
        if nll.is_empty() {
            return Ok(());
        }
        let last = first + nll.len();
        if first < self.expected.start || last > self.expected.end {
            bail!(
                "targets {first}..{last} fall outside the expected range {:?}",
                self.expected
            );
        }
        let mut doc = self.val.doc_of_target(first);
        for (i, &v) in nll.iter().enumerate() {
            let t = first + i;
            if !v.is_finite() || v < -NEGATIVE_NLL_SLACK {
                bail!("target {t}: NLL {v} is not a score of a normalized distribution (must be finite and ≥ 0)");
            }
            let (word, bit) = (t / 64, 1u64 << (t % 64));
            if self.scored[word] & bit != 0 {
                bail!("target {t} scored twice (every target must be scored exactly once)");
            }
            self.scored[word] |= bit;
            while self.val.docs[doc].end <= t {
                doc += 1;
            }
            let bytes = self.val.target_lut_bytes(t);
            self.total.add(v, bytes);
            self.docs[doc].add(v, bytes);
            if let Some(p) = self.per_target.as_mut() {
                p[t] = v;
            }
        }
        self.count += nll.len() as u64;
        Ok(())
    }

    /// Whether every target in `targets` is recorded.
    pub fn all_scored(&self, targets: Range<usize>) -> bool {
        first_unscored(&self.scored, targets).is_none()
    }

    /// The tokens of `targets` for adaptation, granted only if every one of them is scored.
    pub fn span(&mut self, targets: Range<usize>) -> Result<ScoredSpan<'v>> {
        if targets.is_empty() || targets.start < 1 || targets.end > self.val.tokens.len() {
            bail!("span {targets:?} is not a non-empty range of targets");
        }
        if let Some(t) = first_unscored(&self.scored, targets.clone()) {
            bail!("adaptive state would see token {t} before its score is final (score-before-update violated)");
        }
        self.spans += 1;
        Ok(ScoredSpan {
            prefix: &self.val.tokens[..targets.end],
            targets,
        })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn total(&self) -> &BpbSums {
        &self.total
    }

    /// Checks that every expected target was scored (once: doubles were refused when recorded).
    pub fn finish(self) -> Result<LedgerReport> {
        let expected = self.expected.len() as u64;
        if self.count != expected {
            let missing = first_unscored(&self.scored, self.expected.clone())
                .map(|t| format!(" (first unscored: target {t})"))
                .unwrap_or_default();
            bail!("scored {} of {expected} expected targets{missing}: every target must be scored exactly once", self.count);
        }
        Ok(LedgerReport {
            expected: self.expected,
            total: self.total,
            docs: self.docs,
            per_target: self.per_target,
            spans: self.spans,
        })
    }
}

fn first_unscored(bits: &[u64], range: Range<usize>) -> Option<usize> {
    let mut t = range.start;
    while t < range.end {
        let (word, off) = (t / 64, t % 64);
        // Bits of this word that are in range and unset.
        let upto = (range.end - word * 64).min(64);
        let mask = if upto == 64 {
            !0u64
        } else {
            (1u64 << upto) - 1
        } & !((1u64 << off) - 1);
        let missing = !bits[word] & mask;
        if missing != 0 {
            return Some(word * 64 + missing.trailing_zeros() as usize);
        }
        t = (word + 1) * 64;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::valset::tests::tiny;

    #[test]
    fn counts_every_target_once_and_sums_per_document() {
        let v = tiny();
        let mut l = Ledger::new(&v, 1..9).unwrap().keep_per_target();
        l.record(1, &[0.5, 1.0, 2.0, 0.25]).unwrap();
        l.record(5, &[1.0, 1.0, 1.0, 3.0]).unwrap();
        let r = l.finish().unwrap();
        assert_eq!(r.total.targets, 8);
        assert_eq!(r.total.nll, 9.75);
        assert_eq!(r.total.lut_bytes, 6);
        assert_eq!(
            r.docs[0],
            BpbSums {
                nll: 3.5,
                targets: 3,
                lut_bytes: 2
            }
        );
        assert_eq!(
            r.docs[1],
            BpbSums {
                nll: 3.25,
                targets: 4,
                lut_bytes: 3
            }
        );
        assert_eq!(
            r.docs[2],
            BpbSums {
                nll: 3.0,
                targets: 1,
                lut_bytes: 1
            }
        );
        assert_eq!(r.per_target.unwrap()[4], 0.25);
    }

    #[test]
    fn refuses_double_missing_out_of_range_and_impossible_scores() {
        let v = tiny();
        let mut l = Ledger::new(&v, 1..9).unwrap();
        l.record(1, &[0.5, 0.5]).unwrap();
        assert!(l
            .record(2, &[0.5])
            .unwrap_err()
            .to_string()
            .contains("target 2 scored twice"));
        assert!(l
            .record(8, &[0.5, 0.5])
            .unwrap_err()
            .to_string()
            .contains("outside the expected range"));
        assert!(l
            .record(3, &[-0.1])
            .unwrap_err()
            .to_string()
            .contains("not a score of a normalized distribution"));
        assert!(l.record(3, &[f64::NAN]).is_err());
        let err = l.finish().unwrap_err().to_string();
        assert!(
            err.contains("scored 2 of 8") && err.contains("first unscored: target 3"),
            "{err}"
        );
    }

    #[test]
    fn spans_are_granted_only_for_scored_targets() {
        let v = tiny();
        let mut l = Ledger::new(&v, 1..9).unwrap();
        l.record(1, &[1.0; 4]).unwrap();
        let span = l.span(2..5).unwrap();
        assert_eq!(span.tokens(), &v.tokens[1..5]);
        assert_eq!(span.prefix(), &v.tokens[..5]);
        let err = l.span(4..6).unwrap_err().to_string();
        assert!(
            err.contains("would see token 5 before its score is final"),
            "{err}"
        );
        assert!(l.span(3..3).is_err());
    }

    #[test]
    fn first_unscored_scans_across_words() {
        let mut bits = vec![0u64; 4];
        for t in 0..200 {
            bits[t / 64] |= 1 << (t % 64);
        }
        assert_eq!(first_unscored(&bits, 0..200), None);
        assert_eq!(first_unscored(&bits, 5..256), Some(200));
        bits[1] &= !(1 << 7);
        assert_eq!(first_unscored(&bits, 64..200), Some(71));
        assert_eq!(first_unscored(&bits, 72..128), None);
        assert_eq!(first_unscored(&bits, 63..65), None);
    }
}

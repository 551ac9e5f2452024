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
//! - On several ranks each ledger records only its own share; before adapting on a range, the
//!   ranks sum their [`Ledger::scored_mask`]s and each accepts the others' scores with
//!   [`Ledger::accept_peer_scores`], which proves that every target of the range was scored by
//!   exactly one rank. The peers' NLLs stay in their ledgers (the stage sums the reports).

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
    /// Targets another rank scored (accepted through [`Ledger::accept_peer_scores`]).
    peer_count: u64,
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
            peer_count: 0,
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

    /// The targets this ledger expects to be scored.
    pub fn expected(&self) -> Range<usize> {
        self.expected.clone()
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

    /// One value per target of `targets`: 1 where this ledger recorded it, else 0. Summed over the
    /// ranks of a pass it must be exactly 1 everywhere ([`Ledger::accept_peer_scores`]).
    pub fn scored_mask(&self, targets: Range<usize>) -> Vec<f64> {
        targets.map(|t| f64::from(self.is_scored(t))).collect()
    }

    /// Takes the targets of `targets` that this ledger did not record as scored by another rank,
    /// given `counts`, the sum over all ranks of their [`Ledger::scored_mask`] for `targets`. Fails
    /// naming the first target that no rank, or more than one, scored. A target it already holds
    /// (this rank's, or accepted before) is not accepted twice.
    pub fn accept_peer_scores(&mut self, targets: Range<usize>, counts: &[f64]) -> Result<()> {
        if counts.len() != targets.len() || targets.start < 1 || targets.end > self.val.tokens.len()
        {
            bail!("peer counts for {targets:?}: {} values", counts.len());
        }
        if let Some((t, c)) = targets.clone().zip(counts).find(|(_, &c)| c != 1.0) {
            bail!("target {t} was scored by {c} ranks (every target must be scored exactly once)");
        }
        for t in targets {
            if !self.is_scored(t) {
                self.scored[t / 64] |= 1u64 << (t % 64);
                self.peer_count += 1;
            }
        }
        Ok(())
    }

    fn is_scored(&self, t: usize) -> bool {
        self.scored[t / 64] & (1u64 << (t % 64)) != 0
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

    /// The targets before this ledger's range, for a rank whose range is a contiguous share of a
    /// pass that earlier ranks score: state that scores from left to right (an n-gram model) may
    /// learn them before this share, since every score still depends only on tokens before its
    /// target and the earlier ranks' states never see this share. Their exactly-once scoring is
    /// the ranks' merged report's to prove ([`crate::peers::merge_reports`]). `None` when the
    /// range starts at the first target. (Not counted in `spans`: those targets are granted one
    /// by one where they are scored, so the ranks' spans add up to one rank's.)
    pub fn earlier_shares(&self) -> Option<ScoredSpan<'v>> {
        (self.expected.start > 1).then(|| ScoredSpan {
            prefix: &self.val.tokens[..self.expected.start],
            targets: 1..self.expected.start,
        })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn total(&self) -> &BpbSums {
        &self.total
    }

    /// Checks that every expected target was scored (once: doubles were refused when recorded),
    /// here or, accepted, by a peer rank; the report's sums are this ledger's own scores.
    pub fn finish(self) -> Result<LedgerReport> {
        let expected = self.expected.len() as u64;
        if self.count + self.peer_count != expected {
            let missing = first_unscored(&self.scored, self.expected.clone())
                .map(|t| format!(" (first unscored: target {t})"))
                .unwrap_or_default();
            bail!("scored {} of {expected} expected targets{missing}: every target must be scored exactly once", self.count + self.peer_count);
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
    fn peer_scores_are_accepted_only_when_every_target_has_exactly_one_scorer() {
        let v = tiny();
        // Two ranks share targets 1..9: rank 0 scores 1..5, rank 1 scores 5..9.
        let mut a = Ledger::new(&v, 1..9).unwrap();
        let mut b = Ledger::new(&v, 1..9).unwrap();
        a.record(1, &[0.5; 4]).unwrap();
        b.record(5, &[1.0; 4]).unwrap();
        assert!(
            a.span(1..9).is_err(),
            "rank 0 cannot adapt on rank 1's share yet"
        );
        let sum: Vec<f64> = a
            .scored_mask(1..9)
            .iter()
            .zip(b.scored_mask(1..9))
            .map(|(x, y)| x + y)
            .collect();
        assert_eq!(sum, vec![1.0; 8]);
        a.accept_peer_scores(1..9, &sum).unwrap();
        b.accept_peer_scores(1..9, &sum).unwrap();
        assert_eq!(a.span(1..9).unwrap().targets(), 1..9);
        let (ra, rb) = (a.finish().unwrap(), b.finish().unwrap());
        assert_eq!(
            (ra.total.targets, rb.total.targets),
            (4, 4),
            "each keeps its own sums"
        );
        assert_eq!((ra.total.nll, rb.total.nll), (2.0, 4.0));

        // A target scored twice (by two ranks) or by none is named.
        let mut c = Ledger::new(&v, 1..9).unwrap();
        c.record(1, &[0.5; 5]).unwrap();
        let mut twice = vec![1.0; 8];
        twice[4] = 2.0;
        let err = c.accept_peer_scores(1..9, &twice).unwrap_err().to_string();
        assert!(err.contains("target 5 was scored by 2 ranks"), "{err}");
        let mut none = vec![1.0; 8];
        none[7] = 0.0;
        let err = c.accept_peer_scores(1..9, &none).unwrap_err().to_string();
        assert!(err.contains("target 8 was scored by 0 ranks"), "{err}");
        // Without the peers' acceptance the ledger does not finish.
        assert!(c.finish().is_err());
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

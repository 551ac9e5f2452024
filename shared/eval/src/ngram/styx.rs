//! PROTEUS+STYX's n-gram cache (`refs/pull/769/head`, its `FastNgramCache` and the lookup in its
//! `eval_val_sliding`), reproduced exactly so that `diagnose` can say what its claimed number is:
//!
//! - orders 2 ..= 5, `B` buckets (2²²): context hash `XOR_j tok_j·P[j mod 4]` over the context
//!   (earliest first, P = 36313, 27191, 48571, 91397) `mod B`; n-gram hash
//!   `(ctx·91397 + x·48571) mod B`;
//! - at a position, the highest order whose context count is ≥ `min_count` (2) **and** whose
//!   n-gram count is > 0, `p = n-gram / context` with no clip;
//! - its lookup is aligned one position early: at the position whose model target is `y_t`, the
//!   cache's probability is that of `x_t`, the token already in the input (bench/styx_cache_check.py);
//! - no cache in a window whose first scored position has fewer than 4 tokens before it;
//! - after a window, the n-grams lying wholly inside `val[abs_start ..= abs_end]` are counted
//!   (those straddling the window's start never are);
//! - one cache per rank: the windows are cut into `ranks` contiguous slices as its script splits
//!   them, each slice starting from empty tables.

use anyhow::{bail, Result};
use std::ops::Range;

use super::mix::ClaimedCache;
use crate::ledger::ScoredSpan;

const PRIMES: [u64; 4] = [36313, 27191, 48571, 91397];
const MIN_ORDER: usize = 2;

pub struct StyxCache {
    max_order: usize,
    buckets: u64,
    min_count: u32,
    ranks: usize,
    ctx: Vec<Vec<u32>>,
    full: Vec<Vec<u32>>,
    rank: Option<usize>,
    /// The window being scored: `(abs_start, abs_end)`, STYX's indices (its scored targets are
    /// `val[abs_start+1 ..= abs_end]`), and whether its lookup runs there.
    window: Option<(usize, usize, bool)>,
}

impl StyxCache {
    pub fn new(
        max_order: usize,
        bucket_bits: u32,
        min_count: u32,
        ranks: usize,
    ) -> Result<StyxCache> {
        if !(MIN_ORDER..=8).contains(&max_order) || !(4..=30).contains(&bucket_bits) || ranks == 0 {
            bail!("styx cache needs orders 2..=8, 4..=30 bucket bits and ≥ 1 rank (got {max_order}, {bucket_bits}, {ranks})");
        }
        let buckets = 1usize << bucket_bits;
        let orders = max_order - 1;
        Ok(StyxCache {
            max_order,
            buckets: buckets as u64,
            min_count,
            ranks,
            ctx: vec![vec![0; buckets]; orders],
            full: vec![vec![0; buckets]; orders],
            rank: None,
            window: None,
        })
    }

    fn ctx_hash(&self, context: &[u16]) -> u64 {
        context.iter().enumerate().fold(0u64, |h, (j, &t)| {
            h ^ (t as u64).wrapping_mul(PRIMES[j % PRIMES.len()])
        }) % self.buckets
    }

    fn ngram_hash(&self, ctx: u64, x: u16) -> usize {
        ((ctx * 91397 + x as u64 * 48571) % self.buckets) as usize
    }

    /// The script's p for token `x` in the place of `val[c]`, from the contexts before `c`, if an
    /// order qualifies.
    fn p_for(&self, val: &[u16], c: usize, x: u16) -> Option<f64> {
        (MIN_ORDER..=self.max_order).rev().find_map(|order| {
            let cl = order - 1;
            let h = self.ctx_hash(&val[c - cl..c]);
            let (n_ctx, n_full) = (
                self.ctx[order - 2][h as usize],
                self.full[order - 2][self.ngram_hash(h, x)],
            );
            (n_ctx >= self.min_count && n_full > 0).then(|| n_full as f64 / n_ctx as f64)
        })
    }

    /// The token position whose cache probability the script blends at target position `t`
    /// (`x_t = val[t − 1]`), when the window's lookup runs.
    fn looked_up(&self, t: usize) -> Option<usize> {
        match self.window {
            Some((_, _, true)) => Some(t - 1),
            _ => None,
        }
    }
}

impl ClaimedCache for StyxCache {
    fn begin_window(&mut self, _val: &[u16], index: usize, windows: usize, scored: Range<usize>) {
        // Rank r holds windows [windows·r/R, windows·(r+1)/R), as the script's my_s..my_e.
        let rank = (0..self.ranks)
            .find(|&r| index < windows * (r + 1) / self.ranks)
            .unwrap_or(self.ranks - 1);
        if self.rank != Some(rank) {
            self.ctx
                .iter_mut()
                .chain(&mut self.full)
                .for_each(|t| t.fill(0));
            self.rank = Some(rank);
        }
        let (abs_start, abs_end) = (scored.start - 1, scored.end - 1);
        self.window = Some((abs_start, abs_end, abs_start >= self.max_order - 1));
    }

    fn claimed(&self, val: &[u16], t: usize) -> Option<f64> {
        let c = self.looked_up(t)?;
        self.p_for(val, c, val[c])
    }

    /// Σ over the vocabulary of the blend the script would form in the place of the token it
    /// looks up: `(1−α)·p(x) + α·p_cache(x)` where the cache has `x`, `p(x)` where not.
    fn blended_mass(
        &self,
        val: &[u16],
        t: usize,
        alpha: f64,
        model: Option<&[f64]>,
    ) -> Option<f64> {
        let c = self.looked_up(t)?;
        let model = model?;
        Some(
            model
                .iter()
                .enumerate()
                .map(|(x, &p)| match self.p_for(val, c, x as u16) {
                    Some(q) => (1.0 - alpha) * p + alpha * q,
                    None => p,
                })
                .sum(),
        )
    }

    fn observe(&mut self, _span: &ScoredSpan<'_>) -> Result<()> {
        Ok(())
    }

    fn end_window(&mut self, val: &[u16]) {
        let Some((abs_start, abs_end, _)) = self.window.take() else {
            return;
        };
        let tokens = &val[abs_start..=abs_end];
        for order in MIN_ORDER..=self.max_order {
            let cl = order - 1;
            for q in 0..tokens.len().saturating_sub(cl) {
                let h = self.ctx_hash(&tokens[q..q + cl]);
                let i = self.ngram_hash(h, tokens[q + cl]);
                self.ctx[order - 2][h as usize] += 1;
                self.full[order - 2][i] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The toy of bench/styx_cache_check.py, through our copy: after (1 2 3 4 → 5) ten times,
    /// the position whose target is 6 gets p = 1.0 (the probability of 5, its input token).
    #[test]
    fn the_lookup_scores_the_input_token_as_the_script_does() {
        let mut cache = StyxCache::new(5, 22, 2, 2).unwrap();
        // Teach it as the script's update_batch does (one window covering the history).
        let history: Vec<u16> = [1u16, 2, 3, 4, 5].repeat(10);
        cache.begin_window(&history, 0, 2, 1..history.len());
        cache.end_window(&history);
        assert_eq!(cache.ctx[3][cache.ctx_hash(&[1, 2, 3, 4]) as usize], 10);
        let val = [9u16, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7];
        // Scored targets val[9], val[10] (5 and 6): abs_start 8, abs_end 10. Same rank.
        cache.begin_window(&val, 0, 2, 9..11);
        assert_eq!(
            cache.claimed(&val, 10),
            Some(1.0),
            "target 6 gets p(5 | 1 2 3 4)"
        );
        assert_eq!(
            cache.claimed(&val, 9),
            Some(1.0),
            "target 5 gets p(4 | 1 2 3)"
        );
        // A target-aligned cache would have nothing for 6 after (2 3 4 5):
        assert_eq!(cache.p_for(&val, 10, val[10]), None);
        // Mass of the blend over a 10-token vocabulary with a uniform model row: the cache
        // claims 1.0 for x = 5 on top of the model's full mass.
        let row = vec![0.1; 10];
        let z = cache.blended_mass(&val, 10, 0.2, Some(&row)).unwrap();
        assert!((z - (1.0 - 0.2 * 0.1 + 0.2 * 1.0)).abs() < 1e-12, "{z}");
        // A new rank starts from empty tables.
        cache.end_window(&val);
        cache.begin_window(&val, 1, 2, 9..11);
        assert_eq!(cache.claimed(&val, 10), None);
    }
}

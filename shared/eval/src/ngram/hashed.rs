//! The hashed two-table n-gram cache of the ruled-invalid community PRs (REFERENCE.md §5.5), built
//! only to measure why its numbers are not bits per byte.
//!
//! For orders 2 ..= max: `ctx[h(c)]` and `full[h(c) ⊕ x·P]`, `h` an XOR of token·prime products
//! masked to `B` buckets. At a position the longest order whose context count reaches `min_count`
//! gives `p(x) = min(full/ctx, 1)` — looked up only for the target in the real scripts. Summing it
//! over every token `x` of the vocabulary gives the implied total mass, which collisions push far
//! above 1 (C2 fails); [`HashedCache::implied_mass`] computes it.

use anyhow::{bail, Result};

use crate::ledger::ScoredSpan;

const PRIMES: [u64; 8] = [36313, 27191, 51647, 81929, 131071, 174763, 233017, 283721];
const TARGET_PRIME: u64 = 1_000_003;

pub struct HashedCache {
    min_order: usize,
    max_order: usize,
    mask: u64,
    min_count: u32,
    vocab: usize,
    ctx: Vec<Vec<u32>>,
    full: Vec<Vec<u32>>,
    history: Vec<u16>,
    next_target: usize,
}

impl HashedCache {
    /// Orders `2 ..= max_order` (≤ 8), `2^bucket_bits` buckets per table.
    pub fn new(
        max_order: usize,
        bucket_bits: u32,
        min_count: u32,
        vocab: usize,
        bos: u16,
    ) -> Result<HashedCache> {
        if !(2..=8).contains(&max_order) || !(4..=30).contains(&bucket_bits) {
            bail!("hashed cache needs orders 2..=8 and 4..=30 bucket bits (got {max_order}, {bucket_bits})");
        }
        let buckets = 1usize << bucket_bits;
        let orders = max_order - 1;
        Ok(HashedCache {
            min_order: 2,
            max_order,
            mask: buckets as u64 - 1,
            min_count: min_count.max(1),
            vocab,
            ctx: vec![vec![0; buckets]; orders],
            full: vec![vec![0; buckets]; orders],
            history: vec![bos; max_order - 1],
            next_target: 1,
        })
    }

    fn ctx_hash(&self, order: usize) -> u64 {
        let h = &self.history;
        let ctx = &h[h.len() - (order - 1)..];
        ctx.iter().enumerate().fold(0u64, |acc, (i, &t)| {
            acc ^ (t as u64).wrapping_mul(PRIMES[i])
        }) & self.mask
    }

    fn full_index(&self, ctx_hash: u64, x: u16) -> usize {
        ((ctx_hash ^ (x as u64).wrapping_mul(TARGET_PRIME)) & self.mask) as usize
    }

    /// The order the cache would use at the next position (longest with `ctx ≥ min_count`) and its
    /// context hash; `None` when no order qualifies (the scripts then use the model alone).
    fn chosen(&self) -> Option<(usize, u64)> {
        (self.min_order..=self.max_order).rev().find_map(|n| {
            let h = self.ctx_hash(n);
            (self.ctx[n - 2][h as usize] >= self.min_count).then_some((n, h))
        })
    }

    /// `p_ng(x)` as the scripts compute it for the actual next token `x`, if an order qualifies.
    pub fn claimed(&self, x: u16) -> Option<f64> {
        let (n, h) = self.chosen()?;
        let c = self.ctx[n - 2][h as usize] as f64;
        Some((self.full[n - 2][self.full_index(h, x)] as f64 / c).min(1.0))
    }

    /// `Σ_x p_ng(x)` over the whole vocabulary at the next position (None if no order qualifies).
    pub fn implied_mass(&self) -> Option<f64> {
        self.chosen()?;
        Some(
            (0..self.vocab)
                .map(|x| self.claimed(x as u16).unwrap_or(0.0))
                .sum(),
        )
    }

    /// Counts the span's targets into both tables of every order (after they were scored).
    pub fn observe(&mut self, span: &ScoredSpan<'_>) -> Result<()> {
        let targets = span.targets();
        if targets.start != self.next_target {
            bail!(
                "hashed cache expected target {} next but was given {targets:?}",
                self.next_target
            );
        }
        for &x in &span.prefix()[targets.clone()] {
            for n in self.min_order..=self.max_order {
                let h = self.ctx_hash(n);
                let i = self.full_index(h, x);
                self.ctx[n - 2][h as usize] += 1;
                self.full[n - 2][i] += 1;
            }
            self.history.rotate_left(1);
            let last = self.history.len() - 1;
            self.history[last] = x;
        }
        self.next_target = targets.end;
        Ok(())
    }
}

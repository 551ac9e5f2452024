//! An incremental interpolated Kneser–Ney n-gram model over the full vocabulary.
//!
//! `p_k(w | h) = (max(c_k(h w) − D_k, 0) + D_k · N1+(h •) · p_{k−1}(w | h′)) / Σ_v c_k(h v)` for a
//! seen context `h` (else `p_k = p_{k−1}`), down to `p_0(w) = 1/V`. At the top order `c` is the raw
//! count; at lower orders it is the continuation count `N1+(• h w)` (how many distinct tokens
//! preceded `h w`). Every level is a proper distribution over all `V` tokens by construction: the
//! discounted mass `D_k · N1+(h •)` is exactly what the lower order redistributes. `D_k` is
//! `n1 / (n1 + 2·n2)` from the level's counts of counts (clamped to [0.05, 0.95]).
//!
//! The model only grows by [`KneserNey::observe`], which takes a [`ScoredSpan`]: it can only learn
//! tokens whose scores are final. History before the first token is padded with BOS.

use anyhow::{bail, Result};

use super::fxhash::FxMap;
use crate::ledger::ScoredSpan;

/// Longest supported order: an n-gram of up to 8 u16 tokens packs into a u128 key.
pub const MAX_ORDER: usize = 8;

#[derive(Default, Clone, Copy)]
struct Context {
    /// Σ_v c(h v).
    total: u64,
    /// N1+(h •): distinct continuations.
    distinct: u32,
}

#[derive(Default)]
struct Level {
    grams: FxMap<u128, u32>,
    contexts: FxMap<u128, Context>,
    /// Counts of counts: n-grams of this level seen exactly once / twice.
    n1: u64,
    n2: u64,
}

impl Level {
    fn discount(&self) -> f64 {
        if self.n1 == 0 {
            return 0.5;
        }
        (self.n1 as f64 / (self.n1 as f64 + 2.0 * self.n2 as f64)).clamp(0.05, 0.95)
    }

    /// Adds one to `gram` in context `ctx`; returns whether the gram is new at this level.
    fn bump(&mut self, ctx: u128, gram: u128) -> bool {
        let count = self.grams.entry(gram).or_insert(0);
        let old = *count;
        *count += 1;
        match old {
            0 => self.n1 += 1,
            1 => {
                self.n1 -= 1;
                self.n2 += 1
            }
            2 => self.n2 -= 1,
            _ => {}
        }
        let c = self.contexts.entry(ctx).or_default();
        c.total += 1;
        if old == 0 {
            c.distinct += 1;
        }
        old == 0
    }
}

pub struct KneserNey {
    order: usize,
    vocab: usize,
    levels: Vec<Level>,
    /// The last `order − 1` tokens, oldest first.
    history: Vec<u16>,
    /// Next stream target the model expects to learn (spans must arrive in order).
    next_target: usize,
}

/// Packs tokens (oldest first) into a key; the level fixes the length, so no length tag is needed.
#[inline]
fn pack(tokens: &[u16]) -> u128 {
    tokens.iter().fold(0u128, |k, &t| (k << 16) | t as u128)
}

impl KneserNey {
    /// An empty model of `order` (1 ..= 8) over `vocab` tokens; history padded with `bos`.
    pub fn new(order: usize, vocab: usize, bos: u16) -> Result<KneserNey> {
        if !(1..=MAX_ORDER).contains(&order) {
            bail!("n-gram order {order} is outside 1..={MAX_ORDER}");
        }
        if vocab == 0 || vocab > 65536 {
            bail!("vocabulary size {vocab} is outside 1..=65536");
        }
        Ok(KneserNey {
            order,
            vocab,
            levels: (0..order).map(|_| Level::default()).collect(),
            history: vec![bos; order - 1],
            next_target: 1,
        })
    }

    pub fn order(&self) -> usize {
        self.order
    }

    /// Distinct n-grams stored, over all levels.
    pub fn size(&self) -> usize {
        self.levels.iter().map(|l| l.grams.len()).sum()
    }

    /// `p(w | history)` for the next token.
    pub fn prob(&self, w: u16) -> f64 {
        let mut p = 1.0 / self.vocab as f64;
        let h = &self.history;
        let mut buf = [0u16; MAX_ORDER];
        for k in 1..=self.order {
            let ctx = &h[h.len() - (k - 1)..];
            let level = &self.levels[k - 1];
            let Some(c) = level.contexts.get(&pack(ctx)) else {
                break;
            };
            buf[..k - 1].copy_from_slice(ctx);
            buf[k - 1] = w;
            let count = level.grams.get(&pack(&buf[..k])).copied().unwrap_or(0) as f64;
            let d = level.discount();
            p = ((count - d).max(0.0) + d * c.distinct as f64 * p) / c.total as f64;
        }
        p
    }

    /// The whole next-token distribution (V lookups per level; for normalization probes).
    pub fn distribution(&self) -> Vec<f64> {
        (0..self.vocab).map(|w| self.prob(w as u16)).collect()
    }

    /// Learns the span's targets in order. Spans must continue where the last one ended.
    pub fn observe(&mut self, span: &ScoredSpan<'_>) -> Result<()> {
        let targets = span.targets();
        if targets.start != self.next_target {
            bail!(
                "n-gram model expected target {} next but was given {targets:?}",
                self.next_target
            );
        }
        for &w in &span.prefix()[targets.clone()] {
            self.learn(w);
        }
        self.next_target = targets.end;
        Ok(())
    }

    /// Learns tokens that are not val targets (paid-for training text, tests).
    pub fn learn_sequence(&mut self, tokens: &[u16]) {
        for &w in tokens {
            self.learn(w);
        }
    }

    /// Pads the history with `bos` again (between an unrelated text and the val stream).
    pub fn reset_history(&mut self, bos: u16) {
        self.history.fill(bos);
    }

    fn learn(&mut self, w: u16) {
        let mut buf = [0u16; MAX_ORDER];
        let n = self.order;
        buf[..n - 1].copy_from_slice(&self.history);
        buf[n - 1] = w;
        // From the top order down, as long as the gram is new at the level above: a new k-gram
        // (v h w) gives (h w) one more distinct left extension.
        for k in (1..=n).rev() {
            let gram = &buf[n - k..n];
            let ctx = pack(&gram[..k - 1]);
            if !self.levels[k - 1].bump(ctx, pack(gram)) {
                break;
            }
        }
        if n > 1 {
            self.history.rotate_left(1);
            self.history[n - 2] = w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trained(order: usize, text: &[u16], vocab: usize) -> KneserNey {
        let mut m = KneserNey::new(order, vocab, 0).unwrap();
        m.learn_sequence(text);
        m
    }

    #[test]
    fn every_order_is_a_distribution_over_the_whole_vocabulary() {
        let text: Vec<u16> = (0..500u32).map(|i| ((i * 7 + i / 3) % 13) as u16).collect();
        for order in 1..=5 {
            let mut m = KneserNey::new(order, 16, 0).unwrap();
            for (i, &w) in text.iter().enumerate() {
                if i % 37 == 0 {
                    let s: f64 = m.distribution().iter().sum();
                    assert!((s - 1.0).abs() < 1e-12, "order {order} at {i}: Σp = {s}");
                    assert!(
                        m.distribution().iter().all(|&p| p > 0.0),
                        "every token keeps mass"
                    );
                }
                m.learn(w);
            }
        }
    }

    #[test]
    fn empty_model_is_uniform_and_repetition_is_learned() {
        let m = KneserNey::new(3, 10, 0).unwrap();
        assert_eq!(m.prob(4), 0.1);
        let m = trained(3, &[1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2], 10);
        assert!(
            m.prob(3) > 0.6,
            "after 1 2 the model expects 3: {}",
            m.prob(3)
        );
        assert!(m.prob(7) < 0.05);
    }

    #[test]
    fn continuation_counts_follow_the_kneser_ney_definition() {
        // "a b" ×3 then "c b": b follows two distinct tokens, so N1+(• b) = 2 at the unigram level,
        // whatever its raw count (4).
        let m = trained(2, &[1, 2, 1, 2, 1, 2, 3, 2], 8);
        let uni = &m.levels[0];
        assert_eq!(uni.grams[&pack(&[2])], 2);
        assert_eq!(uni.grams[&pack(&[1])], 2, "1 follows the BOS pad and 2");
        let bi = &m.levels[1];
        assert_eq!(bi.grams[&pack(&[1, 2])], 3);
        assert_eq!(bi.contexts[&pack(&[1])].total, 3);
        assert_eq!(bi.contexts[&pack(&[2])].distinct, 2);
    }

    #[test]
    fn refuses_bad_shapes() {
        assert!(KneserNey::new(0, 10, 0).is_err());
        assert!(KneserNey::new(9, 10, 0).is_err());
        assert!(KneserNey::new(3, 70000, 0).is_err());
    }
}

//! The SP8192 records' training draws (REFERENCE.md §1.5), beside the baseline's [`TokenStream`]:
//! R0405's shuffled aligned windows and R0427's document-aligned spans. Token logic only; the
//! train stage shapes what they return into batches.
//!
//! The random order is ours (SplitMix64 seeded with the rank, [`Rng`]), not numpy's PCG64: the
//! same distribution of windows as R0405's `ShuffledSequenceLoader`, not the same sequence. Like
//! R0405's, it does not depend on the run's seed.
//!
//! [`TokenStream`]: crate::TokenStream

use anyhow::{bail, Result};
use std::path::PathBuf;

use crate::{Rng, Shard};

/// R0405's `ShuffledSequenceLoader`: rank `r` of `W` owns shards `paths[r::W]`; each shard gets a
/// random phase in `[0, T−1]` and a random order of its `(n − 1 − phase) / T` windows of `T + 1`
/// tokens; each window comes from a shard drawn with probability ∝ its windows left; when every
/// shard is spent, every shard is dealt again.
pub struct ShuffledWindows {
    shards: Vec<Shard>,
    /// The window starts each shard has left, taken from the end.
    starts: Vec<Vec<usize>>,
    seq_len: usize,
    rng: Rng,
}

impl ShuffledWindows {
    pub fn open(paths: &[PathBuf], rank: usize, world: usize, seq_len: usize) -> Result<Self> {
        let mine: Vec<&PathBuf> = paths.iter().skip(rank).step_by(world.max(1)).collect();
        if mine.is_empty() {
            bail!(
                "{}: loader shuffled on {world} ranks needs at least {world} train shards (each rank owns its own), found {}",
                paths.first().map_or("train data".into(), |p| p.display().to_string()),
                paths.len()
            );
        }
        let shards = mine
            .iter()
            .map(|p| Shard::open(p))
            .collect::<Result<Vec<_>>>()?;
        if shards.iter().all(|s| s.len() < seq_len + 1) {
            bail!(
                "{}: no train shard of rank {rank} holds one window of {} tokens",
                mine[0].display(),
                seq_len + 1
            );
        }
        let mut draw = ShuffledWindows {
            starts: vec![Vec::new(); shards.len()],
            shards,
            seq_len,
            rng: Rng(rank as u64),
        };
        for si in 0..draw.shards.len() {
            draw.deal(si);
        }
        Ok(draw)
    }

    /// A new phase and a new order of shard `si`'s windows.
    fn deal(&mut self, si: usize) {
        let (n, t) = (self.shards[si].len(), self.seq_len);
        let max_phase = (t - 1).min(n.saturating_sub(t + 1));
        let phase = if max_phase > 0 {
            self.rng.below(max_phase + 1)
        } else {
            0
        };
        let count = n.saturating_sub(1 + phase) / t;
        let mut order: Vec<usize> = (0..count).collect();
        for i in (1..count).rev() {
            order.swap(i, self.rng.below(i + 1));
        }
        self.starts[si] = order.into_iter().map(|w| phase + w * t).collect();
    }

    /// The next window: `T + 1` tokens (`x = w[..T]`, `y = w[1..]`).
    pub fn window(&mut self) -> &[u16] {
        let mut total: usize = self.starts.iter().map(Vec::len).sum();
        if total == 0 {
            for si in 0..self.shards.len() {
                self.deal(si);
            }
            total = self.starts.iter().map(Vec::len).sum();
        }
        let mut pick = self.rng.below(total);
        let si = self
            .starts
            .iter()
            .position(|s| {
                let here = pick < s.len();
                if !here {
                    pick -= s.len();
                }
                here
            })
            .expect("the pick is below the total");
        let start = self.starts[si].pop().expect("a shard with windows left");
        &self.shards[si].tokens()[start..start + self.seq_len + 1]
    }
}

/// R0427's `DocumentPackingLoader`: shards in sorted order, each read from its first BOS; each
/// call takes the next contiguous `span` tokens (all ranks' spans together). A span that does not
/// fit in the rest of the shard drops that rest and starts the next shard at its first BOS;
/// after the last shard, the first again.
pub struct PackedSpans {
    shards: Vec<Shard>,
    bos: u16,
    current: usize,
    cursor: usize,
}

impl PackedSpans {
    /// Refuses data in which no shard holds one `span` from its first BOS (the draw would never
    /// find one).
    pub fn open(paths: &[PathBuf], bos: u16, span: usize) -> Result<Self> {
        if paths.is_empty() {
            bail!("no train shards to draw from");
        }
        let shards = paths
            .iter()
            .map(|p| Shard::open(p))
            .collect::<Result<Vec<_>>>()?;
        let fits = |s: &Shard| first_bos(s, bos).is_some_and(|at| at + span <= s.len());
        if !shards.iter().any(fits) {
            bail!(
                "{}: loader packed needs a train shard with {span} tokens after its first BOS (id {bos}); none has",
                paths[0].display()
            );
        }
        let mut draw = PackedSpans {
            cursor: first_bos(&shards[0], bos).unwrap_or(shards[0].len()),
            shards,
            bos,
            current: 0,
        };
        draw.fit(span);
        Ok(draw)
    }

    /// Moves on to the first shard (from the current one) whose rest holds `span` tokens.
    fn fit(&mut self, span: usize) {
        while self.cursor + span > self.shards[self.current].len() {
            self.current = (self.current + 1) % self.shards.len();
            let shard = &self.shards[self.current];
            self.cursor = first_bos(shard, self.bos).unwrap_or(shard.len());
        }
    }

    /// The next `span` tokens.
    pub fn take(&mut self, span: usize) -> &[u16] {
        self.fit(span);
        let at = self.cursor;
        self.cursor += span;
        &self.shards[self.current].tokens()[at..at + span]
    }
}

fn first_bos(shard: &Shard, bos: u16) -> Option<usize> {
    shard.tokens().iter().position(|&t| t == bos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_shard, Split};
    use std::collections::HashSet;

    fn shards(dir: &std::path::Path, contents: &[Vec<u16>]) -> Vec<PathBuf> {
        contents
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p = dir.join(Split::Train.shard_name(i));
                write_shard(&p, t).unwrap();
                p
            })
            .collect()
    }

    /// Every aligned window of a rank's shards comes once before any comes twice; the windows
    /// are `T + 1` consecutive tokens at one phase per shard; the other rank's shard never shows.
    #[test]
    fn shuffled_windows_deal_each_window_once_per_round() {
        let dir = tempfile::tempdir().unwrap();
        // Token i of shard s is 1000·s + i, so a window names its shard and start.
        let contents: Vec<Vec<u16>> = (0..3)
            .map(|s| (0..100).map(|i| (1000 * s + i) as u16).collect())
            .collect();
        let paths = shards(dir.path(), &contents);
        let t = 8;
        // Rank 0 of 2 owns shards 0 and 2.
        let mut draw = ShuffledWindows::open(&paths, 0, 2, t).unwrap();
        let per_round: usize = draw.starts.iter().map(Vec::len).sum();
        assert!(per_round >= 2 * ((100 - 1 - 7) / t));
        let mut seen = HashSet::new();
        for _ in 0..per_round {
            let w = draw.window().to_vec();
            assert_eq!(w.len(), t + 1);
            assert!(w.windows(2).all(|p| p[1] == p[0] + 1), "{w:?}");
            let shard = w[0] / 1000;
            assert!(shard == 0 || shard == 2, "rank 0 drew from shard {shard}");
            assert!(seen.insert(w[0]), "window {} twice in one round", w[0]);
        }
        // Starts within a shard differ by multiples of T (one phase per shard per round).
        for s in [0u16, 2] {
            let starts: Vec<i32> = seen
                .iter()
                .filter(|&&w| w / 1000 == s)
                .map(|&w| (w % 1000) as i32)
                .collect();
            assert!(starts.iter().all(|w| (w - starts[0]) % t as i32 == 0));
        }
        // The next round deals again.
        assert_eq!(draw.window().len(), t + 1);
        // More ranks than shards: one line naming the shortage.
        let err = ShuffledWindows::open(&paths, 3, 4, t).err().unwrap();
        assert!(
            format!("{err:#}").contains("needs at least 4 train shards"),
            "{err:#}"
        );
    }

    /// Spans start at a shard's first BOS, follow each other, skip a tail that cannot hold the
    /// next span, and wrap to the first shard.
    #[test]
    fn packed_spans_start_at_a_bos_and_skip_short_tails() {
        let dir = tempfile::tempdir().unwrap();
        let mut a: Vec<u16> = (10..40).collect();
        a[3] = 1; // first BOS of shard 0 at 3
        let mut b: Vec<u16> = (100..120).collect();
        b[5] = 1; // first BOS of shard 1 at 5
        let paths = shards(dir.path(), &[a.clone(), b.clone()]);
        let mut draw = PackedSpans::open(&paths, 1, 10).unwrap();
        assert_eq!(draw.take(10), &a[3..13]);
        assert_eq!(draw.take(10), &a[13..23]);
        // 7 tokens left in shard 0: dropped; shard 1 from its BOS.
        assert_eq!(draw.take(10), &b[5..15]);
        // 5 left in shard 1: back to shard 0's first BOS.
        assert_eq!(draw.take(10), &a[3..13]);
        let err = PackedSpans::open(&paths, 1, 40).err().unwrap();
        assert!(
            format!("{err:#}").contains("needs a train shard with 40 tokens after its first BOS")
        );
    }
}

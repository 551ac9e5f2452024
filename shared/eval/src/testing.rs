//! Stand-in models and a synthetic source for the tests of this crate: small, exact, and each one
//! built to exercise one property (true source, context dependence, memorization, cheating).

use anyhow::Result;
use pgolf_data::{ByteLut, DocRecord, Split};

pub use pgolf_testkit::{MarkovSource, Rng, BOS, VOCAB};

use crate::adapt::{ChunkStep, DocAdapt, StreamAdapt};
use crate::ledger::ScoredSpan;
use crate::scorer::{row_stats, Request, Scorer, Scores};
use crate::valset::ValSet;

/// The val set of a [`MarkovSource`] corpus (`MarkovSource::new().valset(docs, seed)`).
pub trait MarkovValSet {
    fn valset(&self, docs: usize, seed: u64) -> Result<ValSet>;
}

impl MarkovValSet for MarkovSource {
    fn valset(&self, docs: usize, seed: u64) -> Result<ValSet> {
        let (tokens, table) = self.corpus(docs, seed);
        ValSet::new(tokens, &table, ByteLut::byte260(), BOS)
    }
}

/// Answers a request from a per-position probability function `row(inputs up to i)`.
pub fn answer(req: &Request, entropy: bool, mut row: impl FnMut(&[u16]) -> Vec<f64>) -> Scores {
    let mut s = Scores::default();
    for (k, &y) in req.targets.iter().enumerate() {
        let i = req.score_from + k;
        let p = row(&req.inputs[..=i]);
        let (nll, h) = row_stats(&p, y);
        s.nll.push(nll);
        if entropy {
            s.entropy.push(h);
        }
        if req.probe == Some(k) {
            s.probe = Some(p);
        }
    }
    s
}

/// The true source as a model.
pub struct SourceScorer(pub MarkovSource);

impl Scorer for SourceScorer {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        Ok(batch
            .iter()
            .map(|r| answer(r, entropy, |ctx| self.0.row(*ctx.last().unwrap())))
            .collect())
    }
}

/// A model whose prediction depends on the whole window context: add-one counts of the tokens seen
/// in the window so far. Any change of context length changes its scores.
pub struct ContextCounter;

impl Scorer for ContextCounter {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        Ok(batch
            .iter()
            .map(|r| {
                answer(r, entropy, |ctx| {
                    let mut p = vec![1.0; VOCAB];
                    for &t in ctx {
                        p[t as usize] += 3.0;
                    }
                    let z: f64 = p.iter().sum();
                    p.iter().map(|q| q / z).collect()
                })
            })
            .collect())
    }
}

/// Remembers, for every `K`-token context it was trained on, the token that followed, and predicts
/// it with probability 0.99 (rest uniform). On a stream whose contexts never repeat it can only
/// gain by having trained on the very targets it scores: a detector of update-before-score.
pub struct Memorizer {
    pub k: usize,
    /// One memory per document slot (slot 0 for stream adaptation).
    pub memory: Vec<std::collections::HashMap<Vec<u16>, u16>>,
}

impl Memorizer {
    pub fn new(k: usize) -> Memorizer {
        Memorizer {
            k,
            memory: vec![Default::default()],
        }
    }

    pub fn learn(&mut self, slot: usize, tokens: &[u16]) {
        for i in self.k..tokens.len() {
            self.memory[slot].insert(tokens[i - self.k..i].to_vec(), tokens[i]);
        }
    }

    fn row(&self, slot: usize, ctx: &[u16]) -> Vec<f64> {
        let hit = (ctx.len() >= self.k)
            .then(|| self.memory[slot].get(&ctx[ctx.len() - self.k..]))
            .flatten();
        match hit {
            Some(&t) => {
                let mut p = vec![0.01 / (VOCAB - 1) as f64; VOCAB];
                p[t as usize] = 0.99;
                p
            }
            None => vec![1.0 / VOCAB as f64; VOCAB],
        }
    }
}

impl Scorer for Memorizer {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        Ok(batch
            .iter()
            .map(|r| answer(r, entropy, |ctx| self.row(r.slot, ctx)))
            .collect())
    }
}

impl StreamAdapt for Memorizer {
    fn update(&mut self, span: ScoredSpan<'_>, _step: ChunkStep) -> Result<()> {
        // The span's context reaches back K tokens into already-scored text (C1 allows it).
        let t = span.targets();
        let from = (t.start - 1).saturating_sub(self.k);
        self.learn(0, &span.prefix()[from..t.end]);
        Ok(())
    }
}

impl DocAdapt for Memorizer {
    fn reset(&mut self, _batch: usize, docs: usize) -> Result<()> {
        self.memory = vec![Default::default(); docs];
        Ok(())
    }
    fn update(&mut self, spans: &[Option<ScoredSpan<'_>>]) -> Result<()> {
        for (slot, span) in spans.iter().enumerate() {
            if let Some(span) = span {
                let t = span.targets();
                let from = (t.start - 1).saturating_sub(self.k);
                self.learn(slot, &span.prefix()[from..t.end]);
            }
        }
        Ok(())
    }
}

/// Cheats by looking at the label: puts half its mass on the target. Each row is a distribution,
/// but one chosen after seeing the target (C1 broken), so it reports too few bits.
pub struct Peeker(pub MarkovSource);

impl Scorer for Peeker {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        Ok(batch
            .iter()
            .map(|r| {
                answer(r, entropy, |ctx| {
                    let mut p: Vec<f64> = self
                        .0
                        .row(*ctx.last().unwrap())
                        .iter()
                        .map(|q| q * 0.5)
                        .collect();
                    let i = ctx.len() - 1;
                    if i >= r.score_from {
                        p[r.targets[i - r.score_from] as usize] += 0.5;
                    }
                    p
                })
            })
            .collect())
    }
}

/// Scores `−ln √p`: a "distribution" summing to more than 1, as hashed caches produce.
pub struct Unnormalized(pub MarkovSource);

impl Scorer for Unnormalized {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        Ok(batch
            .iter()
            .map(|r| {
                answer(r, entropy, |ctx| {
                    self.0
                        .row(*ctx.last().unwrap())
                        .iter()
                        .map(|q| q.sqrt())
                        .collect()
                })
            })
            .collect())
    }
}

/// A uniform stream of random tokens in `4..VOCAB` (contexts practically never repeat), as one
/// document per `doc_len` tokens.
pub fn random_valset(n: usize, doc_len: usize, seed: u64) -> ValSet {
    let mut rng = Rng(seed);
    let mut tokens = Vec::with_capacity(n);
    let mut docs = Vec::new();
    while tokens.len() < n {
        let offset = tokens.len();
        tokens.push(BOS);
        let len = doc_len.min(n - offset).max(2);
        for _ in 1..len {
            tokens.push(4 + rng.below(VOCAB - 4) as u16);
        }
        docs.push(DocRecord {
            doc_id: format!("r{}", docs.len()),
            split: Split::Val,
            token_offset: offset as u64,
            token_count: len as u64,
            raw_bytes: Some(len as u64 - 1),
            raw_bytes_source: Some(pgolf_data::RawBytesSource::Text),
            lut_bytes: len as u64 - 1,
            source_bits: None,
        });
    }
    ValSet::new(tokens, &docs, ByteLut::byte260(), BOS).unwrap()
}

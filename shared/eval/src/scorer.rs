//! The interface between the scoring loops and a model.
//!
//! A scorer sees, per window, only the window's input tokens and the targets it must score (as
//! labels for the NLL), never the rest of the stream. It returns `−ln p(target)` from a full
//! distribution over the vocabulary, and, at a probe position when asked, that whole distribution,
//! which the loops sum in f64 to check it is one.

use anyhow::Result;

/// One window to score.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Input tokens `x[start .. start+len]`.
    pub inputs: &'a [u16],
    /// Offset of the first scored position; positions before it are context only.
    pub score_from: usize,
    /// Targets of the scored positions, `x[start+1+score_from ..= start+len]`.
    pub targets: &'a [u16],
    /// A scored position (offset into `targets`) whose full distribution is wanted.
    pub probe: Option<usize>,
    /// Adapter slot for per-document adaptation (index in the current document batch); 0 otherwise.
    pub slot: usize,
}

/// A scorer's answer for one window.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    /// `−ln p(target)` per scored position (natural log).
    pub nll: Vec<f64>,
    /// Predictive entropy (nats) per scored position, when asked for.
    pub entropy: Vec<f64>,
    /// The full probability row at the probe position, when one was asked for.
    pub probe: Option<Vec<f64>>,
}

pub trait Scorer {
    /// Size of the distributions this scorer produces (the model's vocabulary).
    fn vocab_size(&self) -> usize;

    /// Scores a batch of windows. `entropy` asks for per-position predictive entropies.
    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>>;
}

/// Entropy (nats) and `−ln p[target]` of a probability row, for scorers that hold rows.
pub fn row_stats(p: &[f64], target: u16) -> (f64, f64) {
    let h = -p
        .iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| q * q.ln())
        .sum::<f64>();
    (-p[target as usize].ln(), h)
}

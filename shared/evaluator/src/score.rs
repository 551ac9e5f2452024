//! Which token spans the model sees, which targets each one scores, and bits per byte.
//!
//! Positions index the token stream `x_0 … x_N−1`. Target `t` (1 ≤ t ≤ N−1) is token `x_t`,
//! predicted from `x_0 … x_t−1`. A [`Window`] feeds `x[start .. start+len]` and predicts the
//! targets `start+1 ..= start+len`; it scores only those from `score_from` on. Both schedules
//! score each target exactly once.

use anyhow::{bail, Result};
use std::ops::Range;

use crate::model::Model;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Stream position of the first input token.
    pub start: usize,
    /// Input tokens fed (= targets predicted).
    pub len: usize,
    /// Offset inside the window of the first scored target; earlier ones are context only.
    pub score_from: usize,
}

impl Window {
    /// The targets this window scores (stream positions).
    pub fn scored(&self) -> Range<usize> {
        self.start + 1 + self.score_from..self.start + 1 + self.len
    }

    /// Input token positions.
    pub fn inputs(&self) -> Range<usize> {
        self.start..self.start + self.len
    }
}

/// Non-overlapping windows of `seq_len` over targets `1..=n_targets`, the last one short when
/// `seq_len` does not divide `n_targets` (no target is dropped). Each target's context restarts at
/// the window start, as in upstream `eval_val`.
pub fn flat(n_targets: usize, seq_len: usize) -> Result<Vec<Window>> {
    if seq_len == 0 {
        bail!("sequence length must be positive");
    }
    Ok((0..n_targets)
        .step_by(seq_len)
        .map(|start| Window {
            start,
            len: seq_len.min(n_targets - start),
            score_from: 0,
        })
        .collect())
}

/// Sliding windows, version B of REFERENCE.md §5.1 (single pass): windows of `seq_len` start every
/// `stride` tokens; the first scores all its targets, every later one only its last `stride`, and a
/// window is kept only while it has something new to score (`start + seq_len − stride < n_targets`),
/// so the tail is scored once by a short last window instead of being re-scored.
pub fn sliding(n_targets: usize, seq_len: usize, stride: usize) -> Result<Vec<Window>> {
    if seq_len == 0 || stride == 0 {
        bail!("sliding window needs a positive length and stride (got length {seq_len}, stride {stride})");
    }
    if stride > seq_len {
        bail!("stride {stride} exceeds the window length {seq_len}: targets between windows would never be scored");
    }
    let context = seq_len - stride;
    let mut windows = Vec::new();
    let mut start = 0;
    while start < n_targets && (start == 0 || start + context < n_targets) {
        windows.push(Window {
            start,
            len: (start + seq_len).min(n_targets) - start,
            score_from: if start == 0 { 0 } else { context },
        });
        start += stride;
    }
    Ok(windows)
}

/// Sums over the scored targets, in f64 (REFERENCE.md §2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sums {
    /// Σ −ln p(target), nats.
    pub nll: f64,
    pub targets: u64,
    /// Σ bytes charged to the scored targets.
    pub bytes: u64,
}

impl Sums {
    /// Mean NLL per target, nats (upstream `val_loss`).
    pub fn val_loss(&self) -> f64 {
        self.nll / self.targets as f64
    }

    pub fn bpb(&self) -> f64 {
        bits_per_byte(self.nll, self.bytes)
    }
}

/// `nll / (ln 2 · bytes)`; NaN when there are no bytes (nothing to divide by is not a score).
pub fn bits_per_byte(nll: f64, bytes: u64) -> f64 {
    if bytes == 0 {
        return f64::NAN;
    }
    nll / (std::f64::consts::LN_2 * bytes as f64)
}

/// Scores `windows` over `tokens`; target `t` is charged `bytes[t]` (so `bytes` has one entry per
/// token; entry 0 is never used). `progress` is told after each window.
pub fn score(
    model: &Model,
    tokens: &[u16],
    bytes: &[u32],
    windows: &[Window],
    mut progress: impl FnMut(usize),
) -> Result<Sums> {
    if bytes.len() != tokens.len() {
        bail!("{} byte counts for {} tokens", bytes.len(), tokens.len());
    }
    let mut sums = Sums::default();
    for (i, w) in windows.iter().enumerate() {
        if w.start + w.len >= tokens.len() || w.score_from > w.len {
            bail!(
                "window {w:?} does not fit the {}-token stream",
                tokens.len()
            );
        }
        let scored = w.scored();
        let nll = model.nll(&tokens[w.inputs()], &tokens[scored.clone()])?;
        for (t, v) in scored.zip(nll) {
            sums.nll += v as f64;
            sums.targets += 1;
            sums.bytes += bytes[t] as u64;
        }
        progress(i + 1);
    }
    Ok(sums)
}

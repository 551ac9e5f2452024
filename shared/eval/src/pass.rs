//! One scoring pass over a window schedule: batches windows, asks the scorer, checks the probed
//! distributions, and hands each window's scores on (to the ledger, or to a mixer first).

use anyhow::{bail, Result};

use crate::guards::Normalization;
use crate::ledger::Ledger;
use crate::schedule::Window;
use crate::scorer::{Request, Scorer, Scores};

#[derive(Clone, Copy, Debug)]
pub struct PassOptions {
    /// Windows per scorer call.
    pub batch_windows: usize,
    /// Roughly how many windows of the pass get a normalization probe (spread evenly).
    pub probes: usize,
    /// Ask the scorer for per-position entropies (entropy-adaptive mixing).
    pub entropy: bool,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            batch_windows: 32,
            probes: 64,
            entropy: false,
        }
    }
}

/// Deterministic probe placement: every `every`-th window, at a scored offset that moves around.
#[derive(Clone, Copy, Debug)]
pub struct ProbePlan {
    /// Probe every this many windows; `None`: no probes.
    every: Option<usize>,
}

impl ProbePlan {
    pub fn new(windows: usize, probes: usize) -> ProbePlan {
        ProbePlan {
            every: (probes > 0).then(|| windows.div_ceil(probes).max(1)),
        }
    }

    /// The probe offset (into the scored targets) for window number `i` scoring `n` targets.
    pub fn probe(&self, i: usize, n: usize) -> Option<usize> {
        let every = self.every?;
        (n > 0 && i.is_multiple_of(every)).then(|| (i.wrapping_mul(2654435761) >> 7) % n)
    }
}

/// Builds the request for window `w` of the stream.
pub fn request<'a>(
    tokens: &'a [u16],
    w: &Window,
    probe: Option<usize>,
    slot: usize,
) -> Request<'a> {
    Request {
        inputs: &tokens[w.inputs()],
        score_from: w.score_from,
        targets: &tokens[w.scored()],
        probe,
        slot,
    }
}

/// Scores `windows` in batches. For each window, in order, checks its probe (if any) and calls
/// `consume(window, probe offset, scores, norm)`. `first_index` numbers the windows for probe placement
/// across calls.
#[allow(clippy::too_many_arguments)]
pub fn run_windows<S: Scorer + ?Sized>(
    tokens: &[u16],
    windows: &[Window],
    scorer: &mut S,
    opts: &PassOptions,
    plan: &ProbePlan,
    first_index: usize,
    norm: &mut Normalization,
    mut consume: impl FnMut(&Window, Option<usize>, Scores, &mut Normalization) -> Result<()>,
) -> Result<()> {
    let vocab = scorer.vocab_size();
    for (b, batch) in windows.chunks(opts.batch_windows.max(1)).enumerate() {
        let base = first_index + b * opts.batch_windows.max(1);
        let requests: Vec<Request> = batch
            .iter()
            .enumerate()
            .map(|(i, w)| request(tokens, w, plan.probe(base + i, w.scored().len()), 0))
            .collect();
        let answers = scorer.score(&requests, opts.entropy)?;
        if answers.len() != batch.len() {
            bail!(
                "the scorer answered {} of {} windows",
                answers.len(),
                batch.len()
            );
        }
        for ((w, req), scores) in batch.iter().zip(&requests).zip(answers) {
            check_answer(w, req, &scores, vocab, opts.entropy, norm)?;
            consume(w, req.probe, scores, norm)?;
        }
    }
    Ok(())
}

/// Shape checks on one answer, and the normalization probe.
pub fn check_answer(
    w: &Window,
    req: &Request,
    scores: &Scores,
    vocab: usize,
    entropy: bool,
    norm: &mut Normalization,
) -> Result<()> {
    let n = w.scored().len();
    if scores.nll.len() != n || (entropy && scores.entropy.len() != n) {
        bail!(
            "the scorer returned {} scores for a window scoring {n} targets",
            scores.nll.len()
        );
    }
    if let Some(at) = req.probe {
        let Some(row) = scores.probe.as_ref() else {
            bail!("the scorer returned no distribution for a probe")
        };
        if row.len() != vocab {
            bail!(
                "the probed distribution has {} entries, the vocabulary {vocab}",
                row.len()
            );
        }
        norm.check(
            "model distribution",
            w.scored().start + at,
            row,
            req.targets[at],
            scores.nll[at],
        )?;
    }
    Ok(())
}

/// A plain (non-adaptive) pass: every window's scores go straight into the ledger.
pub fn score_windows<S: Scorer + ?Sized>(
    ledger: &mut Ledger,
    windows: &[Window],
    scorer: &mut S,
    opts: &PassOptions,
    norm: &mut Normalization,
    mut progress: impl FnMut(usize),
) -> Result<()> {
    let tokens = &ledger.val().tokens;
    let plan = ProbePlan::new(windows.len(), opts.probes);
    for (i, group) in windows.chunks(opts.batch_windows.max(1) * 8).enumerate() {
        run_windows(
            tokens,
            group,
            scorer,
            opts,
            &plan,
            i * opts.batch_windows.max(1) * 8,
            norm,
            |w, _, s, _| ledger.record(w.scored().start, &s.nll),
        )?;
        progress(group.len());
    }
    Ok(())
}

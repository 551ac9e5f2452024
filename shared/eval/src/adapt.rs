//! Score-first adaptive evaluation (C3): test-time training and caches learn only from tokens whose
//! scores are already in the ledger.
//!
//! The drivers below are the only code that interleaves scoring and updating. Each step is
//! "score the chunk → record it in the ledger → obtain the chunk's [`ScoredSpan`] from the ledger
//! → update". The update methods accept nothing but a `ScoredSpan`, and the ledger grants one only
//! for recorded targets, so an update-then-score order does not type-check or fails at once.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::bpb::BpbSums;
use crate::guards::Normalization;
use crate::ledger::{Ledger, ScoredSpan};
use crate::pass::{check_answer, request, run_windows, PassOptions, ProbePlan};
use crate::peers::{share, Peers};
use crate::schedule::{doc_chunks, Window};
use crate::scorer::{Request, Scorer};

/// Position of a chunk in the pass (for schedules such as the cosine learning rate of §5.3).
#[derive(Clone, Copy, Debug)]
pub struct ChunkStep {
    pub chunk: usize,
    pub chunks: usize,
}

/// State that adapts to the stream chunk by chunk (full-parameter TTT, caches).
pub trait StreamAdapt: Scorer {
    fn update(&mut self, span: ScoredSpan<'_>, step: ChunkStep) -> Result<()>;
}

/// State that adapts per document, one independent slot per document of a batch (LoRA TTT).
pub trait DocAdapt: Scorer {
    /// Starts batch `batch` of the pass (its index in the whole pass, on every rank: seeded
    /// initializations depend on it alone) with fresh adapters for `docs` documents.
    fn reset(&mut self, batch: usize, docs: usize) -> Result<()>;
    /// One update; `spans[slot]` is the just-scored chunk of that slot's document, or `None` when
    /// the document has nothing left to score (its adapter is not trained).
    fn update(&mut self, spans: &[Option<ScoredSpan<'_>>]) -> Result<()>;
}

/// Per-document adaptation that also trains the shared model between batches, on documents that
/// are already scored (phased TTT, §5.4).
pub trait PhaseAdapt: DocAdapt {
    /// Phase `phase`: train on `docs`, every one of them a whole document already scored (the
    /// ledger granted each span).
    fn phase(&mut self, docs: &[ScoredSpan<'_>], phase: usize) -> Result<()>;
}

/// One row of the per-chunk results.
#[derive(Clone, Debug, Serialize)]
pub struct ChunkRow {
    pub chunk: usize,
    pub first_target: usize,
    pub sums: BpbSums,
    pub updated: bool,
}

/// §5.3: the stream is cut into chunks of `chunk_tokens` targets; each window belongs to the chunk
/// holding its first scored target. For each chunk: score its windows, then (except after the last)
/// update on the chunk's targets. On several `peers` each rank scores its share of the chunk's
/// windows into its own ledger, the ranks agree that the chunk was scored once, and every rank
/// updates; the rows' sums are then summed over the ranks.
#[allow(clippy::too_many_arguments)]
pub fn score_first_chunks<M: StreamAdapt + ?Sized>(
    ledger: &mut Ledger,
    windows: &[Window],
    chunk_tokens: usize,
    model: &mut M,
    opts: &PassOptions,
    norm: &mut Normalization,
    peers: &dyn Peers,
    mut progress: impl FnMut(usize),
) -> Result<Vec<ChunkRow>> {
    if chunk_tokens == 0 {
        bail!("chunk size must be positive");
    }
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        return Ok(vec![]);
    };
    let (lo, hi) = (first.scored().start, last.scored().end);
    let chunks = (hi - lo).div_ceil(chunk_tokens);
    let tokens = &ledger.val().tokens;
    let plan = ProbePlan::new(windows.len(), opts.probes);
    let mut rows = Vec::with_capacity(chunks);
    let mut next = 0;
    for c in 0..chunks {
        let range = lo + c * chunk_tokens..(lo + (c + 1) * chunk_tokens).min(hi);
        let end = next + windows[next..].partition_point(|w| w.scored().start < range.end);
        let before = *ledger.total();
        let mine = share(end - next, peers.rank(), peers.world());
        let (a, b) = (next + mine.start, next + mine.end);
        run_windows(
            tokens,
            &windows[a..b],
            model,
            opts,
            &plan,
            a,
            norm,
            |w, _, s, _| ledger.record(w.scored().start, &s.nll),
        )?;
        progress(b - a);
        if peers.world() > 1 {
            // (A window may score past its chunk's end; those targets are agreed with the next
            // chunk's, whose windows all start later.)
            let mut mask = ledger.scored_mask(range.clone());
            peers.sum(&mut mask)?;
            ledger.accept_peer_scores(range.clone(), &mask)?;
        }
        next = end;
        let mut sums = *ledger.total();
        sums.nll -= before.nll;
        sums.targets -= before.targets;
        sums.lut_bytes -= before.lut_bytes;
        let updated = c + 1 < chunks;
        if updated {
            let span = ledger.span(range.clone())?;
            model.update(span, ChunkStep { chunk: c, chunks })?;
        }
        rows.push(ChunkRow {
            chunk: c,
            first_target: range.start,
            sums,
            updated,
        });
    }
    if peers.world() > 1 {
        // Counts travel as f64: exact below 2^53.
        let mut flat: Vec<f64> = rows
            .iter()
            .flat_map(|r| [r.sums.nll, r.sums.targets as f64, r.sums.lut_bytes as f64])
            .collect();
        peers.sum(&mut flat)?;
        for (r, v) in rows.iter_mut().zip(flat.chunks(3)) {
            r.sums = BpbSums {
                nll: v[0],
                targets: v[1] as u64,
                lut_bytes: v[2] as u64,
            };
        }
    }
    Ok(rows)
}

/// Per-document score-first adaptation (§5.2): documents (index into `ValSet::docs`, restricted to
/// `docs`) are grouped by chunk count into batches of `batch_docs`; in each batch chunk `c` of every
/// document is scored, then each document with a later chunk trains its own adapter on chunk `c`.
/// Context never crosses a document boundary. On several `peers` the batches are the same on
/// every rank and batch `b` is rank `b mod W`'s (each document adapts on its own, so that is one
/// rank's computation split up); at the end the ranks agree that every target of the ledger's
/// range was scored once (each ledger then holds the others' as accepted).
#[allow(clippy::too_many_arguments)]
pub fn score_first_docs<M: DocAdapt + ?Sized>(
    ledger: &mut Ledger,
    docs: &[usize],
    chunk: usize,
    context: usize,
    batch_docs: usize,
    model: &mut M,
    opts: &PassOptions,
    norm: &mut Normalization,
    peers: &dyn Peers,
    progress: impl FnMut(usize),
) -> Result<()> {
    let batches = DocBatches {
        docs,
        chunk,
        context,
        batch_docs,
        longest_first: false,
    };
    batches.run(ledger, model, opts, norm, peers, progress, |_, _, _| Ok(()))
}

/// Phased TTT (§5.4): [`score_first_docs`] on one rank, and after each batch, once the documents
/// done so far reach the next of `boundaries` (counts of documents in processing order), a phase
/// of [`PhaseAdapt::phase`] on the first that-many documents — each granted whole by the ledger,
/// so only scored documents reach it. Phases are cumulative (phase k trains on every document of
/// the phases before it too).
#[allow(clippy::too_many_arguments)]
pub fn score_first_phased<M: PhaseAdapt + ?Sized>(
    ledger: &mut Ledger,
    docs: &[usize],
    chunk: usize,
    context: usize,
    batch_docs: usize,
    boundaries: &[usize],
    model: &mut M,
    opts: &PassOptions,
    norm: &mut Normalization,
    progress: impl FnMut(usize),
) -> Result<usize> {
    if boundaries.windows(2).any(|w| w[0] >= w[1]) || boundaries.first() == Some(&0) {
        bail!("phase boundaries must be positive and increasing, got {boundaries:?}");
    }
    // As R0427: the batches of similar lengths processed longest first.
    let batches = DocBatches {
        docs,
        chunk,
        context,
        batch_docs,
        longest_first: true,
    };
    let mut phases = 0;
    batches.run(
        ledger,
        model,
        opts,
        norm,
        &crate::peers::Alone,
        progress,
        |ledger: &mut Ledger, model: &mut M, done: &[usize]| {
            while phases < boundaries.len() && done.len() >= boundaries[phases] {
                let val = ledger.val();
                let spans = done[..boundaries[phases]]
                    .iter()
                    .map(|&d| ledger.span(val.docs[d].targets()))
                    .collect::<Result<Vec<_>>>()?;
                model.phase(&spans, phases)?;
                phases += 1;
            }
            Ok(())
        },
    )?;
    Ok(phases)
}

/// The documents of a per-document pass, cut into windows and batches: sorted by their number of
/// chunks, grouped into batches of `batch_docs` (batch `b` is the `b`-th group, whatever order
/// they run in: its adapters are seeded by `b`), run shortest first or longest first.
struct DocBatches<'d> {
    docs: &'d [usize],
    chunk: usize,
    context: usize,
    batch_docs: usize,
    longest_first: bool,
}

impl DocBatches<'_> {
    /// Scores every batch (this rank's, on several `peers`), adapting after each chunk; after
    /// each batch `after_batch` sees the documents done so far, in processing order.
    #[allow(clippy::too_many_arguments)]
    fn run<M: DocAdapt + ?Sized>(
        &self,
        ledger: &mut Ledger,
        model: &mut M,
        opts: &PassOptions,
        norm: &mut Normalization,
        peers: &dyn Peers,
        mut progress: impl FnMut(usize),
        mut after_batch: impl FnMut(&mut Ledger, &mut M, &[usize]) -> Result<()>,
    ) -> Result<()> {
        let DocBatches {
            docs,
            chunk,
            context,
            batch_docs,
            longest_first,
        } = *self;
        let val = ledger.val();
        let mut plans: Vec<Vec<Window>> = Vec::with_capacity(docs.len());
        for &d in docs {
            let doc = &val.docs[d];
            plans.push(doc_chunks(doc.bos, doc.end, chunk, context)?);
        }
        // Similar lengths together, so a batch wastes few steps on finished documents.
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by_key(|&i| plans[i].len());
        let vocab = model.vocab_size();
        let plan = ProbePlan::new(plans.iter().map(Vec::len).sum(), opts.probes);
        let mut groups: Vec<(usize, &[usize])> =
            order.chunks(batch_docs.max(1)).enumerate().collect();
        if longest_first {
            groups.reverse();
        }
        let mut counter = 0;
        let mut done: Vec<usize> = Vec::with_capacity(docs.len());
        for (b, batch) in groups {
            if b % peers.world() != peers.rank() {
                // Another rank's batch; the probe counter goes on as on one rank.
                counter += batch.iter().map(|&i| plans[i].len()).sum::<usize>();
                continue;
            }
            model.reset(b, batch.len())?;
            let steps = batch.iter().map(|&i| plans[i].len()).max().unwrap_or(0);
            for c in 0..steps {
                let live: Vec<(usize, Window)> = batch
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, &i)| plans[i].get(c).map(|w| (slot, *w)))
                    .collect();
                let requests: Vec<Request> = live
                    .iter()
                    .enumerate()
                    .map(|(k, (slot, w))| {
                        request(
                            &val.tokens,
                            w,
                            plan.probe(counter + k, w.scored().len()),
                            *slot,
                        )
                    })
                    .collect();
                counter += live.len();
                let answers = model.score(&requests, opts.entropy)?;
                if answers.len() != live.len() {
                    bail!(
                        "the scorer answered {} of {} windows",
                        answers.len(),
                        live.len()
                    );
                }
                for (((_, w), req), scores) in live.iter().zip(&requests).zip(&answers) {
                    check_answer(w, req, scores, vocab, opts.entropy, norm)?;
                    ledger.record(w.scored().start, &scores.nll)?;
                }
                progress(live.len());
                let mut spans: Vec<Option<ScoredSpan>> = vec![None; batch.len()];
                let mut any = false;
                for (slot, w) in &live {
                    if c + 1 < plans[batch[*slot]].len() {
                        spans[*slot] = Some(ledger.span(w.scored())?);
                        any = true;
                    }
                }
                if any {
                    model.update(&spans)?;
                }
            }
            done.extend(batch.iter().map(|&i| docs[i]));
            after_batch(&mut *ledger, model, &done)?;
        }
        if peers.world() > 1 {
            let range = ledger.expected();
            let mut mask = ledger.scored_mask(range.clone());
            peers.sum(&mut mask)?;
            ledger.accept_peer_scores(range, &mask)?;
        }
        Ok(())
    }
}

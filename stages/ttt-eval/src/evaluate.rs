//! The four ways ttt-eval scores the val stream. Each builds a window schedule (proved single-pass
//! before any model runs), a ledger expecting exactly the targets it must score, and runs the
//! matching pass; adaptive modes go through the score-first drivers of `pgolf_eval::adapt`.

use anyhow::{bail, Result};
use pgolf_eval::adapt::{score_first_chunks, score_first_docs, score_first_phased, ChunkRow};
use pgolf_eval::fixed::{fixed_schedule, FixedSchedule};
use pgolf_eval::guards::Normalization;
use pgolf_eval::pass::{score_windows, PassOptions};
use pgolf_eval::peers::{merge_reports, share, Peers};
use pgolf_eval::report::Denominator;
use pgolf_eval::schedule::{check_single_pass, doc_chunks, sliding};
use pgolf_eval::torch::{FullTtt, FullTttConfig, LoraConfig, LoraTtt, Net, PhasedTtt, RankPeers};
use pgolf_eval::{Ledger, LedgerReport, ValSet};
use pgolf_optim::Collective;
use tch::Device;

use crate::params::{Mode, Params};

pub struct Outcome {
    pub report: LedgerReport,
    pub chunks: Vec<ChunkRow>,
    /// Adaptive updates made (None for the fixed-model modes).
    pub updates: Option<u64>,
    pub norm: Normalization,
    pub denominator: Denominator,
}

/// Number of windows the mode will score on this rank (for the progress bar).
pub fn window_count(
    p: &Params,
    val: &ValSet,
    seq_len: usize,
    comm: &dyn Collective,
) -> Result<usize> {
    let n = val.n_targets();
    let all = match p.mode {
        Mode::Flat => n.div_ceil(seq_len),
        Mode::Sliding | Mode::Ttt => sliding(n, seq_len, p.stride)?.len(),
        Mode::Lora | Mode::Phased => val
            .docs
            .iter()
            .map(|d| d.targets().len().div_ceil(p.lora.chunk.max(1)))
            .sum(),
    };
    Ok(share(all, comm.rank(), comm.world_size()).len())
}

pub fn evaluate(
    p: &Params,
    val: &ValSet,
    net: Net,
    seq_len: usize,
    comm: &dyn Collective,
    device: Device,
    mut progress: impl FnMut(usize),
) -> Result<Outcome> {
    let n = val.n_targets();
    let world = comm.world_size();
    if world > 1 && p.mode == Mode::Phased {
        // Phases gather the documents every rank scored so far: not built; one rank is the same.
        bail!("mode phased on {world} ranks is not built yet: run it on one rank (flat, sliding, ttt and lora take several)");
    }
    let opts = PassOptions {
        batch_windows: p.batch_windows,
        probes: p.probes,
        entropy: false,
    };
    let mut norm = Normalization::default();
    let mut net = net;
    match p.mode {
        Mode::Flat | Mode::Sliding => {
            let stride = (p.mode == Mode::Sliding).then_some(p.stride);
            let FixedSchedule {
                windows,
                targets,
                denominator,
            } = fixed_schedule(n, seq_len, stride, p.upstream_compatible)?;
            if windows.len() < world {
                bail!(
                    "{} windows cannot be shared by {world} ranks",
                    windows.len()
                );
            }
            // This rank's contiguous share; its ledger expects exactly the targets it scores.
            let mine = &windows[share(windows.len(), comm.rank(), world)];
            let (first, last) = (mine[0].scored().start, mine[mine.len() - 1].scored().end);
            let mut ledger = Ledger::new(val, first..last)?;
            score_windows(&mut ledger, mine, &mut net, &opts, &mut norm, &mut progress)?;
            let mut report = ledger.finish()?;
            if world > 1 {
                let peers = RankPeers { comm, device };
                report = merge_reports(report, &mut norm, 1..targets + 1, &peers)?;
            }
            Ok(Outcome {
                report,
                chunks: vec![],
                updates: None,
                norm,
                denominator,
            })
        }
        Mode::Ttt => {
            let windows = sliding(n, seq_len, p.stride)?;
            check_single_pass(&windows, 1..n + 1)?;
            let cfg = FullTttConfig {
                seq_len: Some(p.ttt.seq_len.unwrap_or(seq_len)),
                ..p.ttt.clone()
            };
            let chunk_tokens = cfg.chunk_tokens;
            let peers = RankPeers { comm, device };
            let mut ttt = FullTtt::new(net, cfg)?;
            if world > 1 {
                ttt = ttt.across(&peers);
            }
            let mut ledger = Ledger::new(val, 1..n + 1)?;
            let chunks = score_first_chunks(
                &mut ledger,
                &windows,
                chunk_tokens,
                &mut ttt,
                &opts,
                &mut norm,
                &peers,
                &mut progress,
            )?;
            let updates = chunks.iter().filter(|c| c.updated).count() as u64;
            let mut report = ledger.finish()?;
            if world > 1 {
                report = merge_reports(report, &mut norm, 1..n + 1, &peers)?;
            }
            Ok(Outcome {
                report,
                chunks,
                updates: Some(updates),
                norm,
                denominator: Denominator::Raw,
            })
        }
        Mode::Lora => {
            let cfg = p.lora.clone();
            check_doc_chunks(val, &cfg)?;
            let docs: Vec<usize> = (0..val.docs.len()).collect();
            let mut lora = LoraTtt::new(net, cfg.clone())?;
            let mut ledger = Ledger::new(val, 1..n + 1)?;
            // On several ranks each takes every W-th batch of documents (a document adapts on its
            // own, so the split changes nothing but who computes it).
            let peers = RankPeers { comm, device };
            score_first_docs(
                &mut ledger,
                &docs,
                cfg.chunk,
                cfg.context,
                cfg.batch_docs,
                &mut lora,
                &opts,
                &mut norm,
                &peers,
                &mut progress,
            )?;
            let mut report = ledger.finish()?;
            let mut steps = [lora.steps as f64];
            if world > 1 {
                report = merge_reports(report, &mut norm, 1..n + 1, &peers)?;
                peers.sum(&mut steps)?;
            }
            Ok(Outcome {
                report,
                chunks: vec![],
                updates: Some(steps[0] as u64),
                norm,
                denominator: Denominator::Raw,
            })
        }
        Mode::Phased => {
            let cfg = p.lora.clone();
            check_doc_chunks(val, &cfg)?;
            let Some(first) = val.docs.first() else {
                bail!("phased TTT needs documents in the val split");
            };
            let bos = val.tokens[first.bos] as i64;
            let sgd = FullTttConfig {
                seq_len: Some(p.phased.sgd.seq_len.unwrap_or(seq_len)),
                ..p.phased.sgd.clone()
            };
            let boundaries = p.phased.boundaries(val.docs.len())?;
            let docs: Vec<usize> = (0..val.docs.len()).collect();
            let mut phased = PhasedTtt::new(net, cfg.clone(), sgd, bos)?;
            let mut ledger = Ledger::new(val, 1..n + 1)?;
            score_first_phased(
                &mut ledger,
                &docs,
                cfg.chunk,
                cfg.context,
                cfg.batch_docs,
                &boundaries,
                &mut phased,
                &opts,
                &mut norm,
                &mut progress,
            )?;
            Ok(Outcome {
                report: ledger.finish()?,
                chunks: vec![],
                updates: Some(phased.steps()),
                norm,
                denominator: Denominator::Raw,
            })
        }
    }
}

/// Proves, before any model runs, that the per-document chunk windows of `cfg` score every
/// document's targets exactly once.
fn check_doc_chunks(val: &ValSet, cfg: &LoraConfig) -> Result<()> {
    for d in &val.docs {
        check_single_pass(
            &doc_chunks(d.bos, d.end, cfg.chunk, cfg.context)?,
            d.targets(),
        )?;
    }
    Ok(())
}

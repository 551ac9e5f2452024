//! The ngram-eval stage: the seed idea of mixing a causal n-gram model with the network, done
//! validly, and a diagnosis of the invalid way it was first done.
//!
//! - `mix`: the network decoded from the artifact scores each target (flat or sliding windows); an
//!   interpolated Kneser–Ney model over the whole vocabulary, built only from val tokens already
//!   scored, is mixed in with a fixed or entropy-adaptive weight, so every evaluated distribution
//!   is a proper one (checked at sampled positions). Reports the mixture's and the network's BPB.
//! - `diagnose`: scores with the network alone and measures what the hashed two-table cache of
//!   REFERENCE.md §5.5 would claim, and the total mass of its implied distribution.
//!
//! Inputs: `artifact` (quantize-pack), `data` (tokenize). Outputs: `results.parquet`,
//! `summary.json`; headline as ttt-eval plus the n-gram settings.
//!
//! `mix` takes several ranks (`--nproc N` or torchrun): each scores a contiguous share of the
//! windows, its n-gram model first learning the val targets before its share (what one rank's
//! model would hold there), so every target gets one rank's mixture; the sums are merged over the
//! ranks (`pgolf_eval::peers`). `diagnose` runs on one rank.

mod params;

use anyhow::{bail, Result};
use pgolf_data::{list_shards, Split, TokenStream};
use pgolf_eval::guards::Normalization;
use pgolf_eval::ngram::{diagnose_pass, mix_pass, ClaimedCache, HashedCache, KneserNey, StyxCache};
use pgolf_eval::pass::PassOptions;
use pgolf_eval::peers::{merge_reports, share, Peers};
use pgolf_eval::report::{summarize, write_doc_results, write_summary, Denominator};
use pgolf_eval::schedule::{check_single_pass, flat, sliding};
use pgolf_eval::torch::{load_artifact_for_vocab, Net, RankPeers};
use pgolf_eval::{bpb::bits_per_byte, BpbSums, Ledger, ValSet, Window};
use pgolf_optim::Collective;
use pgolf_runtime::{describe, device_from_str};
use pgolf_store::progress::bar;
use pgolf_store::{files, Stage};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Instant;

use crate::params::{Mode, Params, Windows};

fn main() {
    let role = pgolf_dist::stage::launch_or_role("ngram-eval");
    pgolf_store::run_stage_as::<Params, _>("ngram-eval", env!("PGOLF_STAGE_IDENTITY"), role, run);
}

fn run(stage: &mut Stage<Params>) -> Result<()> {
    let p = stage.params.clone();
    p.validate()?;
    // One rank of several or alone; CUDA ranks use GPU LOCAL_RANK.
    let comm = pgolf_dist::from_env(device_from_str(&stage.device)?)?;
    let device = comm.device;
    let world = comm.world_size();
    stage.set_device(describe(device, world));
    let peers = RankPeers {
        comm: &comm,
        device,
    };
    if world > 1 && p.mode == Mode::Diagnose {
        bail!("mode diagnose on {world} ranks is not built yet: run it on one rank (mix takes several)");
    }
    let data_dir = stage.input_dir("data")?.to_path_buf();

    // 1. The val stream and the network exactly as the artifact decodes.
    let val = ValSet::load(&data_dir)?;
    let (mut net, cfg) = load_artifact_for_vocab(
        stage.input_dir("artifact")?,
        device,
        p.precision,
        p.compute,
        val.lut.vocab_size(),
    )?;
    net.gpt.set_formulation(p.formulation, device)?;
    // How it computes (not the device: that is the manifest's device record).
    let numerics = format!(
        "{:?} compute, {} formulation",
        net.gpt.compute_kind(),
        net.gpt.formulation().name()
    );

    // 2. The network's windows, proved single-pass.
    let seq_len = p.seq_len.unwrap_or(cfg.seq_len);
    let n = val.n_targets();
    let windows = match p.windows {
        Windows::Flat => flat(n, seq_len)?,
        Windows::Sliding => sliding(n, seq_len, p.stride)?,
    };
    check_single_pass(&windows, 1..n + 1)?;
    if windows.len() < world {
        bail!(
            "{} windows cannot be shared by {world} ranks",
            windows.len()
        );
    }
    // This rank's contiguous share; its ledger expects exactly the targets it scores.
    let windows = &windows[share(windows.len(), comm.rank(), world)];
    let mine = windows[0].scored().start..windows[windows.len() - 1].scored().end;

    // 3. Score; the n-gram side learns each target only after it is recorded.
    let opts = PassOptions {
        batch_windows: p.batch_windows,
        probes: p.probes,
        entropy: false,
    };
    let mut norm = Normalization::default();
    let mut ledger = Ledger::new(&val, mine)?;
    let progress = bar(windows.len() as u64, "ngram");
    let clock = Instant::now();
    let mut extra = Map::new();
    extra.insert("seq_len".into(), json!(seq_len));
    extra.insert("numerics".into(), json!(numerics));
    extra.insert("windows".into(), json!(p.windows));
    if p.windows == Windows::Sliding {
        extra.insert("stride".into(), json!(p.stride));
    }
    let mut pass = Pass {
        ledger: &mut ledger,
        windows,
        net: &mut net,
        opts,
        norm: &mut norm,
        progress: &|k| progress.inc(k as u64),
        extra: &mut extra,
    };
    let side = match p.mode {
        Mode::Mix => score_mixed(&mut pass, &p, cfg.vocab_size, val.bos_id, &data_dir, &peers)?,
        Mode::Diagnose => diagnose_hashed_cache(&mut pass, &p, cfg.vocab_size, val.bos_id)?,
    };
    let seconds = clock.elapsed().as_secs_f64();
    progress.finish_and_clear();

    // 4. Judge and write. `val_bpb` is the valid number: the mixture (mix) or the network (diagnose).
    let mut report = ledger.finish()?;
    if world > 1 {
        report = merge_reports(report, &mut norm, 1..n + 1, &peers)?;
    }
    let summary = summarize(
        &val,
        &report,
        mode_name(p.mode),
        Denominator::Raw,
        &norm,
        Some(report.spans),
        seconds,
    )?;
    match side {
        Side::Mix(network_nll) => {
            extra.insert(
                "val_bpb_network".into(),
                json!(bits_per_byte(network_nll, summary.val_bytes)),
            );
        }
        Side::Diagnose(claimed_nll) => {
            extra.insert(
                "claimed_bpb_hashed_cache_invalid".into(),
                json!(bits_per_byte(claimed_nll, summary.val_bytes)),
            );
        }
    }
    write_doc_results(&stage.out_path(files::RESULTS), &val, &report)?;
    let summary = summary.to_json(extra)?;
    write_summary(&stage.out_path(files::SUMMARY), &summary)?;
    for (k, v) in summary {
        if !matches!(v, Value::Object(_)) {
            stage.headline(&k, v);
        }
    }
    Ok(())
}

/// One pass over the val windows, shared by both modes: the ledger every target is recorded in,
/// the network, the guards, and the summary's extra fields.
struct Pass<'a, 'v> {
    ledger: &'a mut Ledger<'v>,
    windows: &'a [Window],
    net: &'a mut Net,
    opts: PassOptions,
    norm: &'a mut Normalization,
    progress: &'a dyn Fn(usize),
    extra: &'a mut Map<String, Value>,
}

/// `mix`: the network mixed with a Kneser–Ney model of the already-scored val tokens (plus, if
/// asked, paid-for train tokens); the ledger records the mixture.
fn score_mixed(
    pass: &mut Pass,
    p: &Params,
    vocab: usize,
    bos: u16,
    data: &Path,
    peers: &dyn Peers,
) -> Result<Side> {
    let mut kn = KneserNey::new(p.order, vocab, bos)?;
    if p.train_tokens > 0 {
        learn_train_tokens(&mut kn, data, p.train_tokens, bos)?;
    }
    if let Some(earlier) = pass.ledger.earlier_shares() {
        kn.observe(&earlier)?;
    }
    let mut stats = mix_pass(
        pass.ledger,
        pass.windows,
        pass.net,
        &mut kn,
        p.weight,
        &pass.opts,
        pass.norm,
        pass.progress,
    )?;
    // Over the ranks: the network's sums and the mean weight; the model's size is the last
    // rank's, which has learned every target (as one rank's model).
    let mut sums = [
        stats.network.nll,
        stats.network.targets as f64,
        stats.network.lut_bytes as f64,
        stats.mean_lambda * stats.network.targets as f64,
    ];
    peers.sum(&mut sums)?;
    let mut entries = [kn.size() as f64];
    peers.max(&mut entries)?;
    stats.network = BpbSums {
        nll: sums[0],
        targets: sums[1] as u64,
        lut_bytes: sums[2] as u64,
    };
    if peers.world() > 1 {
        stats.mean_lambda = sums[3] / sums[1].max(1.0);
    }
    let extra = &mut *pass.extra;
    extra.insert("ngram_order".into(), json!(p.order));
    extra.insert("ngram_weight".into(), serde_json::to_value(p.weight)?);
    extra.insert("ngram_mean_weight".into(), json!(stats.mean_lambda));
    extra.insert("ngram_entries".into(), json!(entries[0] as u64));
    extra.insert("train_tokens".into(), json!(p.train_tokens));
    extra.insert(
        "validity".into(),
        json!(if p.train_tokens > 0 {
            "not a valid 16 MB score: the n-gram model counted train tokens whose bits are not paid for in the artifact"
        } else {
            "valid: the n-gram model holds only already-scored val tokens"
        }),
    );
    Ok(Side::Mix(stats.network.nll))
}

/// `diagnose`: the network alone in the ledger; what the hashed two-table cache would claim,
/// and the mass of its implied distribution, measured beside it.
fn diagnose_hashed_cache(pass: &mut Pass, p: &Params, vocab: usize, bos: u16) -> Result<Side> {
    let h = &p.hashed;
    let mut cache: Box<dyn ClaimedCache> = match h.variant {
        params::Variant::Generic => Box::new(HashedCache::new(
            h.max_order,
            h.bucket_bits,
            h.min_count,
            vocab,
            bos,
        )?),
        params::Variant::Styx => Box::new(StyxCache::new(
            h.max_order,
            h.bucket_bits,
            h.min_count,
            h.ranks,
        )?),
    };
    let opts = PassOptions {
        probes: p.probes.max(1),
        ..pass.opts
    };
    let d = diagnose_pass(
        pass.ledger,
        pass.windows,
        pass.net,
        cache.as_mut(),
        h.alpha,
        &opts,
        pass.norm,
        pass.progress,
    )?;
    let extra = &mut *pass.extra;
    extra.insert("hashed_cache".into(), serde_json::to_value(h)?);
    extra.insert("cache_hits".into(), json!(d.cache_hits));
    extra.insert("implied_mass_probes".into(), json!(d.mass_probes));
    extra.insert("implied_mass_mean".into(), json!(d.mass_mean));
    extra.insert("implied_mass_min".into(), json!(d.mass_min));
    extra.insert("implied_mass_max".into(), json!(d.mass_max));
    extra.insert("probe_claimed_nll".into(), json!(d.probe_claimed_nll));
    extra.insert("probe_normalized_nll".into(), json!(d.probe_normalized_nll));
    Ok(Side::Diagnose(d.claimed.nll))
}

/// What the side computation reports beside the ledger: Σ NLL of the network alone (mix) or of
/// the hashed cache's claims (diagnose).
enum Side {
    Mix(f64),
    Diagnose(f64),
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Mix => "mix",
        Mode::Diagnose => "diagnose",
    }
}

/// Counts the first `count` train tokens into the model (the optional, paid-for prior).
fn learn_train_tokens(kn: &mut KneserNey, dir: &Path, count: u64, bos: u16) -> Result<()> {
    let shards = list_shards(dir, Split::Train)?;
    if shards.is_empty() {
        bail!(
            "{}: train_tokens = {count} but the data has no train shards",
            dir.display()
        );
    }
    let mut stream = TokenStream::open(&shards)?;
    let mut left = count;
    while left > 0 {
        let take = left.min(1 << 20);
        kn.learn_sequence(&stream.take(take as usize));
        left -= take;
    }
    kn.reset_history(bos);
    Ok(())
}

//! Tests of the scoring passes and drivers with stand-in models (see `testing.rs`): coverage,
//! byte accounting, flat/sliding equivalences, score-before-update, and the guards.

use std::f64::consts::LN_2;

use crate::adapt::{score_first_chunks, score_first_docs, ChunkStep, StreamAdapt};
use crate::guards::{entropy_guard, Normalization};
use crate::ledger::{Ledger, LedgerReport, ScoredSpan};
use crate::ngram::{diagnose_pass, mix_pass, HashedCache, KneserNey, MixWeight};
use crate::pass::{score_windows, PassOptions};
use crate::peers::Alone;
use crate::schedule::{flat, sliding, Window};
use crate::scorer::{Request, Scorer, Scores};
use crate::testing::*;
use crate::valset::ValSet;

fn opts() -> PassOptions {
    PassOptions {
        batch_windows: 3,
        probes: 16,
        entropy: false,
    }
}

fn run_plain<S: Scorer>(
    val: &ValSet,
    windows: &[Window],
    scorer: &mut S,
) -> anyhow::Result<LedgerReport> {
    let mut ledger = Ledger::new(val, 1..val.tokens.len())?.keep_per_target();
    let mut norm = Normalization::default();
    score_windows(&mut ledger, windows, scorer, &opts(), &mut norm, |_| {})?;
    ledger.finish()
}

/// Per-target NLLs from target 1 on (position 0 is never a target).
fn per_target(r: &LedgerReport) -> &[f64] {
    &r.per_target.as_deref().unwrap()[1..]
}

#[test]
fn sliding_with_stride_equal_to_the_window_scores_like_flat() {
    let val = MarkovSource::new().valset(40, 7).unwrap();
    let n = val.n_targets();
    for len in [5, 16, 33] {
        let a = run_plain(&val, &flat(n, len).unwrap(), &mut ContextCounter).unwrap();
        let b = run_plain(&val, &sliding(n, len, len).unwrap(), &mut ContextCounter).unwrap();
        assert!(
            per_target(&a) == per_target(&b),
            "len {len}: sliding at stride = length differs from flat"
        );
        assert_eq!(a.total, b.total);
        // A shorter stride gives more context, so different (here: lower) scores.
        let c = run_plain(&val, &sliding(n, len, 2).unwrap(), &mut ContextCounter).unwrap();
        assert_eq!(c.total.targets, a.total.targets);
        assert_ne!(c.total.nll, a.total.nll);
    }
}

#[test]
fn every_schedule_scores_each_target_once_through_the_ledger() {
    for docs in [1, 3, 17] {
        let val = MarkovSource::new().valset(docs, docs as u64).unwrap();
        let n = val.n_targets();
        for len in [1, 2, 7, 64] {
            for stride in [1, 3, len] {
                if stride > len {
                    continue;
                }
                let r = run_plain(
                    &val,
                    &sliding(n, len, stride).unwrap(),
                    &mut SourceScorer(MarkovSource::new()),
                )
                .unwrap();
                assert_eq!(
                    r.total.targets, n as u64,
                    "docs={docs} len={len} stride={stride}"
                );
            }
        }
    }
}

#[test]
fn a_re_scoring_schedule_is_refused() {
    // Version A of §5.1: trailing windows re-score the tail.
    let val = MarkovSource::new().valset(10, 3).unwrap();
    let n = val.n_targets();
    let (len, stride) = (8, 4);
    let version_a: Vec<Window> = (0..n)
        .step_by(stride)
        .map(|ws| {
            let wlen = (ws + len).min(n) - ws;
            Window {
                start: ws,
                len: wlen,
                score_from: if ws == 0 {
                    0
                } else {
                    wlen.saturating_sub(stride)
                },
            }
        })
        .collect();
    let err = run_plain(&val, &version_a, &mut SourceScorer(MarkovSource::new()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("scored twice"), "{err}");
    // And a schedule that drops targets fails at the end.
    let mut short = flat(n, 8).unwrap();
    short.pop();
    let err = run_plain(&val, &short, &mut SourceScorer(MarkovSource::new()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("of") && err.contains("expected targets"),
        "{err}"
    );
}

/// Scores −ln(1/V) everywhere: BPB is then a function of the byte count alone.
struct Uniform(usize);

impl Scorer for Uniform {
    fn vocab_size(&self) -> usize {
        self.0
    }
    fn score(&mut self, batch: &[Request<'_>], _entropy: bool) -> anyhow::Result<Vec<Scores>> {
        let v = self.0;
        Ok(batch
            .iter()
            .map(|r| answer(r, false, |_| vec![1.0 / v as f64; v]))
            .collect())
    }
}

#[test]
fn bpb_on_hand_built_sequences_follows_the_formula() {
    // sp1024 pieces: boundary tokens (<s>, <unk>) and leading-space pieces, §2.2.
    let model_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/tokenizers/fineweb_1024_bpe.model");
    let model = pgolf_data::sp_model::ModelProto::read(&model_path).unwrap();
    let lut = pgolf_data::ByteLut::from_model(&model).unwrap();
    let id = |piece: &str| model.pieces.iter().position(|p| p.text() == piece).unwrap() as u16;
    // doc 0: "the cat" = <s> ▁the ▁c at → after BOS "▁the" is charged 3 (no space), "▁c" 2, "at" 2.
    // doc 1: "<unk> a" = <s> <unk> ▁ a → <unk> 0 bytes; "▁" after a boundary 0; "a" 1.
    // doc 2: " é" = <s> ▁ <0xC3> <0xA9> → "▁" after BOS 0, then two byte pieces.
    let docs: Vec<Vec<u16>> = vec![
        vec![1, id("▁the"), id("▁c"), id("at")],
        vec![1, id("<unk>"), id("▁"), id("a")],
        vec![1, id("▁"), id("<0xC3>"), id("<0xA9>")],
    ];
    let lut_bytes = [7u64, 1, 2];
    let raw_bytes = [7u64, 7, 3]; // the text's true UTF-8 counts: "the cat", "<unk> a"-ish, " é"
    let mut tokens = Vec::new();
    let mut table = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        table.push(pgolf_data::DocRecord {
            doc_id: format!("h{i}"),
            split: pgolf_data::Split::Val,
            token_offset: tokens.len() as u64,
            token_count: d.len() as u64,
            raw_bytes: Some(raw_bytes[i]),
            raw_bytes_source: Some(pgolf_data::RawBytesSource::Text),
            lut_bytes: lut_bytes[i],
            source_bits: None,
        });
        tokens.extend_from_slice(d);
    }
    let val = ValSet::new(tokens, &table, lut, 1).unwrap();
    let r = run_plain(&val, &flat(val.n_targets(), 5).unwrap(), &mut Uniform(1024)).unwrap();
    let n = val.n_targets() as f64; // 11 targets, the two next-BOS events included
    assert_eq!(n, 11.0);
    assert_eq!(r.total.lut_bytes, 10);
    assert_eq!(
        r.docs.iter().map(|d| d.lut_bytes).collect::<Vec<_>>(),
        vec![7, 1, 2]
    );
    assert_eq!(
        r.docs.iter().map(|d| d.targets).collect::<Vec<_>>(),
        vec![4, 4, 3]
    );
    let nll = n * 1024f64.ln();
    assert!((r.total.bpb_lut() - nll / (LN_2 * 10.0)).abs() < 1e-12);
    assert!(
        (crate::bpb::bits_per_byte(r.total.nll, val.raw_bytes().unwrap()) - nll / (LN_2 * 17.0))
            .abs()
            < 1e-12
    );
}

#[test]
fn the_true_source_passes_the_entropy_guard_on_every_path() {
    let src = MarkovSource::new();
    let val = src.valset(300, 11).unwrap();
    let n = val.n_targets();
    let mut norm = Normalization::default();
    for windows in [
        flat(n, 64).unwrap(),
        sliding(n, 64, 16).unwrap(),
        sliding(n, 7, 3).unwrap(),
    ] {
        let r = run_plain(&val, &windows, &mut SourceScorer(MarkovSource::new())).unwrap();
        let check = entropy_guard(&val, &r).unwrap().unwrap();
        assert_eq!(check.docs, 299, "all but the last document");
        // The true source's bits equal the source information exactly.
        assert!(
            (check.model_bits - check.source_bits).abs() < 1e-6,
            "{check:?}"
        );
    }
    // N-gram mixing with the source stays a distribution and cannot beat the source.
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let mut kn = KneserNey::new(3, VOCAB, BOS).unwrap();
    let weight = MixWeight::Entropy {
        min: 0.05,
        max: 0.5,
        center: 1.0,
        slope: 2.0,
    };
    mix_pass(
        &mut ledger,
        &sliding(n, 32, 8).unwrap(),
        &mut SourceScorer(MarkovSource::new()),
        &mut kn,
        weight,
        &opts(),
        &mut norm,
        |_| {},
    )
    .unwrap();
    let r = ledger.finish().unwrap();
    let check = entropy_guard(&val, &r).unwrap().unwrap();
    assert!(check.model_bits >= check.source_bits, "{check:?}");
    assert!(norm.probes > 10);
    // Score-first chunked adaptation and per-document adaptation.
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    score_first_chunks(
        &mut ledger,
        &sliding(n, 16, 4).unwrap(),
        50,
        &mut Memorizer::new(3),
        &opts(),
        &mut norm,
        &Alone,
        |_| {},
    )
    .unwrap();
    entropy_guard(&val, &ledger.finish().unwrap())
        .unwrap()
        .unwrap();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let docs: Vec<usize> = (0..val.docs.len()).collect();
    score_first_docs(
        &mut ledger,
        &docs,
        4,
        8,
        5,
        &mut Memorizer::new(2),
        &opts(),
        &mut norm,
        &Alone,
        |_| {},
    )
    .unwrap();
    entropy_guard(&val, &ledger.finish().unwrap())
        .unwrap()
        .unwrap();
}

#[test]
fn leaks_and_unnormalized_scores_are_caught() {
    let val = MarkovSource::new().valset(200, 5).unwrap();
    let n = val.n_targets();
    let windows = flat(n, 32).unwrap();
    // Peeking at the label: each row is a distribution, but the bits fall below the source's.
    let r = run_plain(&val, &windows, &mut Peeker(MarkovSource::new())).unwrap();
    let err = entropy_guard(&val, &r).unwrap_err().to_string();
    assert!(
        err.contains("reported fewer bits than the source entropy: leak or non-normalized scoring"),
        "{err}"
    );
    // Mass above 1: the probe catches it...
    let err = run_plain(&val, &windows, &mut Unnormalized(MarkovSource::new()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not normalized"), "{err}");
    // ...and without probes the entropy guard does.
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let no_probes = PassOptions {
        probes: 0,
        ..opts()
    };
    score_windows(
        &mut ledger,
        &windows,
        &mut Unnormalized(MarkovSource::new()),
        &no_probes,
        &mut Normalization::default(),
        |_| {},
    )
    .unwrap();
    let err = entropy_guard(&val, &ledger.finish().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fewer bits than the source entropy"), "{err}");
}

#[test]
fn score_first_chunks_never_let_a_memorizer_see_what_it_scores() {
    let val = random_valset(3000, 3000, 42);
    let n = val.n_targets();
    let windows = sliding(n, 24, 8).unwrap();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let mut mem = Memorizer::new(4);
    let rows = score_first_chunks(
        &mut ledger,
        &windows,
        100,
        &mut mem,
        &opts(),
        &mut Normalization::default(),
        &Alone,
        |_| {},
    )
    .unwrap();
    let r = ledger.finish().unwrap();
    // Contexts never repeat, so a legal order leaves the memorizer at exactly ln V per target.
    let uniform = (VOCAB as f64).ln();
    assert!(
        (r.total.nll / n as f64 - uniform).abs() < 1e-9,
        "{} vs {uniform}",
        r.total.nll / n as f64
    );
    assert_eq!(rows.len(), n.div_ceil(100));
    assert_eq!(rows.iter().map(|r| r.sums.targets).sum::<u64>(), n as u64);
    assert!(rows[..rows.len() - 1].iter().all(|r| r.updated) && !rows.last().unwrap().updated);
    assert!(!mem.memory[0].is_empty());

    // The check has teeth: the same memorizer trained on each chunk *before* scoring it (written
    // here by hand, outside the drivers) reports far fewer bits.
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let mut cheat = Memorizer::new(4);
    let mut norm = Normalization::default();
    for chunk in windows.chunks(12) {
        let lo = chunk[0].start;
        let hi = chunk.last().unwrap().scored().end;
        cheat.learn(0, &val.tokens[lo.saturating_sub(4)..hi]);
        score_windows(&mut ledger, chunk, &mut cheat, &opts(), &mut norm, |_| {}).unwrap();
    }
    let cheated = ledger.finish().unwrap();
    assert!(
        cheated.total.nll < 0.1 * r.total.nll,
        "update-then-score: {} vs {}",
        cheated.total.nll,
        r.total.nll
    );
}

#[test]
fn score_first_docs_never_let_a_memorizer_see_what_it_scores() {
    let val = random_valset(2000, 97, 9);
    let n = val.n_targets();
    let docs: Vec<usize> = (0..val.docs.len()).collect();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    score_first_docs(
        &mut ledger,
        &docs,
        10,
        30,
        4,
        &mut Memorizer::new(3),
        &opts(),
        &mut Normalization::default(),
        &Alone,
        |_| {},
    )
    .unwrap();
    let r = ledger.finish().unwrap();
    assert!((r.total.nll / n as f64 - (VOCAB as f64).ln()).abs() < 1e-9);
    assert!(r.spans > 0);
}

/// Target `t`'s token changed: every score before `t` must stay bit-identical (C1 + C3). An
/// update-before-score would let the change leak into earlier scores of its chunk.
fn assert_prefix_unchanged(run: impl Fn(&ValSet) -> LedgerReport, base: &ValSet, at: &[usize]) {
    let a = run(base);
    for &t in at {
        let mut tokens = base.tokens.clone();
        tokens[t] = if tokens[t] == 100 { 101 } else { 100 };
        let docs: Vec<pgolf_data::DocRecord> = base
            .docs
            .iter()
            .map(|d| pgolf_data::DocRecord {
                doc_id: d.id.clone(),
                split: pgolf_data::Split::Val,
                token_offset: d.bos as u64,
                token_count: (d.end.min(tokens.len()) - d.bos - usize::from(d.end < tokens.len()))
                    as u64,
                raw_bytes: d.raw_bytes,
                raw_bytes_source: d.raw_bytes.map(|_| pgolf_data::RawBytesSource::Text),
                lut_bytes: base
                    .lut
                    .sequence_bytes(&tokens[d.bos..d.end - usize::from(d.end < tokens.len())]),
                source_bits: None,
            })
            .collect();
        let changed = ValSet::new(tokens, &docs, base.lut.clone(), base.bos_id).unwrap();
        let b = run(&changed);
        let (pa, pb) = (
            a.per_target.as_ref().unwrap(),
            b.per_target.as_ref().unwrap(),
        );
        assert_eq!(
            &pa[1..t],
            &pb[1..t],
            "a score before target {t} changed when token {t} did"
        );
    }
}

/// A memorizer that also keeps unigram counts of what it learned, so every update shifts every
/// later prediction a little: any leak of a later token into an earlier score shows.
struct Smoothed {
    mem: Memorizer,
    counts: Vec<f64>,
}

impl Scorer for Smoothed {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> anyhow::Result<Vec<Scores>> {
        let z: f64 = self.counts.iter().sum();
        let uni: Vec<f64> = self.counts.iter().map(|c| c / z).collect();
        // A 50/50 mix of the memorizer and the learned unigram.
        let mut rows = Vec::with_capacity(batch.len());
        for req in batch {
            rows.push(answer(req, entropy, |ctx| {
                let m = self.mem.memory[req.slot]
                    .get(&ctx[ctx.len().saturating_sub(self.mem.k)..])
                    .copied();
                (0..VOCAB)
                    .map(|v| {
                        let pm = match m {
                            Some(t) if ctx.len() >= self.mem.k => {
                                if v == t as usize {
                                    0.99
                                } else {
                                    0.01 / (VOCAB - 1) as f64
                                }
                            }
                            _ => 1.0 / VOCAB as f64,
                        };
                        0.5 * pm + 0.5 * uni[v]
                    })
                    .collect()
            }));
        }
        Ok(rows)
    }
}

impl StreamAdapt for Smoothed {
    fn update(
        &mut self,
        span: crate::ledger::ScoredSpan<'_>,
        step: ChunkStep,
    ) -> anyhow::Result<()> {
        for &t in &span.prefix()[span.targets()] {
            self.counts[t as usize] += 1.0;
        }
        self.mem.update(span, step)
    }
}

#[test]
fn adaptive_scores_never_depend_on_later_tokens() {
    let base = random_valset(600, 600, 3);
    let n = base.n_targets();
    let run = |val: &ValSet| {
        let mut ledger = Ledger::new(val, 1..n + 1).unwrap().keep_per_target();
        let mut m = Smoothed {
            mem: Memorizer::new(2),
            counts: vec![1.0; VOCAB],
        };
        score_first_chunks(
            &mut ledger,
            &sliding(n, 16, 4).unwrap(),
            64,
            &mut m,
            &opts(),
            &mut Normalization::default(),
            &Alone,
            |_| {},
        )
        .unwrap();
        ledger.finish().unwrap()
    };
    // Inside a chunk, at its first and last target, and at the stream end.
    assert_prefix_unchanged(run, &base, &[70, 64, 128, 129, 599]);
}

#[test]
fn ngram_mixing_is_causal_and_normalized() {
    let base = random_valset(500, 120, 8);
    let n = base.n_targets();
    let run = |val: &ValSet| {
        let mut ledger = Ledger::new(val, 1..n + 1).unwrap().keep_per_target();
        let mut kn = KneserNey::new(3, VOCAB, BOS).unwrap();
        let mut norm = Normalization::default();
        mix_pass(
            &mut ledger,
            &sliding(n, 16, 4).unwrap(),
            &mut ContextCounter,
            &mut kn,
            MixWeight::Fixed { weight: 0.3 },
            &opts(),
            &mut norm,
            |_| {},
        )
        .unwrap();
        assert!(norm.probes >= 10 && norm.max_error < 1e-9, "{norm:?}");
        ledger.finish().unwrap()
    };
    assert_prefix_unchanged(run, &base, &[50, 121, 300]);
}

#[test]
fn ngram_mixing_helps_on_repetitive_text() {
    // A stream that repeats one random phrase: a network that ignores context (uniform) gains a lot
    // from the n-gram model, but never below the bits an oracle would need for the first copy.
    let mut rng = Rng(1);
    let phrase: Vec<u16> = (0..50).map(|_| 4 + rng.below(200) as u16).collect();
    let mut tokens = vec![BOS];
    for _ in 0..40 {
        tokens.extend_from_slice(&phrase);
    }
    let docs = vec![pgolf_data::DocRecord {
        doc_id: "rep".into(),
        split: pgolf_data::Split::Val,
        token_offset: 0,
        token_count: tokens.len() as u64,
        raw_bytes: Some(tokens.len() as u64 - 1),
        raw_bytes_source: Some(pgolf_data::RawBytesSource::Text),
        lut_bytes: tokens.len() as u64 - 1,
        source_bits: None,
    }];
    let val = ValSet::new(tokens, &docs, pgolf_data::ByteLut::byte260(), BOS).unwrap();
    let n = val.n_targets();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let mut kn = KneserNey::new(4, VOCAB, BOS).unwrap();
    let stats = mix_pass(
        &mut ledger,
        &flat(n, 64).unwrap(),
        &mut Uniform(VOCAB),
        &mut kn,
        MixWeight::Fixed { weight: 0.9 },
        &opts(),
        &mut Normalization::default(),
        |_| {},
    )
    .unwrap();
    let mixed = ledger.finish().unwrap();
    assert!(
        mixed.total.nll < 0.2 * stats.network.nll,
        "mix {} vs network {}",
        mixed.total.nll,
        stats.network.nll
    );
    // The first copy of the phrase is new information: at least 50·ln(200) nats minus the mixing.
    assert!(mixed.total.nll > 50.0 * (200f64).ln() * 0.9);
}

#[test]
fn the_hashed_cache_claims_too_few_bits_and_is_not_a_distribution() {
    let val = random_valset(4000, 4000, 77);
    let n = val.n_targets();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    // Few buckets: collisions everywhere, like 1M buckets on 62M tokens.
    let mut cache = HashedCache::new(5, 8, 2, VOCAB, BOS).unwrap();
    let o = PassOptions {
        probes: 200,
        ..opts()
    };
    let d = diagnose_pass(
        &mut ledger,
        &flat(n, 64).unwrap(),
        &mut Uniform(VOCAB),
        &mut cache,
        0.4,
        &o,
        &mut Normalization::default(),
        |_| {},
    )
    .unwrap();
    let r = ledger.finish().unwrap();
    // The network alone is uniform; the cache "beats" it on random tokens, which is impossible for
    // any normalized predictor…
    assert!(
        d.claimed.nll < r.total.nll * 0.9,
        "claimed {} vs network {}",
        d.claimed.nll,
        r.total.nll
    );
    // …because its implied mass is far above 1.
    assert!(
        d.mass_probes > 50 && d.mass_mean > 5.0 && d.mass_min > 1.0,
        "{d:?}"
    );
    assert!(d.probe_normalized_nll > d.probe_claimed_nll);
}

/// Ranks as threads of one process: `sum` leaves every rank's vector at a barrier and sums them in
/// rank order (as a collective does, without the network).
struct ThreadPeers {
    rank: usize,
    world: usize,
    slots: std::sync::Arc<(std::sync::Mutex<Vec<Vec<f64>>>, std::sync::Barrier)>,
}

impl crate::peers::Peers for ThreadPeers {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn sum(&self, v: &mut [f64]) -> anyhow::Result<()> {
        let (slots, barrier) = &*self.slots;
        slots.lock().unwrap()[self.rank] = v.to_vec();
        barrier.wait();
        for (i, x) in v.iter_mut().enumerate() {
            *x = slots.lock().unwrap().iter().map(|s| s[i]).sum();
        }
        barrier.wait();
        Ok(())
    }
    fn max(&self, _: &mut [f64]) -> anyhow::Result<()> {
        unreachable!("score_first_chunks only sums")
    }
}

#[test]
fn score_first_chunks_on_several_ranks_give_one_ranks_scores_and_state() {
    let val = std::sync::Arc::new(random_valset(900, 300, 5));
    let n = val.n_targets();
    let windows = sliding(n, 16, 4).unwrap();
    let smoothed = || Smoothed {
        mem: Memorizer::new(2),
        counts: vec![1.0; VOCAB],
    };
    let mut one = smoothed();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let rows_one = score_first_chunks(
        &mut ledger,
        &windows,
        64,
        &mut one,
        &opts(),
        &mut Normalization::default(),
        &Alone,
        |_| {},
    )
    .unwrap();
    let total_one = ledger.finish().unwrap().total;

    for world in [2, 3] {
        let slots = std::sync::Arc::new((
            std::sync::Mutex::new(vec![vec![]; world]),
            std::sync::Barrier::new(world),
        ));
        let ranks: Vec<_> = (0..world)
            .map(|rank| {
                let (val, windows, slots) = (val.clone(), windows.clone(), slots.clone());
                std::thread::spawn(move || {
                    let peers = ThreadPeers { rank, world, slots };
                    let mut m = smoothed();
                    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
                    let rows = score_first_chunks(
                        &mut ledger,
                        &windows,
                        64,
                        &mut m,
                        &opts(),
                        &mut Normalization::default(),
                        &peers,
                        |_| {},
                    )
                    .unwrap();
                    (ledger.finish().unwrap().total, rows, m.counts)
                })
            })
            .collect();
        let results: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
        let nll: f64 = results.iter().map(|r| r.0.nll).sum();
        let targets: u64 = results.iter().map(|r| r.0.targets).sum();
        assert_eq!(
            targets, total_one.targets,
            "{world} ranks: every target once"
        );
        assert!(
            (nll - total_one.nll).abs() <= 1e-12 * total_one.nll,
            "{world} ranks: {nll} vs {}",
            total_one.nll
        );
        for (rank, (_, rows, counts)) in results.iter().enumerate() {
            assert_eq!(
                counts, &one.counts,
                "rank {rank} of {world}: the adapted state"
            );
            assert_eq!(rows.len(), rows_one.len());
            for (a, b) in rows.iter().zip(&rows_one) {
                assert_eq!((a.sums.targets, a.updated), (b.sums.targets, b.updated));
                assert!((a.sums.nll - b.sums.nll).abs() <= 1e-12 * b.sums.nll.max(1.0));
            }
        }
    }
}

/// Per-document adaptation on 2 and 3 ranks (threads): the batches are shared out, the ranks'
/// ledgers agree that every target was scored once, and the sums are one rank's.
#[test]
fn score_first_docs_on_several_ranks_give_one_ranks_scores() {
    let val = std::sync::Arc::new(random_valset(2000, 97, 9));
    let n = val.n_targets();
    let run = move |val: &ValSet, peers: &dyn crate::peers::Peers| {
        let docs: Vec<usize> = (0..val.docs.len()).collect();
        let mut ledger = Ledger::new(val, 1..n + 1).unwrap();
        score_first_docs(
            &mut ledger,
            &docs,
            10,
            30,
            4,
            &mut Memorizer::new(3),
            &opts(),
            &mut Normalization::default(),
            peers,
            |_| {},
        )
        .unwrap();
        ledger.finish().unwrap()
    };
    let one = run(&val, &Alone);
    for world in [2, 3] {
        let slots = std::sync::Arc::new((
            std::sync::Mutex::new(vec![vec![]; world]),
            std::sync::Barrier::new(world),
        ));
        let ranks: Vec<_> = (0..world)
            .map(|rank| {
                let (val, slots) = (val.clone(), slots.clone());
                std::thread::spawn(move || run(&val, &ThreadPeers { rank, world, slots }))
            })
            .collect();
        let totals: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
        let nll: f64 = totals.iter().map(|r| r.total.nll).sum();
        let targets: u64 = totals.iter().map(|r| r.total.targets).sum();
        assert_eq!(
            targets, one.total.targets,
            "{world} ranks: every target once"
        );
        assert!(
            (nll - one.total.nll).abs() <= 1e-12 * one.total.nll,
            "{world} ranks: {nll} vs {}",
            one.total.nll
        );
        assert!(
            totals.iter().all(|r| r.total.targets > 0),
            "every rank took batches"
        );
    }
}

/// Phased adaptation's driver: a spy records every stream position it scores and every document
/// a phase hands it; each phase gets the first `boundary` documents of the pass (cumulative, in
/// processing order), all of them whole and already scored; bad boundaries are refused.
#[test]
fn phases_train_only_on_documents_already_scored() {
    use crate::adapt::{score_first_phased, DocAdapt, PhaseAdapt};
    use std::collections::HashSet;
    use std::ops::Range;

    struct Spy {
        base: usize,
        mem: Memorizer,
        scored: HashSet<usize>,
        phases: Vec<Vec<Range<usize>>>,
        unscored_seen: usize,
    }
    impl Scorer for Spy {
        fn vocab_size(&self) -> usize {
            self.mem.vocab_size()
        }
        fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> anyhow::Result<Vec<Scores>> {
            for r in batch {
                // The targets' stream positions, from where their slice starts in the stream.
                let first = (r.targets.as_ptr() as usize - self.base) / 2;
                self.scored.extend(first..first + r.targets.len());
            }
            self.mem.score(batch, entropy)
        }
    }
    impl DocAdapt for Spy {
        fn reset(&mut self, batch: usize, docs: usize) -> anyhow::Result<()> {
            self.mem.reset(batch, docs)
        }
        fn update(&mut self, spans: &[Option<ScoredSpan<'_>>]) -> anyhow::Result<()> {
            DocAdapt::update(&mut self.mem, spans)
        }
    }
    impl PhaseAdapt for Spy {
        fn phase(&mut self, docs: &[ScoredSpan<'_>], phase: usize) -> anyhow::Result<()> {
            assert_eq!(phase, self.phases.len());
            for d in docs {
                self.unscored_seen += d.targets().filter(|t| !self.scored.contains(t)).count();
            }
            self.phases.push(docs.iter().map(|d| d.targets()).collect());
            Ok(())
        }
    }

    let val = random_valset(2000, 97, 9);
    let n = val.n_targets();
    let docs: Vec<usize> = (0..val.docs.len()).collect();
    assert!(docs.len() >= 12, "{} documents", docs.len());
    let spy = || Spy {
        base: val.tokens.as_ptr() as usize,
        mem: Memorizer::new(3),
        scored: HashSet::new(),
        phases: vec![],
        unscored_seen: 0,
    };
    let mut spy_one = spy();
    let boundaries = [4, 8, 12];
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let phases = score_first_phased(
        &mut ledger,
        &docs,
        10,
        30,
        4,
        &boundaries,
        &mut spy_one,
        &opts(),
        &mut Normalization::default(),
        |_| {},
    )
    .unwrap();
    let report = ledger.finish().unwrap();
    assert_eq!(report.total.targets, n as u64);
    let spy_one = &spy_one;
    assert_eq!(phases, 3);
    assert_eq!(
        spy_one.unscored_seen, 0,
        "a phase saw targets before their scores"
    );
    for (k, phase) in spy_one.phases.iter().enumerate() {
        assert_eq!(phase.len(), boundaries[k], "phase {k}");
        // Cumulative: every phase starts with the documents of the one before.
        if k > 0 {
            assert_eq!(phase[..boundaries[k - 1]], spy_one.phases[k - 1][..]);
        }
        // Whole documents: each range is some document's targets.
        for r in phase {
            assert!(
                val.docs.iter().any(|d| d.targets() == *r),
                "{r:?} is not a document"
            );
        }
    }
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    let err = score_first_phased(
        &mut ledger,
        &docs,
        10,
        30,
        4,
        &[8, 4],
        &mut spy(),
        &opts(),
        &mut Normalization::default(),
        |_| {},
    );
    assert!(err.is_err());
}

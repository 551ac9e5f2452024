//! Tiny-model CPU tests of the libtorch scorer and the two TTT modes: scores match the model's
//! own NLL, distributions are normalized, and adaptation is score-first (an early chunk's scores
//! equal the unadapted model's; no score depends on a later token).

use pgolf_model::ModelConfig;
use tch::{Device, Tensor};

use super::*;
use crate::adapt::{score_first_chunks, score_first_docs};
use crate::guards::Normalization;
use crate::ledger::{Ledger, LedgerReport};
use crate::pass::{score_windows, PassOptions};
use crate::peers::Alone;
use crate::schedule::{doc_chunks, flat, sliding};
use crate::testing::{random_valset, MarkovSource, MarkovValSet};
use crate::valset::ValSet;

fn cfg() -> ModelConfig {
    ModelConfig {
        vocab_size: 260,
        num_layers: 2,
        model_dim: 32,
        num_heads: 4,
        num_kv_heads: 2,
        mlp_mult: 2,
        seq_len: 16,
        ..Default::default()
    }
}

fn weights(seed: u64) -> Vec<(String, Tensor)> {
    pgolf_testkit::tiny_weights(&cfg(), seed).unwrap()
}

fn net(seed: u64) -> Net {
    Net::from_tensors(&cfg(), &weights(seed), Device::Cpu, "test weights").unwrap()
}

fn opts() -> PassOptions {
    PassOptions {
        batch_windows: 4,
        probes: 8,
        entropy: true,
    }
}

#[test]
fn scores_are_the_models_nll_from_a_normalized_distribution() {
    let val = MarkovSource::new().valset(30, 2).unwrap();
    let n = val.n_targets();
    let mut model = net(1);
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap().keep_per_target();
    let mut norm = Normalization::default();
    score_windows(
        &mut ledger,
        &flat(n, 16).unwrap(),
        &mut model,
        &opts(),
        &mut norm,
        |_| {},
    )
    .unwrap();
    let r = ledger.finish().unwrap();
    assert!(norm.probes >= 4 && norm.max_error < 1e-5, "{norm:?}");
    // The first window, straight from the model.
    let x = Tensor::from_slice(
        &val.tokens[..16]
            .iter()
            .map(|&t| t as i64)
            .collect::<Vec<_>>(),
    )
    .view([1, 16]);
    let y = Tensor::from_slice(
        &val.tokens[1..17]
            .iter()
            .map(|&t| t as i64)
            .collect::<Vec<_>>(),
    )
    .view([1, 16]);
    let direct = Vec::<f32>::try_from(model.gpt.token_nll(&x, &y).flatten(0, -1)).unwrap();
    for (i, d) in direct.iter().enumerate() {
        assert!((r.per_target.as_ref().unwrap()[i + 1] - *d as f64).abs() < 1e-5);
    }
    // Wrong or missing tensors are named.
    let mut w = weights(1);
    w.pop();
    assert!(Net::from_tensors(&cfg(), &w, Device::Cpu, "a.pgq")
        .err()
        .unwrap()
        .to_string()
        .contains("a.pgq: missing tensor"));
}

fn full_ttt_run(val: &ValSet, freeze: usize) -> (LedgerReport, Vec<crate::adapt::ChunkRow>) {
    let n = val.n_targets();
    let cfg = FullTttConfig {
        chunk_tokens: 40,
        seq_len: Some(16),
        lr: 0.05,
        freeze_blocks: freeze,
        ..Default::default()
    };
    let mut ttt = FullTtt::new(net(3), cfg).unwrap();
    let mut ledger = Ledger::new(val, 1..n + 1).unwrap().keep_per_target();
    let rows = score_first_chunks(
        &mut ledger,
        &sliding(n, 16, 8).unwrap(),
        40,
        &mut ttt,
        &opts(),
        &mut Normalization::default(),
        &Alone,
        |_| {},
    )
    .unwrap();
    assert!(ttt.steps > 0);
    (ledger.finish().unwrap(), rows)
}

#[test]
fn full_ttt_scores_each_chunk_before_training_on_it() {
    let val = random_valset(200, 200, 5);
    let n = val.n_targets();
    let (adapted, rows) = full_ttt_run(&val, 0);
    assert_eq!(rows.len(), 5);
    let mut plain = Ledger::new(&val, 1..n + 1).unwrap().keep_per_target();
    score_windows(
        &mut plain,
        &sliding(n, 16, 8).unwrap(),
        &mut net(3),
        &opts(),
        &mut Normalization::default(),
        |_| {},
    )
    .unwrap();
    let plain = plain.finish().unwrap();
    let (a, p) = (adapted.per_target.unwrap(), plain.per_target.unwrap());
    // Chunk 0 (targets 1..41) is scored by the untouched model; later chunks by a trained one.
    assert_eq!(&a[1..41], &p[1..41]);
    assert_ne!(&a[41..81], &p[41..81]);
    // No score depends on a later token: change target 60 and compare everything before it.
    let mut tokens = val.tokens.clone();
    tokens[60] = if tokens[60] == 100 { 101 } else { 100 };
    let docs = vec![pgolf_data::DocRecord {
        doc_id: "r0".into(),
        split: pgolf_data::Split::Val,
        token_offset: 0,
        token_count: 200,
        raw_bytes: Some(199),
        raw_bytes_source: Some(pgolf_data::RawBytesSource::Text),
        lut_bytes: 199,
        source_bits: None,
    }];
    let changed = ValSet::new(tokens, &docs, pgolf_data::ByteLut::byte260(), 1).unwrap();
    let (b, _) = full_ttt_run(&changed, 0);
    assert_eq!(&a[1..60], &b.per_target.unwrap()[1..60]);
}

#[test]
fn frozen_blocks_stay_fixed() {
    let cfg = FullTttConfig {
        chunk_tokens: 40,
        seq_len: Some(16),
        lr: 0.05,
        freeze_blocks: 1,
        ..Default::default()
    };
    let mut ttt = FullTtt::new(net(4), cfg).unwrap();
    let before: Vec<(String, Tensor)> = ttt
        .net
        .gpt
        .named_parameters()
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().copy()))
        .collect();
    let val = random_valset(120, 120, 6);
    let n = val.n_targets();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap();
    score_first_chunks(
        &mut ledger,
        &flat(n, 16).unwrap(),
        40,
        &mut ttt,
        &opts(),
        &mut Normalization::default(),
        &Alone,
        |_| {},
    )
    .unwrap();
    for ((name, old), (_, new)) in before.iter().zip(ttt.net.gpt.named_parameters()) {
        let same = old.equal(&new.detach());
        assert_eq!(same, name.starts_with("blocks.0."), "{name}");
    }
}

fn lora_run(val: &ValSet, lr: f64) -> LedgerReport {
    lora_run_with(val, lr, 0.0)
}

fn lora_run_with(val: &ValSet, lr: f64, weight_decay: f64) -> LedgerReport {
    let n = val.n_targets();
    let cfg = LoraConfig {
        rank: 2,
        lr,
        chunk: 8,
        context: 16,
        batch_docs: 3,
        weight_decay,
        ..Default::default()
    };
    let mut ttt = LoraTtt::new(net(7), cfg).unwrap();
    let docs: Vec<usize> = (0..val.docs.len()).collect();
    let mut ledger = Ledger::new(val, 1..n + 1).unwrap().keep_per_target();
    let mut norm = Normalization::default();
    score_first_docs(
        &mut ledger,
        &docs,
        8,
        16,
        3,
        &mut ttt,
        &opts(),
        &mut norm,
        &Alone,
        |_| {},
    )
    .unwrap();
    assert!(norm.probes > 0 && norm.max_error < 1e-5);
    ledger.finish().unwrap()
}

#[test]
fn lora_ttt_is_doc_isolated_and_score_first() {
    let val = random_valset(300, 50, 8);
    let n = val.n_targets();
    // With lr 0 the adapters stay zero: exactly the base model on doc-isolated chunk windows.
    let frozen = lora_run(&val, 0.0);
    let mut plain = Ledger::new(&val, 1..n + 1).unwrap().keep_per_target();
    let windows: Vec<_> = val
        .docs
        .iter()
        .flat_map(|d| doc_chunks(d.bos, d.end, 8, 16).unwrap())
        .collect();
    score_windows(
        &mut plain,
        &windows,
        &mut net(7),
        &opts(),
        &mut Normalization::default(),
        |_| {},
    )
    .unwrap();
    let plain = plain.finish().unwrap();
    let (f, p) = (frozen.per_target.unwrap(), plain.per_target.unwrap());
    for t in 1..=n {
        assert!(
            (f[t] - p[t]).abs() < 1e-5,
            "target {t}: {} vs {}",
            f[t],
            p[t]
        );
    }
    // Training: each document's first chunk is the base model's; later chunks change.
    let adapted = lora_run(&val, 0.05).per_target.unwrap();
    for d in &val.docs {
        let first = d.bos + 1..(d.bos + 9).min(d.end);
        assert!(
            first.clone().all(|t| (adapted[t] - p[t]).abs() < 1e-5),
            "doc at {}",
            d.bos
        );
    }
    assert!((1..=n).any(|t| (adapted[t] - p[t]).abs() > 1e-4));
    // Changing a token affects no earlier score (within its document or elsewhere).
    let mut tokens = val.tokens.clone();
    tokens[120] = if tokens[120] == 100 { 101 } else { 100 };
    let docs: Vec<pgolf_data::DocRecord> = val
        .docs
        .iter()
        .map(|d| {
            let count = if d.end < tokens.len() {
                d.end - d.bos - 1
            } else {
                d.end - d.bos
            };
            pgolf_data::DocRecord {
                doc_id: d.id.clone(),
                split: pgolf_data::Split::Val,
                token_offset: d.bos as u64,
                token_count: count as u64,
                raw_bytes: None,
                raw_bytes_source: None,
                lut_bytes: val.lut.sequence_bytes(&tokens[d.bos..d.bos + count]),
                source_bits: None,
            }
        })
        .collect();
    let changed = ValSet::new(tokens, &docs, pgolf_data::ByteLut::byte260(), 1).unwrap();
    let b = lora_run(&changed, 0.05).per_target.unwrap();
    assert_eq!(&adapted[1..120], &b[1..120]);
}

/// Phased TTT on a tiny model: every target scored once from normalized distributions; before the
/// first boundary its scores are plain LoRA TTT's (nothing has changed the base model yet); the
/// phases change the base weights (SGD steps made) and so the later documents' scores.
#[test]
fn phased_ttt_scores_like_lora_until_its_first_phase_then_trains_the_model() {
    use crate::adapt::score_first_phased;
    let val = random_valset(300, 50, 8);
    let n = val.n_targets();
    let lora_cfg = LoraConfig {
        rank: 2,
        lr: 0.01,
        chunk: 8,
        context: 16,
        batch_docs: 3,
        ..Default::default()
    };
    let sgd = FullTttConfig {
        seq_len: Some(16),
        chunk_tokens: 32,
        lr: 0.05,
        micro_batch: 2,
        epochs: 1,
        ..Default::default()
    };
    let bos = val.tokens[val.docs[0].bos] as i64;
    let docs: Vec<usize> = (0..val.docs.len()).collect();
    let mut phased = PhasedTtt::new(net(7), lora_cfg, sgd, bos).unwrap();
    let mut ledger = Ledger::new(&val, 1..n + 1).unwrap().keep_per_target();
    let mut norm = Normalization::default();
    let boundaries = [3, 6];
    let phases = score_first_phased(
        &mut ledger,
        &docs,
        8,
        16,
        3,
        &boundaries,
        &mut phased,
        &opts(),
        &mut norm,
        |_| {},
    )
    .unwrap();
    assert!(norm.probes > 0 && norm.max_error < 1e-5);
    assert_eq!((phases, phased.phases), (2, 2));
    assert!(
        phased.sgd_steps > 0 && phased.lora_steps > 0,
        "{} {}",
        phased.sgd_steps,
        phased.lora_steps
    );
    let with_phases = ledger.finish().unwrap();
    let plain = lora_run(&val, 0.01);
    let (a, b) = (
        with_phases.per_target.as_ref().unwrap(),
        plain.per_target.as_ref().unwrap(),
    );
    // Batches run longest first: the batch of the 3 longest documents comes before any phase and
    // scores as plain LoRA TTT (the same adapters, seeded by the batch); the others come after
    // the first phase and differ. (6 documents: the second phase comes after the last batch.)
    let mut order: Vec<usize> = (0..val.docs.len()).collect();
    order.sort_by_key(|&d| {
        doc_chunks(val.docs[d].bos, val.docs[d].end, 8, 16)
            .unwrap()
            .len()
    });
    assert_eq!(order.len(), 6);
    for &d in &order[3..] {
        for t in val.docs[d].targets() {
            assert!(
                (a[t] - b[t]).abs() < 1e-9,
                "doc {d} target {t}: {} vs {}",
                a[t],
                b[t]
            );
        }
    }
    let later: Vec<usize> = order[..3].to_vec();
    assert!(
        later
            .iter()
            .flat_map(|&d| val.docs[d].targets())
            .any(|t| (a[t] - b[t]).abs() > 1e-6),
        "the phases changed nothing"
    );
}

/// AdamW's decay on the adapters (R0427's phased TTT: 0.5) changes the adapted scores; 0 is Adam.
#[test]
fn lora_weight_decay_is_decoupled_and_off_by_default() {
    let val = random_valset(300, 50, 8);
    let adam = lora_run(&val, 0.05);
    assert_eq!(adam.total.nll, lora_run_with(&val, 0.05, 0.0).total.nll);
    let adamw = lora_run_with(&val, 0.05, 5.0);
    assert!((adamw.total.nll - adam.total.nll).abs() > 1e-6);
    // With lr 0 nothing moves, decay included.
    assert_eq!(
        lora_run(&val, 0.0).total.nll,
        lora_run_with(&val, 0.0, 5.0).total.nll
    );
}

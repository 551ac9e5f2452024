//! Shards made with a text-transforming tokenizer (the CaseOps sp8192 model in ../shared): their
//! byte sidecars are validated and become the raw bytes, which equal the original text's UTF-8
//! bytes; without sidecars the lookup-table bytes (which charge each case operator 3 bytes) are
//! never used as a score. The CaseOps shards and sidecars are made here, by our own code: the
//! `lossless_caps_caseops_v1` transform and the per-piece original byte counts of REFERENCE.md §2.4.

mod tokenize_support;

use pgolf_data::{write_shard, RawBytesSource, Split};
use sentencepiece::SentencePieceProcessor;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use tokenize_support::*;

const TITLE: char = '\u{E001}';
const ALLCAPS: char = '\u{E002}';
const CAPNEXT: char = '\u{E003}';
const ESC: char = '\u{E004}';

fn caseops_model() -> PathBuf {
    pgolf_e2e::shared_material()
        .join("tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model")
}

/// `encode_lossless_caps_v2` over maximal ASCII-letter runs: lowercase words unchanged; TitleCase
/// → TITLE + lowercase; ALLCAPS (2 letters or more) → ALLCAPS + lowercase; other mixed case →
/// TITLE if the first letter is upper, then CAPNEXT before each later upper letter; a literal
/// operator character is escaped.
fn transform(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let upper: Vec<bool> = word.chars().map(|c| c.is_ascii_uppercase()).collect();
        let lower = word.to_ascii_lowercase();
        if upper.iter().all(|u| !u) {
            out.push_str(word);
        } else if upper.len() >= 2 && upper.iter().all(|&u| u) {
            out.push(ALLCAPS);
            out.push_str(&lower);
        } else {
            for (i, (c, &u)) in lower.chars().zip(&upper).enumerate() {
                if u {
                    out.push(if i == 0 { TITLE } else { CAPNEXT });
                }
                out.push(c);
            }
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
            continue;
        }
        flush(&mut word, &mut out);
        if [TITLE, ALLCAPS, CAPNEXT, ESC].contains(&c) {
            out.push(ESC);
        }
        out.push(c);
    }
    flush(&mut word, &mut out);
    out
}

/// Each piece's bytes of the original text: operators 0, an escaped character its UTF-8 length,
/// everything else its UTF-8 length (`surface_piece_original_byte_counts`).
fn original_bytes(surfaces: &[&str]) -> Vec<u16> {
    let mut escaped = false;
    surfaces
        .iter()
        .map(|s| {
            let mut n = 0;
            for c in s.chars() {
                if escaped {
                    n += c.len_utf8();
                    escaped = false;
                } else if c == ESC {
                    escaped = true;
                } else if ![TITLE, ALLCAPS, CAPNEXT].contains(&c) {
                    n += c.len_utf8();
                }
            }
            n as u16
        })
        .collect()
}

const TEXTS: [&str; 8] = [
    "The NASA Launch was seen by McDonald and his iPhone.",
    "In 1969 Apollo Eleven landed; NASA said The Eagle Has Landed.",
    "Berlin is the Capital of Germany, said Angela Merkel in an interview with the BBC.",
    "plain lowercase text with no capitals at all, just words and commas.",
    "OpenAI released GPT models; researchers at MIT and CMU tested them on WikiText.",
    "MacBook users and YouTube viewers met in San Francisco on a Sunday.",
    "The Quick Brown Fox Jumps Over The Lazy Dog, again and AGAIN.",
    "Rust crates like SentencePiece and Arrow read Parquet files for pgolf.",
];

/// Writes CaseOps shards of `TEXTS` (the first `val` documents are val) into `dir`, with a byte
/// sidecar beside the val shard when `sidecar`; returns the texts' UTF-8 bytes of the val split.
fn caseops_shards(dir: &Path, val: usize, sidecar: bool) -> u64 {
    let sp = SentencePieceProcessor::open(caseops_model()).unwrap();
    let bos = sp.bos_id().unwrap() as u16;
    let (mut val_tokens, mut val_counts, mut train_tokens) = (vec![], vec![], vec![]);
    let mut val_bytes = 0;
    for (i, text) in TEXTS.iter().enumerate() {
        let transformed = transform(text);
        let pieces = sp.encode(&transformed).unwrap();
        let surfaces: Vec<&str> = pieces
            .iter()
            .map(|p| &transformed[p.span.0 as usize..p.span.1 as usize])
            .collect();
        let tokens: Vec<u16> = std::iter::once(bos)
            .chain(pieces.iter().map(|p| p.id as u16))
            .collect();
        if i < val {
            val_bytes += text.len() as u64;
            val_counts.push(0);
            val_counts.extend(original_bytes(&surfaces));
            val_tokens.extend(tokens);
        } else {
            train_tokens.extend(tokens);
        }
    }
    fs::create_dir_all(dir).unwrap();
    write_shard(&dir.join("fineweb_val_000000.bin"), &val_tokens).unwrap();
    write_shard(&dir.join("fineweb_train_000000.bin"), &train_tokens).unwrap();
    if sidecar {
        write_shard(&dir.join("fineweb_val_bytes_000000.bin"), &val_counts).unwrap();
    }
    val_bytes
}

#[test]
fn the_sidecar_gives_the_original_bytes_and_the_lookup_tables_overstate_them() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    let text_bytes = caseops_shards(&shards, 5, true);
    let run = tokenize_ok(
        &[("shards", &shards), ("tokenizer", &caseops_model())],
        json!({}),
    );

    let val: Vec<_> = run
        .docs()
        .into_iter()
        .filter(|d| d.split == Split::Val)
        .collect();
    assert_eq!(val.len(), 5);
    assert!(val
        .iter()
        .all(|d| d.raw_bytes_source == Some(RawBytesSource::Sidecar)));
    let raw: u64 = val.iter().map(|d| d.raw_bytes.unwrap()).sum();
    assert_eq!(
        raw, text_bytes,
        "sidecar sum = raw UTF-8 bytes of the val texts"
    );
    for (doc, text) in val.iter().zip(TEXTS) {
        assert_eq!(doc.raw_bytes, Some(text.len() as u64), "{text}");
    }
    assert_eq!(run.headline("val_raw_bytes"), json!(text_bytes));
    assert_eq!(run.headline("val_raw_bytes_source"), json!("sidecar"));
    // The lookup tables charge every case operator its 3 UTF-8 bytes: the LUT figure is too big.
    let lut = run.headline("val_lut_bytes").as_u64().unwrap();
    assert!(lut > text_bytes + 30, "LUT {lut} vs text {text_bytes}");
    // The sidecar is linked beside its shard, for the stages that score per target.
    assert_eq!(
        fs::read(run.out().join("fineweb_val_bytes_000000.bin")).unwrap(),
        fs::read(shards.join("fineweb_val_bytes_000000.bin")).unwrap()
    );
}

#[test]
fn a_sidecar_that_does_not_match_its_shard_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    caseops_shards(&shards, 5, true);
    let side = shards.join("fineweb_val_bytes_000000.bin");
    let mut counts: Vec<u16> = pgolf_data::Shard::open(&side).unwrap().tokens().to_vec();
    counts.pop();
    write_shard(&side, &counts).unwrap();
    let run = tokenize(
        &[("shards", &shards), ("tokenizer", &caseops_model())],
        json!({}),
    );
    let err = run.error();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("fineweb_val_bytes_000000.bin") && err.contains("counts but its token shard"),
        "{err}"
    );
}

#[test]
fn without_sidecars_the_import_has_no_raw_bytes_and_nothing_scores_it() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    caseops_shards(&shards, 5, false);
    let run = tokenize_ok(
        &[("shards", &shards), ("tokenizer", &caseops_model())],
        json!({}),
    );
    assert!(run.headline("val_raw_bytes").is_null());
    assert!(run.headline("val_raw_bytes_source").is_null());

    // The counted evaluator refuses before it loads a model: no artifact is needed to see it.
    let out = std::process::Command::new(pgolf_e2e::bin("pgolf-evaluate"))
        .arg(dir.path().join("no-artifact"))
        .arg(run.out())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refusing to score"), "{err}");

    // The same data through pgolf-data's rule, which ttt-eval, ngram-eval and train use.
    let err = format!(
        "{:#}",
        pgolf_data::refuse_lookup_table_bytes(&run.out()).unwrap_err()
    );
    assert!(
        err.contains("refusing to score") && err.contains("CaseOps"),
        "{err}"
    );
    // A tokenizer that stands no piece for no text is not refused.
    let plain = tokenize_ok(&[("shards", &shards), ("tokenizer", &sp8192())], json!({}));
    pgolf_data::refuse_lookup_table_bytes(&plain.out()).unwrap();
}

fn sp8192() -> PathBuf {
    pgolf_e2e::shared_material().join("tokenizers/fineweb_8192_bpe.model")
}

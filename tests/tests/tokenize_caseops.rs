//! CaseOps through the tokenize stage: `transform: caseops` case-transforms each document
//! (`lossless_caps_caseops_v1`, pgolf-data's `caseops`) before the CaseOps sp8192 model in
//! ../shared encodes it, writes a byte sidecar beside each val shard (the official format), and
//! keeps the doc table's raw bytes the original text's — which the sidecar sums to, document by
//! document. Importing such shards (`--in shards`) validates the sidecars and takes the raw bytes
//! from them; without sidecars the lookup-table bytes (which charge each case operator 3 bytes)
//! are never used as a score.

mod tokenize_support;

use pgolf_data::caseops;
use pgolf_data::sidecar::{read_sidecar, sidecar_path};
use pgolf_data::{list_shards, write_shard, RawBytesSource, Shard, Split};
use sentencepiece::SentencePieceProcessor;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use tokenize_support::*;

fn caseops_model() -> PathBuf {
    pgolf_e2e::shared_material()
        .join("tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model")
}

fn sp8192() -> PathBuf {
    pgolf_e2e::shared_material().join("tokenizers/fineweb_8192_bpe.model")
}

const TEXTS: [&str; 8] = [
    "The NASA Launch was seen by McDonald and his iPhone.",
    "In 1969 Apollo Eleven landed; NASA said The Eagle Has Landed.",
    "  Berlin is the Capital of Germany, said Angela Merkel in an interview with the BBC. \n",
    "A literal operator \u{E001} and an escape \u{E004}, then ÉCOLE and Straße.",
    "OpenAI released GPT models; researchers at MIT and CMU tested them on WikiText.",
    "plain lowercase text with no capitals at all, just words and commas.",
    "The Quick Brown Fox Jumps Over The Lazy Dog, again and AGAIN.",
    "Rust crates like SentencePiece and Arrow read Parquet files for pgolf.",
];

/// `TEXTS` as a JSONL file in `dir`.
fn texts_file(dir: &Path) -> PathBuf {
    let path = dir.join("docs.jsonl");
    let lines: Vec<String> = TEXTS
        .iter()
        .map(|t| json!({ "text": t }).to_string())
        .collect();
    fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Tokenizes `TEXTS` with CaseOps (the first 5 are val), in shards of 40 tokens so that the val
/// split spans several shards and a document straddles two.
fn caseops_run(dir: &Path) -> Run {
    tokenize_ok(
        &[
            ("documents", &texts_file(dir)),
            ("tokenizer", &caseops_model()),
        ],
        json!({"val_docs": 5, "shard_tokens": 40, "transform": "caseops"}),
    )
}

/// A split's sidecar counts concatenated, each sidecar checked against its shard.
fn sidecar_counts(out: &Path) -> Vec<u32> {
    list_shards(out, Split::Val)
        .unwrap()
        .iter()
        .flat_map(|p| {
            let side = sidecar_path(p).unwrap();
            read_sidecar(&side, &Shard::open(p).unwrap(), 1).unwrap()
        })
        .collect()
}

#[test]
fn caseops_tokenization_writes_sidecars_that_sum_to_each_documents_original_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let run = caseops_run(dir.path());
    let out = run.out();
    let val_shards = list_shards(&out, Split::Val).unwrap();
    assert!(val_shards.len() >= 3, "{val_shards:?}");
    for p in &val_shards {
        assert!(sidecar_path(p).unwrap().is_file(), "{}", p.display());
    }
    assert!(!list_shards(&out, Split::Train).unwrap().is_empty());
    assert!(fs::read_dir(&out).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("train_bytes")));

    // The tokens are [BOS] + the model's encoding of the transformed text, as the records'
    // prepare_caseops_data.py makes them.
    let sp = SentencePieceProcessor::open(caseops_model()).unwrap();
    let mut expected = Vec::new();
    for text in &TEXTS[..5] {
        expected.push(1u16);
        let t = caseops::encode(text);
        expected.extend(sp.encode(&t).unwrap().iter().map(|p| p.id as u16));
    }
    assert_eq!(run.tokens(Split::Val), expected);

    // Per document: raw bytes are the original text's (from the text, not the sidecar), and the
    // sidecar sums to exactly them; the lookup tables charge more (3 bytes per operator).
    let counts = sidecar_counts(&out);
    assert_eq!(counts.len(), expected.len());
    let val: Vec<_> = run
        .docs()
        .into_iter()
        .filter(|d| d.split == Split::Val)
        .collect();
    assert_eq!(val.len(), 5);
    for (doc, text) in val.iter().zip(TEXTS) {
        assert_eq!(doc.raw_bytes, Some(text.len() as u64), "{text}");
        assert_eq!(doc.raw_bytes_source, Some(RawBytesSource::Text));
        let (a, b) = (
            doc.token_offset as usize,
            (doc.token_offset + doc.token_count) as usize,
        );
        let sum: u64 = counts[a..b].iter().map(|&c| c as u64).sum();
        assert_eq!(sum, text.len() as u64, "sidecar sum of {text:?}");
        assert_eq!(counts[a], 0, "BOS stands for no bytes");
        assert!(doc.lut_bytes > doc.raw_bytes.unwrap(), "{text}");
    }
    let raw: u64 = TEXTS[..5].iter().map(|t| t.len() as u64).sum();
    assert_eq!(run.headline("val_raw_bytes"), json!(raw));
    assert_eq!(run.headline("val_raw_bytes_source"), json!("text"));
    assert_eq!(run.headline("transform"), json!("lossless_caps_caseops_v1"));
    let lut = run.headline("val_lut_bytes").as_u64().unwrap();
    assert!(lut > raw + 30, "LUT {lut} vs raw {raw}");
}

/// The team's val documents (the first 50 of part-07, the wiki CPU profiles' val split): every
/// document's sidecar sum is its UTF-8 length, and the lookup tables overstate the bytes.
#[test]
fn on_wiki_val_documents_the_sidecar_sums_to_the_raw_utf8_bytes() {
    let run = tokenize_ok(
        &[
            ("val_documents", &wiki_part(7)),
            ("documents", &wiki_part(0)),
            ("tokenizer", &caseops_model()),
        ],
        json!({"val_docs": 50, "max_docs": 60, "transform": "caseops"}),
    );
    let counts = sidecar_counts(&run.out());
    let val: Vec<_> = run
        .docs()
        .into_iter()
        .filter(|d| d.split == Split::Val)
        .collect();
    assert_eq!(val.len(), 50);
    let mut raw = 0;
    for d in &val {
        let (a, b) = (
            d.token_offset as usize,
            (d.token_offset + d.token_count) as usize,
        );
        let sum: u64 = counts[a..b].iter().map(|&c| c as u64).sum();
        assert_eq!(Some(sum), d.raw_bytes, "document {}", d.doc_id);
        raw += sum;
    }
    let lut: u64 = val.iter().map(|d| d.lut_bytes).sum();
    assert_eq!(run.headline("val_raw_bytes"), json!(raw));
    let ratio = lut as f64 / raw as f64;
    assert!(ratio > 1.03, "LUT/raw bytes {ratio}");
}

#[test]
fn the_transform_is_checked_against_the_models_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let docs = texts_file(dir.path());
    // A CaseOps model with no transform named: which text it should see is not guessed.
    let err = tokenize(
        &[("documents", &docs), ("tokenizer", &caseops_model())],
        json!({"val_docs": 5}),
    )
    .error();
    assert!(
        err.contains("lossless_caps_caseops_v1_reserved.model")
            && err.contains("set the tokenize param `transform: caseops`"),
        "{err}"
    );
    // CaseOps with a model that has no operator pieces, or with none at all.
    let err = tokenize(
        &[("documents", &docs), ("tokenizer", &sp8192())],
        json!({"val_docs": 5, "transform": "caseops"}),
    )
    .error();
    assert!(
        err.contains("fineweb_8192_bpe.model") && err.contains("CaseOps operator pieces"),
        "{err}"
    );
    let err = tokenize(
        &[("documents", &docs)],
        json!({"val_docs": 5, "transform": "caseops"}),
    )
    .error();
    assert!(err.contains("byte260"), "{err}");
    // `none` encodes the text as it is (no sidecars): the raw bytes are still the text's.
    let plain = tokenize_ok(
        &[("documents", &docs), ("tokenizer", &caseops_model())],
        json!({"val_docs": 5, "transform": "none"}),
    );
    assert!(!plain.out().join("fineweb_val_bytes_000000.bin").exists());
    assert!(plain.headline("transform").is_null());
    // Imported shards are encoded already.
    let err = tokenize(
        &[("shards", &plain.out()), ("tokenizer", &caseops_model())],
        json!({"transform": "caseops"}),
    )
    .error();
    assert!(err.contains("do not apply to --in shards"), "{err}");
}

/// Official-layout CaseOps shards made by our tokenize stage, copied into `dir` (with their
/// sidecars, or without); returns the original UTF-8 bytes of the val texts.
fn caseops_shards(dir: &Path, sidecars: bool) -> u64 {
    let made = tempfile::tempdir().unwrap();
    let run = caseops_run(made.path());
    fs::create_dir_all(dir).unwrap();
    for e in fs::read_dir(run.out()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        let is_shard = name.starts_with("fineweb_") && name.ends_with(".bin");
        if is_shard && (sidecars || !name.contains("_bytes_")) {
            fs::copy(run.out().join(&name), dir.join(&name)).unwrap();
        }
    }
    TEXTS[..5].iter().map(|t| t.len() as u64).sum()
}

#[test]
fn imported_sidecars_give_the_original_bytes_and_the_lookup_tables_overstate_them() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    let text_bytes = caseops_shards(&shards, true);
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
    for (doc, text) in val.iter().zip(TEXTS) {
        assert_eq!(doc.raw_bytes, Some(text.len() as u64), "{text}");
    }
    assert_eq!(run.headline("val_raw_bytes"), json!(text_bytes));
    assert_eq!(run.headline("val_raw_bytes_source"), json!("sidecar"));
    let lut = run.headline("val_lut_bytes").as_u64().unwrap();
    assert!(lut > text_bytes + 30, "LUT {lut} vs text {text_bytes}");
    // The sidecars are linked beside their shards, for the stages that score per target.
    for p in list_shards(&shards, Split::Val).unwrap() {
        let side = sidecar_path(&p).unwrap();
        let name = side.file_name().unwrap();
        assert_eq!(
            fs::read(run.out().join(name)).unwrap(),
            fs::read(&side).unwrap()
        );
    }
}

#[test]
fn a_sidecar_that_does_not_match_its_shard_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    caseops_shards(&shards, true);
    let side = shards.join("fineweb_val_bytes_000000.bin");
    let mut counts: Vec<u16> = Shard::open(&side).unwrap().tokens().to_vec();
    counts.pop();
    write_shard(&side, &counts).unwrap();
    let run = tokenize(
        &[("shards", &shards), ("tokenizer", &caseops_model())],
        json!({}),
    );
    let err = run.error();
    assert!(
        err.contains("fineweb_val_bytes_000000.bin") && err.contains("counts but its token shard"),
        "{err}"
    );
}

#[test]
fn without_sidecars_the_import_has_no_raw_bytes_and_nothing_scores_it() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    caseops_shards(&shards, false);
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

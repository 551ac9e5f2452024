//! The synthetic corpus end to end: exact information content per document, the headline entropy
//! figures, determinism by seed, and lossless SentencePiece tokenization of its text.

mod tokenize_support;

use pgolf_data::{DocRecord, Split};
use serde_json::json;
use tokenize_support::*;

fn synthetic(seed: u64) -> serde_json::Value {
    json!({"synthetic": {"seed": seed, "docs": 400, "mean_doc_bytes": 200.0}, "val_docs": 150, "shard_tokens": 20_000})
}

fn doc_tokens<'a>(stream: &'a [u16], doc: &DocRecord) -> &'a [u16] {
    &stream[doc.token_offset as usize..(doc.token_offset + doc.token_count) as usize]
}

#[test]
fn byte260_synthetic_corpus_reports_its_source_entropy() {
    let run = tokenize_ok(&[], synthetic(7));
    let docs = run.docs();
    assert_eq!(docs.len(), 400);
    let (val, train) = (run.tokens(Split::Val), run.tokens(Split::Train));
    for doc in &docs {
        let stream = if doc.split == Split::Val {
            &val
        } else {
            &train
        };
        let text = byte260_text(doc_tokens(stream, doc));
        assert!(
            !text.is_empty()
                && !text.starts_with(' ')
                && !text.ends_with(' ')
                && !text.contains("  "),
            "{}: {text:?}",
            doc.doc_id
        );
        assert_eq!(doc.raw_bytes, Some(text.len() as u64));
        assert_eq!(doc.lut_bytes, text.len() as u64);
        assert!(doc.source_bits.unwrap() > 0.0);
    }

    let val_docs: Vec<&DocRecord> = docs.iter().filter(|d| d.split == Split::Val).collect();
    let bits: f64 = val_docs.iter().map(|d| d.source_bits.unwrap()).sum();
    let bytes: f64 = val_docs.iter().map(|d| d.raw_bytes.unwrap() as f64).sum();
    let reported = run.headline("source_entropy_bpb").as_f64().unwrap();
    assert!(
        (reported - bits / bytes).abs() < 1e-12,
        "{reported} vs {}",
        bits / bytes
    );

    // The empirical code length agrees with the analytic entropy rate within a few standard errors.
    let rate = run.headline("source_entropy_rate_bpb").as_f64().unwrap();
    let residual: f64 = val_docs
        .iter()
        .map(|d| (d.source_bits.unwrap() - rate * d.raw_bytes.unwrap() as f64).powi(2))
        .sum();
    let standard_error = residual.sqrt() / bytes;
    assert!(
        (reported - rate).abs() < 4.0 * standard_error,
        "empirical {reported} vs analytic {rate} (se {standard_error})"
    );

    assert_eq!(run.headline("vocab_size"), json!(260));
    assert_eq!(run.headline("val_docs"), json!(150));
    assert_eq!(run.headline("val_raw_bytes"), json!(bytes as u64));
    assert_eq!(run.headline("val_lut_bytes"), json!(bytes as u64));
}

#[test]
fn same_seed_gives_identical_outputs_and_another_seed_does_not() {
    let a = tokenize_ok(&[], synthetic(11));
    let b = tokenize_ok(&[], synthetic(11));
    let c = tokenize_ok(&[], synthetic(12));
    assert_eq!(a.manifest()["outputs"], b.manifest()["outputs"]);
    assert_eq!(a.manifest()["key"], b.manifest()["key"]);
    assert_ne!(a.tokens(Split::Val), c.tokens(Split::Val));
}

/// Decodes each document (BOS dropped) with Python's sentencepiece, one text per line.
const DECODE: &str = r#"
import sys, numpy as np, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
tokens = np.fromfile(sys.argv[2], dtype="<u2").tolist()
bounds = [int(x) for x in sys.argv[3].split(",")]
for start, end in zip(bounds[:-1], bounds[1:]):
    print(sp.decode(tokens[start + 1:end]))
"#;

#[test]
fn sentencepiece_tokenization_of_synthetic_text_is_lossless() {
    let bytes = tokenize_ok(&[], synthetic(5));
    let pieces = tokenize_ok(&[("tokenizer", &sp1024())], synthetic(5));
    let (byte_docs, piece_docs) = (bytes.docs(), pieces.docs());
    assert_eq!(byte_docs.len(), piece_docs.len());

    let val = pieces.tokens(Split::Val);
    let stream_file = pieces.dir.path().join("val.u16");
    std::fs::write(
        &stream_file,
        val.iter()
            .flat_map(|t| t.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let val_docs: Vec<&DocRecord> = piece_docs
        .iter()
        .filter(|d| d.split == Split::Val)
        .collect();
    let mut bounds: Vec<String> = val_docs
        .iter()
        .map(|d| d.token_offset.to_string())
        .collect();
    bounds.push(val.len().to_string());
    let decoded = run_python(
        DECODE,
        &[
            sp1024().to_str().unwrap(),
            stream_file.to_str().unwrap(),
            &bounds.join(","),
        ],
    );

    let byte_val = bytes.tokens(Split::Val);
    for ((decoded, piece_doc), byte_doc) in decoded.lines().zip(&val_docs).zip(&byte_docs) {
        let text = byte260_text(doc_tokens(&byte_val, byte_doc));
        assert_eq!(decoded, text, "{}", piece_doc.doc_id);
        // Same text and source bits whatever the tokenizer; the lookup tables count it exactly.
        assert_eq!(piece_doc.source_bits, byte_doc.source_bits);
        assert_eq!(piece_doc.raw_bytes, Some(text.len() as u64));
        assert_eq!(piece_doc.lut_bytes, text.len() as u64);
    }
    assert_eq!(decoded.lines().count(), val_docs.len());
    assert_eq!(
        pieces.headline("source_entropy_bpb"),
        bytes.headline("source_entropy_bpb")
    );
}

//! Acceptance: real Wikipedia text through sp1024 gives exactly the tokens of Python's
//! `sentencepiece` (BOS prepended), the UTF-8 lengths as raw bytes, and upstream's layout.

mod tokenize_support;

use pgolf_data::{ByteLut, Split};
use pgolf_store::files;
use serde_json::json;
use tokenize_support::*;

const DOCS: usize = 300;
const VAL_DOCS: usize = 100;

/// The same documents through the Python package: the token stream and per-doc ids and lengths.
const PYTHON: &str = r#"
import sys, json
import numpy as np, pyarrow.parquet as pq, sentencepiece as spm
path, model, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ids, texts = [], []
for batch in pq.ParquetFile(path).iter_batches(columns=["id", "text"], batch_size=512):
    ids += batch.column("id").to_pylist(); texts += batch.column("text").to_pylist()
    if len(texts) >= n: break
ids, texts = ids[:n], texts[:n]
sp = spm.SentencePieceProcessor(model_file=model)
stream = []
for pieces in sp.encode(texts):
    stream.append(sp.bos_id()); stream.extend(pieces)
np.array(stream, dtype="<u2").tofile(out + "/tokens.u16")
json.dump({"ids": ids, "bytes": [len(t.encode("utf-8")) for t in texts]}, open(out + "/docs.json", "w"))
"#;

#[test]
fn wiki_documents_match_python_sentencepiece() {
    let run = tokenize_ok(
        &[("documents", &wiki_part(7)), ("tokenizer", &sp1024())],
        json!({"max_docs": DOCS, "val_docs": VAL_DOCS, "shard_tokens": 200_000}),
    );
    let py = tempfile::tempdir().unwrap();
    run_python(
        PYTHON,
        &[
            wiki_part(7).to_str().unwrap(),
            sp1024().to_str().unwrap(),
            &DOCS.to_string(),
            py.path().to_str().unwrap(),
        ],
    );
    let expected: Vec<u16> = std::fs::read(py.path().join("tokens.u16"))
        .unwrap()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let expected_docs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(py.path().join("docs.json")).unwrap())
            .unwrap();

    // Val holds the first VAL_DOCS documents, train the rest; together they are Python's stream.
    let (val, train) = (run.tokens(Split::Val), run.tokens(Split::Train));
    assert_eq!([val.as_slice(), train.as_slice()].concat(), expected);
    assert!(
        pgolf_data::list_shards(&run.out(), Split::Train)
            .unwrap()
            .len()
            > 1,
        "shard_tokens should split train into several shards"
    );

    let docs = run.docs();
    assert_eq!(docs.len(), DOCS);
    for (i, doc) in docs.iter().enumerate() {
        assert_eq!(doc.doc_id, expected_docs["ids"][i].as_str().unwrap());
        assert_eq!(
            doc.raw_bytes,
            Some(expected_docs["bytes"][i].as_u64().unwrap()),
            "doc {i}"
        );
        assert_eq!(
            doc.split,
            if i < VAL_DOCS {
                Split::Val
            } else {
                Split::Train
            }
        );
        assert_eq!(doc.source_bits, None);
        let stream = if doc.split == Split::Val {
            &val
        } else {
            &train
        };
        let tokens =
            &stream[doc.token_offset as usize..(doc.token_offset + doc.token_count) as usize];
        assert_eq!(tokens[0], 1, "doc {i} starts with BOS");
        assert!(!tokens[1..].contains(&1), "doc {i} holds exactly one BOS");
    }

    // Byte accounting: lut bytes by the formula from the copied model; close to the raw bytes.
    let lut = ByteLut::from_tokenize_output(&run.out()).unwrap();
    for doc in &docs {
        let stream = if doc.split == Split::Val {
            &val
        } else {
            &train
        };
        let tokens =
            &stream[doc.token_offset as usize..(doc.token_offset + doc.token_count) as usize];
        assert_eq!(doc.lut_bytes, lut.sequence_bytes(tokens));
    }
    let raw: u64 = docs
        .iter()
        .filter(|d| d.split == Split::Val)
        .map(|d| d.raw_bytes.unwrap())
        .sum();
    let by_lut: u64 = docs
        .iter()
        .filter(|d| d.split == Split::Val)
        .map(|d| d.lut_bytes)
        .sum();
    assert!(
        (by_lut as f64 / raw as f64 - 1.0).abs() < 0.01,
        "lut {by_lut} vs raw {raw}"
    );

    assert_eq!(run.headline("vocab_size"), json!(1024));
    assert_eq!(run.headline("val_docs"), json!(VAL_DOCS));
    assert_eq!(run.headline("train_docs"), json!(DOCS - VAL_DOCS));
    assert_eq!(run.headline("val_tokens"), json!(val.len()));
    assert_eq!(run.headline("train_tokens"), json!(train.len()));
    assert_eq!(run.headline("val_raw_bytes"), json!(raw));
    assert_eq!(run.headline("val_lut_bytes"), json!(by_lut));
    assert!(
        run.headline("source_entropy_bpb").is_null(),
        "real text has no source entropy"
    );
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.out().join(files::TOKENIZER_INFO)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        info,
        json!({"kind": "sentencepiece", "vocab_size": 1024, "bos_id": 1})
    );
    assert_eq!(
        std::fs::read(run.out().join(files::TOKENIZER_MODEL)).unwrap(),
        std::fs::read(sp1024()).unwrap()
    );
}

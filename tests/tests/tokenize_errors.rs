//! Every guard of the tokenize stage: one line naming the file and the problem, exit 1, and no
//! output folder left behind.

mod tokenize_support;

use arrow::array::{ArrayRef, BinaryArray, Int64Array, StringArray};
use arrow::buffer::{Buffer, OffsetBuffer};
use pgolf_data::write_shard;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenize_support::*;

fn file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    path
}

fn error_for(inputs: &[(&str, &Path)], params: serde_json::Value) -> String {
    tokenize(inputs, params).error()
}

#[test]
fn parquet_without_a_text_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.parquet");
    write_parquet(
        &path,
        vec![
            ("id", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ("body", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ],
    );
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.ends_with("corpus.parquet: no `text` column (columns: id, body)"),
        "{err}"
    );
}

#[test]
fn parquet_text_that_is_null_or_not_a_string() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nulls.parquet");
    let text = StringArray::from(vec![Some("a"), Some("b"), None]);
    write_parquet(&path, vec![("text", Arc::new(text) as ArrayRef)]);
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.ends_with("nulls.parquet: row 2: `text` is null"),
        "{err}"
    );

    let path = dir.path().join("numbers.parquet");
    write_parquet(
        &path,
        vec![("text", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)],
    );
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.ends_with("numbers.parquet: column `text` holds INT64, not strings"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_in_parquet_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    // A string column whose second value is not UTF-8 (as a careless writer can produce) ...
    let path = dir.path().join("bad.parquet");
    let offsets = OffsetBuffer::new(vec![0i32, 2, 4].into());
    let text =
        unsafe { StringArray::new_unchecked(offsets, Buffer::from(b"ok\xff\xfe".to_vec()), None) };
    write_parquet(&path, vec![("text", Arc::new(text) as ArrayRef)]);
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.contains("bad.parquet: row 1: invalid UTF-8 in `text` at byte 0"),
        "{err}"
    );

    // ... and a binary column.
    let path = dir.path().join("binary.parquet");
    write_parquet(
        &path,
        vec![(
            "text",
            Arc::new(BinaryArray::from(vec![&b"fine"[..], &b"a\xc3"[..]])) as ArrayRef,
        )],
    );
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.contains("binary.parquet: row 1: invalid UTF-8 in `text` at byte 1"),
        "{err}"
    );
}

#[test]
fn jsonl_lines_that_are_not_json_or_lack_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        dir.path(),
        "docs.jsonl",
        b"{\"text\": \"fine\"}\n{\"text\": \"cut\n",
    );
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.contains("docs.jsonl:2: not a JSON object with a string `text` field"),
        "{err}"
    );

    let path = file(
        dir.path(),
        "docs.jsonl",
        b"{\"text\": \"fine\"}\n\n{\"body\": \"x\"}\n",
    );
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(err.ends_with("docs.jsonl:3: no `text` field"), "{err}");

    let path = file(dir.path(), "docs.jsonl", b"{\"text\": 5}\n");
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.contains("docs.jsonl:1: not a JSON object with a string `text` field"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_in_jsonl_and_text_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        dir.path(),
        "docs.jsonl",
        b"{\"text\": \"fine\"}\n{\"text\": \"\xff\"}\n",
    );
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.ends_with("docs.jsonl:2: invalid UTF-8 at byte 10 of the line"),
        "{err}"
    );

    let path = file(dir.path(), "note.txt", b"abc\xe2\x82");
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(err.ends_with("note.txt: invalid UTF-8 at byte 3"), "{err}");
}

#[test]
fn unsupported_document_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "docs.csv", b"text\nx\n");
    let err = error_for(&[("documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.ends_with("docs.csv: unsupported document file (expected .parquet, .jsonl or .txt)"),
        "{err}"
    );
}

/// A protobuf ModelProto with `n` NORMAL pieces (field 1, each a message with field 1 = the text).
fn model_with_pieces(n: usize) -> Vec<u8> {
    fn varint(mut v: usize, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut model = Vec::new();
    for i in 0..n {
        let text = format!("p{i}");
        let mut piece = vec![0x0a];
        varint(text.len(), &mut piece);
        piece.extend_from_slice(text.as_bytes());
        model.push(0x0a);
        varint(piece.len(), &mut model);
        model.extend_from_slice(&piece);
    }
    model
}

#[test]
fn tokenizer_vocab_too_large_for_u16_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = file(dir.path(), "huge.model", &model_with_pieces(65_537));
    let docs = file(dir.path(), "a.txt", b"x");
    let err = error_for(
        &[("documents", &docs), ("tokenizer", &model)],
        json!({"val_docs": 1}),
    );
    assert!(
        err.ends_with(
            "huge.model: vocab of 65537 pieces does not fit u16 shard tokens (at most 65536)"
        ),
        "{err}"
    );
}

#[test]
fn tokenizer_file_that_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = file(dir.path(), "junk.model", b"\xff\xff\xff not a model");
    let docs = file(dir.path(), "a.txt", b"x");
    let err = error_for(
        &[("documents", &docs), ("tokenizer", &model)],
        json!({"val_docs": 1}),
    );
    assert!(
        err.contains("junk.model: not a SentencePiece model"),
        "{err}"
    );
}

fn shard_folder(val: &[u16]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_shard(&dir.path().join("fineweb_val_000000.bin"), val).unwrap();
    write_shard(&dir.path().join("fineweb_train_000000.bin"), &[1, 10, 11]).unwrap();
    dir
}

#[test]
fn shard_token_outside_the_vocab() {
    let dir = shard_folder(&[1, 5, 2000]);
    let err = error_for(
        &[("shards", dir.path()), ("tokenizer", &sp1024())],
        json!({}),
    );
    assert!(
        err.ends_with(
            "fineweb_val_000000.bin: token 2 has id 2000, outside the tokenizer's vocab of 1024"
        ),
        "{err}"
    );
    let dir = shard_folder(&[1, 5, 260]);
    let err = error_for(&[("shards", dir.path())], json!({}));
    assert!(
        err.ends_with(
            "fineweb_val_000000.bin: token 2 has id 260, outside the tokenizer's vocab of 260"
        ),
        "{err}"
    );
}

#[test]
fn shard_with_bad_magic_version_or_size() {
    let dir = shard_folder(&[1, 5, 6]);
    let path = dir.path().join("fineweb_train_000000.bin");
    let good = fs::read(&path).unwrap();
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    let mut bad_version = good.clone();
    bad_version[4] = 7;
    let truncated = good[..good.len() - 1].to_vec();
    let cases = [
        (bad_magic, "bad magic"),
        (bad_version, "unsupported shard version 7"),
        (truncated, "does not match the header's 3 tokens"),
    ];
    for (bytes, expected) in cases {
        fs::write(&path, &bytes).unwrap();
        let err = error_for(&[("shards", dir.path())], json!({}));
        assert!(
            err.contains("fineweb_train_000000.bin: ") && err.contains(expected),
            "{err}"
        );
    }
}

#[test]
fn shard_stream_that_does_not_start_with_bos() {
    let dir = shard_folder(&[7, 1, 5]);
    let err = error_for(&[("shards", dir.path())], json!({}));
    assert!(
        err.ends_with(
            "fineweb_val_000000.bin: the val stream does not start with BOS (id 1); found id 7"
        ),
        "{err}"
    );
}

#[test]
fn val_docs_larger_than_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        dir.path(),
        "docs.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n",
    );
    let err = error_for(&[("documents", &path)], json!({"val_docs": 5}));
    assert!(
        err.ends_with("val_docs 5 is larger than the corpus (2 documents)"),
        "{err}"
    );
    let err = error_for(
        &[("val_documents", &path), ("documents", &path)],
        json!({"val_docs": 3}),
    );
    assert!(
        err.ends_with("val_docs 3 is larger than --in val_documents (2 documents)"),
        "{err}"
    );
    let err = error_for(&[("val_documents", &path)], json!({"val_docs": 1}));
    assert!(
        err.ends_with("--in val_documents needs --in documents (the train split)"),
        "{err}"
    );
    let err = error_for(&[], json!({"val_docs": 50, "synthetic": {"docs": 10}}));
    assert!(
        err.ends_with("val_docs 50 is larger than the corpus (synthetic.docs 10)"),
        "{err}"
    );
}

#[test]
fn sources_are_exclusive_and_params_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "a.txt", b"x");
    let err = error_for(
        &[("documents", &path)],
        json!({"synthetic": {"docs": 10}, "val_docs": 1}),
    );
    assert!(
        err.ends_with("choose one source: --in documents, --in shards or the `synthetic` param"),
        "{err}"
    );
    let err = error_for(&[], json!({}));
    assert!(err.contains("nothing to tokenize"), "{err}");
    let err = error_for(&[("documnets", &path)], json!({}));
    assert!(err.contains("unknown input `documnets`"), "{err}");
    let err = error_for(
        &[],
        json!({"synthetic": {"docs": 10, "sed": 3}, "val_docs": 1}),
    );
    assert!(err.contains("unknown field `sed`"), "{err}");
    let err = error_for(
        &[],
        json!({"synthetic": {"docs": 10, "mean_doc_bytes": 1.0}, "val_docs": 1}),
    );
    assert!(
        err.ends_with("synthetic.mean_doc_bytes 1 is outside [2, 10^7]"),
        "{err}"
    );
}

//! The document formats (JSONL, plain text, Parquet, folders of them) and the import of existing
//! shards, each checked token for token.

mod tokenize_support;

use arrow::array::{ArrayRef, LargeStringArray};
use pgolf_data::Split;
use pgolf_store::files;
use serde_json::json;
use std::fs;
use std::sync::Arc;
use tokenize_support::*;

fn byte260(text: &str) -> Vec<u16> {
    std::iter::once(1)
        .chain(text.bytes().map(|b| b as u16 + 4))
        .collect()
}

#[test]
fn jsonl_and_text_files_in_order_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("docs.jsonl");
    fs::write(
        &jsonl,
        "{\"id\": \"first\", \"text\": \"héllo\"}\n\n{\"text\": \"a\\nb\", \"extra\": 1}\n",
    )
    .unwrap();
    let txt = dir.path().join("note.txt");
    fs::write(&txt, "plain text\n").unwrap();

    let run = tokenize_ok(
        &[("documents", &jsonl), ("documents", &txt)],
        json!({"val_docs": 1}),
    );
    let docs = run.docs();
    let ids: Vec<&str> = docs.iter().map(|d| d.doc_id.as_str()).collect();
    assert_eq!(ids, ["first", "docs.jsonl:3", "note.txt"]);
    assert_eq!(run.tokens(Split::Val), byte260("héllo"));
    assert_eq!(
        run.tokens(Split::Train),
        [byte260("a\nb"), byte260("plain text\n")].concat()
    );
    let raw: Vec<Option<u64>> = docs.iter().map(|d| d.raw_bytes).collect();
    assert_eq!(raw, [Some(6), Some(3), Some(11)]);
    assert_eq!((docs[2].token_offset, docs[2].token_count), (4, 12));
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.out().join(files::TOKENIZER_INFO)).unwrap())
            .unwrap();
    assert_eq!(
        info,
        json!({"kind": "byte260", "vocab_size": 260, "bos_id": 1})
    );
    assert!(!run.out().join(files::TOKENIZER_MODEL).exists());
}

#[test]
fn a_folder_stands_for_its_document_files_in_name_order_and_max_docs_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("b.txt"), "second").unwrap();
    fs::write(dir.path().join("a.txt"), "first").unwrap();
    fs::write(
        dir.path().join("c.jsonl"),
        "{\"text\": \"third\"}\n{\"text\": \"fourth\"}\n",
    )
    .unwrap();
    fs::write(dir.path().join("README.md"), "not a document").unwrap();

    let run = tokenize_ok(
        &[("documents", dir.path())],
        json!({"val_docs": 1, "max_docs": 3}),
    );
    let ids: Vec<String> = run.docs().into_iter().map(|d| d.doc_id).collect();
    assert_eq!(ids, ["a.txt", "b.txt", "c.jsonl:1"]);
    assert_eq!(
        run.tokens(Split::Train),
        [byte260("second"), byte260("third")].concat()
    );
}

#[test]
fn parquet_documents_keep_string_ids_or_get_file_and_row() {
    let run = tokenize_ok(
        &[("documents", &wiki_part(7))],
        json!({"val_docs": 2, "max_docs": 3}),
    );
    let docs = run.docs();
    assert_eq!(docs.len(), 3);
    assert!(
        docs.iter().all(|d| d.doc_id.starts_with("enwiki2015-")),
        "{:?}",
        docs[0].doc_id
    );
    assert_eq!(
        run.headline("val_lut_bytes"),
        run.headline("val_raw_bytes"),
        "byte260 counts every byte"
    );

    // No `id` column, a large-string `text`: ids are file:row.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.parquet");
    write_parquet(
        &path,
        vec![(
            "text",
            Arc::new(LargeStringArray::from(vec!["x", "yz"])) as ArrayRef,
        )],
    );
    let run = tokenize_ok(&[("documents", &path)], json!({"val_docs": 1}));
    let ids: Vec<String> = run.docs().into_iter().map(|d| d.doc_id).collect();
    assert_eq!(ids, ["plain.parquet:0", "plain.parquet:1"]);
    assert_eq!(run.tokens(Split::Train), byte260("yz"));
}

#[test]
fn imported_shards_are_indexed_at_bos_and_linked_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("docs.jsonl");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            json!({"text": format!("Document number {i} says hello to the world, {i} times.")})
                .to_string()
        })
        .collect();
    fs::write(&jsonl, lines.join("\n")).unwrap();
    let original = tokenize_ok(
        &[("documents", &jsonl), ("tokenizer", &sp1024())],
        json!({"val_docs": 10, "shard_tokens": 150}),
    );

    // A plain folder of the shards, as the official downloader leaves them.
    let shards = dir.path().join("shards");
    fs::create_dir(&shards).unwrap();
    for entry in fs::read_dir(original.out()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            fs::copy(&path, shards.join(path.file_name().unwrap())).unwrap();
        }
    }

    let imported = tokenize_ok(&[("shards", &shards), ("tokenizer", &sp1024())], json!({}));
    assert_eq!(imported.tokens(Split::Val), original.tokens(Split::Val));
    assert_eq!(imported.tokens(Split::Train), original.tokens(Split::Train));
    let (a, b) = (original.docs(), imported.docs());
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(
            (a.split, a.token_offset, a.token_count, a.lut_bytes),
            (b.split, b.token_offset, b.token_count, b.lut_bytes)
        );
        assert_eq!(b.raw_bytes, None);
    }
    assert!(imported.headline("val_raw_bytes").is_null());
    assert_eq!(
        imported.headline("val_lut_bytes"),
        original.headline("val_lut_bytes")
    );
    assert_eq!(
        imported.headline("train_tokens"),
        original.headline("train_tokens")
    );
}

#[test]
fn val_documents_give_the_val_split_and_documents_the_train_split() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val.jsonl");
    fs::write(
        &val,
        "{\"text\": \"v0\"}\n{\"text\": \"v1\"}\n{\"text\": \"v2 unused\"}\n",
    )
    .unwrap();
    let train = dir.path().join("train.jsonl");
    fs::write(
        &train,
        "{\"text\": \"t0\"}\n{\"text\": \"t1\"}\n{\"text\": \"t2\"}\n",
    )
    .unwrap();

    let run = tokenize_ok(
        &[("val_documents", &val), ("documents", &train)],
        json!({"val_docs": 2, "max_docs": 4}),
    );
    let ids: Vec<String> = run.docs().into_iter().map(|d| d.doc_id).collect();
    assert_eq!(
        ids,
        [
            "val.jsonl:1",
            "val.jsonl:2",
            "train.jsonl:1",
            "train.jsonl:2"
        ]
    );
    assert_eq!(
        run.tokens(Split::Val),
        [byte260("v0"), byte260("v1")].concat()
    );
    assert_eq!(
        run.tokens(Split::Train),
        [byte260("t0"), byte260("t1")].concat()
    );
}

//! The CaseOps transform over real text: every document of the team's val part
//! (`../shared/data/enwiki2015/part-07.parquet`, 3,835 documents, 49.5 MB) decodes back to itself
//! byte for byte, and the decoder's byte count of the transformed text is the original's UTF-8
//! length (what the byte sidecars sum to).

use arrow::array::{Array, LargeStringArray, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pgolf_data::caseops::{self, OPERATORS};
use std::fs::File;
use std::path::Path;

fn val_part() -> std::path::PathBuf {
    // ../shared beside the workspace root, which is two levels above this crate.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/enwiki2015/part-07.parquet")
}

fn texts(path: &Path) -> Vec<String> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column_by_name("text").expect("a text column");
        if let Some(a) = column.as_any().downcast_ref::<StringArray>() {
            out.extend((0..a.len()).map(|i| a.value(i).to_string()));
        } else {
            let a = column
                .as_any()
                .downcast_ref::<LargeStringArray>()
                .expect("text is strings");
            out.extend((0..a.len()).map(|i| a.value(i).to_string()));
        }
    }
    out
}

#[test]
fn every_val_document_round_trips_and_keeps_its_byte_count() {
    let docs = texts(&val_part());
    assert_eq!(docs.len(), 3835, "part-07 holds 3,835 documents");
    let (mut changed, mut operators, mut bytes) = (0usize, 0usize, 0usize);
    for (i, text) in docs.iter().enumerate() {
        let t = caseops::encode(text);
        let back = caseops::decode(&t).unwrap_or_else(|e| panic!("document {i}: {e:#}"));
        assert!(back == *text, "document {i} does not round-trip");
        // One token for the whole text: its count is the original's UTF-8 length.
        let counts = caseops::original_byte_counts(&t, &[t.len()]).unwrap();
        assert_eq!(counts, [text.len() as u32], "document {i}");
        let ops = t.chars().filter(|c| OPERATORS.contains(c)).count();
        assert_eq!(
            t.len(),
            text.len() + 3 * ops,
            "document {i}: operators are 3 bytes each"
        );
        changed += (t != *text) as usize;
        operators += ops;
        bytes += text.len();
    }
    // Wikipedia capitalizes: nearly every document changes, at several operators per KB.
    assert!(
        changed > docs.len() * 9 / 10,
        "{changed} of {} changed",
        docs.len()
    );
    assert!(
        operators > bytes / 100,
        "{operators} operators over {bytes} bytes"
    );
}

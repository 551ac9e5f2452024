//! The per-document table `docs.parquet` (docs/STAGES.md): where each document sits in its split's
//! token stream and how many bytes of text it is. Evaluation takes its byte denominator from here.

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use crate::shard::Split;

/// One document of a tokenized corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct DocRecord {
    pub doc_id: String,
    pub split: Split,
    /// Position of the document's BOS in its split's concatenated token stream.
    pub token_offset: u64,
    /// Tokens of the document, BOS included.
    pub token_count: u64,
    /// UTF-8 bytes of the original text; `None` when unknown (imported official shards without
    /// a byte sidecar).
    pub raw_bytes: Option<u64>,
    /// Where `raw_bytes` came from; `None` exactly when `raw_bytes` is.
    pub raw_bytes_source: Option<RawBytesSource>,
    /// Bytes by the tokenizer lookup tables (REFERENCE.md §2.1–2.2).
    pub lut_bytes: u64,
    /// −log2 P(document) under the synthetic source; `None` for real text.
    pub source_bits: Option<f64>,
}

/// The provenance of a document's raw byte count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawBytesSource {
    /// The UTF-8 length of the document's text, which the tokenize stage read.
    Text,
    /// The sum of the official byte sidecar (`fineweb_val_bytes_*.bin`) over the document's tokens.
    Sidecar,
}

impl RawBytesSource {
    pub fn name(self) -> &'static str {
        match self {
            RawBytesSource::Text => "text",
            RawBytesSource::Sidecar => "sidecar",
        }
    }

    fn from_name(name: &str) -> Option<RawBytesSource> {
        match name {
            "text" => Some(RawBytesSource::Text),
            "sidecar" => Some(RawBytesSource::Sidecar),
            _ => None,
        }
    }
}

/// Optional on read: tables written before it existed have it absent, and their raw bytes (where
/// known) came from text.
const RAW_BYTES_SOURCE: &str = "raw_bytes_source";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("token_offset", DataType::UInt64, false),
        Field::new("token_count", DataType::UInt64, false),
        Field::new("raw_bytes", DataType::UInt64, true),
        Field::new("lut_bytes", DataType::UInt64, false),
        Field::new("source_bits", DataType::Float64, true),
        Field::new(RAW_BYTES_SOURCE, DataType::Utf8, true),
    ]))
}

/// Rows per record batch (and so the granularity of Parquet pages) when writing.
const BATCH_ROWS: usize = 64 * 1024;

/// Writes the table atomically: a reader never sees a half-written `docs.parquet`.
pub fn write_doc_table(path: &Path, docs: &[DocRecord]) -> Result<()> {
    let tmp = path.with_extension("parquet.partial");
    let result = write_to(&tmp, docs).and_then(|()| fs::rename(&tmp, path).map_err(Into::into));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: cannot write the doc table", path.display()))
}

fn write_to(path: &Path, docs: &[DocRecord]) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(path)?, schema(), Some(props))?;
    for chunk in docs.chunks(BATCH_ROWS) {
        writer.write(&to_batch(chunk)?)?;
    }
    if docs.is_empty() {
        writer.write(&to_batch(&[])?)?;
    }
    // into_inner writes the footer and hands back the file, so it can be synced before the rename.
    writer.into_inner()?.sync_all()?;
    Ok(())
}

fn to_batch(docs: &[DocRecord]) -> Result<RecordBatch> {
    let u64s = |f: fn(&DocRecord) -> u64| {
        Arc::new(UInt64Array::from_iter_values(docs.iter().map(f))) as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            docs.iter().map(|d| d.doc_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            docs.iter().map(|d| d.split.name()),
        )),
        u64s(|d| d.token_offset),
        u64s(|d| d.token_count),
        Arc::new(UInt64Array::from_iter(docs.iter().map(|d| d.raw_bytes))),
        u64s(|d| d.lut_bytes),
        Arc::new(Float64Array::from_iter(docs.iter().map(|d| d.source_bits))),
        Arc::new(StringArray::from_iter(
            docs.iter()
                .map(|d| d.raw_bytes_source.map(RawBytesSource::name)),
        )),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// Reads a doc table, checking that every column is present with its type and that required
/// columns hold no nulls.
pub fn read_doc_table(path: &Path) -> Result<Vec<DocRecord>> {
    read_from(path).with_context(|| format!("{}", path.display()))
}

fn read_from(path: &Path) -> Result<Vec<DocRecord>> {
    let file = File::open(path).context("cannot open the doc table")?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).context("not a Parquet file")?;
    for expected in schema().fields() {
        let Ok(found) = builder.schema().field_with_name(expected.name()) else {
            if expected.name() == RAW_BYTES_SOURCE {
                continue;
            }
            bail!("doc table has no `{}` column", expected.name());
        };
        if found.data_type() != expected.data_type() {
            bail!(
                "column `{}` has type {}, expected {}",
                expected.name(),
                found.data_type(),
                expected.data_type()
            );
        }
    }
    let mut docs =
        Vec::with_capacity(builder.metadata().file_metadata().num_rows().max(0) as usize);
    for batch in builder.build()? {
        let batch = batch?;
        let doc_id = column::<StringArray>(&batch, "doc_id", false)?;
        let split = column::<StringArray>(&batch, "split", false)?;
        let token_offset = column::<UInt64Array>(&batch, "token_offset", false)?;
        let token_count = column::<UInt64Array>(&batch, "token_count", false)?;
        let raw_bytes = column::<UInt64Array>(&batch, "raw_bytes", true)?;
        let lut_bytes = column::<UInt64Array>(&batch, "lut_bytes", false)?;
        let source_bits = column::<Float64Array>(&batch, "source_bits", true)?;
        let raw_source = match batch.column_by_name(RAW_BYTES_SOURCE) {
            Some(_) => Some(column::<StringArray>(&batch, RAW_BYTES_SOURCE, true)?),
            None => None,
        };
        for row in 0..batch.num_rows() {
            let split_name = split.value(row);
            let raw_bytes = raw_bytes.is_valid(row).then(|| raw_bytes.value(row));
            let raw_bytes_source = match raw_source {
                Some(sources) if sources.is_valid(row) => {
                    let name = sources.value(row);
                    Some(RawBytesSource::from_name(name).ok_or_else(|| {
                        anyhow!(
                            "row {}: raw_bytes_source {name:?} is neither text nor sidecar",
                            docs.len()
                        )
                    })?)
                }
                Some(_) => None,
                None => raw_bytes.map(|_| RawBytesSource::Text),
            };
            if raw_bytes.is_some() != raw_bytes_source.is_some() {
                bail!(
                    "row {}: raw_bytes and raw_bytes_source must both be set or both be null",
                    docs.len()
                );
            }
            docs.push(DocRecord {
                doc_id: doc_id.value(row).to_string(),
                split: Split::from_name(split_name).ok_or_else(|| {
                    anyhow!(
                        "row {}: split {split_name:?} is neither train nor val",
                        docs.len()
                    )
                })?,
                token_offset: token_offset.value(row),
                token_count: token_count.value(row),
                raw_bytes,
                raw_bytes_source,
                lut_bytes: lut_bytes.value(row),
                source_bits: source_bits.is_valid(row).then(|| source_bits.value(row)),
            });
        }
    }
    Ok(docs)
}

fn column<'a, A: Array + 'static>(
    batch: &'a RecordBatch,
    name: &str,
    nullable: bool,
) -> Result<&'a A> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| anyhow!("doc table has no `{name}` column"))?;
    if !nullable && array.null_count() > 0 {
        bail!("column `{name}` holds nulls");
    }
    array
        .as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| anyhow!("column `{name}` has type {}", array.data_type()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgolf_store::files;

    fn sample() -> Vec<DocRecord> {
        vec![
            DocRecord {
                doc_id: "a".into(),
                split: Split::Val,
                token_offset: 0,
                token_count: 5,
                raw_bytes: Some(12),
                raw_bytes_source: Some(RawBytesSource::Text),
                lut_bytes: 12,
                source_bits: Some(30.5),
            },
            DocRecord {
                doc_id: "b".into(),
                split: Split::Val,
                token_offset: 5,
                token_count: 2,
                raw_bytes: None,
                raw_bytes_source: None,
                lut_bytes: 3,
                source_bits: None,
            },
            DocRecord {
                doc_id: "c".into(),
                split: Split::Train,
                token_offset: 0,
                token_count: 9,
                raw_bytes: Some(20),
                raw_bytes_source: Some(RawBytesSource::Sidecar),
                lut_bytes: 19,
                source_bits: None,
            },
        ]
    }

    #[test]
    fn round_trips_with_nulls_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::DOC_TABLE);
        write_doc_table(&path, &sample()).unwrap();
        assert_eq!(read_doc_table(&path).unwrap(), sample());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write_doc_table(&path, &[]).unwrap();
        assert_eq!(read_doc_table(&path).unwrap(), vec![]);
    }

    #[test]
    fn names_a_missing_or_ill_typed_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        let write = |fields: Vec<Field>, columns: Vec<ArrayRef>| {
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
            let mut w =
                ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        };
        // All columns but lut_bytes.
        let full = to_batch(&sample()).unwrap();
        let keep: Vec<usize> = (0..full.num_columns())
            .filter(|&i| full.schema().field(i).name() != "lut_bytes")
            .collect();
        let partial = full.project(&keep).unwrap();
        write(
            partial
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect(),
            partial.columns().to_vec(),
        );
        let err = format!("{:#}", read_doc_table(&path).unwrap_err());
        assert!(
            err.contains("bad.parquet") && err.contains("no `lut_bytes` column"),
            "{err}"
        );

        // token_count as strings.
        let mut fields: Vec<Field> = full
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = full.columns().to_vec();
        fields[3] = Field::new("token_count", DataType::Utf8, false);
        columns[3] = Arc::new(StringArray::from(vec!["5", "2", "9"]));
        write(fields, columns);
        let err = format!("{:#}", read_doc_table(&path).unwrap_err());
        assert!(
            err.contains("column `token_count` has type Utf8, expected UInt64"),
            "{err}"
        );
    }

    #[test]
    fn a_table_from_before_the_source_column_reads_its_raw_bytes_as_from_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::DOC_TABLE);
        let full = to_batch(&sample()).unwrap();
        let old = full
            .project(&(0..full.num_columns() - 1).collect::<Vec<_>>())
            .unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), old.schema(), None).unwrap();
        w.write(&old).unwrap();
        w.close().unwrap();
        let sources: Vec<_> = read_doc_table(&path)
            .unwrap()
            .iter()
            .map(|d| d.raw_bytes_source)
            .collect();
        assert_eq!(
            sources,
            [Some(RawBytesSource::Text), None, Some(RawBytesSource::Text)]
        );
    }

    #[test]
    fn rejects_an_unknown_split_and_a_non_parquet_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::DOC_TABLE);
        let full = to_batch(&sample()).unwrap();
        let mut columns = full.columns().to_vec();
        columns[1] = Arc::new(StringArray::from(vec!["val", "test", "train"]));
        let batch = RecordBatch::try_new(schema(), columns).unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = format!("{:#}", read_doc_table(&path).unwrap_err());
        assert!(err.contains("row 1: split \"test\""), "{err}");

        fs::write(&path, b"doc_id,split\n").unwrap();
        let err = format!("{:#}", read_doc_table(&path).unwrap_err());
        assert!(
            err.contains(files::DOC_TABLE) && err.contains("not a Parquet file"),
            "{err}"
        );
    }
}

//! `tensors.parquet`: one row per tensor — what was done to it and what it costs.

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use pgolf_quant::TensorReport;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// A report line with the tensor's own compressed size (alone, same compressor).
pub struct Row<'a> {
    pub report: &'a TensorReport,
    pub compressed_bytes: u64,
}

pub fn write(path: &Path, rows: &[Row]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("shape", DataType::Utf8, false),
        Field::new("numel", DataType::UInt64, false),
        Field::new("dtype", DataType::Utf8, false),
        Field::new("scheme", DataType::Utf8, false),
        Field::new("bits", DataType::UInt8, true),
        Field::new("clip", DataType::Utf8, false),
        Field::new("mse", DataType::Float64, false),
        Field::new("rel_output_err", DataType::Float64, true),
        Field::new("stored_bytes", DataType::UInt64, false),
        Field::new("compressed_bytes", DataType::UInt64, false),
        Field::new("pruned", DataType::UInt64, false),
        Field::new("lqer", DataType::Utf8, false),
        Field::new("lqer_bytes", DataType::UInt64, false),
        Field::new("mse_before_lqer", DataType::Float64, true),
        Field::new("rel_output_err_before_lqer", DataType::Float64, true),
    ]));
    let r = |f: &dyn Fn(&TensorReport) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|x| f(x.report)),
        ))
    };
    let shape = |t: &TensorReport| {
        t.shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    let columns: Vec<ArrayRef> = vec![
        r(&|t| t.name.clone()),
        r(&shape),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter()
                .map(|x| x.report.shape.iter().product::<usize>() as u64),
        )),
        r(&|t| t.dtype.clone()),
        r(&|t| t.scheme.clone()),
        Arc::new(UInt8Array::from(
            rows.iter().map(|x| x.report.bits).collect::<Vec<_>>(),
        )),
        r(&|t| t.clip.clone()),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|x| x.report.mse),
        )),
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|x| x.report.rel_output_err)
                .collect::<Vec<_>>(),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|x| x.report.stored_bytes as u64),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|x| x.compressed_bytes),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|x| x.report.pruned as u64),
        )),
        r(&|t| t.lqer.clone()),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|x| x.report.lqer_bytes as u64),
        )),
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|x| x.report.mse_before_lqer)
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|x| x.report.rel_output_err_before_lqer)
                .collect::<Vec<_>>(),
        )),
    ];
    let what = || format!("{}: cannot write the table", path.display());
    let batch = RecordBatch::try_new(schema.clone(), columns).with_context(what)?;
    let file = File::create(path).with_context(what)?;
    let mut writer = ArrowWriter::try_new(file, schema, None).with_context(what)?;
    writer.write(&batch).with_context(what)?;
    writer.close().with_context(what)?;
    Ok(())
}

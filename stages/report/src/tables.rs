//! The Parquet tables the report reads: train's `metrics.parquet`, quantize-pack's
//! `tensors.parquet` and an evaluation's `results.parquet`. A table that is absent is "not
//! available" (said so in the report); one that is present but malformed is an error naming it.

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pgolf_store::files;
use std::fs::File;
use std::path::Path;

use crate::runs::Run;

/// A table as named columns of f64 (nulls kept as `None`) and of strings.
struct Table {
    path: String,
    batches: Vec<RecordBatch>,
}

impl Table {
    /// `Ok(None)` when the run has no such file.
    fn open(run: &Run, file: &str) -> Result<Option<Table>> {
        let path = run.dir.join(file);
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some(read(&path)?))
    }

    fn has(&self, column: &str) -> bool {
        self.batches
            .first()
            .is_some_and(|b| b.schema().index_of(column).is_ok())
    }

    fn f64s(&self, column: &str) -> Result<Vec<Option<f64>>> {
        let mut out = Vec::new();
        for batch in &self.batches {
            let array = batch
                .column_by_name(column)
                .ok_or_else(|| anyhow!("{}: no column {column}", self.path))?;
            let numbers = cast(array, &DataType::Float64)
                .map_err(|e| anyhow!("{}: column {column} is not numeric: {e}", self.path))?;
            let numbers = numbers.as_primitive::<Float64Type>();
            out.extend((0..numbers.len()).map(|i| numbers.is_valid(i).then(|| numbers.value(i))));
        }
        Ok(out)
    }

    /// A numeric column with no nulls.
    fn f64s_required(&self, column: &str) -> Result<Vec<f64>> {
        self.f64s(column)?
            .into_iter()
            .map(|v| v.ok_or_else(|| anyhow!("{}: column {column} has nulls", self.path)))
            .collect()
    }

    fn strings(&self, column: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for batch in &self.batches {
            let array = batch
                .column_by_name(column)
                .ok_or_else(|| anyhow!("{}: no column {column}", self.path))?;
            let text = cast(array, &DataType::Utf8)
                .map_err(|e| anyhow!("{}: column {column} is not text: {e}", self.path))?;
            let text = text.as_string::<i32>();
            out.extend((0..text.len()).map(|i| text.value(i).to_string()));
        }
        Ok(out)
    }
}

fn read(path: &Path) -> Result<Table> {
    let shown = path.display().to_string();
    let file = File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| anyhow!("{shown}: not a Parquet file: {e}"))?
        .build()
        .map_err(|e| anyhow!("{shown}: {e}"))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{shown}: unreadable: {e}"))?;
    Ok(Table {
        path: shown,
        batches,
    })
}

/// Train's per-step metrics (`metrics.parquet`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub step: Vec<f64>,
    pub train_loss: Vec<f64>,
    /// Training wall clock at that step, seconds.
    pub elapsed_s: Vec<f64>,
    /// Validation points: (step, elapsed s, val_loss, val_bpb).
    pub val: Vec<(f64, f64, f64, f64)>,
}

pub fn metrics(run: &Run) -> Result<Option<Metrics>> {
    let Some(t) = Table::open(run, files::METRICS)? else {
        return Ok(None);
    };
    let step = t.f64s_required("step")?;
    let train_loss = t.f64s("train_loss")?;
    let elapsed_s: Vec<f64> = t
        .f64s_required("elapsed_ms")?
        .into_iter()
        .map(|ms| ms / 1000.0)
        .collect();
    let (val_loss, val_bpb) = (t.f64s("val_loss")?, t.f64s("val_bpb")?);
    let mut m = Metrics::default();
    for i in 0..step.len() {
        // A row may be a validation-only row (no train loss at that step), so keep the two apart.
        if let Some(loss) = train_loss[i] {
            m.step.push(step[i]);
            m.train_loss.push(loss);
            m.elapsed_s.push(elapsed_s[i]);
        }
        if let (Some(l), Some(b)) = (val_loss[i], val_bpb[i]) {
            m.val.push((step[i], elapsed_s[i], l, b));
        }
    }
    if m.step.is_empty() && m.val.is_empty() {
        bail!("{}: no rows with a train or validation loss", t.path);
    }
    Ok(Some(m))
}

/// One row of quantize-pack's per-tensor report.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBytes {
    pub name: String,
    /// Its share of the compressed model file, bytes.
    pub compressed: f64,
    /// Before compression (the quantized payload), when reported.
    pub raw: Option<f64>,
}

/// quantize-pack's columns: the tensor's share of the compressed file and its stored (quantized,
/// uncompressed) size.
const COMPRESSED: &str = "compressed_bytes";
const STORED: &str = "stored_bytes";

pub fn tensors(run: &Run) -> Result<Option<Vec<TensorBytes>>> {
    let Some(t) = Table::open(run, files::TENSOR_TABLE)? else {
        return Ok(None);
    };
    let names = t.strings("name")?;
    let compressed = t.f64s_required(COMPRESSED)?;
    let raw = if t.has(STORED) {
        t.f64s(STORED)?
    } else {
        vec![None; names.len()]
    };
    Ok(Some(
        names
            .into_iter()
            .zip(compressed)
            .zip(raw)
            .map(|((name, compressed), raw)| TensorBytes {
                name,
                compressed,
                raw,
            })
            .collect(),
    ))
}

/// An evaluation's totals recomputed from its per-document/chunk table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResultSums {
    pub rows: usize,
    pub tokens: f64,
    pub bytes: f64,
    pub nll: f64,
}

impl ResultSums {
    pub fn val_bpb(&self) -> f64 {
        self.nll / (std::f64::consts::LN_2 * self.bytes)
    }

    pub fn val_loss(&self) -> f64 {
        self.nll / self.tokens
    }
}

/// Sums the eval's per-document table (`targets`, `nll`, and the byte column its headline
/// `byte_denominator` names: `raw_bytes` for "raw…", `lut_bytes` for "lut…").
pub fn results(run: &Run) -> Result<Option<ResultSums>> {
    let Some(t) = Table::open(run, files::RESULTS)? else {
        return Ok(None);
    };
    let denominator = run
        .headline("byte_denominator")
        .and_then(|v| v.as_str())
        .unwrap_or("raw");
    let bytes_column = if denominator.starts_with("lut") {
        "lut_bytes"
    } else {
        "raw_bytes"
    };
    let tokens = t.f64s_required("targets")?;
    let bytes = t.f64s_required(bytes_column)?;
    let nll = t.f64s_required("nll")?;
    // Sums in f64, as the evaluation itself accumulates them (REFERENCE.md §2.3).
    let sums = ResultSums {
        rows: tokens.len(),
        tokens: tokens.iter().sum(),
        bytes: bytes.iter().sum(),
        nll: nll.iter().sum(),
    };
    if sums.bytes <= 0.0 || sums.tokens <= 0.0 {
        bail!("{}: no scored targets or bytes", t.path);
    }
    Ok(Some(sums))
}

/// The group a tensor's bytes are charged to in the bytes chart: the embedding, attention and MLP
/// matrices, the output head, and everything else (norms, gates, skip weights, scales).
pub fn tensor_group(name: &str) -> &'static str {
    let parts: Vec<&str> = name.split('.').collect();
    if name.starts_with("tok_emb") || name.contains("embed") {
        "embedding"
    } else if name.starts_with("lm_head") {
        "head"
    } else if parts.contains(&"attn") {
        "attention"
    } else if parts.contains(&"mlp") {
        "mlp"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_groups_follow_upstream_names() {
        assert_eq!(tensor_group("tok_emb.weight"), "embedding");
        assert_eq!(tensor_group("blocks.3.attn.c_q.weight"), "attention");
        assert_eq!(tensor_group("blocks.3.mlp.fc.weight"), "mlp");
        assert_eq!(tensor_group("lm_head.weight"), "head");
        assert_eq!(tensor_group("skip_weights"), "other");
        assert_eq!(tensor_group("blocks.0.attn_scale"), "other");
    }
}

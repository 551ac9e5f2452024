//! The per-step metrics table (`metrics.parquet`, docs/STAGES.md): one row per optimizer step,
//! plus a step-0 row when the run validates before training (its train loss is null).

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub step: u64,
    pub train_loss: Option<f64>,
    pub lr_mul: f64,
    pub tokens_seen: u64,
    pub step_ms: f64,
    pub elapsed_ms: f64,
    pub val_loss: Option<f64>,
    pub val_bpb: Option<f64>,
}

#[derive(Default)]
pub struct Metrics {
    pub rows: Vec<Row>,
}

impl Metrics {
    /// Attaches a validation result to the row of `step` (creating the step-0 row).
    pub fn record_val(&mut self, step: u64, loss: f64, bpb: f64, lr_mul: f64) {
        if !matches!(self.rows.last(), Some(r) if r.step == step) {
            self.rows.push(Row {
                step,
                lr_mul,
                ..Default::default()
            });
        }
        let row = self.rows.last_mut().expect("a row");
        row.val_loss = Some(loss);
        row.val_bpb = Some(bpb);
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let f64s = |f: &dyn Fn(&Row) -> f64| {
            Arc::new(Float64Array::from_iter_values(self.rows.iter().map(f))) as ArrayRef
        };
        let opt = |f: &dyn Fn(&Row) -> Option<f64>| {
            Arc::new(Float64Array::from(
                self.rows.iter().map(f).collect::<Vec<_>>(),
            )) as ArrayRef
        };
        let u64s = |f: &dyn Fn(&Row) -> u64| {
            Arc::new(UInt64Array::from_iter_values(self.rows.iter().map(f))) as ArrayRef
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("step", DataType::UInt64, false),
            Field::new("train_loss", DataType::Float64, true),
            Field::new("lr_mul", DataType::Float64, false),
            Field::new("tokens_seen", DataType::UInt64, false),
            Field::new("step_ms", DataType::Float64, false),
            Field::new("elapsed_ms", DataType::Float64, false),
            Field::new("val_loss", DataType::Float64, true),
            Field::new("val_bpb", DataType::Float64, true),
        ]));
        let columns = vec![
            u64s(&|r| r.step),
            opt(&|r| r.train_loss),
            f64s(&|r| r.lr_mul),
            u64s(&|r| r.tokens_seen),
            f64s(&|r| r.step_ms),
            f64s(&|r| r.elapsed_ms),
            opt(&|r| r.val_loss),
            opt(&|r| r.val_bpb),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let file = std::fs::File::create(path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        let mut writer = ArrowWriter::try_new(file, schema, None)?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use pgolf_store::files;

    #[test]
    fn writes_the_documented_columns() {
        let mut m = Metrics::default();
        m.record_val(0, 6.9, 4.1, 1.0);
        m.rows.push(Row {
            step: 1,
            train_loss: Some(6.8),
            lr_mul: 1.0,
            tokens_seen: 64,
            step_ms: 2.0,
            elapsed_ms: 2.0,
            ..Default::default()
        });
        m.rows.push(Row {
            step: 2,
            train_loss: Some(6.5),
            lr_mul: 0.5,
            tokens_seen: 128,
            step_ms: 2.0,
            elapsed_ms: 4.0,
            ..Default::default()
        });
        m.record_val(2, 6.4, 3.9, 0.5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::METRICS);
        m.write(&path).unwrap();
        let mut reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let batch = reader.next().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 3);
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "step",
                "train_loss",
                "lr_mul",
                "tokens_seen",
                "step_ms",
                "elapsed_ms",
                "val_loss",
                "val_bpb"
            ]
        );
        let train = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert!(train.is_null(0) && train.value(2) == 6.5);
        let bpb = batch
            .column(7)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert!(bpb.is_null(1) && bpb.value(2) == 3.9 && bpb.value(0) == 4.1);
    }
}

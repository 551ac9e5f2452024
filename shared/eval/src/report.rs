//! What an evaluation writes: the per-document results table, the per-chunk table of adaptive
//! runs, and the summary (whose fields are also the manifest headline). The guards that judge a
//! finished ledger run here, so no summary exists for a run that failed one.
//!
//! The byte denominator is the original text's: the doc table's raw bytes, or the byte sidecars'
//! counts of the scored targets. Lookup-table bytes stand in only for a tokenizer that keeps the
//! text as it is (and for upstream-compatible truncated runs, as upstream counts them). When the
//! tokenizer transforms the text (pieces that stand for no text: CaseOps operators), the LUT
//! count is never the denominator: without raw bytes or sidecars the run is refused, and the LUT
//! figure appears only as `val_bpb_lut_rejected`, beside the ratio of the two byte counts.

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use serde::Serialize;
use serde_json::{Map, Value};
use std::f64::consts::LN_2;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::adapt::ChunkRow;
use crate::bpb::bits_per_byte;
use crate::guards::{bytes_check, entropy_guard, BytesCheck, EntropyCheck, Normalization};
use crate::ledger::LedgerReport;
use crate::valset::ValSet;

/// Which byte count the scored number divides by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denominator {
    /// Raw UTF-8 bytes of the documents (the default; exact because every target is scored).
    Raw,
    /// Lookup-table bytes of the scored targets (upstream-compatible truncated flat mode).
    UpstreamLut,
}

/// The summary of one evaluation; every scalar field goes into the manifest headline.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub mode: String,
    pub val_loss: f64,
    pub val_bpb: f64,
    /// The BPB against lookup-table bytes, a cross-check; absent when the tokenizer transforms the
    /// text (then it is `val_bpb_lut_rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_bpb_lut: Option<f64>,
    /// What the LUT bytes would give for a text-transforming tokenizer: no score (the mistake of
    /// REFERENCE.md §2.5.1), shown as a diagnostic only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_bpb_lut_rejected: Option<f64>,
    pub scored_targets: u64,
    pub expected_targets: u64,
    pub val_bytes: u64,
    pub val_lut_bytes: u64,
    /// `val_lut_bytes / val_bytes` when the denominator is the original text's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lut_to_raw_bytes: Option<f64>,
    pub byte_denominator: String,
    /// The tokenizer stands some pieces for no text (read from its model).
    pub tokenizer_transforms_text: bool,
    pub eval_seconds: f64,
    pub tokens_per_second: f64,
    pub guard_coverage: String,
    pub guard_normalization: String,
    pub guard_score_first: String,
    pub guard_entropy: String,
    pub guard_bytes: String,
    pub bytes_disagreement: Option<f64>,
    pub normalization_probes: u64,
    pub normalization_max_error: f64,
    #[serde(skip)]
    pub entropy: Option<EntropyCheck>,
    #[serde(skip)]
    pub bytes: Option<BytesCheck>,
}

/// Judges a finished ledger (entropy guard fails the run; the byte disagreement is flagged) and
/// computes the scored number. `updates` is the number of adaptive updates (None: not adaptive).
pub fn summarize(
    val: &ValSet,
    report: &LedgerReport,
    mode: &str,
    denominator: Denominator,
    norm: &Normalization,
    updates: Option<u64>,
    seconds: f64,
) -> Result<Summary> {
    let entropy = entropy_guard(val, report)?;
    let transforms = val.transforms_text();
    let whole = report.expected == (1..val.tokens.len());
    // The original text's bytes of exactly the expected targets (all of which the ledger proved
    // scored once): the documents' raw bytes for the whole stream, else the byte sidecars' counts.
    let raw = match whole {
        true => val.raw_bytes(),
        false => None,
    }
    .or_else(|| val.original_bytes_of(report.expected.clone()));
    let from_sidecar = !(whole && val.raw_bytes().is_some()) && raw.is_some();
    let lut = report.total.lut_bytes;
    let refuse = || -> Result<Summary> {
        bail!("refusing to score: the tokenizer transforms the text (pieces that stand for no text, e.g. CaseOps case operators) and the scored targets have neither raw text bytes nor byte sidecars; their lookup-table bytes ({lut}) are no denominator (REFERENCE.md §2.5)")
    };
    let (val_bytes, byte_denominator) = match (denominator, raw) {
        (Denominator::UpstreamLut, Some(raw)) if transforms => (
            raw,
            format!(
                "{} (upstream-compatible: truncated to whole windows; the original bytes of the scored targets)",
                if from_sidecar { "sidecar" } else { "raw" }
            ),
        ),
        (Denominator::UpstreamLut, _) if !transforms => (
            lut,
            "lut (upstream-compatible: truncated to whole windows)".to_string(),
        ),
        (Denominator::Raw, Some(raw)) if from_sidecar => (raw, "sidecar".to_string()),
        (Denominator::Raw, Some(raw)) => (raw, "raw".to_string()),
        (Denominator::Raw, None) if !transforms => (
            lut,
            "lut (raw UTF-8 bytes unknown for these shards)".to_string(),
        ),
        _ => return refuse(),
    };
    let original = byte_denominator.starts_with("raw") || byte_denominator.starts_with("sidecar");
    let bytes = raw.filter(|_| original).map(|raw| bytes_check(raw, lut));
    let lut_bpb = report.total.bpb_lut();
    let guard_bytes = match &bytes {
        Some(b) if transforms => format!(
            "pass: the tokenizer transforms the text, so the score divides by the original text's {} bytes ({}); its lookup tables charge {} bytes (×{:.4}), and their BPB {:.5} is rejected, no score",
            b.raw_bytes,
            if from_sidecar { "byte sidecar" } else { "doc table" },
            b.lut_bytes,
            b.lut_bytes as f64 / b.raw_bytes as f64,
            lut_bpb
        ),
        Some(b) if b.flagged => format!(
            "flagged: raw {} vs LUT {} bytes differ by {:.3}% (> 0.1%)",
            b.raw_bytes,
            b.lut_bytes,
            100.0 * b.disagreement
        ),
        Some(b) => format!(
            "pass: raw {} vs LUT {} bytes ({:.4}%)",
            b.raw_bytes,
            b.lut_bytes,
            100.0 * b.disagreement
        ),
        None => "n/a (raw bytes unknown or not all targets scored)".to_string(),
    };
    let guard_entropy = match &entropy {
        Some(e) => format!(
            "pass: {:.1} model bits ≥ {:.1} source bits − 30 over {} documents",
            e.model_bits, e.source_bits, e.docs
        ),
        None => "n/a (no synthetic source)".to_string(),
    };
    let guard_score_first = match updates {
        Some(n) => {
            format!("pass: {n} updates, each on ledger-granted spans of scored targets only")
        }
        None => "n/a (no adaptation)".to_string(),
    };
    let t = &report.total;
    Ok(Summary {
        mode: mode.to_string(),
        val_loss: t.val_loss(),
        val_bpb: bits_per_byte(t.nll, val_bytes),
        val_bpb_lut: (!transforms).then_some(lut_bpb),
        val_bpb_lut_rejected: transforms.then_some(lut_bpb),
        scored_targets: t.targets,
        expected_targets: report.expected.len() as u64,
        val_bytes,
        val_lut_bytes: lut,
        lut_to_raw_bytes: bytes
            .as_ref()
            .map(|b| b.lut_bytes as f64 / b.raw_bytes as f64),
        byte_denominator,
        tokenizer_transforms_text: transforms,
        eval_seconds: seconds,
        tokens_per_second: t.targets as f64 / seconds.max(1e-9),
        guard_coverage: format!(
            "pass: {} of {} targets scored exactly once",
            t.targets,
            report.expected.len()
        ),
        guard_normalization: norm.summary(),
        guard_score_first,
        guard_entropy,
        guard_bytes,
        bytes_disagreement: bytes.as_ref().map(|b| b.disagreement),
        normalization_probes: norm.probes,
        normalization_max_error: norm.max_error,
        entropy,
        bytes,
    })
}

impl Summary {
    /// The summary as a JSON object, with mode-specific `extra` fields merged in.
    pub fn to_json(&self, extra: Map<String, Value>) -> Result<Map<String, Value>> {
        let Value::Object(mut map) = serde_json::to_value(self)? else {
            unreachable!("a struct serializes to an object")
        };
        if let Some(e) = &self.entropy {
            map.insert("entropy_check".into(), serde_json::to_value(e)?);
        }
        map.extend(extra);
        Ok(map)
    }
}

/// Writes `summary.json`.
pub fn write_summary(path: &Path, summary: &Map<String, Value>) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(summary)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

fn write_batch(path: &Path, batch: RecordBatch) -> Result<()> {
    let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// `results.parquet`: one row per document with scored targets.
pub fn write_doc_results(path: &Path, val: &ValSet, report: &LedgerReport) -> Result<()> {
    let rows: Vec<usize> = (0..val.docs.len())
        .filter(|&i| report.docs[i].targets > 0)
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("token_offset", DataType::UInt64, false),
        Field::new("targets", DataType::UInt64, false),
        Field::new("nll", DataType::Float64, false),
        Field::new("bits", DataType::Float64, false),
        Field::new("lut_bytes", DataType::UInt64, false),
        Field::new("raw_bytes", DataType::UInt64, true),
        Field::new("source_bits", DataType::Float64, true),
    ]));
    let d = |i: &usize| &val.docs[*i];
    let s = |i: &usize| &report.docs[*i];
    // The original bytes of the targets scored: with byte sidecars exactly those (a truncated run
    // scores part of its last document), else the document's raw bytes.
    let raw_bytes = |i: &usize| {
        let t = d(i).targets();
        let scored = t.start.max(report.expected.start)..t.end.min(report.expected.end);
        match val.original_bytes {
            Some(_) => val.original_bytes_of(scored),
            None => d(i).raw_bytes,
        }
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|i| d(i).id.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|i| d(i).bos as u64),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|i| s(i).targets),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|i| s(i).nll),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|i| s(i).nll / LN_2),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|i| s(i).lut_bytes),
        )),
        Arc::new(UInt64Array::from_iter(rows.iter().map(raw_bytes))),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|i| d(i).source_bits),
        )),
    ];
    write_batch(path, RecordBatch::try_new(schema, columns)?)
}

/// `chunks.parquet`: one row per chunk of a chunked adaptive run.
pub fn write_chunk_results(path: &Path, chunks: &[ChunkRow]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("chunk", DataType::UInt64, false),
        Field::new("first_target", DataType::UInt64, false),
        Field::new("targets", DataType::UInt64, false),
        Field::new("nll", DataType::Float64, false),
        Field::new("lut_bytes", DataType::UInt64, false),
        Field::new("bpb_lut", DataType::Float64, false),
        Field::new("updated_after", DataType::Boolean, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(
            chunks.iter().map(|c| c.chunk as u64),
        )),
        Arc::new(UInt64Array::from_iter_values(
            chunks.iter().map(|c| c.first_target as u64),
        )),
        Arc::new(UInt64Array::from_iter_values(
            chunks.iter().map(|c| c.sums.targets),
        )),
        Arc::new(Float64Array::from_iter_values(
            chunks.iter().map(|c| c.sums.nll),
        )),
        Arc::new(UInt64Array::from_iter_values(
            chunks.iter().map(|c| c.sums.lut_bytes),
        )),
        Arc::new(Float64Array::from_iter_values(
            chunks.iter().map(|c| c.sums.bpb_lut()),
        )),
        Arc::new(BooleanArray::from(
            chunks.iter().map(|c| c.updated).collect::<Vec<_>>(),
        )),
    ];
    write_batch(path, RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::valset::tests::{tiny, tiny_parts};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use pgolf_store::files;

    #[test]
    fn raw_bytes_are_the_denominator_and_a_disagreement_is_flagged() {
        let (tokens, mut docs) = tiny_parts();
        docs[1].raw_bytes = Some(5); // "c d" as 5 raw bytes: LUT says 3
        let val = ValSet::new(tokens, &docs, pgolf_data::ByteLut::byte260(), 1).unwrap();
        let mut l = Ledger::new(&val, 1..9).unwrap();
        l.record(1, &[1.0; 8]).unwrap();
        let r = l.finish().unwrap();
        let s = summarize(
            &val,
            &r,
            "flat",
            Denominator::Raw,
            &Normalization::default(),
            None,
            2.0,
        )
        .unwrap();
        assert_eq!(
            (s.val_bytes, s.val_lut_bytes, s.byte_denominator.as_str()),
            (8, 6, "raw")
        );
        assert!((s.val_bpb - 8.0 / (LN_2 * 8.0)).abs() < 1e-12);
        assert!((s.val_bpb_lut.unwrap() - 8.0 / (LN_2 * 6.0)).abs() < 1e-12);
        assert_eq!(s.val_bpb_lut_rejected, None);
        assert_eq!(s.lut_to_raw_bytes, Some(6.0 / 8.0));
        assert!(s.guard_bytes.starts_with("flagged"), "{}", s.guard_bytes);
        assert_eq!(s.tokens_per_second, 4.0);
        let json = s.to_json(Map::new()).unwrap();
        assert_eq!(json["guard_score_first"], "n/a (no adaptation)");
    }

    #[test]
    fn truncated_runs_use_lut_bytes_and_results_tables_round_trip() {
        let val = tiny();
        let mut l = Ledger::new(&val, 1..7).unwrap();
        l.record(1, &[0.5; 6]).unwrap();
        let r = l.finish().unwrap();
        let s = summarize(
            &val,
            &r,
            "flat",
            Denominator::UpstreamLut,
            &Normalization::default(),
            Some(0),
            1.0,
        )
        .unwrap();
        assert_eq!((s.val_bytes, s.expected_targets), (5, 6));
        assert!(s.byte_denominator.starts_with("lut (upstream"));
        assert!(s.guard_bytes.starts_with("n/a"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::RESULTS);
        write_doc_results(&path, &val, &r).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2, "the third document has no scored target");
    }

    /// `tiny()` as if its tokenizer transformed the text (the flag the CaseOps model's piece table
    /// sets): LUT bytes 2, 3, 1 per document, raw bytes as given (fewer, as the CaseOps operators
    /// make them), and optionally a byte sidecar that agrees with them.
    fn transforming(raw: Option<[u64; 3]>, sidecar: bool) -> ValSet {
        let (tokens, mut docs) = tiny_parts();
        for (i, d) in docs.iter_mut().enumerate() {
            d.raw_bytes = raw.map(|r| r[i]);
            d.raw_bytes_source = raw.map(|_| pgolf_data::RawBytesSource::Text);
        }
        let mut lut = pgolf_data::ByteLut::byte260();
        lut.transforms_text = true;
        let val = ValSet::new(tokens.clone(), &docs, lut, 1).unwrap();
        if !sidecar {
            return val;
        }
        // One original byte per non-BOS token but the first of each document (an "operator").
        let counts: Vec<u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| (t != 1 && tokens[i - 1] != 1) as u32)
            .collect();
        val.with_original_bytes(counts).unwrap()
    }

    fn flat(val: &ValSet, targets: std::ops::Range<usize>, d: Denominator) -> Result<Summary> {
        let mut l = Ledger::new(val, targets.clone()).unwrap();
        l.record(targets.start, &vec![1.0; targets.len()]).unwrap();
        let r = l.finish().unwrap();
        summarize(val, &r, "flat", d, &Normalization::default(), None, 1.0)
    }

    #[test]
    fn a_text_transforming_tokenizer_is_scored_on_original_bytes_and_its_lut_figure_rejected() {
        // Raw bytes from the doc table (the text before the transform): 1, 2, 0 for LUT 2, 3, 1.
        let val = transforming(Some([1, 2, 0]), false);
        let s = flat(&val, 1..9, Denominator::Raw).unwrap();
        assert_eq!((s.val_bytes, s.val_lut_bytes), (3, 6));
        assert_eq!(s.byte_denominator, "raw");
        assert!((s.val_bpb - 8.0 / (LN_2 * 3.0)).abs() < 1e-12);
        assert_eq!(s.val_bpb_lut, None);
        let rejected = s.val_bpb_lut_rejected.unwrap();
        assert!(
            rejected < s.val_bpb,
            "LUT bytes overstate the denominator: a lower BPB"
        );
        assert!((rejected - 8.0 / (LN_2 * 6.0)).abs() < 1e-12);
        assert_eq!(s.lut_to_raw_bytes, Some(2.0));
        assert!(s.tokenizer_transforms_text);
        assert!(
            s.guard_bytes.starts_with("pass")
                && s.guard_bytes.contains("rejected")
                && s.guard_bytes.contains("×2.0000"),
            "{}",
            s.guard_bytes
        );
        let json = s.to_json(Map::new()).unwrap();
        assert!(!json.contains_key("val_bpb_lut"));
        assert_eq!(json["val_bpb_lut_rejected"], rejected);

        // No raw bytes and no sidecar: nothing is scored, whichever denominator was asked for.
        let val = transforming(None, false);
        for d in [Denominator::Raw, Denominator::UpstreamLut] {
            let err = flat(&val, 1..9, d).unwrap_err().to_string();
            assert!(err.starts_with("refusing to score"), "{err}");
        }
        // A tokenizer that keeps the text still falls back to its tables.
        let mut plain = transforming(None, false);
        plain.lut.transforms_text = false;
        let s = flat(&plain, 1..9, Denominator::Raw).unwrap();
        assert!(s
            .byte_denominator
            .starts_with("lut (raw UTF-8 bytes unknown"));
        assert_eq!(s.val_bpb_lut, Some(s.val_bpb));
    }

    #[test]
    fn a_truncated_run_of_a_transforming_tokenizer_divides_by_its_sidecar_bytes() {
        // Sidecar: "ab" → 0, 1 (+ next BOS 0); "c d" → 0, 1, 1 (+ 0); "e" → 0. Raw 1, 2, 0.
        let val = transforming(Some([1, 2, 0]), true);
        // Upstream-compatible truncation to targets 1..6: "ab" (1 byte) and "c " of "c d" (1).
        let s = flat(&val, 1..6, Denominator::UpstreamLut).unwrap();
        assert_eq!(s.val_bytes, 2);
        assert!(
            s.byte_denominator
                .starts_with("sidecar (upstream-compatible"),
            "{}",
            s.byte_denominator
        );
        assert_eq!(s.val_lut_bytes, 4);
        assert_eq!(s.lut_to_raw_bytes, Some(2.0));
        assert!(s.val_bpb_lut_rejected.unwrap() < s.val_bpb);
        // The results table carries the scored targets' original bytes, so the report's
        // recomputation from it matches the headline.
        let mut l = Ledger::new(&val, 1..6).unwrap();
        l.record(1, &[1.0; 5]).unwrap();
        let r = l.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::RESULTS);
        write_doc_results(&path, &val, &r).unwrap();
        let raw: u64 = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                let col = b.column_by_name("raw_bytes").unwrap();
                let col = col.as_any().downcast_ref::<UInt64Array>().unwrap();
                col.iter().map(|v| v.unwrap()).sum::<u64>()
            })
            .sum();
        assert_eq!(raw, 2);

        // A sidecar that does not sum to a document's raw bytes is refused on load.
        let (tokens, docs) = tiny_parts();
        let val = ValSet::new(tokens.clone(), &docs, pgolf_data::ByteLut::byte260(), 1).unwrap();
        let err = val
            .with_original_bytes(vec![0; tokens.len()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("says 2 raw bytes but the byte sidecar gives its targets 0"),
            "{err}"
        );
    }
}

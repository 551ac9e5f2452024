//! The byte denominator of each scored evaluation, judged against its data's tokenizer. When the
//! tokenizer transforms the text (pieces that stand for no text: CaseOps case operators, read from
//! the model's piece table, never from a file name), a BPB over lookup-table bytes is no score —
//! the mistake that made a published 1.0066 really ≈1.10 (REFERENCE.md §2.5.1). Such an
//! evaluation is refused: the report is not made. A valid one (raw bytes or byte sidecar) shows
//! its LUT figure only as a rejected diagnostic, with the ratio of the two byte counts.

use anyhow::{bail, Result};
use pgolf_data::ByteLut;

use crate::points::Point;
use crate::runs::{Run, Runs};

/// The LUT figure of a validly scored evaluation of text-transformed data, kept as a diagnostic.
#[derive(Debug, Clone)]
pub struct RejectedLut<'a> {
    /// The point's index.
    pub point: usize,
    pub run: &'a Run,
    /// What the evaluation would report against lookup-table bytes.
    pub lut_bpb: f64,
    /// The score: against the original text's bytes.
    pub val_bpb: f64,
    /// LUT bytes / original bytes.
    pub ratio: Option<f64>,
}

/// Whether the evaluation's data tokenizer transforms the text: from the tokenize run's model when
/// that run is among the inputs, else from the evaluation's own headline.
fn transforms_text(eval: &Run, runs: &Runs) -> Result<bool> {
    let stated = eval
        .headline("tokenizer_transforms_text")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let data = eval.parent_key("tokenize").and_then(|k| runs.get(k));
    Ok(match data {
        Some(data) => stated || ByteLut::from_tokenize_output(&data.dir)?.transforms_text,
        None => stated,
    })
}

/// Checks every evaluation of every point; fails, naming the run, on one that divides by
/// lookup-table bytes although its tokenizer transforms the text.
pub fn check<'a>(points: &[Point<'a>], runs: &'a Runs) -> Result<Vec<RejectedLut<'a>>> {
    let mut rejected = Vec::new();
    for (point, p) in points.iter().enumerate() {
        for eval in p.evals.values() {
            if !transforms_text(eval, runs)? {
                continue;
            }
            let denominator = eval
                .headline("byte_denominator")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if !(denominator.starts_with("raw") || denominator.starts_with("sidecar")) {
                let said = match denominator {
                    "" => "states no byte denominator".to_string(),
                    d => format!("divides by {d}"),
                };
                bail!(
                    "{}: refusing to publish its BPB: the tokenizer of its data transforms the text (pieces that stand for no text, e.g. CaseOps case operators), so only the original text's bytes (raw bytes or byte sidecar) are a denominator, and this evaluation {said} (REFERENCE.md §2.5)",
                    eval.manifest_path()
                );
            }
            let lut_bpb = eval
                .headline_f64("val_bpb_lut_rejected")
                .or_else(|| eval.headline_f64("val_bpb_lut"));
            let ratio = eval.headline_f64("lut_to_raw_bytes").or_else(|| {
                Some(eval.headline_f64("val_lut_bytes")? / eval.headline_f64("val_bytes")?)
            });
            if let Some(lut_bpb) = lut_bpb {
                rejected.push(RejectedLut {
                    point,
                    run: eval,
                    lut_bpb,
                    val_bpb: eval.require_f64("val_bpb")?,
                    ratio,
                });
            }
        }
    }
    Ok(rejected)
}

//! The report's figures: which numbers go into which chart, and the caption that says where they
//! came from (every figure links the stage runs it was drawn from).

use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;

use crate::doc::{Figure, Line};
use crate::findings::Findings;
use crate::plots::{self, HLine, Panel, Series, SweepPanel};
use crate::points::is_identity_key;
use crate::runs::{EvalKind, Run};
use crate::tables::tensor_group;

/// "from train 3f2a…, train 9b1c…" with a link to each run's manifest.
pub fn sources_line(prefix: &str, runs: &[&Run]) -> Line {
    let mut line = Line::text(prefix);
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            line = line.push_text(", ");
        }
        line = line.push_link(r.tag(), r.href());
    }
    line
}

fn figure(id: &str, title: &str, svg: String, caption: &str, runs: &[&Run]) -> Figure {
    Figure {
        id: id.into(),
        title: title.into(),
        svg,
        caption: Line::text(format!("{caption} "))
            .append(sources_line("Data: ", runs))
            .push_text("."),
        sources: runs.iter().map(|r| r.key().to_string()).collect(),
    }
}

/// Training loss and validation BPB against step and against training wall time.
pub fn training(f: &Findings) -> Result<Option<Figure>> {
    let trains: Vec<(&Run, String)> = f
        .train_runs()
        .into_iter()
        .filter(|(t, _)| f.metrics.contains_key(t.key()))
        .collect();
    if trains.is_empty() {
        return Ok(None);
    }
    let series =
        |pick: &dyn Fn(&crate::tables::Metrics) -> Vec<(f64, f64)>, markers: bool| -> Vec<Series> {
            trains
                .iter()
                .map(|(t, label)| Series {
                    label: label.clone(),
                    points: pick(&f.metrics[t.key()]),
                    markers,
                })
                .collect()
        };
    let panel = |title: &str, x: &str, y: &str, series: Vec<Series>| Panel {
        title: title.into(),
        x_desc: x.into(),
        y_desc: y.into(),
        series,
    };
    let panels = [
        panel(
            "Training loss vs step",
            "step",
            "train loss (nats/token)",
            series(
                &|m| {
                    m.step
                        .iter()
                        .copied()
                        .zip(m.train_loss.iter().copied())
                        .collect()
                },
                false,
            ),
        ),
        panel(
            "Validation BPB vs step",
            "step",
            "val BPB (pre-quant)",
            series(&|m| m.val.iter().map(|v| (v.0, v.3)).collect(), true),
        ),
        panel(
            "Training loss vs wall time",
            "training time (s)",
            "train loss (nats/token)",
            series(
                &|m| {
                    m.elapsed_s
                        .iter()
                        .copied()
                        .zip(m.train_loss.iter().copied())
                        .collect()
                },
                false,
            ),
        ),
        panel(
            "Validation BPB vs wall time",
            "training time (s)",
            "val BPB (pre-quant)",
            series(&|m| m.val.iter().map(|v| (v.1, v.3)).collect(), true),
        ),
    ];
    let svg = plots::line_panels(&panels, 2, (1120, 760))?;
    let runs: Vec<&Run> = trains.iter().map(|(t, _)| *t).collect();
    Ok(Some(figure(
        "training",
        "Training curves",
        svg,
        "Training loss and validation BPB (the train stage's own pre-quantization evaluations) against step and against training wall time, from each run's metrics.parquet.",
        &runs,
    )))
}

/// BPB at each stage of the pipeline: pre-quant (train), then each evaluation of the artifact.
pub fn bpb_by_stage(f: &Findings) -> Result<Figure> {
    let mut kinds: Vec<EvalKind> = f
        .points
        .iter()
        .flat_map(|p| p.evals.keys().cloned())
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut categories = vec!["pre-quant".to_string()];
    categories.extend(kinds.iter().map(|k| k.label()));
    let mut runs: Vec<&Run> = Vec::new();
    let mut series = Vec::new();
    for (p, label) in f.points.iter().zip(&f.labels) {
        let mut values = vec![p.train.and_then(|t| t.headline_f64("val_bpb"))];
        values.extend(
            kinds
                .iter()
                .map(|k| p.evals.get(k).and_then(|e| e.headline_f64("val_bpb"))),
        );
        series.push((label.clone(), values));
        runs.extend(p.train.iter().chain(p.evals.values()).copied());
    }
    dedup(&mut runs);
    let mut hlines = Vec::new();
    let floors: Vec<(f64, &Run)> = f
        .points
        .iter()
        .filter_map(|p| p.tokenize)
        .filter_map(|t| t.headline_f64("source_entropy_bpb").map(|b| (b, t)))
        .collect();
    if let Some((floor, t)) = floors.first() {
        hlines.push(HLine {
            label: format!("source entropy {floor:.4}"),
            y: *floor,
        });
        runs.push(t);
    }
    let svg = plots::category_lines(
        "BPB by stage",
        &categories,
        "val BPB (bits per byte)",
        &series,
        &hlines,
        (1000, 520),
    )?;
    Ok(figure(
        "bpb_by_stage",
        "BPB by stage",
        svg,
        "Validation BPB before quantization (train headline) and after each evaluation of the scored artifact (eval headlines); a gap is a stage that was not run.",
        &runs,
    ))
}

/// The tensor groups, in chart order.
pub const GROUPS: [&str; 5] = ["embedding", "attention", "mlp", "head", "other"];

/// One artifact's bytes split by tensor group, scaled to the measured model file (per-tensor
/// compressed sizes are attributions: compression acts on the whole file), plus the code bytes.
pub fn artifact_segments(f: &Findings, quantize: &Run) -> Option<(Vec<String>, Vec<f64>)> {
    let model = quantize.headline_f64("model_bytes")?;
    let code = quantize.headline_f64("code_bytes").unwrap_or(0.0);
    let mut names: Vec<String> = Vec::new();
    let mut values = Vec::new();
    match f.tensors.get(quantize.key()) {
        Some(rows) if rows.iter().map(|r| r.compressed).sum::<f64>() > 0.0 => {
            let total: f64 = rows.iter().map(|r| r.compressed).sum();
            for g in GROUPS {
                let bytes: f64 = rows
                    .iter()
                    .filter(|r| tensor_group(&r.name) == g)
                    .map(|r| r.compressed)
                    .sum();
                names.push(g.to_string());
                values.push(model * bytes / total);
            }
        }
        _ => {
            names.push("model".into());
            values.push(model);
        }
    }
    names.push("code".into());
    values.push(code);
    Some((names, values))
}

pub fn artifact_bytes(f: &Findings) -> Result<Option<Figure>> {
    let mut bars = Vec::new();
    let mut runs: Vec<&Run> = Vec::new();
    let mut segments: Vec<(Vec<String>, Vec<f64>)> = Vec::new();
    for (p, label) in f.points.iter().zip(&f.labels) {
        let Some(q) = p.quantize else { continue };
        if runs.iter().any(|r| r.key() == q.key()) {
            continue;
        }
        if let Some(s) = artifact_segments(f, q) {
            bars.push(label.clone());
            runs.push(q);
            segments.push(s);
        }
    }
    if segments.is_empty() {
        return Ok(None);
    }
    // Bars share one legend: the union of segment names, a zero where an artifact lacks one.
    let mut names: Vec<String> = GROUPS
        .iter()
        .map(|g| g.to_string())
        .chain(["model".into(), "code".into()])
        .collect();
    // Only groups that hold bytes somewhere (a tied model has no separate head, for one).
    names.retain(|n| {
        segments.iter().any(|(s, v)| {
            s.iter()
                .zip(v)
                .any(|(name, bytes)| name == n && *bytes > 0.0)
        })
    });
    let values: Vec<Vec<f64>> = segments
        .iter()
        .map(|(s, v)| {
            names
                .iter()
                .map(|n| s.iter().position(|x| x == n).map(|i| v[i]).unwrap_or(0.0))
                .collect()
        })
        .collect();
    let cap = HLine {
        label: format!(
            "cap {} bytes",
            plots::thousands(crate::compliance::CAP_BYTES)
        ),
        y: crate::compliance::CAP_BYTES,
    };
    let svg = plots::stacked_bars(
        "Artifact bytes by tensor group",
        &bars,
        &names,
        &values,
        &cap,
        "bytes",
        (1000, 560),
    )?;
    Ok(Some(figure(
        "artifact_bytes",
        "Artifact bytes by tensor group",
        svg,
        "The scored artifact (compressed model file + code) against the 16,000,000-byte cap. Model bytes are split by tensor group in proportion to each tensor's compressed size in tensors.parquet, scaled to the measured file size (quantize-pack headline model_bytes); code is headline code_bytes.",
        &runs,
    )))
}

/// Sweep curves: the score and the artifact size against the swept param(s), mean ± std over seeds.
pub fn sweep(f: &Findings) -> Result<Option<Figure>> {
    if !f.is_sweep() {
        return Ok(None);
    }
    let groups: Vec<usize> = (0..f.groups.len())
        .filter(|&g| f.stats[g].is_some())
        .collect();
    let numeric: Option<Vec<f64>> = match f.axes.as_slice() {
        [axis] => groups
            .iter()
            .map(|&g| f.groups[g].axes.get(axis).and_then(Value::as_f64))
            .collect(),
        _ => None,
    };
    let labels: Vec<String> = groups
        .iter()
        .map(|&g| f.groups[g].parts(false).join(", "))
        .collect();
    let xs: Vec<f64> = numeric
        .clone()
        .unwrap_or_else(|| (0..groups.len()).map(|i| i as f64).collect());
    let mut x_desc: Vec<String> = f
        .axes
        .iter()
        .filter(|k| !is_identity_key(k))
        .cloned()
        .collect();
    if f.groups.iter().any(|g| g.code.is_some()) {
        x_desc.push("code version".into());
    }
    let x_desc = x_desc.join(", ");
    let mut runs: Vec<&Run> = Vec::new();
    let mut bpb = Vec::new();
    let mut bytes = Vec::new();
    for (x, &g) in xs.iter().zip(&groups) {
        let s = f.stats[g].as_ref().unwrap();
        bpb.push((*x, s.val_bpb.mean, s.val_bpb.std));
        let sizes: Vec<f64> = s
            .points
            .iter()
            .filter_map(|&i| {
                f.points[i]
                    .quantize
                    .and_then(|q| q.headline_f64("artifact_bytes"))
            })
            .collect();
        if let Ok(sample) = crate::stats::Sample::of(&sizes) {
            bytes.push((*x, sample.mean, sample.std));
        }
        for &i in &s.points {
            runs.extend(
                f.scores[i]
                    .map(|sc| sc.run)
                    .into_iter()
                    .chain(f.points[i].quantize),
            );
        }
    }
    dedup(&mut runs);
    let mut panels = vec![SweepPanel {
        title: format!("Score ({}) BPB", f.score_kind.label()),
        y_desc: "val BPB".into(),
        points: bpb,
        hline: None,
    }];
    if bytes.len() == groups.len() {
        // The cap line only where it is on the scale of the artifacts (not for a tiny model).
        let cap = crate::compliance::CAP_BYTES;
        let on_scale = bytes.iter().any(|b| b.1 >= cap * 0.5);
        panels.push(SweepPanel {
            title: if on_scale {
                "Artifact bytes".into()
            } else {
                "Artifact bytes (far below the 16,000,000 cap)".into()
            },
            y_desc: "bytes".into(),
            points: bytes,
            hline: on_scale.then(|| HLine {
                label: "cap 16,000,000".into(),
                y: cap,
            }),
        });
    }
    let categories = if numeric.is_some() {
        None
    } else {
        Some(labels.as_slice())
    };
    let svg = plots::sweep(&x_desc, categories, &panels, (1120, 480))?;
    Ok(Some(figure(
        "sweep",
        "Sweep",
        svg,
        &format!("The score and the artifact size at each sweep point ({x_desc}); error bars are ± one standard deviation over seeds where a point has several."),
        &runs,
    )))
}

fn dedup(runs: &mut Vec<&Run>) {
    let mut seen = BTreeMap::new();
    runs.retain(|r| seen.insert(r.key().to_string(), ()).is_none());
}

//! Everything the report says, computed once from the inputs: the points and their labels, the
//! scores, the groups (seeds of a configuration) with their statistics and significance claims,
//! and the tables read. The page (sections.rs), the figures (figures.rs) and submission.json
//! (submission.rs) only present these.

use anyhow::Result;
use std::collections::BTreeMap;

use crate::bytes::{self, RejectedLut};
use crate::params::Params;
use crate::points::{self, value_text, Group, Point};
use crate::runs::{EvalKind, Run, Runs};
use crate::score::{self, Score};
use crate::significance::{self, Baseline, Claim};
use crate::stats::Sample;
use crate::tables::{self, Metrics, ResultSums, TensorBytes};

pub struct Findings<'a> {
    pub params: &'a Params,
    pub runs: &'a Runs,
    pub points: Vec<Point<'a>>,
    /// A short name per point ("seed 42", "clip_sigmas=12.5, seed 1", …).
    pub labels: Vec<String>,
    pub score_kind: EvalKind,
    pub scores: Vec<Option<Score<'a>>>,
    /// The params that vary across points other than seeds (the sweep axes; empty for seeds).
    pub axes: Vec<String>,
    pub groups: Vec<Group>,
    pub stats: Vec<Option<GroupStats>>,
    /// The group submission.json describes: the only one, or the best mean score of a sweep.
    pub chosen: usize,
    pub baseline: Option<Baseline<'a>>,
    pub claims: Vec<Option<Claim>>,
    /// By train run key.
    pub metrics: BTreeMap<String, Metrics>,
    /// By quantize-pack run key.
    pub tensors: BTreeMap<String, Vec<TensorBytes>>,
    /// By eval run key.
    pub results: BTreeMap<String, ResultSums>,
    /// The LUT-byte figures of evaluations whose tokenizer transforms the text: diagnostics only.
    pub rejected_lut: Vec<RejectedLut<'a>>,
}

/// Mean and spread of a group's scores.
#[derive(Debug, Clone)]
pub struct GroupStats {
    pub val_loss: Sample,
    pub val_bpb: Sample,
    /// The scored points of the group.
    pub points: Vec<usize>,
}

impl<'a> Findings<'a> {
    pub fn gather(params: &'a Params, runs: &'a Runs) -> Result<Findings<'a>> {
        let points = points::build(runs)?;
        // Before anything is scored: no LUT-byte BPB of text-transformed data is published.
        let rejected_lut = bytes::check(&points, runs)?;
        let score_kind = score::kind(params.score, &points)?;
        let scores = score::scores(&score_kind, &points)?;
        let (axes, groups) = points::group(&points);
        let labels = labels(&points, &axes, &groups);

        let mut stats = Vec::new();
        for g in &groups {
            let scored: Vec<usize> = g
                .points
                .iter()
                .copied()
                .filter(|&i| scores[i].is_some())
                .collect();
            let loss: Vec<f64> = scored
                .iter()
                .map(|&i| scores[i].unwrap().val_loss)
                .collect();
            let bpb: Vec<f64> = scored.iter().map(|&i| scores[i].unwrap().val_bpb).collect();
            stats.push(if scored.is_empty() {
                None
            } else {
                Some(GroupStats {
                    val_loss: Sample::of(&loss)?,
                    val_bpb: Sample::of(&bpb)?,
                    points: scored,
                })
            });
        }
        let chosen = (0..groups.len())
            .filter(|&g| stats[g].is_some())
            .min_by(|&a, &b| {
                stats[a]
                    .as_ref()
                    .unwrap()
                    .val_bpb
                    .mean
                    .total_cmp(&stats[b].as_ref().unwrap().val_bpb.mean)
            })
            .unwrap_or(0);

        let baseline = significance::baseline(params, runs)?;
        let mut claims = Vec::new();
        for s in &stats {
            claims.push(match (&baseline, s) {
                (Some(b), Some(s)) => {
                    let loss: Vec<f64> = s
                        .points
                        .iter()
                        .map(|&i| scores[i].unwrap().val_loss)
                        .collect();
                    let bpb: Vec<f64> = s
                        .points
                        .iter()
                        .map(|&i| scores[i].unwrap().val_bpb)
                        .collect();
                    Some(significance::assess(
                        b,
                        &loss,
                        &bpb,
                        params.min_improvement_nats,
                        params.alpha,
                    )?)
                }
                _ => None,
            });
        }

        let mut metrics = BTreeMap::new();
        let mut tensors = BTreeMap::new();
        let mut results = BTreeMap::new();
        for p in &points {
            if let Some(t) = p.train {
                if !metrics.contains_key(t.key()) {
                    if let Some(m) = tables::metrics(t)? {
                        metrics.insert(t.key().to_string(), m);
                    }
                }
            }
            if let Some(q) = p.quantize {
                if !tensors.contains_key(q.key()) {
                    if let Some(rows) = tables::tensors(q)? {
                        tensors.insert(q.key().to_string(), rows);
                    }
                }
            }
            for e in p.evals.values() {
                if !results.contains_key(e.key()) {
                    if let Some(sums) = tables::results(e)? {
                        results.insert(e.key().to_string(), sums);
                    }
                }
            }
        }
        Ok(Findings {
            params,
            runs,
            points,
            labels,
            score_kind,
            scores,
            axes,
            groups,
            stats,
            chosen,
            baseline,
            claims,
            metrics,
            tensors,
            results,
            rejected_lut,
        })
    }

    pub fn is_sweep(&self) -> bool {
        self.groups.len() > 1
    }

    /// The scored points of the chosen group (what submission.json and the headline describe).
    pub fn chosen_points(&self) -> Vec<usize> {
        self.stats[self.chosen]
            .as_ref()
            .map(|s| s.points.clone())
            .unwrap_or_default()
    }

    /// Distinct train runs, in point order, with the label of the first point using each.
    pub fn train_runs(&self) -> Vec<(&'a Run, String)> {
        let mut out: Vec<(&Run, String)> = Vec::new();
        for (p, label) in self.points.iter().zip(&self.labels) {
            if let Some(t) = p.train {
                if !out.iter().any(|(r, _)| r.key() == t.key()) {
                    out.push((t, label.clone()));
                }
            }
        }
        out
    }
}

/// Point labels: the values of the sweep axes, then the seed; unique, never empty.
fn labels(points: &[Point], axes: &[String], groups: &[Group]) -> Vec<String> {
    let seeds_vary = groups.iter().any(|g| g.points.len() > 1);
    let mut labels: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let group = groups.iter().find(|g| g.points.contains(&i));
            let mut parts: Vec<String> = group.map(|g| g.parts(false)).unwrap_or_default();
            if seeds_vary || axes.is_empty() {
                if let Some(seed) = p.seed() {
                    parts.push(format!("seed {}", value_text(&seed)));
                }
            }
            parts.join(", ")
        })
        .collect();
    let repeated: Vec<bool> = labels
        .iter()
        .map(|l| l.is_empty() || labels.iter().filter(|m| *m == l).count() > 1)
        .collect();
    for (i, label) in labels.iter_mut().enumerate() {
        if repeated[i] {
            *label = format!("{label} #{}", i + 1).trim().to_string();
        }
    }
    if points.len() == 1 && labels[0] == "#1" {
        labels[0] = "run".into();
    }
    labels
}

//! `submission.json` in the upstream schema (records/*/submission.json: name, val_loss, val_bpb,
//! bytes_total, bytes_code, seeds, seed_results, hardware, …), every number read from a manifest
//! headline of the runs it describes, with their keys, so it cannot disagree with its own logs.

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use crate::findings::Findings;
use crate::points::value_text;
use crate::stats::Sample;

#[derive(Serialize, Debug)]
pub struct Submission {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_id: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blurb: Option<String>,
    /// When the last scored evaluation finished (manifest `finished`).
    pub date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Mean over seeds of the scored evaluation's val_loss (nats per token).
    pub val_loss: f64,
    pub val_bpb: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss_std: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_bpb_std: Option<f64>,
    /// The largest artifact over seeds (every seed's artifact must fit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_code: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_bytes_mean: Option<f64>,
    pub seeds: Vec<Value>,
    pub seed_results: IndexMap<String, SeedResult>,
    pub hardware: String,
    pub eval_hardware: String,
    pub timings: Timings,
    /// Which evaluation the score is (round-trip, sliding, TTT, n-gram).
    pub score_eval: String,
    /// For a sweep: the point this submission describes (the best mean score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_point: Option<IndexMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub significance: Option<Significance>,
    pub compliance: IndexMap<String, Value>,
}

#[derive(Serialize, Debug)]
pub struct SeedResult {
    pub val_loss: f64,
    pub val_bpb: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_avg_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_time_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_time_s: Option<f64>,
    /// The run keys these numbers were read from (pgolf provenance; `out/<stage>/<key>/`).
    pub runs: IndexMap<String, String>,
}

#[derive(Serialize, Debug)]
pub struct Timings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_seconds_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_seconds_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_avg_ms_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_steps_mean: Option<f64>,
}

#[derive(Serialize, Debug)]
pub struct Significance {
    pub baseline: String,
    pub baseline_val_loss: f64,
    pub baseline_val_loss_std: f64,
    pub baseline_n: usize,
    pub improvement_nats: Option<f64>,
    pub min_improvement_nats: f64,
    pub alpha: f64,
    pub t: Option<f64>,
    pub df: Option<f64>,
    pub p_value: Option<f64>,
    /// null when the test could not be run (e.g. a single seed).
    pub significant: Option<bool>,
    pub test: String,
}

fn mean(xs: &[f64]) -> Option<f64> {
    Sample::of(xs).ok().map(|s| s.mean)
}

fn max(xs: &[f64]) -> Option<f64> {
    xs.iter().copied().reduce(f64::max)
}

pub fn build(f: &Findings, compliance: IndexMap<String, Value>) -> Option<Submission> {
    let chosen = f.chosen_points();
    let stats = f.stats[f.chosen].as_ref()?;
    let mut seeds = Vec::new();
    let mut seed_results = IndexMap::new();
    let (mut sizes, mut codes, mut train_s, mut eval_s, mut step_ms, mut steps) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut dates = Vec::new();
    let (mut hardware, mut eval_hardware): (Vec<String>, Vec<String>) = (vec![], vec![]);
    for (n, &i) in chosen.iter().enumerate() {
        let p = &f.points[i];
        let score = f.scores[i]?;
        let seed = p.seed();
        let name = seed
            .as_ref()
            .map(value_text)
            .unwrap_or_else(|| format!("run{}", n + 1));
        seeds.push(seed.unwrap_or(Value::Null));
        let q = p.quantize;
        let t = p.train;
        let artifact = q.and_then(|q| q.headline_f64("artifact_bytes"));
        let mut runs = IndexMap::new();
        for r in p.runs() {
            runs.insert(crate::runs::Role::label(&r.role), r.key().to_string());
        }
        let result = SeedResult {
            val_loss: score.val_loss,
            val_bpb: score.val_bpb,
            artifact_bytes: artifact.map(|b| b as u64),
            steps: t.and_then(|t| t.headline_f64("steps")).map(|s| s as u64),
            step_avg_ms: t.and_then(|t| t.headline_f64("ms_per_step")),
            train_time_s: t.and_then(|t| t.headline_f64("train_seconds")),
            eval_time_s: score.run.headline_f64("eval_seconds"),
            runs,
        };
        sizes.extend(artifact);
        codes.extend(q.and_then(|q| q.headline_f64("code_bytes")));
        train_s.extend(result.train_time_s);
        eval_s.extend(result.eval_time_s);
        step_ms.extend(result.step_avg_ms);
        steps.extend(t.and_then(|t| t.headline_f64("steps")));
        dates.push(score.run.manifest.finished.clone());
        hardware.extend(t.map(|t| t.manifest.device.summary()));
        eval_hardware.push(score.run.manifest.device.summary());
        seed_results.insert(name, result);
    }
    for list in [&mut hardware, &mut eval_hardware] {
        list.sort();
        list.dedup();
    }
    let significance = f.claims[f.chosen]
        .as_ref()
        .zip(f.baseline.as_ref())
        .map(|(c, b)| {
            let w = c.test.as_ref().ok();
            Significance {
                baseline: b.label.clone(),
                baseline_val_loss: c.baseline_nats.mean,
                baseline_val_loss_std: c.baseline_nats.std,
                baseline_n: c.baseline_nats.n,
                improvement_nats: Some(c.baseline_nats.mean - c.ours.mean),
                min_improvement_nats: c.delta,
                alpha: c.alpha,
                t: w.map(|w| w.t),
                df: w.map(|w| w.df),
                p_value: w.map(|w| w.p),
                significant: c.significant(),
                test: c.verdict(),
            }
        });
    Some(Submission {
        author: f.params.author.clone(),
        github_id: f.params.github_id.clone(),
        name: f.params.name.clone(),
        blurb: f.params.blurb.clone(),
        date: dates.into_iter().max().unwrap_or_default(),
        track: f.params.track.clone(),
        val_loss: stats.val_loss.mean,
        val_bpb: stats.val_bpb.mean,
        val_loss_std: (stats.val_loss.n > 1).then_some(stats.val_loss.std),
        val_bpb_std: (stats.val_bpb.n > 1).then_some(stats.val_bpb.std),
        bytes_total: max(&sizes).map(|b| b as u64),
        bytes_code: max(&codes).map(|b| b as u64),
        artifact_bytes_mean: if sizes.len() > 1 { mean(&sizes) } else { None },
        seeds,
        seed_results,
        hardware: hardware.join("; "),
        eval_hardware: eval_hardware.join("; "),
        timings: Timings {
            train_seconds_max: max(&train_s),
            eval_seconds_max: max(&eval_s),
            step_avg_ms_mean: mean(&step_ms),
            train_steps_mean: mean(&steps),
        },
        score_eval: f.score_kind.label(),
        sweep_point: f.is_sweep().then(|| {
            f.groups[f.chosen]
                .axes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        significance,
        compliance,
    })
}

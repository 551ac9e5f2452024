//! The compliance section (REFERENCE.md §7): the artifact cap, the training and evaluation time
//! caps, the device, and every integrity guard the evaluations report, each with its verdict and
//! the runs it was read from. Nothing here is judged from anything but manifests and tables.

use pgolf_store::device::{RULE_GPU, RULE_WORLD_SIZE};
use pgolf_store::Backend;
use serde_json::Value;
use std::collections::BTreeMap;

use crate::plots::thousands;
use crate::points::Point;
use crate::runs::{EvalKind, Run};
use crate::tables::ResultSums;

/// The rule's cap, decimal (not 16 MiB).
pub const CAP_BYTES: f64 = 16_000_000.0;
/// Raw and lookup-table byte counts further apart than this are flagged (DESIGN.md guards).
const LUT_TOLERANCE: f64 = 0.001;
/// A headline recomputed from the eval's own table must agree this closely (f64 sums in another order).
const RECOMPUTE_TOLERANCE: f64 = 1e-6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    /// Reported but not judged (a number with no stated tolerance, or not applicable).
    Info,
    /// Worth a look; not a failure of the rule by itself.
    Flag,
    /// Could not be checked from what was given.
    Unknown,
    Fail,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            // Symbols every common font has (colour emoji are not installed everywhere).
            Verdict::Pass => "✓ pass",
            Verdict::Info => "· info",
            Verdict::Flag => "⚠ flag",
            Verdict::Unknown => "? unknown",
            Verdict::Fail => "✗ FAIL",
        }
    }
}

/// One line of the compliance table (aggregated over the report's points: the worst case shows).
#[derive(Debug, Clone)]
pub struct Check<'a> {
    pub name: String,
    pub value: String,
    pub limit: String,
    pub verdict: Verdict,
    pub sources: Vec<&'a Run>,
}

/// What a guard value says: `true`/`false`, or a string starting with pass/ok/fail/flag/n/a (the
/// eval stages report guards as such summaries, e.g. "pass: 64 sampled positions, …").
pub fn guard_verdict(v: &Value) -> Verdict {
    match v {
        Value::Bool(true) => Verdict::Pass,
        Value::Bool(false) => Verdict::Fail,
        Value::String(s) => {
            let s = s.trim_start().to_ascii_lowercase();
            if s.starts_with("pass") || s.starts_with("ok") {
                Verdict::Pass
            } else if s.starts_with("fail") || s.starts_with("violat") {
                Verdict::Fail
            } else if s.starts_with("flag") || s.starts_with("warn") {
                Verdict::Flag
            } else {
                Verdict::Info
            }
        }
        Value::Object(o) => match (o.get("pass").or_else(|| o.get("ok")), o.get("flagged")) {
            (Some(Value::Bool(p)), _) => guard_verdict(&Value::Bool(*p)),
            (_, Some(Value::Bool(true))) => Verdict::Flag,
            (_, Some(Value::Bool(false))) => Verdict::Pass,
            _ => Verdict::Info,
        },
        _ => Verdict::Info,
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The four guards the rules turn on, and the words their headline keys contain.
pub const GUARDS: [(&str, &[&str]); 4] = [
    ("scored once", &["once", "coverage", "single_pass"]),
    ("normalization", &["normaliz"]),
    ("byte denominator", &["byte", "denominator"]),
    (
        "score before update",
        &["before", "update", "score_first", "causal"],
    ),
];

/// One cell of the guard table: the verdict and what it rests on.
#[derive(Debug, Clone)]
pub struct GuardCell {
    pub verdict: Verdict,
    pub text: String,
}

/// The guard table: per evaluation kind (rows), the four guards (columns) plus any other `guard_*`.
pub struct GuardRow<'a> {
    pub kind: EvalKind,
    pub cells: Vec<GuardCell>,
    pub others: Vec<(String, GuardCell)>,
    pub sources: Vec<&'a Run>,
}

/// Builds the guard table from every evaluation of every point; `results` holds the totals
/// recomputed from each eval run's table, by run key.
pub fn guards<'a>(
    points: &[Point<'a>],
    results: &BTreeMap<String, ResultSums>,
) -> Vec<GuardRow<'a>> {
    let mut by_kind: BTreeMap<EvalKind, Vec<&'a Run>> = BTreeMap::new();
    for p in points {
        for (kind, run) in &p.evals {
            let list = by_kind.entry(kind.clone()).or_default();
            if !list.iter().any(|r| r.key() == run.key()) {
                list.push(run);
            }
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, runs)| {
            let mut cells = Vec::new();
            for (g, (name, words)) in GUARDS.iter().enumerate() {
                let mut parts: Vec<GuardCell> = runs
                    .iter()
                    .map(|r| guard_cell(g, name, words, &kind, r, results.get(r.key())))
                    .collect();
                parts.sort_by_key(|c| std::cmp::Reverse(c.verdict));
                cells.push(parts[0].clone());
            }
            let mut others: BTreeMap<String, GuardCell> = BTreeMap::new();
            for r in &runs {
                for (k, v) in r
                    .manifest
                    .headline
                    .iter()
                    .filter(|(k, _)| k.starts_with("guard_"))
                {
                    if GUARDS
                        .iter()
                        .any(|(_, words)| words.iter().any(|w| k.contains(w)))
                    {
                        continue;
                    }
                    let cell = GuardCell {
                        verdict: guard_verdict(v),
                        text: value_text(v),
                    };
                    let worse = others.get(k).is_none_or(|c| cell.verdict > c.verdict);
                    if worse {
                        others.insert(k.clone(), cell);
                    }
                }
            }
            GuardRow {
                kind,
                cells,
                others: others.into_iter().collect(),
                sources: runs,
            }
        })
        .collect()
}

/// One guard of one eval run: the stage's own `guard_*` verdict, combined with what the report can
/// check itself from the headline counts and the results table.
fn guard_cell(
    index: usize,
    name: &str,
    words: &[&str],
    kind: &EvalKind,
    run: &Run,
    sums: Option<&ResultSums>,
) -> GuardCell {
    let reported: Vec<(&String, &Value)> = run
        .manifest
        .headline
        .iter()
        .filter(|(k, _)| k.starts_with("guard_") && words.iter().any(|w| k.contains(w)))
        .collect();
    let mut verdicts: Vec<Verdict> = reported.iter().map(|(_, v)| guard_verdict(v)).collect();
    let mut texts: Vec<String> = reported.iter().map(|(_, v)| value_text(v)).collect();
    let h = |k: &str| run.headline_f64(k);
    match index {
        0 => {
            if let (Some(scored), Some(expected)) = (h("scored_targets"), h("expected_targets")) {
                verdicts.push(if scored == expected {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                });
                texts.push(format!(
                    "{} of {} targets scored",
                    thousands(scored),
                    thousands(expected)
                ));
            }
            if let (Some(s), Some(scored)) = (sums, h("scored_targets")) {
                let ok = s.tokens == scored;
                verdicts.push(if ok { Verdict::Pass } else { Verdict::Fail });
                texts.push(format!(
                    "results table: {} tokens{}",
                    thousands(s.tokens),
                    if ok { "" } else { " (≠ headline)" }
                ));
            }
            if let (Some(s), Some(loss)) = (sums, h("val_loss")) {
                let ok = ((s.val_loss() - loss) / loss).abs() <= RECOMPUTE_TOLERANCE;
                verdicts.push(if ok { Verdict::Pass } else { Verdict::Fail });
                texts.push(format!(
                    "ΣNLL/Σtokens = {:.8} vs headline val_loss {loss:.8}",
                    s.val_loss()
                ));
            }
        }
        2 => {
            if let (Some(bpb), Some(lut)) = (h("val_bpb"), h("val_bpb_lut")) {
                let rel = ((lut - bpb) / bpb).abs();
                verdicts.push(if rel <= LUT_TOLERANCE {
                    Verdict::Pass
                } else {
                    Verdict::Flag
                });
                texts.push(format!(
                    "LUT-byte BPB differs by {:.3}% (flag above {:.1}%)",
                    rel * 100.0,
                    LUT_TOLERANCE * 100.0
                ));
            }
            if let (Some(s), Some(bpb)) = (sums, h("val_bpb")) {
                let rel = ((s.val_bpb() - bpb) / bpb).abs();
                verdicts.push(if rel <= RECOMPUTE_TOLERANCE {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                });
                texts.push(format!(
                    "ΣNLL/(ln2·Σbytes) from results.parquet = {:.8} vs headline {:.8}",
                    s.val_bpb(),
                    bpb
                ));
            }
        }
        3 if !kind.adaptive() && reported.is_empty() => {
            return GuardCell {
                verdict: Verdict::Info,
                text: "n/a: not adaptive".into(),
            };
        }
        _ => {}
    }
    match verdicts.iter().max() {
        Some(&verdict) => GuardCell {
            verdict,
            text: texts.join("; "),
        },
        None => GuardCell {
            verdict: Verdict::Unknown,
            text: format!("no {name} guard reported"),
        },
    }
}

/// The caps and the device, over all points.
pub fn caps<'a>(
    points: &[Point<'a>],
    score_kind: &EvalKind,
    train_cap: f64,
    eval_cap: f64,
) -> Vec<Check<'a>> {
    let mut checks = Vec::new();

    // Artifact bytes: the largest artifact decides.
    let quantizes: Vec<&Run> = unique(points.iter().map(|p| p.quantize));
    let sizes: Vec<(f64, &Run)> = quantizes
        .iter()
        .filter_map(|q| q.headline_f64("artifact_bytes").map(|b| (b, *q)))
        .collect();
    let missing = points
        .iter()
        .filter(|p| {
            p.quantize
                .is_none_or(|q| q.headline_f64("artifact_bytes").is_none())
        })
        .count();
    let max = sizes.iter().map(|s| s.0).fold(f64::NAN, f64::max);
    checks.push(Check {
        name: "artifact bytes (model + code)".into(),
        value: if sizes.is_empty() {
            "not given".into()
        } else {
            format!("{} (largest of {})", thousands(max), sizes.len())
        },
        limit: format!("≤ {}", thousands(CAP_BYTES)),
        verdict: if sizes.iter().any(|s| s.0 > CAP_BYTES) {
            Verdict::Fail
        } else if missing > 0 {
            Verdict::Unknown
        } else {
            Verdict::Pass
        },
        sources: sizes.iter().map(|s| s.1).collect(),
    });

    // Training time, and with it GPTQ calibration on training data (accepted only inside the budget).
    let trains: Vec<&Run> = unique(points.iter().map(|p| p.train));
    let train_s: Vec<(f64, &Run)> = trains
        .iter()
        .filter_map(|t| t.headline_f64("train_seconds").map(|s| (s, *t)))
        .collect();
    checks.push(time_check(
        "training time",
        &train_s,
        train_cap,
        points.iter().all(|p| p.train.is_some()),
    ));
    let gptqs: Vec<&Run> = unique(points.iter().map(|p| p.gptq));
    if !gptqs.is_empty() {
        let mut combined = Vec::new();
        for p in points {
            if let (Some(t), Some(g)) = (p.train, p.gptq) {
                if let Some(ts) = t.headline_f64("train_seconds") {
                    combined.push((ts + calibration_seconds(g), g));
                }
            }
        }
        let mut check = time_check(
            "training + GPTQ calibration",
            &combined,
            train_cap,
            !combined.is_empty(),
        );
        check
            .value
            .push_str(" (calibration: headline calibration_seconds, else the stage's wall time)");
        checks.push(check);
    }

    // Evaluation time of the scored evaluation.
    let evals: Vec<&Run> = unique(points.iter().map(|p| p.evals.get(score_kind).copied()));
    let eval_s: Vec<(f64, &Run)> = evals
        .iter()
        .filter_map(|e| e.headline_f64("eval_seconds").map(|s| (s, *e)))
        .collect();
    checks.push(time_check(
        &format!("evaluation time ({})", score_kind.label()),
        &eval_s,
        eval_cap,
        eval_s.len() == evals.len(),
    ));

    checks.push(training_device(&trains));
    checks.push(evaluation_device(&evals));
    checks
}

/// The time caps are defined on 8×H100 SXM, so a training time proves something only on that
/// hardware: checked by the fields of each train run's device record (world size 8, eight devices
/// each named H100). A 1-GPU run, even on an H100, is flagged; an older manifest whose device is
/// free text cannot be checked (unknown).
pub fn training_device<'a>(trains: &[&'a Run]) -> Check<'a> {
    let verdict = trains
        .iter()
        .map(|r| {
            let d = &r.manifest.device;
            if d.is_rule_hardware() {
                Verdict::Pass
            } else if d.backend == Backend::Unknown {
                Verdict::Unknown
            } else {
                Verdict::Flag
            }
        })
        .max()
        .unwrap_or(Verdict::Unknown);
    Check {
        name: "training device".into(),
        value: device_summaries(trains),
        limit: format!(
            "{RULE_WORLD_SIZE}×{RULE_GPU} SXM: world size {RULE_WORLD_SIZE}, {RULE_WORLD_SIZE} devices named {RULE_GPU} (where the time caps are defined)"
        ),
        verdict,
        sources: trains.to_vec(),
    }
}

/// The device of the scored evaluation, by the fields of its record: shown, not judged (the
/// hardware rule is checked on training).
pub fn evaluation_device<'a>(evals: &[&'a Run]) -> Check<'a> {
    Check {
        name: "evaluation device".into(),
        value: device_summaries(evals),
        limit: "shown for information (the hardware rule is checked on training)".into(),
        verdict: if evals.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Info
        },
        sources: evals.to_vec(),
    }
}

fn device_summaries(runs: &[&Run]) -> String {
    let mut lines: Vec<String> = runs.iter().map(|r| r.manifest.device.summary()).collect();
    lines.sort();
    lines.dedup();
    if lines.is_empty() {
        "not given".into()
    } else {
        lines.join("; ")
    }
}

/// The source-entropy floor on a synthetic corpus: no score may beat the source.
pub fn entropy_floor<'a>(
    points: &[Point<'a>],
    scores: &[Option<crate::score::Score<'a>>],
) -> Option<Check<'a>> {
    let mut worst: Option<(f64, f64, &Run, &Run)> = None;
    for (p, s) in points.iter().zip(scores) {
        let (Some(s), Some(t)) = (s, p.tokenize) else {
            continue;
        };
        let Some(floor) = t.headline_f64("source_entropy_bpb") else {
            continue;
        };
        if worst.is_none_or(|w| s.val_bpb - floor < w.0 - w.1) {
            worst = Some((s.val_bpb, floor, s.run, t));
        }
    }
    let (bpb, floor, eval, tokenize) = worst?;
    Some(Check {
        name: "score ≥ source entropy (synthetic corpus)".into(),
        value: format!("{bpb:.5} bpb (lowest margin)"),
        limit: format!("≥ {floor:.5} bpb"),
        verdict: if bpb >= floor {
            Verdict::Pass
        } else {
            Verdict::Flag
        },
        sources: vec![eval, tokenize],
    })
}

/// The compliance lines of submission.json (upstream records write e.g. `artifact_under_16mb`):
/// `true`/`false` where a check passed or failed, `null` where it could not be judged.
pub fn summary(
    caps: &[Check],
    guards: &[GuardRow],
    score_kind: &EvalKind,
) -> indexmap::IndexMap<String, Value> {
    let judged = |v: Verdict| match v {
        Verdict::Pass => Value::Bool(true),
        Verdict::Fail => Value::Bool(false),
        _ => Value::Null,
    };
    let mut out = indexmap::IndexMap::new();
    for (key, prefix) in [
        ("artifact_under_16mb", "artifact bytes"),
        ("train_under_600s", "training time"),
        ("eval_under_600s", "evaluation time"),
    ] {
        if let Some(c) = caps.iter().find(|c| c.name.starts_with(prefix)) {
            out.insert(key.to_string(), judged(c.verdict));
        }
    }
    if let Some(c) = caps.iter().find(|c| c.name.starts_with("training + GPTQ")) {
        out.insert("train_plus_gptq_under_600s".into(), judged(c.verdict));
    }
    if let Some(row) = guards.iter().find(|g| &g.kind == score_kind) {
        for ((name, _), cell) in GUARDS.iter().zip(&row.cells) {
            let value = match cell.verdict {
                Verdict::Info => Value::String(cell.text.clone()),
                v => judged(v),
            };
            out.insert(format!("guard_{}", name.replace(' ', "_")), value);
        }
    }
    let devices: Vec<&str> = caps
        .iter()
        .filter(|c| c.name.ends_with("device"))
        .map(|c| c.value.as_str())
        .collect();
    out.insert("devices".into(), Value::String(devices.join(" | ")));
    out
}

fn calibration_seconds(gptq: &Run) -> f64 {
    gptq.headline_f64("calibration_seconds")
        .unwrap_or(gptq.manifest.wall_seconds)
}

fn time_check<'a>(name: &str, times: &[(f64, &'a Run)], cap: f64, complete: bool) -> Check<'a> {
    let max = times.iter().map(|t| t.0).fold(f64::NAN, f64::max);
    Check {
        name: name.into(),
        value: if times.is_empty() {
            "not given".into()
        } else {
            format!("{max:.1} s (longest of {})", times.len())
        },
        limit: format!("≤ {cap:.0} s"),
        verdict: if times.iter().any(|t| t.0 > cap) {
            Verdict::Fail
        } else if times.is_empty() || !complete {
            Verdict::Unknown
        } else {
            Verdict::Pass
        },
        sources: times.iter().map(|t| t.1).collect(),
    }
}

fn unique<'a>(runs: impl Iterator<Item = Option<&'a Run>>) -> Vec<&'a Run> {
    let mut out: Vec<&Run> = Vec::new();
    for r in runs.flatten() {
        if !out.iter().any(|o| o.key() == r.key()) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::Role;
    use pgolf_store::{DeviceRecord, Manifest};
    use serde_json::json;

    fn run(stage: &str, device: Value) -> Run {
        let manifest: Manifest = serde_json::from_value(json!({
            "schema": 1, "stage": stage, "identity": format!("{stage}@1"), "key": "k".repeat(64),
            "params": {}, "inputs": {}, "outputs": [], "started": "", "finished": "",
            "wall_seconds": 1.0, "host": "h", "device": device, "headline": {}
        }))
        .unwrap();
        Run {
            input: stage.into(),
            dir: "out".into(),
            manifest,
            role: Role::Other,
        }
    }

    fn record(names: &[&str], world_size: usize) -> Value {
        let names = names.iter().map(|n| n.to_string()).collect();
        serde_json::to_value(DeviceRecord::cuda(names, world_size)).unwrap()
    }

    const H100: &str = "NVIDIA H100 80GB HBM3";

    #[test]
    fn the_hardware_rule_is_checked_on_train_by_field() {
        let eight = run("train", record(&[H100; 8], 8));
        let check = training_device(&[&eight]);
        assert_eq!(check.verdict, Verdict::Pass, "{}", check.value);
        assert_eq!(check.value, format!("cuda, world size 8: 8 × {H100}"));
        // One GPU, even an H100, does not meet a rule defined on eight: flagged, not passed.
        let one = run("train", record(&[H100], 1));
        assert_eq!(training_device(&[&one]).verdict, Verdict::Flag);
        assert_eq!(training_device(&[&eight, &one]).verdict, Verdict::Flag);
        // Eight ranks but not all H100s; eight names but one rank; the CPU: flagged.
        let mut mixed = [H100; 8];
        mixed[7] = "NVIDIA H200";
        for other in [
            run("train", record(&mixed, 8)),
            run("train", record(&[H100; 8], 1)),
            run("train", serde_json::to_value(DeviceRecord::cpu()).unwrap()),
        ] {
            assert_eq!(training_device(&[&other]).verdict, Verdict::Flag);
        }
        // An old manifest's free text, even one that names 8 H100s, cannot be checked by field.
        let old = run("train", json!("cuda:0-7 8× NVIDIA H100 80GB HBM3"));
        let check = training_device(&[&old]);
        assert_eq!(check.verdict, Verdict::Unknown);
        assert!(check.value.contains("old manifest"), "{}", check.value);
        assert_eq!(training_device(&[]).verdict, Verdict::Unknown);
    }

    #[test]
    fn evaluation_devices_are_shown_not_judged() {
        for device in [
            record(&[H100], 1),
            record(&["NVIDIA H200"], 1),
            serde_json::to_value(DeviceRecord::cpu()).unwrap(),
            json!("cuda (BFloat16 compute, Native numerics, fused blocks)"),
        ] {
            let eval = run("ttt-eval", device.clone());
            let check = evaluation_device(&[&eval]);
            assert_eq!(check.verdict, Verdict::Info, "{device}");
            assert_eq!(check.value, eval.manifest.device.summary());
        }
        let ngram = run("ngram-eval", record(&["NVIDIA H200"], 1));
        let check = evaluation_device(&[&ngram]);
        assert_eq!(
            (check.verdict, check.value.as_str()),
            (Verdict::Info, "cuda, world size 1: 1 × NVIDIA H200")
        );
        assert_eq!(evaluation_device(&[]).verdict, Verdict::Unknown);
    }

    #[test]
    fn guard_values_read_as_verdicts() {
        assert_eq!(guard_verdict(&json!(true)), Verdict::Pass);
        assert_eq!(guard_verdict(&json!(false)), Verdict::Fail);
        assert_eq!(
            guard_verdict(&json!("pass: 64 sampled positions, max |Σp−1| = 1e-7")),
            Verdict::Pass
        );
        assert_eq!(
            guard_verdict(&json!("FAIL: target 17 scored twice")),
            Verdict::Fail
        );
        assert_eq!(guard_verdict(&json!("flagged: 0.2%")), Verdict::Flag);
        assert_eq!(guard_verdict(&json!("n/a (no probes)")), Verdict::Info);
        assert_eq!(guard_verdict(&json!({"flagged": true})), Verdict::Flag);
        assert_eq!(guard_verdict(&json!(3)), Verdict::Info);
        assert!(
            Verdict::Fail > Verdict::Unknown
                && Verdict::Unknown > Verdict::Flag
                && Verdict::Flag > Verdict::Pass
        );
    }
}

//! From a bag of runs to the rows of the report: one **point** per scored artifact (a seed, or a
//! point of a sweep), with the runs of its lineage, linked by the input keys every manifest records
//! (eval → quantize-pack → ema-finalize → train), never by position or by name.

use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::runs::{short, EvalKind, Role, Run, Runs};

/// One row of the report: an artifact and what was measured on it.
#[derive(Debug, Clone)]
pub struct Point<'a> {
    pub artifact_key: String,
    pub quantize: Option<&'a Run>,
    pub gptq: Option<&'a Run>,
    pub ema: Option<&'a Run>,
    pub train: Option<&'a Run>,
    pub tokenize: Option<&'a Run>,
    pub evals: BTreeMap<EvalKind, &'a Run>,
    /// Flattened params of every run of the lineage, `role.path` → value (plus `role@identity`).
    pub params: BTreeMap<String, Value>,
}

impl<'a> Point<'a> {
    /// The runs of its lineage, upstream first.
    pub fn runs(&self) -> Vec<&'a Run> {
        let mut runs: Vec<&'a Run> = [
            self.tokenize,
            self.train,
            self.ema,
            self.gptq,
            self.quantize,
        ]
        .into_iter()
        .flatten()
        .collect();
        runs.extend(self.evals.values().copied());
        runs
    }

    /// The training seed, if the train run states one (its headline `seed`, else a train param
    /// named `seed`); a default seed nobody wrote down stays unknown.
    pub fn seed(&self) -> Option<Value> {
        let train = self.train?;
        if let Some(seed) = train.headline("seed") {
            return Some(seed.clone());
        }
        let mut params = BTreeMap::new();
        flatten("train", &train.manifest.params, &mut params);
        params
            .into_iter()
            .find(|(k, _)| is_seed_key(k))
            .map(|(_, v)| v)
    }
}

pub fn is_seed_key(key: &str) -> bool {
    key.rsplit(['.', '@'])
        .next()
        .is_some_and(|last| last == "seed")
}

/// Builds the points. Fails with one line when no evaluation was given, or when runs cannot be told
/// apart (which train run an artifact came from, which of two evaluations of one kind to use).
pub fn build(runs: &Runs) -> Result<Vec<Point<'_>>> {
    if runs.evals().next().is_none() {
        bail!("no evaluation among the inputs: pass at least one ttt-eval or ngram-eval output (e.g. --in eval=out/ttt-eval/KEY)");
    }
    // Artifacts in the order first seen: quantize-pack runs, then artifacts only known from evals.
    let mut artifacts: Vec<String> = runs
        .with_role(&Role::Quantize)
        .map(|r| r.key().to_string())
        .collect();
    for eval in runs.evals() {
        let key = eval
            .parent_key("quantize-pack")
            .map(str::to_string)
            .unwrap_or_else(|| format!("(no artifact) {}", eval.key()));
        if !artifacts.contains(&key) {
            artifacts.push(key);
        }
    }
    let mut points = Vec::new();
    for artifact in artifacts {
        let evals: Vec<&Run> = runs
            .evals()
            .filter(|e| {
                e.parent_key("quantize-pack") == Some(artifact.as_str())
                    || artifact == format!("(no artifact) {}", e.key())
            })
            .collect();
        for evals in split_eval_variants(&artifact, evals)? {
            points.push(lineage(runs, &artifact, evals)?);
        }
    }
    Ok(points)
}

/// Evaluations of one artifact, one per kind. Several of one kind (a sweep of that evaluation's
/// params) become several points; several kinds varying at once cannot be paired up.
fn split_eval_variants<'a>(
    artifact: &str,
    evals: Vec<&'a Run>,
) -> Result<Vec<BTreeMap<EvalKind, &'a Run>>> {
    let mut by_kind: BTreeMap<EvalKind, Vec<&Run>> = BTreeMap::new();
    for e in evals {
        if let Role::Eval(kind) = &e.role {
            by_kind.entry(kind.clone()).or_default().push(e);
        }
    }
    let varying: Vec<&EvalKind> = by_kind
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    if varying.len() > 1 {
        bail!(
            "artifact {}: several runs of more than one evaluation ({}), which cannot be paired into rows: report them separately",
            short(artifact),
            varying.iter().map(|k| k.label()).collect::<Vec<_>>().join(", ")
        );
    }
    let base: BTreeMap<EvalKind, &Run> = by_kind
        .iter()
        .filter(|(_, v)| v.len() == 1)
        .map(|(k, v)| (k.clone(), v[0]))
        .collect();
    Ok(match varying.first() {
        None => vec![base],
        Some(kind) => by_kind[*kind]
            .iter()
            .map(|variant| {
                let mut evals = base.clone();
                evals.insert((*kind).clone(), variant);
                evals
            })
            .collect(),
    })
}

fn lineage<'a>(
    runs: &'a Runs,
    artifact: &str,
    evals: BTreeMap<EvalKind, &'a Run>,
) -> Result<Point<'a>> {
    let quantize = runs.get(artifact).filter(|r| r.role == Role::Quantize);
    let ema = quantize
        .and_then(|q| q.parent_key("ema-finalize"))
        .and_then(|k| runs.get(k));
    let gptq = quantize
        .and_then(|q| q.parent_key("gptq-calibrate"))
        .and_then(|k| runs.get(k));
    // The train run: by key when the chain says which; when the chain is broken (an intermediate run
    // was not given), the only train run given, if there is exactly one.
    let train_key = ema
        .and_then(|e| e.parent_key("train"))
        .or_else(|| quantize.and_then(|q| q.parent_key("train")));
    let trains: Vec<&Run> = runs.with_role(&Role::Train).collect();
    let train = match train_key {
        Some(key) => runs.get(key),
        None if trains.len() <= 1 => trains.first().copied(),
        None => bail!(
            "artifact {}: cannot tell which of {} train runs it came from: also pass its quantize-pack and ema-finalize outputs",
            short(artifact),
            trains.len()
        ),
    };
    let data_key = evals
        .values()
        .find_map(|e| e.parent_key("tokenize"))
        .or_else(|| train.and_then(|t| t.parent_key("tokenize")));
    let tokenizes: Vec<&Run> = runs.with_role(&Role::Tokenize).collect();
    let tokenize = match data_key {
        Some(key) => runs.get(key),
        None if tokenizes.len() == 1 => Some(tokenizes[0]),
        None => None,
    };
    let mut point = Point {
        artifact_key: artifact.to_string(),
        quantize,
        gptq,
        ema,
        train,
        tokenize,
        evals,
        params: BTreeMap::new(),
    };
    for run in point.runs() {
        let role = match &run.role {
            Role::Eval(kind) => kind.label(),
            other => other.label(),
        };
        flatten(&role, &run.manifest.params, &mut point.params);
        point.params.insert(
            format!("{role}@identity"),
            Value::String(run.manifest.identity.clone()),
        );
    }
    Ok(point)
}

/// `{"a": {"b": 1}}` under `train` → `train.a.b = 1`.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| flatten(&format!("{prefix}.{k}"), v, out)),
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Points that share every param except the seed: the seeds of one configuration.
#[derive(Debug, Clone)]
pub struct Group {
    /// The params that set this group apart from the others (empty when there is one group).
    pub axes: BTreeMap<String, Value>,
    /// When the groups differ in the code that made them: which code version this is (from 1).
    pub code: Option<usize>,
    /// Indices into the points.
    pub points: Vec<usize>,
}

impl Group {
    /// The group's params (non-identity axes) and its code version, e.g. `clip=12.5, code v2`.
    pub fn label(&self) -> String {
        let parts = self.parts(true);
        if parts.is_empty() {
            "all runs".into()
        } else {
            parts.join(", ")
        }
    }

    /// The pieces of a label: `key=value` (or just the value) per param axis, then the code version.
    pub fn parts(&self, with_keys: bool) -> Vec<String> {
        let mut parts: Vec<String> = self
            .axes
            .iter()
            .filter(|(k, _)| !is_identity_key(k))
            .map(|(k, v)| {
                if with_keys {
                    format!("{k}={}", value_text(v))
                } else {
                    value_text(v)
                }
            })
            .collect();
        parts.extend(self.code.map(|n| format!("code v{n}")));
        parts
    }
}

/// Groups points by the params that vary across them, other than seeds. One group = seeds (or a
/// single run); several = a sweep, whose axes are the varying params.
pub fn group(points: &[Point]) -> (Vec<String>, Vec<Group>) {
    // Axes come from the evaluated points: a quantize-pack run given without any evaluation lacks
    // every eval param, which is no sweep.
    let evaluated: Vec<&Point> = points.iter().filter(|p| !p.evals.is_empty()).collect();
    let basis: Vec<&Point> = if evaluated.is_empty() {
        points.iter().collect()
    } else {
        evaluated
    };
    let mut keys: Vec<&String> = basis.iter().flat_map(|p| p.params.keys()).collect();
    keys.sort();
    keys.dedup();
    let varying: Vec<String> = keys
        .into_iter()
        .filter(|k| !is_seed_key(k))
        .filter(|k| {
            basis
                .iter()
                .any(|p| p.params.get(*k) != basis[0].params.get(*k))
        })
        .cloned()
        .collect();
    let mut groups: Vec<Group> = Vec::new();
    let mut codes: Vec<Vec<Value>> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let axes: BTreeMap<String, Value> = varying
            .iter()
            .map(|k| (k.clone(), p.params.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        match groups.iter_mut().find(|g| g.axes == axes) {
            Some(g) => g.points.push(i),
            None => {
                // Code versions (the stages' source identities) are numbered in order of appearance.
                let identities: Vec<Value> = axes
                    .iter()
                    .filter(|(k, _)| is_identity_key(k))
                    .map(|(_, v)| v.clone())
                    .collect();
                let code = (!identities.is_empty()).then(|| {
                    match codes.iter().position(|c| *c == identities) {
                        Some(n) => n + 1,
                        None => {
                            codes.push(identities);
                            codes.len()
                        }
                    }
                });
                groups.push(Group {
                    axes,
                    points: vec![i],
                    code,
                });
            }
        }
    }
    (varying, groups)
}

/// `train@identity`: a stage's source identity, not a param.
pub fn is_identity_key(key: &str) -> bool {
    key.ends_with("@identity")
}

/// A param value as shown in labels; a source identity is cut to its first 8 hex digits.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains('@') => s
            .split_once('@')
            .map(|(n, h)| format!("{n}@{}", &h[..h.len().min(8)]))
            .unwrap_or_default(),
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_keys_and_flattening() {
        assert!(is_seed_key("train.seed"));
        assert!(is_seed_key("train.data.seed"));
        assert!(!is_seed_key("train.seeds_used"));
        let mut out = BTreeMap::new();
        flatten(
            "train",
            &serde_json::json!({"a": {"b": 1}, "seed": 3}),
            &mut out,
        );
        assert_eq!(out["train.a.b"], 1);
        assert_eq!(out["train.seed"], 3);
        assert_eq!(
            value_text(&Value::String("train@0123456789abcdef".into())),
            "train@01234567"
        );
    }
}

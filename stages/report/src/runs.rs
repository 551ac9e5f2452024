//! The report's inputs: every stage run it was given, each with its role, read from its manifest
//! (the `stage` field, and for ttt-eval its `mode`), never from the `--in` name it came under.

use anyhow::{anyhow, bail, Result};
use pgolf_store::{Input, Manifest};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

/// What an evaluation measured. The derived order is the order a pipeline stacks them in, used by
/// the "BPB by stage" chart and by `score: auto` (which takes the last one every run has).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EvalKind {
    /// Round-trip of the artifact, non-overlapping windows (upstream's `final_int8_zlib_roundtrip`).
    Flat,
    Sliding,
    Ttt,
    /// A ttt-eval mode this report does not know, shown under its own name.
    Other(String),
    Ngram,
}

impl EvalKind {
    pub fn label(&self) -> String {
        match self {
            EvalKind::Flat => "round-trip".into(),
            EvalKind::Sliding => "sliding".into(),
            EvalKind::Ttt => "TTT".into(),
            EvalKind::Other(mode) => mode.clone(),
            EvalKind::Ngram => "n-gram".into(),
        }
    }

    /// Adaptive evaluations update state from scored tokens, so score-before-update applies.
    pub fn adaptive(&self) -> bool {
        matches!(self, EvalKind::Ttt | EvalKind::Ngram | EvalKind::Other(_))
    }

    /// A ttt-eval `mode` (headline or params) to its kind.
    fn from_mode(mode: &str) -> EvalKind {
        let m = mode.to_ascii_lowercase();
        if ["ttt", "lora", "phased", "score-first", "score_first"]
            .iter()
            .any(|w| m.contains(w))
        {
            EvalKind::Ttt
        } else if m.contains("slid") {
            EvalKind::Sliding
        } else if [
            "flat",
            "roundtrip",
            "round-trip",
            "round_trip",
            "standard",
            "plain",
        ]
        .contains(&m.as_str())
        {
            EvalKind::Flat
        } else {
            EvalKind::Other(mode.to_string())
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Tokenize,
    Train,
    EmaFinalize,
    GptqCalibrate,
    Quantize,
    Eval(EvalKind),
    /// Another report: the baseline of the significance test.
    Report,
    /// A stage this report has no use for (listed in the provenance, otherwise ignored).
    Other,
}

impl Role {
    pub fn label(&self) -> String {
        match self {
            Role::Tokenize => "tokenize".into(),
            Role::Train => "train".into(),
            Role::EmaFinalize => "ema-finalize".into(),
            Role::GptqCalibrate => "gptq-calibrate".into(),
            Role::Quantize => "quantize-pack".into(),
            Role::Eval(kind) => format!("eval {}", kind.label()),
            Role::Report => "baseline report".into(),
            Role::Other => "unused".into(),
        }
    }
}

/// One finished stage run given to the report.
#[derive(Clone, Debug)]
pub struct Run {
    /// The `--in` name it came under (first one, if given twice).
    pub input: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub role: Role,
}

impl Run {
    pub fn key(&self) -> &str {
        &self.manifest.key
    }

    /// The first 12 hex digits of the key, as shown in tables.
    pub fn short_key(&self) -> &str {
        short(&self.manifest.key)
    }

    /// Where its manifest lives relative to a report stored at `out/report/<key>/`.
    pub fn href(&self) -> String {
        format!(
            "../../{}/{}/manifest.json",
            self.manifest.stage, self.manifest.key
        )
    }

    /// The short form of what this run is, e.g. `train 3f2a9c01d4e5`.
    pub fn tag(&self) -> String {
        format!("{} {}", self.manifest.stage, self.short_key())
    }

    pub fn headline(&self, name: &str) -> Option<&Value> {
        self.manifest.headline.get(name)
    }

    pub fn headline_f64(&self, name: &str) -> Option<f64> {
        self.manifest.headline_f64(name)
    }

    /// A headline figure the report cannot do without.
    pub fn require_f64(&self, name: &str) -> Result<f64> {
        self.headline_f64(name)
            .ok_or_else(|| anyhow!("{}: headline has no number `{name}`", self.manifest_path()))
    }

    pub fn manifest_path(&self) -> String {
        self.dir
            .join(pgolf_store::files::MANIFEST)
            .display()
            .to_string()
    }

    /// The key of this run's input that came from `stage` (one run, not a list).
    pub fn parent_key(&self, stage: &str) -> Option<&str> {
        self.manifest
            .inputs
            .values()
            .find(|i| i.stage.as_deref() == Some(stage) && i.runs.is_empty())
            .map(|i| i.key.as_str())
    }
}

pub fn short(key: &str) -> &str {
    let hex = key.rsplit(':').next().unwrap_or(key);
    &hex[..hex.len().min(12)]
}

/// Every run given, deduplicated by key (a shared upstream run may arrive in several lists), in
/// the order given.
#[derive(Debug, Default)]
pub struct Runs {
    pub all: Vec<Run>,
    by_key: HashMap<String, usize>,
}

impl Runs {
    pub fn load<'a>(inputs: impl Iterator<Item = &'a Input>) -> Result<Runs> {
        let mut runs = Runs::default();
        for input in inputs {
            if !input.is_stage_output() {
                bail!("--in {}={}: not a stage output (the report reads only stage runs' manifests and tables)", input.name, input.path().display());
            }
            for (dir, manifest) in input.paths.iter().zip(&input.manifests) {
                if runs.by_key.contains_key(&manifest.key) {
                    continue;
                }
                let run = Run {
                    input: input.name.clone(),
                    dir: dir.clone(),
                    role: role_of(manifest, dir)?,
                    manifest: manifest.clone(),
                };
                runs.by_key.insert(manifest.key.clone(), runs.all.len());
                runs.all.push(run);
            }
        }
        Ok(runs)
    }

    pub fn get(&self, key: &str) -> Option<&Run> {
        self.by_key.get(key).map(|&i| &self.all[i])
    }

    pub fn with_role(&self, role: &Role) -> impl Iterator<Item = &Run> {
        let role = role.clone();
        self.all.iter().filter(move |r| r.role == role)
    }

    pub fn evals(&self) -> impl Iterator<Item = &Run> {
        self.all.iter().filter(|r| matches!(r.role, Role::Eval(_)))
    }
}

fn role_of(manifest: &Manifest, dir: &std::path::Path) -> Result<Role> {
    Ok(match manifest.stage.as_str() {
        "tokenize" => Role::Tokenize,
        "train" => Role::Train,
        "ema-finalize" => Role::EmaFinalize,
        "gptq-calibrate" => Role::GptqCalibrate,
        "quantize-pack" => Role::Quantize,
        "ngram-eval" => Role::Eval(EvalKind::Ngram),
        "report" => Role::Report,
        "ttt-eval" => {
            let mode = manifest
                .headline
                .get("mode")
                .or_else(|| manifest.params.get("mode"));
            match mode.and_then(Value::as_str) {
                Some(mode) => Role::Eval(EvalKind::from_mode(mode)),
                None => bail!(
                    "{}: a ttt-eval run with no `mode` in its headline or params",
                    dir.join(pgolf_store::files::MANIFEST).display()
                ),
            }
        }
        _ => Role::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_map_to_kinds_in_pipeline_order() {
        assert_eq!(EvalKind::from_mode("flat"), EvalKind::Flat);
        assert_eq!(EvalKind::from_mode("sliding"), EvalKind::Sliding);
        assert_eq!(EvalKind::from_mode("sliding-ttt"), EvalKind::Ttt);
        assert_eq!(EvalKind::from_mode("lora"), EvalKind::Ttt);
        assert_eq!(
            EvalKind::from_mode("weird"),
            EvalKind::Other("weird".into())
        );
        assert!(
            EvalKind::Flat < EvalKind::Sliding
                && EvalKind::Sliding < EvalKind::Ttt
                && EvalKind::Ttt < EvalKind::Ngram
        );
        assert_eq!(short("runs:0123456789abcdef"), "0123456789ab");
    }
}

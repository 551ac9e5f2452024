//! The report's params: the words of the submission that no stage can know (name, author, blurb),
//! which evaluation is the score, the baseline of the significance claim, and the rule's limits.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Submission name (upstream `name`).
    pub name: String,
    pub author: Option<String>,
    pub github_id: Option<String>,
    pub blurb: Option<String>,
    /// Upstream `track`, e.g. `10min_16mb`; omitted from submission.json when not given.
    pub track: Option<String>,
    /// Which evaluation is the submitted score.
    pub score: ScoreChoice,
    /// What the runs are compared against; without it no significance claim is made.
    pub baseline: Option<Baseline>,
    /// The record bar, in nats per token (REFERENCE.md §7).
    pub min_improvement_nats: f64,
    /// Significance level of the one-sided test.
    pub alpha: f64,
    pub train_cap_seconds: f64,
    pub eval_cap_seconds: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            name: "pgolf run".into(),
            author: None,
            github_id: None,
            blurb: None,
            track: None,
            score: ScoreChoice::Auto,
            baseline: None,
            min_improvement_nats: 0.005,
            alpha: 0.01,
            train_cap_seconds: 600.0,
            eval_cap_seconds: 600.0,
        }
    }
}

/// `auto` takes the most refined evaluation every run has: n-gram, then TTT, then sliding, then
/// round-trip (flat), the order in which a pipeline stacks them.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreChoice {
    Auto,
    Flat,
    Sliding,
    Ttt,
    Ngram,
}

/// A published baseline: the mean, sample std and number of runs of its score, in the unit stated.
/// `n: 1, std: 0` means a single number taken as exact (the test becomes a one-sample t-test).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
    pub unit: Unit,
    /// What it is, e.g. "Naive Baseline (2026-03-17)".
    #[serde(default)]
    pub label: Option<String>,
}

/// `nats`: val_loss, nats per token (the unit of the 0.005 bar). `bpb`: val_bpb; converted to nats
/// with our own runs' bytes per token, which assumes the baseline used the same tokenization.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Nats,
    Bpb,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let p: Params = serde_json::from_str("{}").unwrap();
        assert_eq!(p.score, ScoreChoice::Auto);
        assert_eq!(p.min_improvement_nats, 0.005);
        let p: Params = serde_json::from_str(
            r#"{"score":"sliding","baseline":{"mean":1.22,"std":0.001,"n":3,"unit":"bpb"}}"#,
        )
        .unwrap();
        assert_eq!(p.score, ScoreChoice::Sliding);
        assert_eq!(p.baseline.unwrap().unit, Unit::Bpb);
        assert!(
            serde_json::from_str::<Params>(r#"{"baseline":{"mean":1,"std":0,"n":1}}"#).is_err(),
            "unit is required"
        );
        assert!(serde_json::from_str::<Params>(r#"{"nmae":"x"}"#).is_err());
    }
}

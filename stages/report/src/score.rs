//! Which evaluation is the submitted score, and each point's score read from that run's headline.

use anyhow::{bail, Result};

use crate::params::ScoreChoice;
use crate::points::Point;
use crate::runs::{EvalKind, Run};

/// A point's submitted score.
#[derive(Debug, Clone, Copy)]
pub struct Score<'a> {
    pub val_loss: f64,
    pub val_bpb: f64,
    pub run: &'a Run,
}

/// The kind every point is scored by: the one asked for, or under `auto` the most refined kind
/// that every evaluated point has (so all rows are scored alike).
pub fn kind(choice: ScoreChoice, points: &[Point]) -> Result<EvalKind> {
    let evaluated: Vec<&Point> = points.iter().filter(|p| !p.evals.is_empty()).collect();
    if evaluated.is_empty() {
        bail!("no evaluation among the inputs");
    }
    let wanted = match choice {
        ScoreChoice::Flat => Some(EvalKind::Flat),
        ScoreChoice::Sliding => Some(EvalKind::Sliding),
        ScoreChoice::Ttt => Some(EvalKind::Ttt),
        ScoreChoice::Ngram => Some(EvalKind::Ngram),
        ScoreChoice::Auto => None,
    };
    if let Some(kind) = wanted {
        if let Some(p) = evaluated.iter().find(|p| !p.evals.contains_key(&kind)) {
            bail!(
                "params score = {}: artifact {} has no {} evaluation among the inputs",
                kind.label(),
                crate::runs::short(&p.artifact_key),
                kind.label()
            );
        }
        return Ok(kind);
    }
    let mut common: Vec<&EvalKind> = evaluated[0]
        .evals
        .keys()
        .filter(|k| evaluated.iter().all(|p| p.evals.contains_key(*k)))
        .collect();
    common.sort_by_key(|k| {
        std::cmp::Reverse(match k {
            // `Other` modes are never picked automatically: nobody said what they are.
            EvalKind::Other(_) => 0,
            EvalKind::Flat => 1,
            EvalKind::Sliding => 2,
            EvalKind::Ttt => 3,
            EvalKind::Ngram => 4,
        })
    });
    match common.first() {
        Some(EvalKind::Other(_)) | None => bail!("no evaluation kind that every run has: set params score to one of flat, sliding, ttt, ngram"),
        Some(kind) => Ok((*kind).clone()),
    }
}

/// Each point's score (`None` for a point with no evaluation at all).
pub fn scores<'a>(kind: &EvalKind, points: &[Point<'a>]) -> Result<Vec<Option<Score<'a>>>> {
    points
        .iter()
        .map(|p| match p.evals.get(kind) {
            None => Ok(None),
            Some(run) => Ok(Some(Score {
                val_loss: run.require_f64("val_loss")?,
                val_bpb: run.require_f64("val_bpb")?,
                run,
            })),
        })
        .collect()
}

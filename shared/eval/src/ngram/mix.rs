//! Mixing the network with a causal n-gram model, validly, and diagnosing the invalid hashed cache.
//!
//! Valid mix: `p(v) = (1 − λ)·p_net(v) + λ·p_ng(v)` with both full normalized distributions and `λ`
//! fixed or a function of the network's predictive entropy (prefix-only), so `p` is a distribution
//! over the whole vocabulary (C2). Each target is scored, recorded in the ledger, and only then
//! learned by the n-gram model through its [`crate::ledger::ScoredSpan`] (C3).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::hashed::HashedCache;
use super::kn::KneserNey;
use crate::bpb::BpbSums;
use crate::guards::Normalization;
use crate::ledger::{Ledger, ScoredSpan};
use crate::pass::{run_windows, PassOptions, ProbePlan};
use crate::schedule::Window;
use crate::scorer::Scorer;
use std::ops::Range;

/// The n-gram weight λ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
pub enum MixWeight {
    Fixed {
        weight: f64,
    },
    /// `λ = min + (max − min)·σ(slope·(H − center))`, H the network's entropy in nats: lean on the
    /// n-gram where the network is unsure.
    Entropy {
        min: f64,
        max: f64,
        center: f64,
        slope: f64,
    },
}

impl MixWeight {
    pub fn lambda(&self, entropy: f64) -> f64 {
        match *self {
            MixWeight::Fixed { weight } => weight,
            MixWeight::Entropy {
                min,
                max,
                center,
                slope,
            } => min + (max - min) / (1.0 + (-slope * (entropy - center)).exp()),
        }
    }

    pub fn needs_entropy(&self) -> bool {
        matches!(self, MixWeight::Entropy { .. })
    }

    /// Both ends must be weights in [0, 1], or the mixture is not a distribution.
    pub fn validate(&self) -> Result<()> {
        let ok = |w: f64| (0.0..=1.0).contains(&w);
        let valid = match *self {
            MixWeight::Fixed { weight } => ok(weight),
            MixWeight::Entropy {
                min,
                max,
                center,
                slope,
            } => ok(min) && ok(max) && center.is_finite() && slope.is_finite(),
        };
        if !valid {
            anyhow::bail!("mix weight {self:?}: weights must lie in [0, 1]");
        }
        Ok(())
    }
}

/// Side results of a mixing pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MixStats {
    /// The network alone on the same targets (what the mixture is compared with).
    pub network: BpbSums,
    pub mean_lambda: f64,
}

/// Scores `windows` with the network, mixes each target with the n-gram model, records the mixed
/// NLL, then lets the n-gram model learn the target.
#[allow(clippy::too_many_arguments)]
pub fn mix_pass<S: Scorer + ?Sized>(
    ledger: &mut Ledger,
    windows: &[Window],
    scorer: &mut S,
    ngram: &mut KneserNey,
    weight: MixWeight,
    opts: &PassOptions,
    norm: &mut Normalization,
    mut progress: impl FnMut(usize),
) -> Result<MixStats> {
    weight.validate()?;
    let opts = PassOptions {
        entropy: weight.needs_entropy(),
        ..*opts
    };
    let val = ledger.val();
    let plan = ProbePlan::new(windows.len(), opts.probes);
    let mut stats = MixStats::default();
    let mut lambda_sum = 0.0;
    let group = opts.batch_windows.max(1) * 8;
    for (g, part) in windows.chunks(group).enumerate() {
        run_windows(
            &val.tokens,
            part,
            scorer,
            &opts,
            &plan,
            g * group,
            norm,
            |w, probe, s, norm| {
                for (i, t) in w.scored().enumerate() {
                    let y = val.tokens[t];
                    let lambda = weight.lambda(s.entropy.get(i).copied().unwrap_or(0.0));
                    let p = (1.0 - lambda) * (-s.nll[i]).exp() + lambda * ngram.prob(y);
                    let nll = -p.ln();
                    if probe == Some(i) {
                        let net = s.probe.as_ref().expect("run_windows checked the probe row");
                        let mixed: Vec<f64> = net
                            .iter()
                            .zip(ngram.distribution())
                            .map(|(a, b)| (1.0 - lambda) * a + lambda * b)
                            .collect();
                        norm.check("n-gram mixture", t, &mixed, y, nll)?;
                    }
                    ledger.record(t, &[nll])?;
                    ngram.observe(&ledger.span(t..t + 1)?)?;
                    stats.network.add(s.nll[i], val.target_lut_bytes(t));
                    lambda_sum += lambda;
                }
                Ok(())
            },
        )?;
        progress(part.len());
    }
    stats.mean_lambda = lambda_sum / stats.network.targets.max(1) as f64;
    Ok(stats)
}

/// What the hashed cache would claim, and how far from a distribution it is.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiagnoseStats {
    /// Σ of the claimed `−ln p` over all targets, with the target-keyed lookup of the scripts.
    pub claimed: BpbSums,
    /// Positions where an order qualified (the cache was mixed in).
    pub cache_hits: u64,
    /// Probed positions with a qualifying order: implied mass of the mixture, Σ_v p_mix(v).
    pub mass_probes: u64,
    pub mass_mean: f64,
    pub mass_min: f64,
    pub mass_max: f64,
    /// On those probes: mean claimed NLL vs mean NLL after dividing by the implied mass.
    pub probe_claimed_nll: f64,
    pub probe_normalized_nll: f64,
}

/// Scores with the network (the ledger gets the network's valid NLL), and on the side computes what
/// the hashed cache mixed at weight `alpha` would claim, plus its implied mass at probe positions.
#[allow(clippy::too_many_arguments)]
/// An invalid cache as a script computes it, for [`diagnose_pass`]: what it would blend at a
/// target, the mass of the blended "distribution" there, and its updates.
pub trait ClaimedCache {
    /// Before the targets `scored` of window `index` of `windows`.
    fn begin_window(
        &mut self,
        _val: &[u16],
        _index: usize,
        _windows: usize,
        _scored: Range<usize>,
    ) {
    }
    /// The cache probability the script blends at target position `t` (None: the model alone).
    fn claimed(&self, val: &[u16], t: usize) -> Option<f64>;
    /// The total mass of the script's blend at `t` given the model's row there, if it blends.
    fn blended_mass(&self, val: &[u16], t: usize, alpha: f64, model: Option<&[f64]>)
        -> Option<f64>;
    /// After target `span` was scored.
    fn observe(&mut self, span: &ScoredSpan<'_>) -> Result<()>;
    /// After a window's targets.
    fn end_window(&mut self, _val: &[u16]) {}
}

impl ClaimedCache for HashedCache {
    fn claimed(&self, val: &[u16], t: usize) -> Option<f64> {
        HashedCache::claimed(self, val[t])
    }

    fn blended_mass(
        &self,
        _val: &[u16],
        _t: usize,
        alpha: f64,
        _model: Option<&[f64]>,
    ) -> Option<f64> {
        self.implied_mass().map(|mass| (1.0 - alpha) + alpha * mass)
    }

    fn observe(&mut self, span: &ScoredSpan<'_>) -> Result<()> {
        HashedCache::observe(self, span)
    }
}

#[allow(clippy::too_many_arguments)]
pub fn diagnose_pass<S: Scorer + ?Sized>(
    ledger: &mut Ledger,
    windows: &[Window],
    scorer: &mut S,
    cache: &mut dyn ClaimedCache,
    alpha: f64,
    opts: &PassOptions,
    norm: &mut Normalization,
    mut progress: impl FnMut(usize),
) -> Result<DiagnoseStats> {
    let val = ledger.val();
    let plan = ProbePlan::new(windows.len(), opts.probes);
    let mut d = DiagnoseStats {
        mass_min: f64::INFINITY,
        ..Default::default()
    };
    let (mut mass_sum, mut claimed_sum, mut normalized_sum) = (0.0, 0.0, 0.0);
    let group = opts.batch_windows.max(1) * 8;
    let mut index = 0;
    for (g, part) in windows.chunks(group).enumerate() {
        run_windows(
            &val.tokens,
            part,
            scorer,
            opts,
            &plan,
            g * group,
            norm,
            |w, probe, s, _| {
                cache.begin_window(&val.tokens, index, windows.len(), w.scored());
                index += 1;
                for (i, t) in w.scored().enumerate() {
                    let p_net = (-s.nll[i]).exp();
                    let claimed = match cache.claimed(&val.tokens, t) {
                        Some(p_ng) => {
                            d.cache_hits += 1;
                            -((1.0 - alpha) * p_net + alpha * p_ng).ln()
                        }
                        None => s.nll[i],
                    };
                    if probe == Some(i) {
                        let row = s.probe.as_deref();
                        if let Some(z) = cache.blended_mass(&val.tokens, t, alpha, row) {
                            d.mass_probes += 1;
                            mass_sum += z;
                            d.mass_min = d.mass_min.min(z);
                            d.mass_max = d.mass_max.max(z);
                            claimed_sum += claimed;
                            normalized_sum += claimed + z.ln();
                        }
                    }
                    d.claimed.add(claimed, val.target_lut_bytes(t));
                    ledger.record(t, &[s.nll[i]])?;
                    cache.observe(&ledger.span(t..t + 1)?)?;
                }
                cache.end_window(&val.tokens);
                Ok(())
            },
        )?;
        progress(part.len());
    }
    if d.mass_probes > 0 {
        let n = d.mass_probes as f64;
        (d.mass_mean, d.probe_claimed_nll, d.probe_normalized_nll) =
            (mass_sum / n, claimed_sum / n, normalized_sum / n);
    } else {
        d.mass_min = f64::NAN;
    }
    Ok(d)
}

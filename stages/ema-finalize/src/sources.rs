//! The candidate weight sets of a train output and how the chosen one is formed.
//!
//! - raw: `model.safetensors`;
//! - ema: `ema.safetensors` (fp32 shadow), only when the train manifest reports `ema_updates > 0`;
//! - swa: `swa.safetensors`, the fp32 uniform average of the snapshots the train stage took
//!   (REFERENCE.md §5.6), only when the train manifest reports `swa_snapshots > 0`;
//! - blend: `Σ wᵢ·sourceᵢ` over the sources with a positive weight (weights sum to 1).
//!
//! `auto` takes the EMA only once it has forgotten its start: the EMA is initialised to the
//! initial weights without bias correction (as upstream), so after N updates at decay d it still
//! holds d^N of them — 55% after 200 steps at 0.997, enough to ruin a short run (round-trip BPB
//! 2.76 against 1.54 for the raw weights). Above `ema_max_initial_share` `auto` takes the raw
//! weights, and an explicit `ema` is honoured with a loud warning.
//!
//! Every source must hold exactly the raw model's names and shapes; the result takes each tensor's
//! dtype from the raw model (the averages are cast back, as upstream loads them into the model).

use anyhow::{bail, Context, Result};
use pgolf_quant::{read_safetensors, Weight};
use pgolf_store::files;
use pgolf_store::Manifest;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The EMA when the train output has one that has forgotten its initial weights, else raw.
    Auto,
    Raw,
    Ema,
    Swa,
    Blend,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlendWeights {
    pub raw: f64,
    pub ema: f64,
    pub swa: f64,
}

impl Default for BlendWeights {
    fn default() -> Self {
        BlendWeights {
            raw: 0.5,
            ema: 0.5,
            swa: 0.0,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub source: Source,
    /// Used when `source` is `blend`.
    pub blend: BlendWeights,
    /// The largest share of the initial weights (decay^updates) an EMA may still hold for `auto`
    /// to take it; above it `auto` takes raw and an explicit EMA is warned about.
    pub ema_max_initial_share: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            source: Source::Auto,
            blend: BlendWeights::default(),
            ema_max_initial_share: 0.01,
        }
    }
}

/// What the train manifest's headline says about the averaged weights.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrainFacts {
    pub ema_updates: Option<u64>,
    pub ema_decay: Option<f64>,
    /// Steps per update (train's `ema_every`; 0, a headline that predates it, counts as 1).
    pub ema_every: u64,
    pub swa_snapshots: Option<u64>,
}

impl TrainFacts {
    /// From the train output's manifest; `None` (a folder of raw weights) knows nothing.
    pub fn read(manifest: Option<&Manifest>) -> TrainFacts {
        let Some(m) = manifest else {
            return TrainFacts::default();
        };
        // Outputs of a train stage from before the `ema_decay` headline: the decay only if the
        // params gave it (the default is not this stage's to assume).
        let ema_decay = m
            .headline_f64("ema_decay")
            .or_else(|| m.params.get("ema_decay").and_then(|v| v.as_f64()));
        TrainFacts {
            ema_updates: m.headline.get("ema_updates").and_then(|v| v.as_u64()),
            ema_decay,
            ema_every: m
                .headline
                .get("ema_every")
                .and_then(|v| v.as_u64())
                .unwrap_or(1),
            swa_snapshots: m.headline.get("swa_snapshots").and_then(|v| v.as_u64()),
        }
    }

    /// d^(k·N), the weight the EMA still gives the initial weights after N updates of cadence k
    /// (each a lerp of weight 1 − d^k); `None` if d or N is unknown.
    pub fn ema_initial_share(&self) -> Option<f64> {
        match (self.ema_decay, self.ema_updates) {
            (Some(d), Some(n)) => Some(d.powf((n * self.ema_every.max(1)) as f64)),
            _ => None,
        }
    }
}

pub struct Sources {
    dir: PathBuf,
    pub facts: TrainFacts,
}

/// The chosen weights, with why they were chosen and what the user should know about them.
pub struct Finalized {
    /// `raw`, `ema`, `swa` or `blend(...)`.
    pub label: String,
    pub reason: String,
    pub warnings: Vec<String>,
    pub weights: Vec<Weight>,
}

impl Sources {
    pub fn new(dir: &Path, facts: TrainFacts) -> Sources {
        Sources {
            dir: dir.to_path_buf(),
            facts,
        }
    }

    fn ema_path(&self) -> PathBuf {
        self.dir.join(files::EMA_WEIGHTS)
    }

    fn swa_path(&self) -> PathBuf {
        self.dir.join(files::SWA_WEIGHTS)
    }

    fn has_updated_ema(&self) -> bool {
        self.facts.ema_updates.is_some_and(|n| n > 0) && self.ema_path().is_file()
    }

    /// The EMA, refused unless the manifest says it was updated.
    fn ema(&self, raw: &[Weight]) -> Result<Vec<Weight>> {
        let path = self.ema_path();
        match self.facts.ema_updates {
            Some(n) if n > 0 => {}
            Some(_) => bail!("{}: the EMA was never updated (ema_updates = 0 in the train manifest); refusing it", path.display()),
            None => bail!("{}: the train manifest does not report ema_updates, so the EMA cannot be shown to have been updated; refusing it", path.display()),
        }
        if !path.is_file() {
            bail!(
                "{}: missing, though the train manifest reports ema_updates = {}",
                path.display(),
                self.facts.ema_updates.unwrap_or(0)
            );
        }
        conform(read_safetensors(&path)?, raw, &path)
    }

    /// The train stage's SWA average, refused unless the manifest counts at least one snapshot.
    fn swa(&self, raw: &[Weight]) -> Result<Vec<Weight>> {
        let path = self.swa_path();
        match self.facts.swa_snapshots {
            Some(n) if n > 0 => {}
            Some(_) => bail!("{}: no SWA snapshots were taken (swa_snapshots = 0 in the train manifest: did lr_mul fall below swa_lr_threshold at a multiple of swa_every?); refusing SWA", self.dir.display()),
            None => bail!("{}: the train manifest does not report swa_snapshots (train with swa_every > 0); refusing SWA", self.dir.display()),
        }
        if !path.is_file() {
            bail!(
                "{}: missing, though the train manifest reports swa_snapshots = {}",
                path.display(),
                self.facts.swa_snapshots.unwrap_or(0)
            );
        }
        conform(read_safetensors(&path)?, raw, &path)
    }

    /// Why `auto` would not take the EMA (`None`: it takes it), and the warning an explicit use
    /// of the EMA deserves (the same condition).
    fn ema_objection(&self, max_share: f64) -> Option<String> {
        match (self.facts.ema_initial_share(), self.facts.ema_decay) {
            (Some(share), Some(d)) if share > max_share => Some(format!(
                "the EMA still holds {:.1}% of the initial weights ({d}^{} = {share:.3} > ema_max_initial_share {max_share})",
                share * 100.0,
                self.facts.ema_updates.unwrap_or(0)
            )),
            (Some(_), _) => None,
            _ => Some(
                "the EMA's decay is unknown (the train manifest reports no ema_decay), so its share of the initial weights cannot be bounded".into(),
            ),
        }
    }

    /// The chosen weights, the reason, and warnings.
    pub fn finalize(&self, p: &Params, raw: &[Weight]) -> Result<Finalized> {
        let max_share = p.ema_max_initial_share;
        if !(0.0..=1.0).contains(&max_share) {
            bail!("params: ema_max_initial_share must be in [0, 1], got {max_share}");
        }
        let done = |label: &str, reason: String, warnings: Vec<String>, weights| Finalized {
            label: label.into(),
            reason,
            warnings,
            weights,
        };
        let ema_warning = || {
            self.ema_objection(max_share).map(|why| {
                format!("{why}: expect a much worse round trip than the raw weights (source auto would take raw)")
            })
        };
        Ok(match p.source {
            Source::Raw => done("raw", "requested".into(), vec![], raw.to_vec()),
            Source::Auto if !self.has_updated_ema() => done(
                "raw",
                "auto: the train output has no updated EMA".into(),
                vec![],
                raw.to_vec(),
            ),
            Source::Auto => match self.ema_objection(max_share) {
                Some(why) => done("raw", format!("auto: {why}"), vec![], raw.to_vec()),
                None => {
                    let share = self.facts.ema_initial_share().unwrap_or(0.0);
                    let reason = format!(
                        "auto: the EMA holds {share:.2e} of the initial weights (≤ {max_share})"
                    );
                    done("ema", reason, vec![], self.ema(raw)?)
                }
            },
            Source::Ema => {
                let weights = self.ema(raw)?;
                done(
                    "ema",
                    "requested".into(),
                    ema_warning().into_iter().collect(),
                    weights,
                )
            }
            Source::Swa => {
                let weights = self.swa(raw)?;
                let n = self.facts.swa_snapshots.unwrap_or(0);
                let reason = format!("requested: the average of {n} snapshots");
                let warnings = (n == 1)
                    .then(|| "the SWA average is a single snapshot".to_string())
                    .into_iter()
                    .collect();
                done("swa", reason, warnings, weights)
            }
            Source::Blend => {
                let b = &p.blend;
                let parts = [b.raw, b.ema, b.swa];
                if parts.iter().any(|w| !(w.is_finite() && *w >= 0.0))
                    || (parts.iter().sum::<f64>() - 1.0).abs() > 1e-9
                {
                    bail!("params: blend weights must be non-negative and sum to 1, got raw {} ema {} swa {}", b.raw, b.ema, b.swa);
                }
                let ema = if b.ema > 0.0 { self.ema(raw)? } else { vec![] };
                let swa = if b.swa > 0.0 { self.swa(raw)? } else { vec![] };
                let mut terms = vec![(b.raw, raw)];
                let mut warnings = vec![];
                if b.ema > 0.0 {
                    terms.push((b.ema, ema.as_slice()));
                    warnings.extend(ema_warning());
                }
                if b.swa > 0.0 {
                    terms.push((b.swa, swa.as_slice()));
                }
                let label = format!("blend(raw={},ema={},swa={})", b.raw, b.ema, b.swa);
                done(&label, "requested".into(), warnings, mix(raw, &terms))
            }
        })
    }
}

/// `set` reordered to `raw`'s names, checked for the same names and shapes, cast to raw's dtypes.
fn conform(set: Vec<Weight>, raw: &[Weight], path: &Path) -> Result<Vec<Weight>> {
    let mut by_name: std::collections::HashMap<String, Weight> =
        set.into_iter().map(|w| (w.name.clone(), w)).collect();
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let mut w = by_name
            .remove(&r.name)
            .with_context(|| format!("{}: missing tensor {}", path.display(), r.name))?;
        if w.shape != r.shape {
            bail!(
                "{}: tensor {} has shape {:?}, the model's is {:?}",
                path.display(),
                r.name,
                w.shape,
                r.shape
            );
        }
        w.data
            .iter_mut()
            .for_each(|v| *v = pgolf_quant::dtype::round_through(r.dtype, *v));
        w.dtype = r.dtype;
        out.push(w);
    }
    if let Some(extra) = by_name.keys().next() {
        bail!("{}: tensor {extra} is not in the model", path.display());
    }
    Ok(out)
}

/// `Σ wᵢ·setᵢ`, accumulated in f64, rounded to each tensor's dtype.
fn mix(raw: &[Weight], terms: &[(f64, &[Weight])]) -> Vec<Weight> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            let data = (0..r.data.len())
                .map(|k| {
                    let v: f64 = terms.iter().map(|(w, set)| w * set[i].data[k] as f64).sum();
                    pgolf_quant::dtype::round_through(r.dtype, v as f32)
                })
                .collect();
            Weight { data, ..r.clone() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgolf_quant::{write_safetensors, DType};

    fn w(name: &str, dtype: DType, data: Vec<f32>) -> Weight {
        Weight {
            name: name.into(),
            shape: vec![data.len()],
            dtype,
            data,
        }
    }

    /// Facts of a run whose EMA (decay 0.9) had `updates` updates and which took `snapshots`.
    fn facts(updates: u64, snapshots: u64) -> TrainFacts {
        TrainFacts {
            ema_updates: Some(updates),
            ema_decay: Some(0.9),
            ema_every: 1,
            swa_snapshots: Some(snapshots),
        }
    }

    /// With a cadence of k steps each update is a lerp of weight 1 − d^k: N updates leave d^(kN).
    #[test]
    fn the_initial_share_counts_the_cadence() {
        let every_step = facts(20, 0);
        assert!((every_step.ema_initial_share().unwrap() - 0.9f64.powi(20)).abs() < 1e-15);
        let every_10 = TrainFacts {
            ema_every: 10,
            ..facts(20, 0)
        };
        assert!((every_10.ema_initial_share().unwrap() - 0.9f64.powi(200)).abs() < 1e-15);
    }

    /// A train output: raw weights, and optionally an EMA and an SWA average.
    fn train_dir(ema: bool, swa: bool) -> (tempfile::TempDir, Vec<Weight>) {
        let dir = tempfile::tempdir().unwrap();
        let raw = vec![
            w("a", DType::F32, vec![1.0, 2.0]),
            w("tok_emb.weight", DType::Bf16, vec![0.5, -0.5]),
        ];
        write_safetensors(&dir.path().join(files::WEIGHTS), &raw).unwrap();
        if ema {
            let e = vec![
                w(
                    "tok_emb.weight",
                    DType::F32,
                    vec![0.25, 1.0 + 2f32.powi(-9)],
                ),
                w("a", DType::F32, vec![3.0, 4.0]),
            ];
            write_safetensors(&dir.path().join(files::EMA_WEIGHTS), &e).unwrap();
        }
        if swa {
            let set = vec![
                w("a", DType::F32, vec![1.0, 1.0]),
                w("tok_emb.weight", DType::F32, vec![1.0, -1.0]),
            ];
            write_safetensors(&dir.path().join(files::SWA_WEIGHTS), &set).unwrap();
        }
        (dir, raw)
    }

    fn with(source: Source) -> Params {
        Params {
            source,
            ..Params::default()
        }
    }

    #[test]
    fn ema_never_updated_is_refused() {
        let (dir, raw) = train_dir(true, false);
        let never = Sources::new(dir.path(), facts(0, 0));
        let err = never.finalize(&with(Source::Ema), &raw).err().unwrap();
        assert!(err.to_string().contains("never updated"), "{err}");
        let unknown = Sources::new(dir.path(), TrainFacts::default());
        let err = unknown.finalize(&with(Source::Ema), &raw).err().unwrap();
        assert!(err.to_string().contains("refusing"), "{err}");
        // auto falls back to raw rather than using an un-updated EMA
        let out = never.finalize(&Params::default(), &raw).unwrap();
        assert_eq!((out.label.as_str(), out.weights), ("raw", raw.clone()));
        assert!(out.reason.contains("no updated EMA"), "{}", out.reason);
        assert!(never.finalize(&with(Source::Blend), &raw).is_err());
    }

    #[test]
    fn updated_ema_is_used_in_the_model_dtypes() {
        // 0.9^50 = 0.005 ≤ 0.01: auto takes the EMA.
        let (dir, raw) = train_dir(true, false);
        let out = Sources::new(dir.path(), facts(50, 0))
            .finalize(&Params::default(), &raw)
            .unwrap();
        assert_eq!(out.label, "ema");
        assert!(out.reason.contains("5.15e-3"), "{}", out.reason);
        assert!(out.warnings.is_empty());
        assert_eq!(out.weights[0], w("a", DType::F32, vec![3.0, 4.0]));
        // the fp32 shadow is cast to tok_emb's bf16: 1 + 2^-9 rounds to 1
        assert_eq!(
            out.weights[1],
            w("tok_emb.weight", DType::Bf16, vec![0.25, 1.0])
        );
    }

    #[test]
    fn auto_takes_raw_while_the_ema_remembers_its_start_and_explicit_ema_warns() {
        // 0.9^20 = 0.12 of the initial weights: too much.
        let (dir, raw) = train_dir(true, false);
        let young = Sources::new(dir.path(), facts(20, 0));
        let out = young.finalize(&Params::default(), &raw).unwrap();
        assert_eq!((out.label.as_str(), &out.weights), ("raw", &raw));
        assert!(
            out.reason.contains("12.2% of the initial weights"),
            "{}",
            out.reason
        );
        let out = young.finalize(&with(Source::Ema), &raw).unwrap();
        assert_eq!(out.label, "ema");
        assert_eq!(out.weights[0].data, vec![3.0, 4.0]);
        assert_eq!(out.warnings.len(), 1);
        assert!(out.warnings[0].contains("12.2%"), "{:?}", out.warnings);
        // A looser threshold lets auto take it.
        let loose = Params {
            ema_max_initial_share: 0.2,
            ..Params::default()
        };
        assert_eq!(young.finalize(&loose, &raw).unwrap().label, "ema");
        // An unknown decay cannot be bounded: auto takes raw, explicit EMA warns.
        let unknown = Sources::new(
            dir.path(),
            TrainFacts {
                ema_decay: None,
                ..facts(1000, 0)
            },
        );
        let out = unknown.finalize(&Params::default(), &raw).unwrap();
        assert_eq!(out.label, "raw");
        assert!(out.reason.contains("decay is unknown"), "{}", out.reason);
        let out = unknown.finalize(&with(Source::Ema), &raw).unwrap();
        assert!(out.warnings[0].contains("decay is unknown"));
        // A blend that includes the young EMA is warned about too.
        let out = young.finalize(&with(Source::Blend), &raw).unwrap();
        assert_eq!(out.warnings.len(), 1);
        let bad = Params {
            ema_max_initial_share: 1.5,
            ..Params::default()
        };
        assert!(young.finalize(&bad, &raw).is_err());
    }

    #[test]
    fn swa_is_the_train_average_and_blend_mixes() {
        let (dir, raw) = train_dir(true, true);
        let src = Sources::new(dir.path(), facts(50, 3));
        let out = src.finalize(&with(Source::Swa), &raw).unwrap();
        assert_eq!(out.label, "swa");
        assert!(out.reason.contains("3 snapshots"), "{}", out.reason);
        assert_eq!(out.weights[0].data, vec![1.0, 1.0]);
        assert_eq!(out.weights[1].dtype, DType::Bf16);
        let p = Params {
            source: Source::Blend,
            blend: BlendWeights {
                raw: 0.5,
                ema: 0.25,
                swa: 0.25,
            },
            ..Params::default()
        };
        let out = src.finalize(&p, &raw).unwrap();
        assert_eq!(out.label, "blend(raw=0.5,ema=0.25,swa=0.25)");
        assert_eq!(
            out.weights[0].data,
            vec![
                0.5 * 1.0 + 0.25 * 3.0 + 0.25 * 1.0,
                0.5 * 2.0 + 0.25 * 4.0 + 0.25 * 1.0
            ]
        );
        let bad = Params {
            source: Source::Blend,
            blend: BlendWeights {
                raw: 0.5,
                ema: 0.6,
                swa: 0.0,
            },
            ..Params::default()
        };
        let err = src.finalize(&bad, &raw).err().unwrap();
        assert!(err.to_string().contains("sum to 1"));
    }

    #[test]
    fn swa_without_snapshots_is_refused() {
        // The file is there but the manifest counts no snapshot: refused, not silently used.
        let (dir, raw) = train_dir(false, true);
        let none = Sources::new(dir.path(), facts(0, 0));
        let err = none.finalize(&with(Source::Swa), &raw).err().unwrap();
        assert!(err.to_string().contains("swa_snapshots = 0"), "{err}");
        let unknown = Sources::new(dir.path(), TrainFacts::default());
        let err = unknown.finalize(&with(Source::Swa), &raw).err().unwrap();
        assert!(err.to_string().contains("does not report swa_snapshots"));
        // Counted but missing.
        let (dir, raw) = train_dir(false, false);
        let err = Sources::new(dir.path(), facts(0, 4))
            .finalize(&with(Source::Swa), &raw)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("swa.safetensors: missing"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_sources_are_refused() {
        let (dir, raw) = train_dir(false, false);
        write_safetensors(
            &dir.path().join(files::EMA_WEIGHTS),
            &[w("a", DType::F32, vec![1.0, 2.0, 3.0])],
        )
        .unwrap();
        let err = Sources::new(dir.path(), facts(100, 0))
            .finalize(&Params::default(), &raw)
            .err()
            .unwrap();
        assert!(err.to_string().contains("shape"), "{err}");
    }
}

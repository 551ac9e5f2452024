//! The candidate weight sets of a train output and how the chosen one is formed.
//!
//! - raw: `model.safetensors`;
//! - ema: `ema.safetensors` (fp32 shadow), only when the train manifest reports `ema_updates > 0`;
//! - swa: the uniform average of `snapshots/*.safetensors` (REFERENCE.md §5.6), when there are any;
//! - blend: `Σ wᵢ·sourceᵢ` over the sources with a positive weight (weights sum to 1).
//!
//! Every source must hold exactly the raw model's names and shapes; the result takes each tensor's
//! dtype from the raw model (the EMA is cast back, as upstream loads it into the model).

use anyhow::{bail, Context, Result};
use pgolf_quant::{read_safetensors, Weight};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The EMA when the train output has an updated one, else the raw weights.
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
}

impl Default for Params {
    fn default() -> Self {
        Params {
            source: Source::Auto,
            blend: BlendWeights::default(),
        }
    }
}

pub struct Sources {
    dir: PathBuf,
    ema_updates: Option<u64>,
    pub snapshots: Vec<PathBuf>,
}

impl Sources {
    /// What a train output directory offers; `ema_updates` comes from its manifest.
    pub fn find(dir: &Path, ema_updates: Option<u64>) -> Result<Sources> {
        let snap_dir = dir.join("snapshots");
        let mut snapshots = Vec::new();
        if snap_dir.is_dir() {
            for entry in std::fs::read_dir(&snap_dir)? {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "safetensors") {
                    snapshots.push(p);
                }
            }
        }
        snapshots.sort();
        Ok(Sources {
            dir: dir.to_path_buf(),
            ema_updates,
            snapshots,
        })
    }

    fn ema_path(&self) -> PathBuf {
        self.dir.join("ema.safetensors")
    }

    /// The EMA, refused unless the manifest says it was updated.
    fn ema(&self, raw: &[Weight]) -> Result<Vec<Weight>> {
        let path = self.ema_path();
        match self.ema_updates {
            Some(n) if n > 0 => {}
            Some(_) => bail!("{}: the EMA was never updated (ema_updates = 0 in the train manifest); refusing it", path.display()),
            None => bail!("{}: the train manifest does not report ema_updates, so the EMA cannot be shown to have been updated; refusing it", path.display()),
        }
        if !path.is_file() {
            bail!(
                "{}: missing, though the train manifest reports ema_updates = {}",
                path.display(),
                self.ema_updates.unwrap_or(0)
            );
        }
        conform(read_safetensors(&path)?, raw, &path)
    }

    fn swa(&self, raw: &[Weight]) -> Result<Vec<Weight>> {
        if self.snapshots.is_empty() {
            bail!(
                "{}: no SWA snapshots (snapshots/*.safetensors)",
                self.dir.display()
            );
        }
        let mut sets = Vec::new();
        for p in &self.snapshots {
            sets.push(conform(read_safetensors(p)?, raw, p)?);
        }
        let share = 1.0 / sets.len() as f64;
        Ok(mix(
            raw,
            &sets
                .iter()
                .map(|s| (share, s.as_slice()))
                .collect::<Vec<_>>(),
        ))
    }

    /// The chosen weights and a label for the headline.
    pub fn finalize(&self, p: &Params, raw: &[Weight]) -> Result<(String, Vec<Weight>)> {
        let has_ema = self.ema_updates.is_some_and(|n| n > 0) && self.ema_path().is_file();
        match p.source {
            Source::Raw => Ok(("raw".into(), raw.to_vec())),
            Source::Auto if !has_ema => Ok(("raw".into(), raw.to_vec())),
            Source::Auto | Source::Ema => Ok(("ema".into(), self.ema(raw)?)),
            Source::Swa => Ok(("swa".into(), self.swa(raw)?)),
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
                if b.ema > 0.0 {
                    terms.push((b.ema, ema.as_slice()));
                }
                if b.swa > 0.0 {
                    terms.push((b.swa, swa.as_slice()));
                }
                let label = format!("blend(raw={},ema={},swa={})", b.raw, b.ema, b.swa);
                Ok((label, mix(raw, &terms)))
            }
        }
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

    fn train_dir(ema: bool, snapshots: usize) -> (tempfile::TempDir, Vec<Weight>) {
        let dir = tempfile::tempdir().unwrap();
        let raw = vec![
            w("a", DType::F32, vec![1.0, 2.0]),
            w("tok_emb.weight", DType::Bf16, vec![0.5, -0.5]),
        ];
        write_safetensors(&dir.path().join("model.safetensors"), &raw).unwrap();
        if ema {
            let e = vec![
                w(
                    "tok_emb.weight",
                    DType::F32,
                    vec![0.25, 1.0 + 2f32.powi(-9)],
                ),
                w("a", DType::F32, vec![3.0, 4.0]),
            ];
            write_safetensors(&dir.path().join("ema.safetensors"), &e).unwrap();
        }
        if snapshots > 0 {
            std::fs::create_dir(dir.path().join("snapshots")).unwrap();
            for s in 0..snapshots {
                let v = s as f32;
                let set = vec![
                    w("a", DType::F32, vec![v, v]),
                    w("tok_emb.weight", DType::Bf16, vec![v, -v]),
                ];
                write_safetensors(
                    &dir.path()
                        .join(format!("snapshots/step_{s:06}.safetensors")),
                    &set,
                )
                .unwrap();
            }
        }
        (dir, raw)
    }

    #[test]
    fn ema_never_updated_is_refused() {
        let (dir, raw) = train_dir(true, 0);
        let p = Params {
            source: Source::Ema,
            ..Params::default()
        };
        let err = Sources::find(dir.path(), Some(0))
            .unwrap()
            .finalize(&p, &raw)
            .unwrap_err();
        assert!(err.to_string().contains("never updated"), "{err}");
        let err = Sources::find(dir.path(), None)
            .unwrap()
            .finalize(&p, &raw)
            .unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        // auto falls back to raw rather than using an un-updated EMA
        let (label, out) = Sources::find(dir.path(), Some(0))
            .unwrap()
            .finalize(&Params::default(), &raw)
            .unwrap();
        assert_eq!((label.as_str(), out), ("raw", raw.clone()));
        let blend = Params {
            source: Source::Blend,
            ..Params::default()
        };
        assert!(Sources::find(dir.path(), Some(0))
            .unwrap()
            .finalize(&blend, &raw)
            .is_err());
    }

    #[test]
    fn updated_ema_is_used_in_the_model_dtypes() {
        let (dir, raw) = train_dir(true, 0);
        let (label, out) = Sources::find(dir.path(), Some(10))
            .unwrap()
            .finalize(&Params::default(), &raw)
            .unwrap();
        assert_eq!(label, "ema");
        assert_eq!(out[0], w("a", DType::F32, vec![3.0, 4.0]));
        // the fp32 shadow is cast to tok_emb's bf16: 1 + 2^-9 rounds to 1
        assert_eq!(out[1], w("tok_emb.weight", DType::Bf16, vec![0.25, 1.0]));
    }

    #[test]
    fn swa_averages_snapshots_and_blend_mixes() {
        let (dir, raw) = train_dir(true, 3);
        let src = Sources::find(dir.path(), Some(5)).unwrap();
        let (_, swa) = src
            .finalize(
                &Params {
                    source: Source::Swa,
                    ..Params::default()
                },
                &raw,
            )
            .unwrap();
        assert_eq!(swa[0].data, vec![1.0, 1.0]); // mean of 0, 1, 2
        let p = Params {
            source: Source::Blend,
            blend: BlendWeights {
                raw: 0.5,
                ema: 0.25,
                swa: 0.25,
            },
        };
        let (label, b) = src.finalize(&p, &raw).unwrap();
        assert_eq!(label, "blend(raw=0.5,ema=0.25,swa=0.25)");
        assert_eq!(
            b[0].data,
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
        };
        assert!(src
            .finalize(&bad, &raw)
            .unwrap_err()
            .to_string()
            .contains("sum to 1"));
        let (dir, raw) = train_dir(false, 0);
        let none = Sources::find(dir.path(), None).unwrap();
        assert!(none
            .finalize(
                &Params {
                    source: Source::Swa,
                    ..Params::default()
                },
                &raw
            )
            .unwrap_err()
            .to_string()
            .contains("no SWA"));
    }

    #[test]
    fn mismatched_sources_are_refused() {
        let (dir, raw) = train_dir(false, 0);
        write_safetensors(
            &dir.path().join("ema.safetensors"),
            &[w("a", DType::F32, vec![1.0, 2.0, 3.0])],
        )
        .unwrap();
        let err = Sources::find(dir.path(), Some(3))
            .unwrap()
            .finalize(&Params::default(), &raw)
            .unwrap_err();
        assert!(err.to_string().contains("shape"), "{err}");
    }
}

//! Params, where calibration sequences come from, and `calibration.json`.

use anyhow::{bail, Result};
use pgolf_data::{list_shards, Shard, Split, TokenStream};
use pgolf_model::Formulation;
use pgolf_store::Precision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

use crate::hessians::Sums;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The training stream from its start (after `offset` tokens).
    Train,
    /// Sequences sampled from the model itself.
    SelfGenerated,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub source: Source,
    /// Calibration sequences.
    pub sequences: usize,
    /// Tokens per sequence; default the model's `seq_len`.
    pub seq_len: Option<usize>,
    /// Sequences per forward pass; H is averaged over these batches (upstream's 1/nb).
    pub batch_sequences: usize,
    /// Tokens of the training stream to skip first.
    pub offset: usize,
    /// `auto` (bf16 on CUDA, as upstream's autocast; f32 on the CPU), `f32` or `bf16`.
    pub precision: Precision,
    /// How the model is written (pgolf-model `Formulation`): `fast` (default) or `literal`; the
    /// same function, so the same Hessians up to rounding.
    pub formulation: Formulation,
    /// Self-generation: sampling temperature, RNG seed, sequences generated together.
    pub temperature: f64,
    pub seed: i64,
    pub gen_batch: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            source: Source::Train,
            sequences: 256,
            seq_len: None,
            batch_sequences: 16,
            offset: 0,
            precision: Precision::Auto,
            formulation: Formulation::Fast,
            temperature: 0.8,
            seed: 42,
            gen_batch: 8,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<()> {
        if self.sequences == 0
            || self.batch_sequences == 0
            || self.gen_batch == 0
            || self.seq_len == Some(0)
        {
            bail!("params: sequences, batch_sequences, gen_batch and seq_len must be positive");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "params: temperature must be positive, got {}",
                self.temperature
            );
        }
        Ok(())
    }
}

/// Where the sequences came from.
#[derive(Debug, Serialize)]
pub struct Origin {
    pub source: String,
    /// Train: tokens available in the training shards, and whether calibration wrapped past them.
    pub train_tokens: Option<usize>,
    pub wrapped: Option<bool>,
    pub temperature: Option<f64>,
    pub seed: Option<i64>,
}

impl Origin {
    pub fn generated(p: &Params) -> Origin {
        Origin {
            source: "self_generated".into(),
            train_tokens: None,
            wrapped: None,
            temperature: Some(p.temperature),
            seed: Some(p.seed),
        }
    }
}

/// `sequences × seq_len` consecutive tokens of the training stream after `offset`, as i64 ids
/// (CPU), checked against the vocabulary.
pub fn train_sequences(
    data: &Path,
    sequences: usize,
    seq_len: usize,
    offset: usize,
    vocab: usize,
) -> Result<(Tensor, Origin)> {
    let shards = list_shards(data, Split::Train)?;
    if shards.is_empty() {
        bail!(
            "{}: no training shards (fineweb_train_*.bin)",
            data.display()
        );
    }
    let available: usize = shards
        .iter()
        .map(|p| Shard::open(p).map(|s| s.len()))
        .sum::<Result<usize>>()?;
    let mut stream = TokenStream::open(&shards)?;
    let _ = stream.take(offset);
    let need = sequences * seq_len;
    let tokens = stream.take(need);
    if let Some(bad) = tokens.iter().find(|t| **t as usize >= vocab) {
        bail!(
            "{}: token id {bad} is outside the model's vocabulary of {vocab}",
            data.display()
        );
    }
    let ids = crate::to_ids(&tokens, seq_len, Device::Cpu)?;
    let origin = Origin {
        source: "train".into(),
        train_tokens: Some(available),
        wrapped: Some(offset + need > available),
        temperature: None,
        seed: None,
    };
    Ok((ids, origin))
}

/// `calibration.json`.
#[derive(Serialize)]
pub struct Record<'a> {
    pub origin: &'a Origin,
    pub sequences: usize,
    pub seq_len: usize,
    pub batch_sequences: usize,
    pub batches: usize,
    pub offset: usize,
    pub tokens: usize,
    pub compute: String,
    pub formulation: &'static str,
    /// Rows (token positions) each Hessian was accumulated over.
    pub rows: BTreeMap<String, usize>,
    /// How H was normalised.
    pub normalisation: &'static str,
}

impl<'a> Record<'a> {
    pub fn new(
        p: &Params,
        origin: &'a Origin,
        seq_len: usize,
        tokens: usize,
        sums: &Sums,
        compute: Kind,
        formulation: Formulation,
    ) -> Record<'a> {
        Record {
            origin,
            sequences: tokens / seq_len,
            seq_len,
            batch_sequences: p.batch_sequences,
            batches: sums.batches,
            offset: p.offset,
            tokens,
            compute: format!("{compute:?}"),
            formulation: formulation.name(),
            rows: sums.rows.clone(),
            normalisation: "H = (sum over batches of X^T X) / batches",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgolf_data::write_shard;

    #[test]
    fn train_sequences_take_the_stream_after_the_offset_and_check_the_vocab() {
        let dir = tempfile::tempdir().unwrap();
        write_shard(
            &dir.path().join(Split::Train.shard_name(0)),
            &(0..10u16).collect::<Vec<_>>(),
        )
        .unwrap();
        write_shard(
            &dir.path().join(Split::Train.shard_name(1)),
            &(10..20u16).collect::<Vec<_>>(),
        )
        .unwrap();
        let (ids, origin) = train_sequences(dir.path(), 2, 4, 7, 64).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(ids.view([-1])).unwrap(),
            (7..15).collect::<Vec<i64>>()
        );
        assert_eq!(
            (origin.train_tokens, origin.wrapped),
            (Some(20), Some(false))
        );
        let (_, origin) = train_sequences(dir.path(), 4, 4, 7, 64).unwrap();
        assert_eq!(origin.wrapped, Some(true));
        let err = train_sequences(dir.path(), 2, 4, 0, 5).unwrap_err();
        assert!(
            err.to_string()
                .contains("outside the model's vocabulary of 5"),
            "{err}"
        );
    }
}

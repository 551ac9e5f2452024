//! Small, real inputs for tests of the eval crate and the eval stages: a synthetic Markov corpus
//! with exact source information per document, a tokenize-like output directory (byte260 shards,
//! doc table, tokenizer.json, manifest) and a quantize-pack-like directory holding a tiny model's
//! artifact (raw f32, or quantized as quantize-pack quantizes). A dev-dependency only: nothing here is used by the stages themselves (the
//! `tiny_artifact` example writes such a directory for benchmarks).

use anyhow::Result;
use pgolf_data::{write_doc_table, write_shard, DocRecord, Split, TokenizerInfo};
use pgolf_model::{build, ModelConfig};
use pgolf_quant::{
    encode_artifact, quantize_all, Compression, DType, Encoding, GptqSettings, QuantInputs,
    Routing, StoredTensor, Weight,
};
use pgolf_store::files;
use pgolf_store::manifest::describe_outputs;
use pgolf_store::{DeviceRecord, Manifest, MANIFEST_SCHEMA};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub use pgolf_data::Rng;

pub const VOCAB: usize = 260;
pub const BOS: u16 = 1;

/// A first-order Markov source over the byte260 tokens of "abc " with an end-of-document event
/// (which emits the next document's BOS). Its information content per document is exact.
pub struct MarkovSource {
    /// Symbols as byte260 tokens.
    pub symbols: Vec<u16>,
    /// `start[j]`: P(first symbol j | BOS).
    pub start: Vec<f64>,
    /// `next[i][j]`: P(symbol j | symbol i) for j < symbols, and P(end | i) at j = symbols.
    pub next: Vec<Vec<f64>>,
}

impl Default for MarkovSource {
    fn default() -> Self {
        MarkovSource::new()
    }
}

impl MarkovSource {
    pub fn new() -> MarkovSource {
        MarkovSource {
            symbols: "abc ".bytes().map(|b| b as u16 + 4).collect(),
            start: vec![0.5, 0.25, 0.125, 0.125],
            next: vec![
                vec![0.1, 0.5, 0.2, 0.15, 0.05],
                vec![0.4, 0.1, 0.1, 0.3, 0.1],
                vec![0.3, 0.3, 0.2, 0.1, 0.1],
                vec![0.5, 0.3, 0.15, 0.0, 0.05],
            ],
        }
    }

    /// The full next-token distribution after token `prev`.
    pub fn row(&self, prev: u16) -> Vec<f64> {
        let mut p = vec![0.0; VOCAB];
        if let Some(i) = self.symbols.iter().position(|&s| s == prev) {
            for (j, &s) in self.symbols.iter().enumerate() {
                p[s as usize] = self.next[i][j];
            }
            p[BOS as usize] = self.next[i][self.symbols.len()];
        } else {
            for (j, &s) in self.symbols.iter().enumerate() {
                p[s as usize] = self.start[j];
            }
        }
        p
    }

    fn pick(rng: &mut Rng, probs: &[f64]) -> usize {
        let mut u = rng.unit();
        for (i, &p) in probs.iter().enumerate() {
            if u < p {
                return i;
            }
            u -= p;
        }
        probs.len() - 1
    }

    /// `docs` documents: the token stream and the doc table (with exact source bits).
    pub fn corpus(&self, docs: usize, seed: u64) -> (Vec<u16>, Vec<DocRecord>) {
        let mut rng = Rng(seed);
        let mut tokens = Vec::new();
        let mut table = Vec::new();
        for d in 0..docs {
            let offset = tokens.len();
            tokens.push(BOS);
            let mut bits = 0.0;
            let mut j = Self::pick(&mut rng, &self.start);
            bits -= self.start[j].log2();
            loop {
                tokens.push(self.symbols[j]);
                let k = Self::pick(&mut rng, &self.next[j]);
                bits -= self.next[j][k].log2();
                if k == self.symbols.len() {
                    break;
                }
                j = k;
            }
            let count = tokens.len() - offset;
            table.push(DocRecord {
                doc_id: format!("s{d}"),
                split: Split::Val,
                token_offset: offset as u64,
                token_count: count as u64,
                raw_bytes: Some(count as u64 - 1),
                raw_bytes_source: Some(pgolf_data::RawBytesSource::Text),
                lut_bytes: count as u64 - 1,
                source_bits: Some(bits),
            });
        }
        (tokens, table)
    }
}

/// Writes a finished-looking stage output: `manifest.json` over the files already in `dir`.
pub fn seal(dir: &Path, stage: &str) -> Result<()> {
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        stage: stage.into(),
        identity: format!("{stage}@test"),
        key: format!("test-{stage}"),
        params: serde_json::json!({}),
        inputs: Default::default(),
        outputs: describe_outputs(dir)?,
        started: String::new(),
        finished: String::new(),
        wall_seconds: 0.0,
        host: String::new(),
        device: DeviceRecord::cpu(),
        headline: Default::default(),
    };
    std::fs::write(
        dir.join(files::MANIFEST),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(())
}

/// A tokenize-like output in `dir`: the val stream as one byte260 shard plus its doc table.
pub fn write_data_dir(dir: &Path, tokens: &[u16], docs: &[DocRecord]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_shard(&dir.join(Split::Val.shard_name(0)), tokens)?;
    write_doc_table(&dir.join(files::DOC_TABLE), docs)?;
    TokenizerInfo::byte260().write(dir)?;
    seal(dir, "tokenize")
}

/// Seeded weights for a model of `cfg`: matrices `U(±1/√in)`, gains and mixes at their
/// initial values plus noise (so the zero-initialized projections are not zero). Drawn from
/// our own generator, not torch's global one, so tests running in parallel get the same values.
pub fn tiny_weights(cfg: &ModelConfig, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let (_vs, gpt) = build(cfg, Device::Cpu)?;
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for (name, t) in gpt.named_parameters() {
        let size = t.size();
        let n: i64 = size.iter().product();
        let values: Vec<f32> =
            if size.len() == 2 && !name.contains("resid_mix") && !name.contains("skip_weights") {
                let bound = 1.0 / (size[1] as f64).sqrt();
                (0..n)
                    .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            } else {
                let base = Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).flatten(0, -1))?;
                base.iter()
                    .map(|v| v + ((rng.unit() * 2.0 - 1.0) * 0.05) as f32)
                    .collect()
            };
        out.push((
            name.clone(),
            Tensor::from_slice(&values).view(size.as_slice()),
        ));
    }
    Ok(out)
}

/// A quantize-pack-like output in `dir`: `artifact.pgq` holding [`tiny_weights`] of `cfg`,
/// stored as raw f32.
pub fn write_artifact_dir(
    dir: &Path,
    cfg: &ModelConfig,
    seed: u64,
) -> Result<Vec<(String, Tensor)>> {
    std::fs::create_dir_all(dir)?;
    let named = tiny_weights(cfg, seed)?;
    let mut stored = Vec::new();
    for (name, t) in &named {
        let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        stored.push(StoredTensor {
            name: name.clone(),
            shape: t.size().iter().map(|&s| s as usize).collect(),
            dtype: DType::F32,
            encoding: Encoding::Raw {
                stored: DType::F32,
                bytes,
            },
            lqer: None,
            layout: Default::default(),
        });
    }
    let bytes = encode_artifact(
        &serde_json::to_value(cfg)?,
        &stored,
        &Compression::default(),
    )?;
    std::fs::write(dir.join(files::ARTIFACT), bytes)?;
    seal(dir, "quantize-pack")?;
    Ok(named)
}

/// A quantize-pack-like output in `dir`: [`tiny_weights`] of `cfg` (seed 5) quantized as
/// quantize-pack does (matrices per row, small tensors as `routing` sends them; no Hessians, so
/// GPTQ rules fall back to their Hessian-free form) and encoded with `compression`.
pub fn write_quantized_dir(
    dir: &Path,
    cfg: &ModelConfig,
    routing: &Routing,
    compression: &Compression,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let weights = tiny_weights(cfg, 5)?
        .into_iter()
        .map(|(name, t)| {
            Ok(Weight {
                name,
                shape: t.size().iter().map(|s| *s as usize).collect(),
                dtype: DType::F32,
                data: Vec::<f32>::try_from(t.flatten(0, -1))?,
            })
        })
        .collect::<Result<Vec<Weight>>>()?;
    let inputs = QuantInputs {
        routing,
        gptq: &GptqSettings::default(),
        hessians: &Default::default(),
        device: Device::Cpu,
    };
    let stored: Vec<StoredTensor> = quantize_all(&weights, &inputs, &|_| {})?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let bytes = encode_artifact(&serde_json::to_value(cfg)?, &stored, compression)?;
    std::fs::write(dir.join(files::ARTIFACT), bytes)?;
    seal(dir, "quantize-pack")
}

//! Seed corpora for the fuzz targets, and the fixtures the property tests share: small files made
//! by pgolf's own writers (a few KB each; what fuzz/corpus/ holds) — shards and sidecars by
//! `write_shard`, tiny-model artifacts by pgolf-quant's encoder in every codec and encoding, a
//! manifest and a bundle whose keys and hashes verify, pipeline.yaml texts, a SentencePiece model
//! by prost — and, from a finished project, the real files of its runs (bench/fuzz.sh) and the
//! team's tokenizer models (../shared/tokenizers).
use anyhow::{Context, Result};
use half::f16;
use pgolf_data::sp_model::{ModelProto, SentencePiece};
use pgolf_data::write_shard;
use pgolf_evaluator::{Artifact, BigramHash, ModelConfig, ValueEmbedding};
use pgolf_quant::{encode_artifact, Codec, Compression, DType, Encoding, Scale, StoredTensor};
use pgolf_store::manifest::describe_outputs;
use pgolf_store::{files::MANIFEST, run_key, DeviceRecord, InputRef, Manifest, MANIFEST_SCHEMA};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

pub fn put(root: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes).with_context(|| format!("{}/{name}", dir.display()))
}

pub fn shard_bytes(tokens: &[u16]) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("s.bin");
    write_shard(&p, tokens)?;
    Ok(fs::read(p)?)
}

pub fn synthetic(root: &Path) -> Result<()> {
    put(
        root,
        "shard",
        "tokens",
        &shard_bytes(&[1, 72, 105, 1, 33, 259])?,
    )?;
    put(root, "shard", "empty", &shard_bytes(&[])?)?;
    // Sidecars: u16 counts (the official layout) beside tokens with a BOS every 3 (last byte 2),
    // and the same header over u32 counts, which no upstream tool writes (refused).
    put(root, "sidecar", "u16", &shard_bytes(&[0, 3, 1, 0, 2, 2])?)?;
    let mut wide = shard_bytes(&[0; 4])?[..1024].to_vec();
    for c in [0u32, 70_000, 1, 2] {
        wide.extend_from_slice(&c.to_le_bytes());
    }
    put(root, "sidecar", "u32", &wide)?;

    for (name, cfg) in tiny_configs() {
        let config = serde_json::to_value(&cfg)?;
        let tensors = tiny_tensors(&cfg);
        let body = pgolf_quant::container::encode_body(&config, &tensors)?;
        put(root, "artifact_body", &name, &body)?;
        for codec in [
            Codec::Zstd,
            Codec::Brotli,
            Codec::Zlib,
            Codec::Lzma,
            Codec::None,
        ] {
            let c = Compression {
                codec,
                level: Some(if codec == Codec::Zstd { 3 } else { 1 }),
                chunks: 2,
                ..Compression::default()
            };
            let file = encode_artifact(&config, &tensors, &c)?;
            Artifact::from_bytes(&file).context("a seed artifact reads back")?;
            put(root, "artifact", &format!("{name}-{codec:?}"), &file)?;
        }
    }

    let run = tempfile::tempdir()?;
    let (stage, key, manifest) = seal(run.path(), "train", &[("weights.bin", b"0123456789")], &[])?;
    put(
        root,
        "manifest",
        "train",
        &fs::read(run.path().join(MANIFEST))?,
    )?;
    let mut v1: serde_json::Value = serde_json::to_value(&manifest)?;
    v1["schema"] = 1.into();
    v1["device"] = "cuda:0 NVIDIA H100 80GB HBM3".into();
    put(
        root,
        "manifest",
        "schema1",
        &serde_json::to_vec_pretty(&v1)?,
    )?;

    // A bundle of two runs, the second computed from the first.
    let up = tempfile::tempdir()?;
    let (up_stage, up_key, _) = seal(up.path(), "tokenize", &[("a/tokens.bin", b"tok")], &[])?;
    let down = tempfile::tempdir()?;
    let (down_stage, down_key, _) = seal(
        down.path(),
        "train",
        &[("model.bin", b"weights")],
        &[("data", &up_stage, &up_key)],
    )?;
    let runs = [
        (&up_stage, &up_key, up.path()),
        (&down_stage, &down_key, down.path()),
    ];
    put(root, "bundle", "two-runs", &bundle_tar(&runs)?)?;
    put(
        root,
        "bundle",
        "one-run",
        &bundle_tar(&[(&stage, &key, run.path())])?,
    )?;

    put(root, "pipeline_yaml", "chain", CHAIN.as_bytes())?;

    let piece = |text: &str, kind: i32| SentencePiece {
        piece: Some(text.into()),
        score: Some(0.0),
        r#type: (kind != 1).then_some(kind),
    };
    let model = ModelProto {
        pieces: vec![
            piece("<unk>", 2),
            piece("<s>", 3),
            piece("</s>", 3),
            piece("<0x41>", 6),
            piece("\u{2581}", 1),
            piece("\u{2581}the", 1),
            piece("ing", 1),
            piece("<op>", 4),
        ],
    };
    put(root, "tokenizer_model", "tiny", &prost_bytes(&model))?;
    Ok(())
}

fn prost_bytes(m: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(m)
}

/// Writes `files` and a manifest whose key and hashes verify; returns (stage, key, manifest).
pub fn seal(
    dir: &Path,
    stage: &str,
    files: &[(&str, &[u8])],
    inputs: &[(&str, &str, &str)],
) -> Result<(String, String, Manifest)> {
    for (rel, bytes) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().context("a parent")?)?;
        fs::write(p, bytes)?;
    }
    let identity = format!("{stage}@seed");
    let params = serde_json::json!({"seed": 1, "model": {"dim": 8}});
    let inputs: BTreeMap<String, InputRef> = inputs
        .iter()
        .map(|(name, up, key)| {
            let r = InputRef {
                key: key.to_string(),
                stage: Some(up.to_string()),
                runs: vec![],
                paths: vec![],
            };
            (name.to_string(), r)
        })
        .collect();
    let keys = inputs
        .iter()
        .map(|(n, i)| (n.clone(), i.key.clone()))
        .collect();
    let key = run_key(stage, &identity, &params, &keys, 1);
    let m = Manifest {
        schema: MANIFEST_SCHEMA,
        stage: stage.into(),
        identity,
        key: key.clone(),
        params,
        inputs,
        outputs: describe_outputs(dir)?,
        started: "2026-12-04T00:00:00Z".into(),
        finished: "2026-12-04T00:00:01Z".into(),
        wall_seconds: 1.0,
        host: "seed".into(),
        device: DeviceRecord::cpu(),
        headline: BTreeMap::from([("val_bpb".into(), serde_json::json!(1.25))]),
    };
    fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&m)?)?;
    Ok((stage.into(), key, m))
}

/// The tar (uncompressed) of a bundle: the index, then each run's files as `stage/key/...`.
pub fn bundle_tar(runs: &[(&String, &String, &Path)]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let index = serde_json::json!({
        "format": pipeline::bundle::FORMAT,
        "runs": runs.iter().map(|(s, k, _)| format!("{s}/{k}")).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&index)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, pipeline::bundle::INDEX_FILE, bytes.as_slice())?;
    for (stage, key, dir) in runs {
        tar.append_dir_all(format!("{stage}/{key}"), dir)?;
    }
    Ok(tar.into_inner()?)
}

/// Two tiny models: the baseline's options, and every optional part on (untied head, norm
/// weights, SmearGate, BigramHash, value embeddings, XSA, partial RoPE, leaky ReLU²).
pub fn tiny_configs() -> Vec<(String, ModelConfig)> {
    let base = ModelConfig {
        vocab_size: 16,
        num_layers: 2,
        model_dim: 8,
        num_heads: 2,
        num_kv_heads: 1,
        mlp_mult: 1,
        seq_len: 8,
        ..ModelConfig::default()
    };
    let full = ModelConfig {
        tie_embeddings: false,
        norm_weights: true,
        smear_gate: true,
        bigram: Some(BigramHash { buckets: 4, dim: 4 }),
        value_embed: Some(ValueEmbedding {
            dim: 2,
            layers: vec![1],
        }),
        xsa_last_n: 1,
        rope_dims: Some(2),
        ln_scale: true,
        activation: pgolf_evaluator::Activation::LeakyRelu2(0.5),
        ..base.clone()
    };
    vec![("baseline".into(), base), ("options".into(), full)]
}

/// Every parameter of `cfg`, stored each way the format allows in turn: int rows with f16
/// scales, one f32 or f16 scale, raw f32, f16 and bf16.
pub fn tiny_tensors(cfg: &ModelConfig) -> Vec<StoredTensor> {
    cfg.parameter_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let numel: usize = shape.iter().product();
            let q: Vec<i8> = (0..numel).map(|j| ((i + j) % 15) as i8 - 7).collect();
            let encoding = match (i % 5, shape.len()) {
                (0, 2) => Encoding::Rows {
                    bits: 6,
                    q,
                    scales: vec![f16::from_f32(0.01); shape[0]],
                },
                (1, _) => Encoding::Tensor {
                    bits: 8,
                    q,
                    scale: Scale::F32(0.02),
                },
                (2, _) => Encoding::Tensor {
                    bits: 5,
                    q,
                    scale: Scale::F16(f16::from_f32(0.03)),
                },
                (k, _) => {
                    let stored = [DType::F32, DType::F16, DType::Bf16][k % 3];
                    let values: Vec<f32> = (0..numel).map(|j| (j as f32 * 0.1).sin()).collect();
                    let bytes = values
                        .iter()
                        .flat_map(|v| match stored {
                            DType::F32 => v.to_le_bytes().to_vec(),
                            DType::F16 => f16::from_f32(*v).to_le_bytes().to_vec(),
                            DType::Bf16 => half::bf16::from_f32(*v).to_le_bytes().to_vec(),
                        })
                        .collect();
                    Encoding::Raw { stored, bytes }
                }
            };
            StoredTensor {
                name,
                shape,
                dtype: DType::F32,
                encoding,
                lqer: None,
                layout: Default::default(),
            }
        })
        .collect()
}

/// A small chain with a profile, a gather input and file inputs (the forms pipeline.yaml has).
pub const CHAIN: &str = "\
default_profile: small
stages:
  tokenize:
    inputs:
      docs: {files: [\"data/*.parquet\"]}
      tokenizer: {file: tok.model}
    params: {val_docs: 10}
  train:
    inputs: {data: tokenize}
    params:
      model: {vocab_size: 260, num_layers: 2}
      iterations: 6
    nproc: 1
  quantize-pack:
    inputs: {weights: train}
    device: cpu
    params: {compressor: zstd}
  report:
    inputs: {runs: {gather: train}, artifact: quantize-pack}
profiles:
  small:
    tokenize:
      inputs: {}
      params: {synthetic: {seed: 1, docs: 30}}
    train:
      params: {model: {num_layers: 1}}
";

/// The real files of a finished project: shards, sidecars, artifacts (and their bodies),
/// manifests, bundles, its pipeline.yaml, the team's tokenizer models.
pub fn real(root: &Path, project: &Path) -> Result<()> {
    let yaml = project.join("pipeline.yaml");
    put(
        root,
        "pipeline_yaml",
        "real-pipeline.yaml",
        &fs::read(&yaml)?,
    )?;
    let out = project.join("out");
    let mut n = 0;
    for stage in fs::read_dir(&out)?.flatten().filter(|e| e.path().is_dir()) {
        for run in fs::read_dir(stage.path())?.flatten() {
            let dir = run.path();
            let Ok(m) = Manifest::read(&dir) else {
                continue;
            };
            let tag = format!("real-{}-{}", m.stage, pipeline::project::short(&m.key));
            put(root, "manifest", &tag, &fs::read(dir.join(MANIFEST))?)?;
            for o in &m.outputs {
                let p = dir.join(&o.path);
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Big training shards are left out: the first val shard is seed enough.
                if name.starts_with("fineweb_val_bytes_") && o.bytes <= 1 << 20 {
                    put(root, "sidecar", &format!("{tag}-{name}"), &fs::read(&p)?)?;
                } else if name.starts_with("fineweb_")
                    && name.ends_with(".bin")
                    && o.bytes <= 1 << 18
                {
                    put(root, "shard", &format!("{tag}-{name}"), &fs::read(&p)?)?;
                } else if name == "artifact.pgq" {
                    let bytes = fs::read(&p)?;
                    put(root, "artifact", &tag, &bytes)?;
                    let body = body_of(&bytes)?;
                    put(root, "artifact_body", &tag, &body)?;
                } else if name == "tokenizer.model" {
                    put(root, "tokenizer_model", &tag, &fs::read(&p)?)?;
                }
            }
            // The run as a bundle's tar (what `pipeline export` writes, uncompressed), for the
            // runs with small outputs.
            if m.outputs.iter().map(|o| o.bytes).sum::<u64>() <= 1 << 18 {
                let (s, k) = (m.stage.clone(), m.key.clone());
                put(root, "bundle", &tag, &bundle_tar(&[(&s, &k, &dir)])?)?;
            }
            n += 1;
        }
    }
    let tokenizers = project.join("../shared/tokenizers");
    if let Ok(entries) = fs::read_dir(&tokenizers) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".model") {
                put(root, "tokenizer_model", &name, &fs::read(e.path())?)?;
            }
        }
    }
    eprintln!("seeds: {n} runs of {} added", out.display());
    Ok(())
}

/// The uncompressed body of an artifact file (the frame's v2 chunks, decompressed).
fn body_of(file: &[u8]) -> Result<Vec<u8>> {
    let codec = Codec::from_id(file[5])?;
    let body_len = u64::from_le_bytes(file[8..16].try_into()?) as usize;
    pgolf_evaluator::codec::decompress_chunked(codec, file[6], &file[56..], body_len)
}

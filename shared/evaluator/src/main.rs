//! `pgolf-evaluate ARTIFACT DATA [--tokenizer FILE|byte260] [--seq-len N] [--stride S]`
//!
//! Scores the val split of DATA (a directory of upstream `fineweb_val_*.bin` shards, e.g. the
//! tokenize stage's output) with the model decoded from ARTIFACT (`artifact.pgq`, or the directory
//! holding it) and prints one JSON line with val_loss and val_bpb. Flat windows of `seq_len` (default
//! the model's) unless `--stride` asks for sliding windows. Byte counts come from the tokenizer:
//! `--tokenizer`, else `DATA/tokenizer.model`, else byte260 when `DATA/tokenizer.json` says so.

use anyhow::{anyhow, bail, Context, Result};
use pgolf_evaluator::{
    flat, score, sliding, val_target_bytes, val_tokens, Artifact, ByteLut, Model, ARTIFACT_FILE,
    TOKENIZER_INFO_FILE, TOKENIZER_MODEL_FILE,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("error: pgolf-evaluate: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let (mut paths, mut tokenizer, mut seq_len, mut stride) = (vec![], None, None, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--tokenizer" => tokenizer = Some(value()?),
            "--seq-len" => seq_len = Some(value()?.parse().context("--seq-len")?),
            "--stride" => stride = Some(value()?.parse().context("--stride")?),
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [artifact, data] = <[PathBuf; 2]>::try_from(paths).map_err(|_| {
        anyhow!("usage: pgolf-evaluate ARTIFACT DATA [--tokenizer FILE|byte260] [--seq-len N] [--stride S]")
    })?;
    let artifact = match artifact.is_dir() {
        true => artifact.join(ARTIFACT_FILE),
        false => artifact,
    };
    // The bytes first: data that cannot be scored honestly is refused before the model loads.
    let tokens = val_tokens(&data)?;
    let bytes = val_target_bytes(&data, &tokens, &lut(&data, tokenizer)?)?;
    let model = Model::from_artifact(&Artifact::read(&artifact)?)
        .with_context(|| format!("{}", artifact.display()))?;
    let seq_len = seq_len.unwrap_or(model.cfg.seq_len);
    let n = tokens.len().saturating_sub(1);
    let windows = match stride {
        None => flat(n, seq_len)?,
        Some(s) => sliding(n, seq_len, s)?,
    };
    let clock = Instant::now();
    let sums = score(&model, &tokens, &bytes, &windows, |i| {
        if i % 100 == 0 {
            eprintln!("{i}/{} windows", windows.len());
        }
    })?;
    let out = serde_json::json!({
        "mode": if stride.is_some() { "sliding" } else { "flat" },
        "val_loss": sums.val_loss(),
        "val_bpb": sums.bpb(),
        "targets": sums.targets,
        "bytes": sums.bytes,
        "seq_len": seq_len,
        "stride": stride,
        "seconds": clock.elapsed().as_secs_f64(),
    });
    println!("{out}");
    Ok(())
}

fn lut(data: &Path, tokenizer: Option<String>) -> Result<ByteLut> {
    let model = match tokenizer {
        Some(t) if t == "byte260" => return Ok(ByteLut::byte260()),
        Some(t) => PathBuf::from(t),
        None => data.join(TOKENIZER_MODEL_FILE),
    };
    if model.is_file() {
        let bytes = std::fs::read(&model)?;
        return ByteLut::sentencepiece(&bytes).with_context(|| format!("{}", model.display()));
    }
    let info = data.join(TOKENIZER_INFO_FILE);
    let kind = std::fs::read(&info)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["kind"].as_str().map(String::from));
    match kind.as_deref() {
        Some("byte260") => Ok(ByteLut::byte260()),
        _ => bail!(
            "{}: no tokenizer (give --tokenizer FILE.model or byte260)",
            model.display()
        ),
    }
}

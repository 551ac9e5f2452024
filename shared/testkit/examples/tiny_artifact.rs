//! Writes a quantize-pack-like directory holding a small random model's artifact, for benchmarks
//! of the eval stages when no trained model is at hand:
//!
//!     cargo run --release -p pgolf-testkit --example tiny_artifact -- OUT_DIR '{"vocab_size":1024,...}' SEED

use anyhow::{anyhow, Context, Result};
use pgolf_model::ModelConfig;
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, config, seed] = args.as_slice() else {
        return Err(anyhow!("usage: tiny_artifact OUT_DIR CONFIG_JSON SEED"));
    };
    let cfg: ModelConfig =
        serde_json::from_str(config).context("CONFIG_JSON is not a model config")?;
    cfg.validate()?;
    let seed: u64 = seed.parse().context("SEED is not an integer")?;
    pgolf_testkit::write_artifact_dir(&PathBuf::from(out), &cfg, seed)?;
    Ok(())
}

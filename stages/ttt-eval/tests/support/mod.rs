//! What the ttt-eval tests share: a quantize-pack-like artifact of seeded weights, and a run of
//! the stage's binary.
#![allow(dead_code)] // each test file uses its own part

use pgolf_model::ModelConfig;
use pgolf_quant::{Compression, Routing};
use pgolf_store::files;
use pgolf_testkit::write_quantized_dir;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Quantizes seeded weights of `cfg` as quantize-pack does and writes a quantize-pack-like
/// output in `dir` (pgolf-testkit's fixture, shared with portable-eval's tests).
pub fn write_quantized(
    dir: &Path,
    cfg: &ModelConfig,
    routing: &Routing,
    compression: &Compression,
) {
    write_quantized_dir(dir, cfg, routing, compression).unwrap();
}

/// Runs the ttt-eval binary on `root`'s `data` and `artifact` with `params` and `extra` arguments
/// (e.g. `--nproc 2`); returns its summary.json.
pub fn ttt_eval(root: &Path, name: &str, params: Value, extra: &[&str]) -> Value {
    let (out, params_path) = (root.join(name), root.join(format!("{name}.json")));
    std::fs::write(&params_path, params.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ttt-eval"))
        .arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", root.join("data").display()))
        .arg("--in")
        .arg(format!("artifact={}", root.join("artifact").display()))
        .arg("--params")
        .arg(&params_path)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(out.join(files::SUMMARY)).unwrap()).unwrap()
}

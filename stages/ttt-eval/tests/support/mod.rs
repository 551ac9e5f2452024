//! What the ttt-eval tests share: a quantize-pack-like artifact of seeded weights, and a run of
//! the stage's binary.
#![allow(dead_code)] // each test file uses its own part

use pgolf_model::ModelConfig;
use pgolf_quant::{
    encode_artifact, quantize_all, Compression, DType, GptqSettings, QuantInputs, Routing, Weight,
};
use pgolf_store::files;
use pgolf_testkit::{seal, tiny_weights};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tch::Device;

/// Quantizes seeded weights of `cfg` as quantize-pack does (matrices per row, small tensors as
/// `small_float: upstream` routes them) and writes a quantize-pack-like output in `dir`.
pub fn write_quantized(
    dir: &Path,
    cfg: &ModelConfig,
    routing: &Routing,
    compression: &Compression,
) {
    std::fs::create_dir_all(dir).unwrap();
    let weights: Vec<Weight> = tiny_weights(cfg, 5)
        .unwrap()
        .into_iter()
        .map(|(name, t)| Weight {
            name,
            shape: t.size().iter().map(|s| *s as usize).collect(),
            dtype: DType::F32,
            data: Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(),
        })
        .collect();
    let inputs = QuantInputs {
        routing,
        gptq: &GptqSettings::default(),
        hessians: &Default::default(),
        device: Device::Cpu,
    };
    let stored: Vec<_> = quantize_all(&weights, &inputs, &|_| {})
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let bytes = encode_artifact(&serde_json::to_value(cfg).unwrap(), &stored, compression).unwrap();
    std::fs::write(dir.join(files::ARTIFACT), bytes).unwrap();
    seal(dir, "quantize-pack").unwrap();
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

//! Runs the real ttt-eval binary on a tiny model's artifact and a synthetic Markov corpus.

use pgolf_model::ModelConfig;
use pgolf_store::files;
use pgolf_store::Manifest;
use pgolf_testkit::{write_artifact_dir, write_data_dir, MarkovSource};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Fixture {
    dir: tempfile::TempDir,
    n_targets: u64,
}

fn cfg() -> ModelConfig {
    ModelConfig {
        vocab_size: 260,
        num_layers: 2,
        model_dim: 32,
        num_heads: 4,
        num_kv_heads: 2,
        seq_len: 16,
        ..Default::default()
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, docs) = MarkovSource::new().corpus(60, 4);
    write_data_dir(&dir.path().join("data"), &tokens, &docs).unwrap();
    write_artifact_dir(&dir.path().join("artifact"), &cfg(), 3).unwrap();
    Fixture {
        n_targets: tokens.len() as u64 - 1,
        dir,
    }
}

/// Runs the stage into `out/<name>`; returns the output dir, or the error line.
fn run(f: &Fixture, name: &str, params: Value) -> Result<PathBuf, String> {
    let out = f.dir.path().join(name);
    let params_path = f.dir.path().join(format!("{name}.json"));
    std::fs::write(&params_path, params.to_string()).unwrap();
    let data = f.dir.path().join("data");
    let artifact = f.dir.path().join("artifact");
    let output = Command::new(env!("CARGO_BIN_EXE_ttt-eval"))
        .arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", data.display()))
        .arg("--in")
        .arg(format!("artifact={}", artifact.display()))
        .arg("--params")
        .arg(&params_path)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

fn headline(out: &Path) -> std::collections::BTreeMap<String, Value> {
    Manifest::read(out).unwrap().headline
}

#[test]
fn flat_and_sliding_score_every_target_with_raw_bytes() {
    let f = fixture();
    let flat = headline(&run(&f, "flat", json!({"mode": "flat"})).unwrap());
    assert_eq!(flat["scored_targets"], json!(f.n_targets));
    assert_eq!(flat["expected_targets"], json!(f.n_targets));
    assert_eq!(flat["byte_denominator"], "raw");
    assert_eq!(flat["mode"], "flat");
    for guard in [
        "guard_coverage",
        "guard_normalization",
        "guard_entropy",
        "guard_bytes",
    ] {
        assert!(
            flat[guard].as_str().unwrap().starts_with("pass"),
            "{guard}: {}",
            flat[guard]
        );
    }
    let bpb = flat["val_bpb"].as_f64().unwrap();
    assert!(bpb > 0.0 && bpb.is_finite());
    // Stride = window: the same number, bit for bit.
    let same = headline(&run(&f, "s16", json!({"mode": "sliding", "stride": 16})).unwrap());
    assert_eq!(same["val_bpb"], flat["val_bpb"]);
    let sliding = headline(
        &run(
            &f,
            "s4",
            json!({"mode": "sliding", "stride": 4, "batch_windows": 7}),
        )
        .unwrap(),
    );
    assert_eq!(sliding["scored_targets"], json!(f.n_targets));
    assert_ne!(sliding["val_bpb"], flat["val_bpb"]);
}

#[test]
fn upstream_compatible_flat_truncates_and_uses_lut_bytes() {
    let f = fixture();
    let out = run(
        &f,
        "up",
        json!({"mode": "flat", "upstream_compatible": true, "export_decoded": true}),
    )
    .unwrap();
    let h = headline(&out);
    let usable = (f.n_targets / 16) * 16;
    assert_eq!(h["expected_targets"], json!(usable));
    assert_eq!(h["scored_targets"], json!(usable));
    assert!(h["byte_denominator"]
        .as_str()
        .unwrap()
        .starts_with("lut (upstream"));
    assert_eq!(h["val_bpb"], h["val_bpb_lut"]);
    assert!(out.join(files::DECODED_WEIGHTS).is_file() && out.join(files::MODEL_CONFIG).is_file());
    let err = run(
        &f,
        "bad",
        json!({"mode": "sliding", "upstream_compatible": true}),
    )
    .unwrap_err();
    assert!(
        err.contains("upstream_compatible applies to flat mode only"),
        "{err}"
    );
}

#[test]
fn adaptive_modes_report_their_updates() {
    let f = fixture();
    let out = run(
        &f,
        "ttt",
        json!({"mode": "ttt", "stride": 8, "ttt": {"chunk_tokens": 64, "lr": 0.01}}),
    )
    .unwrap();
    let h = headline(&out);
    assert_eq!(h["scored_targets"], json!(f.n_targets));
    assert!(h["adaptive_updates"].as_u64().unwrap() > 0);
    assert!(h["guard_score_first"].as_str().unwrap().starts_with("pass"));
    assert!(out.join(files::CHUNKS).is_file());
    let lora = json!({"chunk": 8, "context": 16, "batch_docs": 16, "rank": 2});
    let h = headline(&run(&f, "lora", json!({"mode": "lora", "lora": lora})).unwrap());
    assert_eq!(h["scored_targets"], json!(f.n_targets));
    let lora_updates = h["adaptive_updates"].as_u64().unwrap();
    assert!(lora_updates > 0);
    // Phased: the same adapters, and SGD phases on the scored documents add updates.
    let phased = json!({"mode": "phased", "lora": lora,
        "phased": {"prefix_docs": 32, "phases": 2, "sgd": {"chunk_tokens": 64, "micro_batch": 4}}});
    let p = headline(&run(&f, "phased", phased).unwrap());
    assert_eq!(p["scored_targets"], json!(f.n_targets));
    assert!(
        p["adaptive_updates"].as_u64().unwrap() > lora_updates,
        "{p:?} vs {h:?}"
    );
    assert_ne!(p["val_bpb"], h["val_bpb"]);
    assert!(p["guard_score_first"].as_str().unwrap().starts_with("pass"));
}

#[test]
fn a_corrupted_artifact_fails_with_one_line_naming_it() {
    let f = fixture();
    let path = f.dir.path().join("artifact/artifact.pgq");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = run(&f, "broken", json!({})).unwrap_err();
    assert!(
        err.starts_with("error: ttt-eval:") && err.contains(files::ARTIFACT) && !err.contains('\n'),
        "{err}"
    );
    assert!(
        !f.dir.path().join("broken").exists(),
        "a failed run leaves nothing behind"
    );
}

/// `compute: upstream` runs upstream's eval numerics (bf16 activations); `dump_activations` writes
/// every linear layer's input, the logits and the NLL of the first windows; too many windows for
/// the stream is a one-line error that leaves no output.
#[test]
fn upstream_numerics_and_the_activation_dump() {
    let f = fixture();
    let out = run(
        &f,
        "up",
        json!({"mode": "flat", "upstream_compatible": true, "compute": "upstream", "dump_activations": 2}),
    )
    .unwrap();
    let m = Manifest::read(&out).unwrap();
    let numerics = m.headline["numerics"].as_str().unwrap();
    assert!(numerics.contains("UpstreamBf16"), "{numerics}");
    // The device is a record by field (here the CPU), not the numerics.
    assert_eq!(m.device, pgolf_store::DeviceRecord::cpu());
    let dumped = pgolf_model::read_tensors(&out.join(files::ACTIVATIONS)).unwrap();
    let get = |name: &str| {
        dumped
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .1
            .shallow_clone()
    };
    // 2 blocks × 6 linear inputs + the head's, logits, nll.
    assert_eq!(dumped.len(), 2 * 6 + 1 + 2);
    let q_in = get("in.blocks.1.attn.c_q.weight");
    assert_eq!(
        (q_in.size(), q_in.kind()),
        (vec![32, 32], tch::Kind::BFloat16)
    );
    assert_eq!(get("in.blocks.0.mlp.proj.weight").size(), vec![32, 64]);
    assert_eq!(get("logits").size(), vec![2, 16, 260]);
    let nll = get("nll");
    assert_eq!((nll.size(), nll.kind()), (vec![2, 16], tch::Kind::Float));
    let (lo, hi) = (nll.min().double_value(&[]), nll.max().double_value(&[]));
    assert!(lo >= 0.0 && hi.is_finite(), "NLL range {lo}..{hi}");

    let err = run(
        &f,
        "too_many",
        json!({"mode": "flat", "dump_activations": 1_000_000}),
    )
    .unwrap_err();
    assert!(
        err.contains("dump_activations: 1000000 windows of 16 need"),
        "{err}"
    );
    assert!(!f.dir.path().join("too_many").join(files::MANIFEST).exists());
}

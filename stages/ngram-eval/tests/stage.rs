//! Runs the real ngram-eval binary on a tiny model's artifact and a synthetic Markov corpus.

use pgolf_model::ModelConfig;
use pgolf_store::files;
use pgolf_store::Manifest;
use pgolf_testkit::{write_artifact_dir, write_data_dir, MarkovSource};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;

fn run(params: Value) -> Result<BTreeMap<String, Value>, String> {
    run_on(params, 1)
}

/// The stage on `ranks` ranks (`--nproc`, Gloo on the CPU).
fn run_on(params: Value, ranks: usize) -> Result<BTreeMap<String, Value>, String> {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, docs) = MarkovSource::new().corpus(80, 9);
    write_data_dir(&dir.path().join("data"), &tokens, &docs).unwrap();
    let cfg = ModelConfig {
        vocab_size: 260,
        num_layers: 1,
        model_dim: 16,
        num_heads: 2,
        num_kv_heads: 1,
        seq_len: 16,
        ..Default::default()
    };
    write_artifact_dir(&dir.path().join("artifact"), &cfg, 5).unwrap();
    let params_path = dir.path().join("params.json");
    std::fs::write(&params_path, params.to_string()).unwrap();
    let out = dir.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ngram-eval"));
    if ranks > 1 {
        cmd.args(["--nproc", &ranks.to_string()]);
    }
    let output = cmd
        .arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", dir.path().join("data").display()))
        .arg("--in")
        .arg(format!(
            "artifact={}",
            dir.path().join("artifact").display()
        ))
        .arg("--params")
        .arg(&params_path)
        .output()
        .unwrap();
    if !output.status.success() {
        assert!(!out.exists(), "a failed run leaves no {}", out.display());
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    assert!(out.join(files::RESULTS).is_file() && out.join(files::SUMMARY).is_file());
    let mut h = Manifest::read(&out).unwrap().headline;
    h.insert("targets_in_stream".into(), json!(tokens.len() - 1));
    Ok(h)
}

#[test]
fn mixing_a_kneser_ney_model_beats_a_weak_network_validly() {
    let h = run(json!({"mode": "mix", "order": 3, "stride": 8})).unwrap();
    assert_eq!(h["scored_targets"], h["targets_in_stream"]);
    let (mixed, network) = (
        h["val_bpb"].as_f64().unwrap(),
        h["val_bpb_network"].as_f64().unwrap(),
    );
    // A random tiny network knows nothing; the n-gram model learns the Markov source online.
    assert!(mixed < network, "mix {mixed} vs network {network}");
    for guard in [
        "guard_coverage",
        "guard_normalization",
        "guard_score_first",
        "guard_entropy",
    ] {
        assert!(
            h[guard].as_str().unwrap().starts_with("pass"),
            "{guard}: {}",
            h[guard]
        );
    }
    assert!(h["validity"].as_str().unwrap().starts_with("valid"));
    let err = run(json!({"weight": {"kind": "fixed", "weight": 1.5}})).unwrap_err();
    assert!(err.contains("weights must lie in [0, 1]"), "{err}");
    let err = run(json!({"train_tokens": 100, "stride": 8})).unwrap_err();
    assert!(err.contains("no train shards"), "{err}");
}

#[test]
fn diagnose_shows_the_hashed_cache_is_not_a_distribution() {
    let h = run(json!({"mode": "diagnose", "stride": 8, "probes": 200, "hashed": {"bucket_bits": 6, "max_order": 4}})).unwrap();
    assert_eq!(h["mode"], "diagnose");
    assert!(
        h["implied_mass_mean"].as_f64().unwrap() > 1.5,
        "{:?}",
        h["implied_mass_mean"]
    );
    let claimed = h["claimed_bpb_hashed_cache_invalid"].as_f64().unwrap();
    assert!(claimed < h["val_bpb"].as_f64().unwrap());
}

#[test]
fn mixing_on_several_ranks_gives_one_ranks_score() {
    let params = json!({"mode": "mix", "order": 3, "stride": 8, "precision": "f32"});
    let one = run_on(params.clone(), 1).unwrap();
    let bpb = one["val_bpb"].as_f64().unwrap();
    for ranks in [2, 3] {
        let many = run_on(params.clone(), ranks).unwrap();
        let theirs = many["val_bpb"].as_f64().unwrap();
        let rel = (theirs - bpb).abs() / bpb;
        println!("mix: 1 rank {bpb:.12}, {ranks} ranks {theirs:.12} (rel {rel:.1e})");
        assert!(rel < 1e-9, "{ranks} ranks: {theirs} vs {bpb}");
        let net = (many["val_bpb_network"].as_f64().unwrap()
            - one["val_bpb_network"].as_f64().unwrap())
        .abs();
        assert!(
            net < 1e-9 * bpb,
            "{ranks} ranks: the network's bpb differs by {net}"
        );
        for field in ["scored_targets", "val_bytes", "ngram_entries"] {
            assert_eq!(many[field], one[field], "{ranks} ranks: {field}");
        }
    }
    let err = run_on(json!({"mode": "diagnose", "stride": 8}), 2).unwrap_err();
    assert!(
        err.contains("mode diagnose on 2 ranks is not built yet"),
        "{err}"
    );
}

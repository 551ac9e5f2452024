//! gptq-calibrate on several ranks (Gloo on the CPU): 2 and 3 ranks, each running its share of the
//! batches, give one rank's Hessians within 1e-5 (relative to each matrix's largest entry; only
//! the order of the f32 sums differs) and the same batch and token counts. Self-generated
//! sequences, so rank 0's set reaches every rank by broadcast.

use pgolf_model::{save_tensors, ModelConfig};
use pgolf_store::files;
use pgolf_testkit::{seal, tiny_weights, write_data_dir, MarkovSource};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn calibrate(root: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = root.join(name);
    let params = root.join("params.json");
    std::fs::write(
        &params,
        json!({"source": "self_generated", "sequences": 12, "batch_sequences": 2, "gen_batch": 4, "precision": "f32"}).to_string(),
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_gptq-calibrate"))
        .arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("weights={}", root.join("weights").display()))
        .arg("--in")
        .arg(format!("data={}", root.join("data").display()))
        .arg("--params")
        .arg(&params)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

fn headline(dir: &Path) -> Value {
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join(files::MANIFEST)).unwrap()).unwrap();
    m["headline"].clone()
}

#[test]
fn hessians_on_several_ranks_are_one_ranks() {
    let root = tempfile::tempdir().unwrap();
    let (tokens, docs) = MarkovSource::new().corpus(60, 3);
    write_data_dir(&root.path().join("data"), &tokens, &docs).unwrap();
    let cfg = ModelConfig {
        vocab_size: 260,
        num_layers: 2,
        model_dim: 32,
        num_heads: 4,
        num_kv_heads: 2,
        seq_len: 16,
        ..Default::default()
    };
    let weights = root.path().join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    save_tensors(
        &tiny_weights(&cfg, 11).unwrap(),
        &weights.join(files::WEIGHTS),
    )
    .unwrap();
    cfg.write(&weights.join(files::MODEL_CONFIG)).unwrap();
    seal(&weights, "ema-finalize").unwrap();

    let one = calibrate(root.path(), "one", &[]);
    let h1 = pgolf_quant::read_safetensors_map(&one.join(files::HESSIANS)).unwrap();
    let mut names: Vec<&String> = h1.keys().collect();
    names.sort();
    for ranks in ["2", "3"] {
        let many = calibrate(root.path(), &format!("ranks-{ranks}"), &["--nproc", ranks]);
        let hn = pgolf_quant::read_safetensors_map(&many.join(files::HESSIANS)).unwrap();
        assert_eq!(h1.len(), hn.len());
        let mut worst = 0f64;
        for name in &names {
            let (a, b) = (&h1[*name].data, &hn[*name].data);
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((*x as f64 - *y as f64).abs() / scale);
            }
        }
        println!("{ranks} ranks: worst |ΔH| / max|H| {worst:.2e}");
        assert!(worst < 1e-5, "{ranks} ranks: {worst}");
        let (h, hm) = (headline(&one), headline(&many));
        for field in ["batches", "calibration_tokens", "layers"] {
            assert_eq!(h[field], hm[field], "{field}");
        }
        assert_eq!(
            serde_json::from_slice::<Value>(&std::fs::read(many.join(files::MANIFEST)).unwrap())
                .unwrap()["device"]["world_size"]
                .as_u64(),
            ranks.parse().ok()
        );
    }
}

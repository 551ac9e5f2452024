//! ttt-eval on several ranks (Gloo on the CPU): flat, sliding and score-first TTT split over 2 and
//! 3 ranks give one rank's BPB within 1e-9 (relative) and the same targets and bytes, under a run
//! key of their own; so does per-document LoRA TTT, its batches of documents shared out; phased TTT
//! refuses several ranks in one line.

mod support;

use pgolf_model::ModelConfig;
use pgolf_quant::{Compression, Routing};
use pgolf_store::files;
use pgolf_testkit::{write_data_dir, MarkovSource};
use serde_json::{json, Value};
use support::{ttt_eval, write_quantized};

fn manifest(dir: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(files::MANIFEST)).unwrap()).unwrap()
}

#[test]
fn flat_and_sliding_on_several_ranks_give_one_ranks_bpb() {
    let root = tempfile::tempdir().unwrap();
    let (tokens, docs) = MarkovSource::new().corpus(40, 9);
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
    let routing = Routing {
        small_numel: 256,
        ..Routing::default()
    };
    write_quantized(
        &root.path().join("artifact"),
        &cfg,
        &routing,
        &Compression::default(),
    );
    // TTT with chunks of 4 sequences, one per micro-batch, so every rank trains on a share.
    let ttt = json!({"mode": "ttt", "stride": 4, "precision": "f32",
                     "ttt": {"chunk_tokens": 64, "micro_batch": 1, "epochs": 2, "lr": 0.05}});
    let mut bpb_of = std::collections::BTreeMap::new();
    let mut lora_updates = 0;
    for (mode, params) in [
        ("flat", json!({"mode": "flat", "precision": "f32"})),
        (
            "sliding",
            json!({"mode": "sliding", "stride": 4, "precision": "f32"}),
        ),
        ("ttt", ttt),
        (
            "lora",
            json!({"mode": "lora", "precision": "f32",
                   "lora": {"chunk": 8, "context": 16, "batch_docs": 4}}),
        ),
    ] {
        let one = ttt_eval(root.path(), &format!("{mode}-1"), params.clone(), &[]);
        let bpb = one["val_bpb"].as_f64().unwrap();
        bpb_of.insert(mode, bpb);
        if mode == "lora" {
            lora_updates = one["adaptive_updates"].as_u64().unwrap();
        }
        let mut keys = vec![manifest(&root.path().join(format!("{mode}-1")))["key"].clone()];
        for ranks in ["2", "3"] {
            let name = format!("{mode}-{ranks}");
            let many = ttt_eval(root.path(), &name, params.clone(), &["--nproc", ranks]);
            let theirs = many["val_bpb"].as_f64().unwrap();
            let rel = (theirs - bpb).abs() / bpb;
            println!("{mode}: 1 rank {bpb:.12}, {ranks} ranks {theirs:.12} (rel {rel:.1e})");
            assert!(rel < 1e-9, "{mode} on {ranks} ranks: {theirs} vs {bpb}");
            for field in [
                "scored_targets",
                "val_bytes",
                "val_lut_bytes",
                "adaptive_updates",
            ] {
                assert_eq!(many[field], one[field], "{mode} {ranks} ranks: {field}");
            }
            let m = manifest(&root.path().join(&name));
            assert_eq!(m["device"]["world_size"].as_u64(), ranks.parse().ok());
            keys.push(m["key"].clone());
        }
        keys.dedup();
        assert_eq!(
            keys.len(),
            3,
            "each world size is a run of its own: {keys:?}"
        );
    }

    // The TTT runs adapted (their BPB is not the sliding one of the same windows).
    assert!(
        (bpb_of["ttt"] - bpb_of["sliding"]).abs() > 1e-4,
        "{bpb_of:?}"
    );

    // LoRA TTT adapted too (Adam steps counted once over the ranks: checked equal above).
    assert!(lora_updates > 0, "LoRA made no update");

    // Phased TTT on two ranks: one line naming what is not built, and no output left.
    let out = root.path().join("phased-2");
    let params = root.path().join("phased.json");
    std::fs::write(
        &params,
        json!({"mode": "phased", "precision": "f32"}).to_string(),
    )
    .unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ttt-eval"))
        .args(["--nproc", "2", "--out"])
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", root.path().join("data").display()))
        .arg("--in")
        .arg(format!(
            "artifact={}",
            root.path().join("artifact").display()
        ))
        .arg("--params")
        .arg(&params)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        err.contains("mode phased on 2 ranks is not built yet"),
        "{err}"
    );
    assert!(!out.exists(), "nothing left in {}", out.display());
}

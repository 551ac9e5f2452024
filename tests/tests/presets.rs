//! Each record preset's CPU variant runs the whole chain from the project's pipeline.yaml alone
//! (shortened here by `--set` so that CI stays short; `pipeline run --profile NAME-cpu` runs it in
//! full), and what the preset promises shows in its outputs: the model options in the trained
//! config, late QAT switching on (and the report saying when), and an artifact that the counted
//! evaluator scores as ttt-eval does.

use pgolf_e2e::{bin, shared_material, workspace_root};
use pgolf_store::files;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

/// The project's pipeline.yaml in a fresh folder, its `../shared` paths made absolute.
fn project_copy(dir: &Path) {
    let text = fs::read_to_string(workspace_root().join("pipeline.yaml")).unwrap();
    let shared = format!("{}/", shared_material().display());
    fs::write(
        dir.join("pipeline.yaml"),
        text.replace("../shared/", &shared),
    )
    .unwrap();
}

/// `pipeline run --profile P --set …`, which must succeed.
fn run(dir: &Path, profile: &str, sets: &[&str]) {
    let mut cmd = Command::new(bin("pipeline"));
    cmd.arg("run")
        .arg("--profile")
        .arg(profile)
        .current_dir(dir);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one published run of `stage` under `dir/out`.
fn only_run(dir: &Path, stage: &str) -> PathBuf {
    let runs: Vec<PathBuf> = fs::read_dir(dir.join("out").join(stage))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(files::MANIFEST).is_file())
        .collect();
    assert_eq!(runs.len(), 1, "{stage}: {runs:?}");
    runs.into_iter().next().unwrap()
}

/// The summary of the one ttt-eval run in `mode`.
fn eval_summary(dir: &Path, mode: &str) -> Value {
    fs::read_dir(dir.join("out/ttt-eval"))
        .unwrap()
        .map(|e| e.unwrap().path().join(files::SUMMARY))
        .filter(|p| p.is_file())
        .map(|p| read_json(&p))
        .find(|s| s["mode"] == mode)
        .unwrap_or_else(|| panic!("no {mode} evaluation"))
}

/// Runs the CPU preset shortened to 30 steps (the last 10 warming down) on 3 val documents, and
/// checks what every preset promises: its model options in the trained config, its eval modes
/// run, and an artifact that the counted evaluator decodes and scores exactly as ttt-eval's flat
/// evaluation did (both with lookup-table bytes: the evaluator reads the tokenizer). Returns the
/// folder for the preset's own checks.
fn run_preset(profile: &str, model: Value, score_mode: &str) -> tempfile::TempDir {
    run_preset_with(profile, model, score_mode, &[])
}

fn run_preset_with(
    profile: &str,
    model: Value,
    score_mode: &str,
    sets: &[&str],
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    project_copy(tmp.path());
    let mut all = vec![
        "train.iterations=30",
        "train.warmdown_iters=10",
        "tokenize.val_docs=3",
        "tokenize.max_docs=120",
    ];
    all.extend(sets);
    run(tmp.path(), profile, &all);
    let cfg = read_json(&only_run(tmp.path(), "train").join(files::MODEL_CONFIG));
    for (field, want) in model.as_object().unwrap() {
        assert_eq!(&cfg[field], want, "{profile}: model.{field}");
    }
    let sub = read_json(&only_run(tmp.path(), "report").join(files::SUBMISSION));
    let scored = sub["score_eval"].as_str().unwrap().to_lowercase();
    assert_eq!(scored, score_mode, "{profile}: the scored evaluation");

    let artifact = only_run(tmp.path(), "quantize-pack");
    let data = only_run(tmp.path(), "tokenize");
    let out = Command::new(bin("pgolf-evaluate"))
        .arg(&artifact)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{profile}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    let flat = eval_summary(tmp.path(), "flat");
    // With CaseOps both count the original text's bytes (the evaluator from the sidecars,
    // ttt-eval from the doc table; the lookup-table figure is rejected there).
    let (a, b) = (
        ours["val_bpb"].as_f64().unwrap(),
        flat["val_bpb_lut"]
            .as_f64()
            .or(flat["val_bpb"].as_f64())
            .unwrap(),
    );
    assert!(
        ((a - b) / b).abs() < 1e-5,
        "{profile}: counted evaluator {a} vs ttt-eval {b}"
    );
    tmp
}

/// R0322's options and its late QAT: on at the first step below lr_mul 0.15 (step 29 of 30), and
/// the report says so.
#[test]
fn the_r0322_cpu_preset_runs_the_chain_with_its_options() {
    let model = serde_json::json!({"num_layers": 11, "xsa_last_n": 4, "rope_dims": 8,
        "rope_ntk_len": 128, "ln_scale": true, "smear_gate": true, "init": "orthogonal",
        "value_embed": {"dim": 16, "layers": [9, 10]}, "bigram": {"buckets": 2048, "dim": 32}});
    let tmp = run_preset("r0322-cpu", model, "sliding");
    let headline = &read_json(&only_run(tmp.path(), "train").join(files::MANIFEST))["headline"];
    assert_eq!(headline["late_qat_step"], 29);
    let report = only_run(tmp.path(), "report");
    let md = fs::read_to_string(report.join(files::REPORT_MD)).unwrap();
    assert!(
        md.contains("late QAT (lr_mul < 0.15) switched on at step 29 of 30"),
        "{md}"
    );
}

/// PROTEUS EMA: MLP hidden 992's CPU scale, the EMA every 10 steps (after steps 10 and 20 of
/// 30), the embedding fp16 and zlib-9.
#[test]
fn the_proteus_ema_cpu_preset_runs_the_chain_with_its_options() {
    let model = serde_json::json!({"num_layers": 9, "mlp_hidden": 124, "seq_len": 256});
    let tmp = run_preset("proteus-ema-cpu", model, "sliding");
    let train = &read_json(&only_run(tmp.path(), "train").join(files::MANIFEST))["headline"];
    assert_eq!(train["ema_updates"], 2);
    let quant =
        &read_json(&only_run(tmp.path(), "quantize-pack").join(files::MANIFEST))["headline"];
    assert_eq!(quant["compressor"], "zlib-9");
}

/// 11L MLP3x int6: learnable norm weights, 5% of every int6 matrix pruned, the last c_k fp16,
/// and the score from score-first TTT.
#[test]
fn the_int6_mlp3x_ttt_cpu_preset_runs_the_chain_with_its_options() {
    let model = serde_json::json!({"num_layers": 11, "norm_weights": true, "smear_gate": true,
        "xsa_last_n": 4, "rope_dims": 8, "bigram": {"buckets": 2048, "dim": 32}});
    let tmp = run_preset("int6-mlp3x-ttt-cpu", model, "ttt");
    let quant =
        &read_json(&only_run(tmp.path(), "quantize-pack").join(files::MANIFEST))["headline"];
    assert!(quant["pruned"].as_u64().unwrap() > 0, "{quant}");
    let ttt = eval_summary(tmp.path(), "ttt");
    assert!(ttt["val_bpb"].as_f64().unwrap().is_finite());
}

/// R0323: LeakyReLU(0.5)², its parameter banks as the train output's tensors (the artifact per
/// layer), LZMA-6, and the score from score-first TTT.
#[test]
fn the_r0323_leaky_cpu_preset_runs_the_chain_with_its_options() {
    let model = serde_json::json!({"num_layers": 11, "banks": true, "activation": {"leaky_relu2": 0.5},
        "init": "orthogonal_banks", "bigram": {"buckets": 1536, "dim": 32}});
    let tmp = run_preset("r0323-leaky-cpu", model, "ttt");
    let train = only_run(tmp.path(), "train");
    // The tensor names, from the safetensors header (8-byte length, then JSON).
    let bytes = fs::read(train.join(files::WEIGHTS)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    for bank in ["qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank"] {
        assert!(names.iter().any(|n| n == bank), "{bank} missing: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("attn.c_q")), "{names:?}");
    let quant =
        &read_json(&only_run(tmp.path(), "quantize-pack").join(files::MANIFEST))["headline"];
    assert_eq!(quant["compressor"], "lzma-6");
}

/// PROTEUS+STYX: banks, SWA applied (a snapshot every 5 steps whose lr_mul is below 0.2: only
/// step 30 of 30, lr_mul 0.1), LZMA, our normalized mixture as the score, and the sweep's diagnose run reproducing
/// its cache beside it (claimed BPB reported, not scored).
#[test]
fn the_proteus_styx_cpu_preset_runs_the_chain_with_its_options() {
    let model =
        serde_json::json!({"num_layers": 11, "banks": true, "activation": {"leaky_relu2": 0.5}});
    let tmp = run_preset_with(
        "proteus-styx-cpu",
        model,
        "n-gram",
        &["ngram.mode=mix,diagnose"],
    );
    let ema = &read_json(&only_run(tmp.path(), "ema-finalize").join(files::MANIFEST))["headline"];
    assert_eq!(ema["source"], "swa", "{ema}");
    let train = &read_json(&only_run(tmp.path(), "train").join(files::MANIFEST))["headline"];
    assert_eq!(train["swa_snapshots"], 1, "{train}");
    let summaries: Vec<Value> = fs::read_dir(tmp.path().join("out/ngram-eval"))
        .unwrap()
        .map(|e| e.unwrap().path().join(files::SUMMARY))
        .filter(|p| p.is_file())
        .map(|p| read_json(&p))
        .collect();
    let diagnose = summaries
        .iter()
        .find(|s| s["mode"] == "diagnose")
        .expect("a diagnose run");
    assert_eq!(diagnose["hashed_cache"]["variant"], "styx", "{diagnose}");
    assert!(diagnose["cache_hits"].as_u64().unwrap() > 0, "{diagnose}");
    assert!(summaries.iter().any(|s| s["mode"] == "mix"));
}

/// The train log's line that starts with `prefix`.
fn log_line(dir: &Path, prefix: &str) -> String {
    let log = fs::read_to_string(only_run(dir, "train").join(files::TRAIN_LOG)).unwrap();
    log.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in {log}"))
        .to_string()
}

/// R0405: sp8192, shuffled windows, layers 2–3 looped from half the run (step 15 of 30), the
/// fraction warm-down, MuonEq-R, GPTQ int8 embedding, brotli.
#[test]
fn the_r0405_cpu_preset_runs_the_chain_with_its_options() {
    let model = serde_json::json!({"vocab_size": 8192, "skip_gates": true, "xsa_last_n": 6,
        "recurrence": {"start": 2, "end": 3, "loops": 2}, "activation": {"leaky_relu2": 0.5}});
    let tmp = run_preset("r0405-cpu", model, "sliding");
    let train = &read_json(&only_run(tmp.path(), "train").join(files::MANIFEST))["headline"];
    assert_eq!(train["recurrence_step"], 15, "{train}");
    assert!(
        log_line(tmp.path(), "layer_loop:enabled step:15 frac:0.500")
            .contains("encoder:[0, 1, 2, 3, 2]")
    );
    let quant =
        &read_json(&only_run(tmp.path(), "quantize-pack").join(files::MANIFEST))["headline"];
    assert_eq!(quant["compressor"], "brotli-11", "{quant}");
}

/// R0427 and the headwise-gate run: CaseOps text with raw-byte accounting, packed documents,
/// parallel lanes and their gates, the loop from 0.35 of the run (step 11 of 30), LQER (and for
/// R0427 the per-group layout).
#[test]
fn the_r0427_and_headwise_gate_cpu_presets_run_the_chain_with_their_options() {
    for (profile, gate, layout) in [
        (
            "r0427-cpu",
            serde_json::json!({"sparse": {"window": 12, "scale": 0.5, "init_std": 0.0}}),
            true,
        ),
        (
            "headwise-gate-cpu",
            serde_json::json!({"headwise": {"init_std": 0.01}}),
            false,
        ),
    ] {
        let model = serde_json::json!({"vocab_size": 8192, "banks": true, "attn_gate": gate,
            "parallel": {"start_layer": 4, "final_lane": "mean"}});
        let tmp = run_preset(profile, model, "sliding");
        let train = &read_json(&only_run(tmp.path(), "train").join(files::MANIFEST))["headline"];
        assert_eq!(train["recurrence_step"], 11, "{profile}: {train}");
        let quant =
            &read_json(&only_run(tmp.path(), "quantize-pack").join(files::MANIFEST))["headline"];
        assert!(
            quant["lqer_tensors"].as_u64().unwrap() > 0,
            "{profile}: {quant}"
        );
        assert_eq!(quant["layout"] == "per_group", layout, "{profile}: {quant}");
        // CaseOps: the lookup-table figure is only a rejected diagnostic, and it overstates the
        // bytes (each case operator would count as text).
        let sliding = eval_summary(tmp.path(), "sliding");
        assert!(sliding["val_bpb_lut"].is_null(), "{profile}: {sliding}");
        assert!(
            sliding["val_bpb_lut_rejected"].as_f64().is_some(),
            "{profile}: {sliding}"
        );
        assert!(
            sliding["lut_to_raw_bytes"].as_f64().unwrap() > 1.0,
            "{profile}: {sliding}"
        );
    }
}

//! The real chain tokenize → train → ema-finalize → gptq-calibrate → quantize-pack on a micro model,
//! driven by the real `pipeline` binary (all built by `cargo build --release --workspace`):
//! a clip sweep reruns only quantize-pack; the cap is enforced; an EMA never updated is refused.

use pgolf_quant::Artifact;
use pgolf_store::files;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn release_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/release")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release --workspace`",
        path.display()
    );
    path
}

const PROJECT: &str = "
stages:
  tokenize:
    exe: bin/tokenize
    params: {synthetic: {seed: 7, docs: 120, mean_doc_bytes: 200}, val_docs: 20}
  train:
    exe: bin/train
    inputs: {data: tokenize}
    params:
      model: {vocab_size: 260, num_layers: 2, model_dim: 64, num_heads: 2, num_kv_heads: 1, mlp_mult: 2, seq_len: 64}
      iterations: 3
      warmdown_iters: 1
      train_batch_tokens: 512
      val_loss_every: 0
      val_batch_tokens: 512
      val_max_tokens: 1024
      max_wallclock_seconds: 0
  ema-finalize:
    exe: bin/ema-finalize
    inputs: {train: train}
  gptq-calibrate:
    exe: bin/gptq-calibrate
    inputs: {weights: ema-finalize, data: tokenize}
    params: {sequences: 4, batch_sequences: 2}
  quantize-pack:
    exe: bin/quantize-pack
    inputs: {weights: ema-finalize, hessians: gptq-calibrate}
    params:
      small_numel: 1024
      attn: {method: gptq, bits: 6, clip_sigmas: 12.0}
      mlp: {method: gptq, bits: 6, clip_sigmas: 12.0}
      level: 3
";

struct Project(tempfile::TempDir);

impl Project {
    /// The stages are linked into the project, so a concurrent rebuild of target/release (other
    /// work on the same checkout) cannot change them between two runs of one test.
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for stage in [
            "tokenize",
            "train",
            "ema-finalize",
            "gptq-calibrate",
            "quantize-pack",
        ] {
            let to = dir.path().join("bin").join(stage);
            if std::fs::hard_link(release_bin(stage), &to).is_err() {
                std::fs::copy(release_bin(stage), &to).unwrap();
            }
        }
        std::fs::write(dir.path().join("pipeline.yaml"), PROJECT).unwrap();
        Project(dir)
    }

    fn pipeline(&self, args: &[&str]) -> Output {
        // The linked stages are outside target/, where their rpath to the venv's libtorch points.
        let torch_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/torch/lib");
        let mut cmd = Command::new(release_bin("pipeline"));
        cmd.args(args)
            .current_dir(self.0.path())
            .env("LD_LIBRARY_PATH", torch_lib);
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pipeline {args:?} failed:\n{text}");
        text
    }

    fn runs(&self, stage: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.0.path().join("out").join(stage))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(files::MANIFEST).is_file())
            .collect();
        v.sort();
        v
    }
}

fn status<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("<none>")
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(files::MANIFEST)).unwrap()).unwrap()
}

#[test]
fn a_clip_sweep_reruns_only_quantize_pack_and_the_cap_is_enforced() {
    let p = Project::new();
    let first = p.ok(&["run"]);
    for stage in [
        "tokenize",
        "train",
        "ema-finalize",
        "gptq-calibrate",
        "quantize-pack",
    ] {
        assert_eq!(status(&first, stage), "ran", "{first}");
    }
    let art = Artifact::read(&p.runs("quantize-pack")[0].join(files::ARTIFACT)).unwrap();
    let train_config: Value = serde_json::from_slice(
        &std::fs::read(p.runs("train")[0].join(files::MODEL_CONFIG)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        art.config, train_config,
        "the artifact carries the model config"
    );

    let sweep = p.ok(&["run", "--set", "quantize-pack.clip_sigmas=8,16"]);
    for stage in ["tokenize", "train", "ema-finalize", "gptq-calibrate"] {
        assert_eq!(status(&sweep, stage), "reused", "{sweep}");
        assert_eq!(p.runs(stage).len(), 1, "{stage} ran again:\n{sweep}");
    }
    assert_eq!(
        sweep
            .lines()
            .filter(|l| l.starts_with("quantize-pack[") && l.contains(" ran "))
            .count(),
        2,
        "{sweep}"
    );
    let runs = p.runs("quantize-pack");
    assert_eq!(runs.len(), 3);
    let mut ks: Vec<f64> = runs
        .iter()
        .filter_map(|r| manifest(r)["params"]["clip_sigmas"].as_f64())
        .collect();
    ks.sort_by(f64::total_cmp);
    assert_eq!(ks, vec![8.0, 16.0]);
    // A wider clip gives coarser integers: a smaller artifact.
    let bytes = |k: f64| {
        let r = runs
            .iter()
            .find(|r| manifest(r)["params"]["clip_sigmas"].as_f64() == Some(k))
            .unwrap();
        manifest(r)["headline"]["model_bytes"].as_u64().unwrap()
    };
    assert!(bytes(16.0) < bytes(8.0));

    // Over the cap: the stage fails (and leaves no run) unless the run is declared non-record.
    let out = p.pipeline(&["run", "--set", "quantize-pack.cap_bytes=1000"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("exceeds the cap 1000"),
        "{err}"
    );
    assert_eq!(p.runs("quantize-pack").len(), 3);
    let ok = p.ok(&[
        "run",
        "--set",
        "quantize-pack.cap_bytes=1000",
        "--set",
        "quantize-pack.non_record=true",
    ]);
    assert!(ok.contains("within_cap=false"), "{ok}");
}

#[test]
fn ema_finalize_refuses_an_ema_that_was_never_updated() {
    let p = Project::new();
    let out = p.pipeline(&[
        "run",
        "ema-finalize",
        "--set",
        "train.ema_decay=0",
        "--set",
        "ema-finalize.source=ema",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("never updated"), "{err}");
    assert!(p.runs("ema-finalize").is_empty());
}

#[test]
fn ema_finalize_takes_raw_for_a_young_ema_and_the_swa_average_on_request() {
    let p = Project::new();
    // 3 steps at decay 0.997: the EMA is still 99% the initial weights, so auto takes raw.
    p.ok(&["run", "ema-finalize"]);
    let runs = p.runs("ema-finalize");
    let h = &manifest(&runs[0])["headline"];
    assert_eq!(h["source"], "raw", "{h}");
    let reason = h["source_reason"].as_str().unwrap();
    assert!(reason.contains("99.1% of the initial weights"), "{reason}");
    assert_eq!(h["ema_updates"], 3);
    // Asked for explicitly, the EMA is used, with a warning on stderr and in the headline.
    let out = p.ok(&["run", "ema-finalize", "--set", "ema-finalize.source=ema"]);
    assert!(out.contains("WARNING: the EMA still holds 99.1%"), "{out}");
    let ema_run = p
        .runs("ema-finalize")
        .into_iter()
        .find(|r| manifest(r)["headline"]["source"] == "ema")
        .expect("an ema run");
    assert_eq!(
        manifest(&ema_run)["headline"]["warnings"][0]
            .as_str()
            .map(|w| w.contains("99.1%")),
        Some(true)
    );
    // SWA from the train stage: warm-down over all 3 steps, lr_mul 1, 2/3, 1/3; below 0.9 after
    // steps 2 and 3.
    let swa = [
        "run",
        "ema-finalize",
        "--set",
        "train.warmdown_iters=3",
        "--set",
        "train.swa_every=1",
        "--set",
        "train.swa_lr_threshold=0.9",
        "--set",
        "ema-finalize.source=swa",
    ];
    p.ok(&swa);
    let swa_run = p
        .runs("ema-finalize")
        .into_iter()
        .find(|r| manifest(r)["headline"]["source"] == "swa")
        .expect("an swa run");
    assert_eq!(manifest(&swa_run)["headline"]["swa_snapshots"], 2);
    // SWA asked of a train run that took no snapshot is refused.
    let out = p.pipeline(&["run", "ema-finalize", "--set", "ema-finalize.source=swa"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("swa_snapshots = 0"),
        "{err}"
    );
}

#[test]
fn the_chunk_count_changes_the_file_not_the_tensors() {
    let p = Project::new();
    p.ok(&["run", "quantize-pack"]);
    p.ok(&["run", "quantize-pack", "--set", "quantize-pack.chunks=1"]);
    let runs = p.runs("quantize-pack");
    assert_eq!(runs.len(), 2);
    let (mut one, mut sixteen) = (None, None);
    for r in &runs {
        let file = std::fs::read(r.join(files::ARTIFACT)).unwrap();
        let chunks = manifest(r)["headline"]["chunks"].as_u64().unwrap();
        // The chunk table (docs/ARTIFACT.md) holds the count the headline reports.
        assert_eq!(&file[4..5], &[2], "frame version 2");
        assert_eq!(
            u32::from_le_bytes(file[56..60].try_into().unwrap()) as u64,
            chunks
        );
        let art = Artifact::from_bytes(&file).unwrap();
        match chunks {
            1 => one = Some(art),
            16 => sixteen = Some(art),
            c => panic!("unexpected chunk count {c}"),
        }
    }
    let (one, sixteen) = (one.unwrap(), sixteen.unwrap());
    assert_eq!(one.tensors, sixteen.tensors);
    assert_ne!(one.file_bytes, sixteen.file_bytes);

    let out = p.pipeline(&["run", "quantize-pack", "--set", "quantize-pack.chunks=0"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("chunks 0 outside 1..=4096"),
        "{err}"
    );
}

//! The real chain tokenize → train → ema-finalize → gptq-calibrate → quantize-pack on a micro model,
//! driven by the real `pipeline` binary (all built by `cargo build --release --workspace`):
//! a clip sweep reruns only quantize-pack; the cap is enforced; an EMA never updated is refused;
//! every compressor gives the counted evaluator the same weights; pruning is counted per tensor.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pgolf_quant::prune::{prune_count, prune_smallest};
use pgolf_quant::{read_safetensors, Artifact, Codec};
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

/// zlib-9 and LZMA-6 (the records' `zlib.compress(…, 9)` and `lzma.compress(…, preset=6)`) beside
/// zstd and brotli: the frame names the compressor, the tensors are the same, and so the counted
/// evaluator's binary, which an artifact's score comes from, prints the same val_bpb to the last bit.
#[test]
fn every_compressor_gives_the_counted_evaluator_the_same_weights_and_score() {
    let p = Project::new();
    p.ok(&["run", "quantize-pack"]);
    p.ok(&[
        "run",
        "quantize-pack",
        "--set",
        "quantize-pack.compressor=brotli",
    ]);
    for (codec, level) in [("zlib", "9"), ("lzma", "6")] {
        let compressor = format!("quantize-pack.compressor={codec}");
        let level = format!("quantize-pack.level={level}");
        p.ok(&[
            "run",
            "quantize-pack",
            "--set",
            &compressor,
            "--set",
            &level,
        ]);
    }
    let data = p.runs("tokenize").remove(0);
    let mut seen = Vec::new();
    for run in p.runs("quantize-pack") {
        let path = run.join(files::ARTIFACT);
        let file = std::fs::read(&path).unwrap();
        let art = Artifact::from_bytes(&file).unwrap();
        let out = Command::new(release_bin("pgolf-evaluate"))
            .arg(&path)
            .arg(&data)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgolf-evaluate {}: {err}",
            path.display()
        );
        let score: Value = serde_json::from_slice(&out.stdout).unwrap();
        let label = manifest(&run)["headline"]["compressor"]
            .as_str()
            .unwrap()
            .to_string();
        seen.push((label, file[5], art, score));
    }
    seen.sort_by_key(|s| s.1);
    let labels: Vec<(&str, u8)> = seen.iter().map(|s| (s.0.as_str(), s.1)).collect();
    assert_eq!(
        labels,
        [("zstd-3", 1), ("brotli-3", 2), ("zlib-9", 3), ("lzma-6", 4)]
    );
    let (_, _, zstd, zstd_score) = &seen[0];
    let bpb = |v: &Value| v["val_bpb"].as_f64().unwrap().to_bits();
    assert!(
        zstd_score["targets"].as_u64().unwrap() > 1000,
        "{zstd_score}"
    );
    for (label, id, art, score) in &seen[1..] {
        assert_eq!(art.codec, Codec::from_id(*id).unwrap());
        assert_eq!(&art.tensors, &zstd.tensors, "{label}");
        assert_eq!(
            bpb(score),
            bpb(zstd_score),
            "{label}: {score} vs {zstd_score}"
        );
        // And every other field but the timing.
        let untimed = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("seconds");
            v
        };
        assert_eq!(untimed(score), untimed(zstd_score), "{label}");
    }
}

/// tensors.parquet's `pruned` column as u64s, with the `numel` and `scheme` columns.
fn pruned_column(run: &Path) -> Vec<(String, u64, String, u64)> {
    let file = std::fs::File::open(run.join(files::TENSOR_TABLE)).unwrap();
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = Vec::new();
    for b in batches {
        let text = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
        let num = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<UInt64Type>()
                .clone()
        };
        let (name, scheme, numel, pruned) =
            (text("name"), text("scheme"), num("numel"), num("pruned"));
        for i in 0..b.num_rows() {
            rows.push((
                name.value(i).to_string(),
                numel.value(i),
                scheme.value(i).to_string(),
                pruned.value(i),
            ));
        }
    }
    rows
}

/// `prune: 0.1` zeroes round(0.1·numel) entries of every quantized matrix (GPTQ included, which
/// holds them at 0): tensors.parquet counts them, the headline sums them, and they decode to 0.
/// Off by default: every count is 0.
#[test]
fn pruning_is_counted_per_tensor_and_the_pruned_entries_decode_to_zero() {
    let p = Project::new();
    p.ok(&["run", "quantize-pack"]);
    p.ok(&["run", "quantize-pack", "--set", "quantize-pack.prune=0.1"]);
    let runs = p.runs("quantize-pack");
    let (pruned_run, plain_run) = match manifest(&runs[0])["params"]["prune"].as_f64() {
        Some(_) => (&runs[0], &runs[1]),
        None => (&runs[1], &runs[0]),
    };
    assert!(pruned_column(plain_run).iter().all(|r| r.3 == 0));
    assert_eq!(manifest(plain_run)["headline"]["pruned"], 0);

    let art = Artifact::read(&pruned_run.join(files::ARTIFACT)).unwrap();
    let weights = read_safetensors(&p.runs("ema-finalize")[0].join(files::WEIGHTS)).unwrap();
    let rows = pruned_column(pruned_run);
    let mut total = 0;
    for (name, numel, scheme, pruned) in &rows {
        let t = art.decode(name).unwrap();
        let expect = if scheme.starts_with("raw") || t.shape.len() != 2 {
            0
        } else {
            prune_count(*numel as usize, 0.1) as u64
        };
        assert_eq!(*pruned, expect, "{name} ({scheme})");
        if *pruned > 0 {
            // The k smallest |w| of the weights quantize-pack read are exactly 0 after decoding.
            let mut w = weights
                .iter()
                .find(|w| &w.name == name)
                .unwrap()
                .data
                .clone();
            let mask = prune_smallest(&mut w, 0.1);
            assert!(
                mask.iter().zip(&t.data).all(|(m, v)| !m || *v == 0.0),
                "{name}: a pruned entry decodes to a non-zero value"
            );
        }
        total += pruned;
    }
    assert!(
        rows.iter().any(|r| r.2 == "gptq" && r.3 > 0),
        "a GPTQ matrix was pruned: {rows:?}"
    );
    assert_eq!(manifest(pruned_run)["headline"]["pruned"], total);
}

/// tensors.parquet's `lqer` and `lqer_bytes` columns by tensor name.
fn lqer_columns(run: &Path) -> Vec<(String, String, u64)> {
    let file = std::fs::File::open(run.join(files::TENSOR_TABLE)).unwrap();
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = Vec::new();
    for b in batches {
        let text = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
        let bytes = b
            .column_by_name("lqer_bytes")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        let (name, lqer) = (text("name"), text("lqer"));
        for i in 0..b.num_rows() {
            rows.push((
                name.value(i).to_string(),
                lqer.value(i).to_string(),
                bytes.value(i),
            ));
        }
    }
    rows
}

/// `lqer: {enabled: true}` (R0427's rank 4, top 3, asymmetric group 64) corrects three matrices,
/// which tensors.parquet and the headlines name and count; `layout: {per_group: true}` only moves
/// bytes: every tensor without a correction decodes exactly as in the run with both off.
#[test]
fn lqer_and_the_per_group_layout_change_only_the_corrected_tensors() {
    let p = Project::new();
    p.ok(&["run", "quantize-pack"]);
    p.ok(&[
        "run",
        "quantize-pack",
        "--set",
        "quantize-pack.lqer.enabled=true",
        "--set",
        "quantize-pack.layout.per_group=true",
    ]);
    let runs = p.runs("quantize-pack");
    let (on, off) = match manifest(&runs[0])["params"]["lqer"]["enabled"].as_bool() {
        Some(true) => (&runs[0], &runs[1]),
        _ => (&runs[1], &runs[0]),
    };
    let head = &manifest(on)["headline"];
    assert_eq!(head["lqer_tensors"], 3, "{head}");
    assert_eq!(head["layout"], "per_group", "{head}");
    assert!(manifest(off)["headline"].get("lqer_tensors").is_none());
    let rows = lqer_columns(on);
    let corrected: Vec<&(String, String, u64)> = rows.iter().filter(|r| !r.1.is_empty()).collect();
    assert_eq!(corrected.len(), 3, "{rows:?}");
    assert!(
        corrected.iter().all(|r| r.1 == "r4 asym g64" && r.2 > 0),
        "{rows:?}"
    );
    assert_eq!(
        head["lqer_bytes"],
        corrected.iter().map(|r| r.2).sum::<u64>()
    );
    assert!(lqer_columns(off).iter().all(|r| r.1.is_empty() && r.2 == 0));

    let (a_on, a_off) = (
        Artifact::read(&on.join(files::ARTIFACT)).unwrap(),
        Artifact::read(&off.join(files::ARTIFACT)).unwrap(),
    );
    assert!(a_on.tensors.iter().any(|t| t.layout.perm.is_some()));
    for t in &a_on.tensors {
        let (mine, plain) = (
            a_on.decode(&t.name).unwrap(),
            a_off.decode(&t.name).unwrap(),
        );
        let named = corrected.iter().any(|r| r.0 == t.name);
        assert_eq!(t.lqer.is_some(), named, "{}", t.name);
        if named {
            assert_ne!(mine, plain, "{}", t.name);
        } else {
            assert_eq!(mine, plain, "{}", t.name);
        }
    }
}

//! portable-eval (WGSL shaders on wgpu; here Mesa's software Vulkan, `--device cpu`) against
//! ttt-eval's f32 CPU result (libtorch, the `literal` formulation: the oracle) on the same
//! quantized artifacts of tiny models: flat and sliding BPB within 1e-5, every document's NLL
//! within 1e-4, the same targets and bytes. One case per architecture add-on group; the binaries
//! are the real ones (ttt-eval's from the same target folder).

use arrow::array::{Float64Array, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pgolf_model::config::{
    AttnGate, BigramHash, FinalLane, ParallelLanes, Recurrence, SmearGateV2, ValueEmbedding,
};
use pgolf_model::{Activation, ModelConfig};
use pgolf_quant::{Compression, Method, Routing, Rule};
use pgolf_store::files;
use pgolf_testkit::{write_data_dir, write_quantized_dir, MarkovSource};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PORTABLE: &str = env!("CARGO_BIN_EXE_portable-eval");

/// ttt-eval's release binary beside ours (`cargo build --release -p ttt-eval`).
fn ttt_eval_bin() -> PathBuf {
    let path = Path::new(PORTABLE).with_file_name("ttt-eval");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release -p ttt-eval`",
        path.display()
    );
    path
}

/// Runs `bin` on `root`'s data and artifact into `root/name`; its summary.json, or the error.
fn run(
    bin: &Path,
    root: &Path,
    name: &str,
    params: &Value,
    extra: &[&str],
) -> Result<Value, String> {
    let (out, params_path) = (root.join(name), root.join(format!("{name}.json")));
    std::fs::write(&params_path, params.to_string()).unwrap();
    let output = Command::new(bin)
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
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(serde_json::from_slice(&std::fs::read(out.join(files::SUMMARY)).unwrap()).unwrap())
}

/// doc id → (targets, nll) from a results.parquet.
fn doc_results(path: &Path) -> BTreeMap<String, (u64, f64)> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let ids = col("doc_id");
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let targets = col("targets");
        let targets = targets.as_any().downcast_ref::<UInt64Array>().unwrap();
        let nll = col("nll");
        let nll = nll.as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..batch.num_rows() {
            out.insert(ids.value(i).to_string(), (targets.value(i), nll.value(i)));
        }
    }
    out
}

fn check(cfg: ModelConfig, routing: Routing) {
    let root = tempfile::tempdir().unwrap();
    let (tokens, docs) = MarkovSource::new().corpus(40, 9);
    write_data_dir(&root.path().join("data"), &tokens, &docs).unwrap();
    let compression = Compression {
        level: Some(3),
        ..Compression::default()
    };
    write_quantized_dir(&root.path().join("artifact"), &cfg, &routing, &compression).unwrap();
    let ttt = ttt_eval_bin();
    for (mode, params) in [
        ("flat", json!({"mode": "flat"})),
        (
            "sliding",
            json!({"mode": "sliding", "stride": 4, "batch_windows": 7}),
        ),
    ] {
        let mut theirs_params = params.clone();
        theirs_params["precision"] = json!("f32");
        theirs_params["formulation"] = json!("literal");
        let theirs = run(
            &ttt,
            root.path(),
            &format!("ttt-{mode}"),
            &theirs_params,
            &[],
        )
        .unwrap();
        let ours = run(
            Path::new(PORTABLE),
            root.path(),
            &format!("wgpu-{mode}"),
            &params,
            &["--device", "cpu"],
        )
        .unwrap();
        for key in [
            "scored_targets",
            "expected_targets",
            "val_bytes",
            "val_lut_bytes",
        ] {
            assert_eq!(ours[key], theirs[key], "{mode}: {key}");
        }
        assert!(ours["guard_normalization"]
            .as_str()
            .unwrap()
            .starts_with("pass"));
        let (a, b) = (
            ours["val_bpb"].as_f64().unwrap(),
            theirs["val_bpb"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-5,
            "{mode}: portable-eval {a} vs ttt-eval {b} (diff {:e})",
            (a - b).abs()
        );
        let mine = doc_results(
            &root
                .path()
                .join(format!("wgpu-{mode}"))
                .join(files::RESULTS),
        );
        let reference = doc_results(&root.path().join(format!("ttt-{mode}")).join(files::RESULTS));
        assert_eq!(mine.len(), reference.len(), "{mode}: documents");
        let mut worst = 0f64;
        for (id, (targets, nll)) in &reference {
            let (t, n) = mine[id];
            assert_eq!(t, *targets, "{mode}: document {id}'s targets");
            worst = worst.max((n - nll).abs());
        }
        assert!(worst < 1e-4, "{mode}: a document's NLL differs by {worst}");
        eprintln!(
            "{mode}: BPB {a} vs {b} (diff {:.2e}); worst document NLL diff {worst:.2e}",
            (a - b).abs()
        );
    }
}

fn tiny() -> ModelConfig {
    ModelConfig {
        vocab_size: 260,
        num_layers: 3,
        model_dim: 32,
        num_heads: 4,
        num_kv_heads: 2,
        seq_len: 16,
        ..Default::default()
    }
}

/// The baseline's scheme: int8 rows for the matrices, controls f32, other small tensors fp16.
fn int8() -> Routing {
    Routing {
        small_numel: 256,
        ..Routing::default()
    }
}

/// int6 GPTQ-lite matrices (the record stacks').
fn int6() -> Routing {
    let lite = Rule {
        method: Method::Lite,
        bits: 6,
        ..Rule::default()
    };
    Routing {
        small_numel: 256,
        attn: lite.clone(),
        mlp: lite,
        ..Routing::default()
    }
}

/// The baseline: GQA, relu², tied head, U-Net skips.
#[test]
fn baseline_agrees_with_ttt_eval() {
    check(tiny(), int8());
}

/// Untied head, plain multi-head attention, LeakyReLU².
#[test]
fn untied_mha_leaky_relu2_agrees_with_ttt_eval() {
    let cfg = ModelConfig {
        num_layers: 4,
        num_kv_heads: 4,
        tie_embeddings: false,
        activation: Activation::LeakyRelu2(0.5),
        ..tiny()
    };
    check(cfg, int6());
}

/// R0322's options: partial RoPE rescaled past its built length, XSA, LN scale, learnable norm
/// weights, SmearGate v1, projected BigramHash and value-embedding tables, a set MLP width.
#[test]
fn the_r0322_options_agree_with_ttt_eval() {
    let cfg = ModelConfig {
        num_layers: 4,
        rope_dims: Some(4),
        rope_ntk_len: Some(8),
        xsa_last_n: 2,
        ln_scale: true,
        smear_gate: true,
        bigram: Some(BigramHash {
            buckets: 64,
            dim: 8,
        }),
        value_embed: Some(ValueEmbedding {
            dim: 8,
            layers: vec![2, 3],
        }),
        mlp_hidden: Some(48),
        norm_weights: true,
        ..tiny()
    };
    check(cfg, int6());
}

/// The SP8192 line's options: depth recurrence, skip gates, parallel lanes (mean final lane),
/// SmearGate v2 with its BOS mask, the sparse attention gate; then the headwise gate with the
/// MLP lane handed to the head.
#[test]
fn the_sp8192_options_agree_with_ttt_eval() {
    let sparse = ModelConfig {
        num_layers: 5,
        mlp_mult: 4,
        activation: Activation::LeakyRelu2(0.5),
        rope_dims: Some(4),
        xsa_last_n: 5,
        ln_scale: true,
        recurrence: Some(Recurrence {
            start: 1,
            end: 2,
            loops: 1,
        }),
        skip_gates: true,
        parallel: Some(ParallelLanes {
            start_layer: 3,
            final_lane: FinalLane::Mean,
        }),
        smear_gate_v2: Some(SmearGateV2 {
            window: 8,
            bos_id: 1,
        }),
        attn_gate: Some(AttnGate::Sparse {
            window: 8,
            scale: 0.5,
            init_std: 0.0,
        }),
        ..tiny()
    };
    let headwise = ModelConfig {
        smear_gate_v2: None,
        attn_gate: Some(AttnGate::Headwise { init_std: 0.01 }),
        parallel: Some(ParallelLanes {
            start_layer: 3,
            final_lane: FinalLane::Mlp,
        }),
        ..sparse.clone()
    };
    check(sparse, int6());
    check(headwise, int6());
}

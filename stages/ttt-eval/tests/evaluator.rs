//! The counted evaluator (pgolf-evaluator: pure Rust, no libtorch) against the libtorch path on
//! the same quantized artifacts (quantize-pack's quantizer and writer): per-token NLL against
//! pgolf-model's literal f32 CPU forward within 1e-5, and flat and sliding BPB against this
//! stage's binary within 1e-6 (relative). The evaluator's byte table is checked against
//! pgolf-data's on the way.

mod support;

use pgolf_eval::torch::load_artifact;
use pgolf_model::{Activation, Formulation, ModelConfig};
use pgolf_quant::{Compression, Method, Routing, Rule};
use pgolf_store::files;
use pgolf_store::{Compute, Precision};
use pgolf_testkit::{write_data_dir, MarkovSource};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use support::{ttt_eval, write_quantized};

fn check(cfg: ModelConfig, routing: Routing, compression: Compression) {
    let root = tempfile::tempdir().unwrap();
    let (tokens, docs) = MarkovSource::new().corpus(40, 9);
    write_data_dir(&root.path().join("data"), &tokens, &docs).unwrap();
    let art_dir = root.path().join("artifact");
    write_quantized(&art_dir, &cfg, &routing, &compression);

    let art = pgolf_evaluator::Artifact::read(&art_dir.join(files::ARTIFACT)).unwrap();
    assert!(
        art.tensors
            .iter()
            .any(|t| matches!(t.encoding, pgolf_evaluator::Encoding::Rows { .. })),
        "some matrices are quantized"
    );
    let ours = pgolf_evaluator::Model::from_artifact(&art).unwrap();
    let (mut net, _) =
        load_artifact(&art_dir, Device::Cpu, Precision::F32, Compute::Native).unwrap();
    // The literal formulation: the oracle.
    net.gpt
        .set_formulation(Formulation::Literal, Device::Cpu)
        .unwrap();

    // Per-token NLL, window by window, against the literal forward.
    let t = cfg.seq_len;
    let mut worst = 0f64;
    for start in (0..tokens.len() - 1 - t).step_by(t) {
        let (x, y) = (&tokens[start..start + t], &tokens[start + 1..start + t + 1]);
        let mine = ours.nll(x, y).unwrap();
        let to = |v: &[u16]| {
            Tensor::from_slice(&v.iter().map(|&i| i as i64).collect::<Vec<_>>()).view([1, -1])
        };
        let theirs = Vec::<f32>::try_from(
            tch::no_grad(|| net.gpt.token_nll(&to(x), &to(y)))
                .to_kind(Kind::Float)
                .flatten(0, -1),
        )
        .unwrap();
        for (a, b) in mine.iter().zip(&theirs) {
            worst = worst.max((*a as f64 - *b as f64).abs());
        }
    }
    assert!(worst < 1e-5, "per-token NLL differs by {worst}");
    assert!(
        worst > 0.0 || cfg.num_layers == 0,
        "a real comparison (different summation orders)"
    );

    // Byte counts: the evaluator's byte260 table gives what pgolf-data's LUT charges.
    let bytes = pgolf_evaluator::ByteLut::byte260()
        .target_bytes(&tokens)
        .unwrap();
    let lut = pgolf_data::ByteLut::byte260();
    assert!((1..tokens.len()).all(|i| bytes[i] == lut.bytes(tokens[i - 1], tokens[i])));

    let n = tokens.len() - 1;
    for (name, params, windows) in [
        (
            "flat",
            json!({"mode": "flat", "precision": "f32"}),
            pgolf_evaluator::flat(n, t).unwrap(),
        ),
        (
            "sliding",
            json!({"mode": "sliding", "stride": 4, "precision": "f32"}),
            pgolf_evaluator::sliding(n, t, 4).unwrap(),
        ),
    ] {
        let sums = pgolf_evaluator::score(&ours, &tokens, &bytes, &windows, |_| {}).unwrap();
        let summary = ttt_eval(root.path(), name, params, &[]);
        let theirs = summary["val_bpb_lut"].as_f64().unwrap();
        assert_eq!(
            summary["val_lut_bytes"].as_u64(),
            Some(sums.bytes),
            "{name}"
        );
        assert_eq!(
            summary["scored_targets"].as_u64(),
            Some(sums.targets),
            "{name}"
        );
        let rel = (sums.bpb() - theirs).abs() / theirs;
        assert!(
            rel < 1e-6,
            "{name}: evaluator {} vs ttt-eval {theirs} (rel {rel:e})",
            sums.bpb()
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

/// The baseline's scheme: int8 rows for the matrices, controls f32, other small tensors fp16; zstd.
#[test]
fn baseline_int8_zstd_agrees_with_libtorch() {
    let routing = Routing {
        small_numel: 256,
        ..Routing::default()
    };
    check(
        tiny(),
        routing,
        Compression {
            level: Some(3),
            ..Compression::default()
        },
    );
}

/// Untied head, plain multi-head attention, LeakyReLU², int6 GPTQ-lite matrices, brotli in chunks.
#[test]
fn variants_int6_brotli_agree_with_libtorch() {
    let cfg = ModelConfig {
        num_layers: 4,
        num_kv_heads: 4,
        tie_embeddings: false,
        activation: Activation::LeakyRelu2(0.5),
        ..tiny()
    };
    let lite = Rule {
        method: Method::Lite,
        bits: 6,
        ..Rule::default()
    };
    let routing = Routing {
        small_numel: 256,
        attn: lite.clone(),
        mlp: lite,
        ..Routing::default()
    };
    let compression = Compression {
        chunks: 3,
        level: Some(5),
        ..Compression::brotli()
    };
    check(cfg, routing, compression);
}

/// R0322's options, every one on (partial RoPE rescaled past its built length, XSA, LN scale,
/// SmearGate, projected BigramHash and value-embedding tables, a set MLP width), int6 GPTQ-lite
/// matrices, zstd.
#[test]
fn the_r0322_options_agree_with_libtorch() {
    let cfg = ModelConfig {
        num_layers: 4,
        rope_dims: Some(4),
        rope_ntk_len: Some(8),
        xsa_last_n: 2,
        ln_scale: true,
        smear_gate: true,
        bigram: Some(pgolf_model::config::BigramHash {
            buckets: 64,
            dim: 8,
        }),
        value_embed: Some(pgolf_model::config::ValueEmbedding {
            dim: 8,
            layers: vec![2, 3],
        }),
        mlp_hidden: Some(48),
        norm_weights: true,
        ..tiny()
    };
    let lite = Rule {
        method: Method::Lite,
        bits: 6,
        ..Rule::default()
    };
    let routing = Routing {
        small_numel: 256,
        attn: lite.clone(),
        mlp: lite,
        ..Routing::default()
    };
    let compression = Compression {
        level: Some(3),
        ..Compression::default()
    };
    check(cfg, routing, compression);
}

/// The SP8192 line's options (R0427's combination at a tiny size): depth recurrence (the counted
/// forward always loops, as does a loaded model), skip gates, parallel lanes, SmearGate v2 with
/// its BOS mask, the sparse attention gate; then the headwise gate in its place. int6 GPTQ-lite
/// matrices, zstd.
#[test]
fn the_sp8192_options_agree_with_libtorch() {
    use pgolf_model::config::{AttnGate, FinalLane, ParallelLanes, Recurrence, SmearGateV2};
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
        ..sparse.clone()
    };
    for cfg in [sparse, headwise] {
        let lite = Rule {
            method: Method::Lite,
            bits: 6,
            ..Rule::default()
        };
        let routing = Routing {
            small_numel: 256,
            attn: lite.clone(),
            mlp: lite,
            ..Routing::default()
        };
        let compression = Compression {
            level: Some(3),
            ..Compression::default()
        };
        check(cfg, routing, compression);
    }
}

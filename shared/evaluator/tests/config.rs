//! The model config: the baseline's shape and the constraints the forward relies on.

use pgolf_evaluator::config::{
    Activation, AttnGate, FinalLane, InitScheme, ModelConfig, ParallelLanes, Recurrence,
    SmearGateV2,
};

#[test]
fn baseline_has_the_reference_parameter_count() {
    let cfg = ModelConfig::default();
    let block: usize = cfg
        .parameter_shapes()
        .iter()
        .filter(|(name, _)| name.starts_with("blocks.0."))
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    assert_eq!(block, 1_837_064, "REFERENCE.md §3.3: per block");
    assert_eq!(cfg.num_params(), 17_059_912, "REFERENCE.md §3.3: total");
    assert_eq!(
        (
            cfg.num_encoder_layers(),
            cfg.num_decoder_layers(),
            cfg.num_skip_weights()
        ),
        (4, 5, 4)
    );
}

#[test]
fn rejects_impossible_shapes() {
    let bad = ModelConfig {
        num_heads: 3,
        ..Default::default()
    };
    assert!(format!("{:#}", bad.validate().unwrap_err()).contains("not divisible by num_heads"));
    let bad = ModelConfig {
        num_kv_heads: 3,
        ..Default::default()
    };
    assert!(format!("{:#}", bad.validate().unwrap_err()).contains("num_kv_heads"));
    let bad = ModelConfig {
        model_dim: 24,
        num_heads: 8,
        num_kv_heads: 4,
        ..Default::default()
    };
    assert!(format!("{:#}", bad.validate().unwrap_err()).contains("even for RoPE"));
}

#[test]
fn json_round_trip_and_activation_spelling() {
    let cfg = ModelConfig {
        activation: Activation::LeakyRelu2(0.5),
        ..Default::default()
    };
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(
        text.contains(r#""activation":{"leaky_relu2":0.5}"#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), cfg);
    let relu: ModelConfig =
        serde_json::from_str(r#"{"activation":"relu2","num_layers":2}"#).unwrap();
    assert_eq!((relu.activation, relu.num_layers), (Activation::Relu2, 2));
    assert!(serde_json::from_str::<ModelConfig>(r#"{"layers":2}"#).is_err());
}

/// R0405 at full size (its run: the script's defaults): loop 4–5 twice, skip gates, partial RoPE
/// built for 2048, XSA everywhere, LN scale, MLP 4× LeakyReLU(0.5)², QK gain 4.
fn r0405() -> ModelConfig {
    ModelConfig {
        vocab_size: 8192,
        num_layers: 11,
        mlp_mult: 4,
        seq_len: 2048,
        qk_gain_init: 4.0,
        activation: Activation::LeakyRelu2(0.5),
        rope_dims: Some(16),
        rope_ntk_len: Some(2048),
        xsa_last_n: 11,
        ln_scale: true,
        init: InitScheme::Orthogonal,
        recurrence: Some(Recurrence {
            start: 4,
            end: 5,
            loops: 2,
        }),
        skip_gates: true,
        ..Default::default()
    }
}

/// R0427 as its README's command runs it: loop 3–5 twice, parallel lanes from layer 8, SmearGate
/// v2 (window 12), the sparse gate at scale 0.5, banks, QK gain 5, no NTK rescale.
fn r0427() -> ModelConfig {
    ModelConfig {
        qk_gain_init: 5.0,
        rope_ntk_len: None,
        init: InitScheme::OrthogonalBanks,
        banks: true,
        recurrence: Some(Recurrence {
            start: 3,
            end: 5,
            loops: 2,
        }),
        parallel: Some(ParallelLanes {
            start_layer: 8,
            final_lane: FinalLane::Mean,
        }),
        smear_gate_v2: Some(SmearGateV2 {
            window: 12,
            bos_id: 1,
        }),
        attn_gate: Some(AttnGate::Sparse {
            window: 12,
            scale: 0.5,
            init_std: 0.0,
        }),
        ..r0405()
    }
}

/// The headwise-gate submission (refs/pull/2071/head): R0427's script with SmearGate and the
/// sparse gate off and the headwise gate on.
fn headwise() -> ModelConfig {
    ModelConfig {
        smear_gate_v2: None,
        attn_gate: Some(AttnGate::Headwise { init_std: 0.01 }),
        ..r0427()
    }
}

/// The records' logged counts: R0405 `model_params:35943512`, R0427 `model_params:35945671`, the
/// headwise-gate run 35,989,658; and their virtual layer lists (REFERENCE.md §5.13).
#[test]
fn the_sp8192_line_has_the_records_parameter_counts_and_layer_lists() {
    for (cfg, want) in [
        (r0405(), 35_943_512),
        (r0427(), 35_945_671),
        (headwise(), 35_989_658),
    ] {
        cfg.validate().unwrap();
        assert_eq!(cfg.num_params(), want, "{cfg:?}");
    }
    let (enc, dec) = r0405().layer_order(true);
    assert_eq!(enc, [0, 1, 2, 3, 4, 5, 4]);
    assert_eq!(dec, [5, 4, 5, 6, 7, 8, 9, 10]);
    let (enc, dec) = r0427().layer_order(true);
    assert_eq!(enc, [0, 1, 2, 3, 4, 5, 3, 4]);
    assert_eq!(dec, [5, 3, 4, 5, 6, 7, 8, 9, 10]);
    // Off: the plain U-Net, though the skips are sized for the loop.
    let (enc, dec) = r0427().layer_order(false);
    assert_eq!((enc, dec), ((0..5).collect(), (5..11).collect()));
    assert_eq!(r0427().num_skip_weights(), 8);
    assert_eq!(ModelConfig::default().layer_order(true).0, [0, 1, 2, 3]);
    let shapes: std::collections::HashMap<String, Vec<usize>> =
        r0427().parameter_shapes().into_iter().collect();
    for (name, shape) in [
        ("skip_gates", vec![8, 512]),
        ("parallel_post_lambdas", vec![11, 2, 2]),
        ("parallel_resid_lambdas", vec![11, 2]),
        ("smear_gate.weight", vec![1, 12]),
        ("smear_lambda", vec![1]),
        ("blocks.10.attn.attn_gate_w", vec![8, 12]),
        ("qo_bank", vec![22, 512, 512]),
    ] {
        assert_eq!(shapes[name], shape, "{name}");
    }
    let shapes: std::collections::HashMap<String, Vec<usize>> =
        headwise().parameter_shapes().into_iter().collect();
    assert_eq!(shapes["blocks.0.attn.attn_gate_w"], [8, 512]);
    assert!(!shapes.contains_key("smear_gate.weight"));
}

#[test]
fn the_sp8192_options_read_from_json_and_refuse_what_cannot_run() {
    let text = serde_json::to_string(&r0427()).unwrap();
    assert!(
        text.contains(r#""attn_gate":{"sparse":{"window":12,"scale":0.5,"init_std":0.0}}"#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), r0427());
    let cfg: ModelConfig = serde_json::from_str(
        r#"{"recurrence":{"start":1,"end":2,"loops":1},"parallel":{"start_layer":6},"smear_gate_v2":{"window":4},"attn_gate":{"headwise":{"init_std":0.01}}}"#,
    )
    .unwrap();
    assert_eq!(cfg.parallel.as_ref().unwrap().final_lane, FinalLane::Mean);
    assert_eq!(cfg.smear_gate_v2.as_ref().unwrap().bos_id, 1);
    cfg.validate().unwrap();
    assert!(serde_json::from_str::<ModelConfig>(
        r#"{"attn_gate":{"sparse":{"window":12,"scale":0.5,"gate":1}}}"#
    )
    .is_err());
    let bad = |cfg: ModelConfig, msg: &str| {
        let err = format!("{:#}", cfg.validate().unwrap_err());
        assert!(err.contains(msg), "{err}");
    };
    bad(
        ModelConfig {
            recurrence: Some(Recurrence {
                start: 5,
                end: 11,
                loops: 1,
            }),
            ..r0405()
        },
        "recurrence needs",
    );
    // Layer 4 is parallel, but the loop brings layer 3 back after it in the decoder.
    bad(
        ModelConfig {
            parallel: Some(ParallelLanes {
                start_layer: 4,
                final_lane: FinalLane::Mean,
            }),
            ..r0427()
        },
        "returns to a sequential layer",
    );
    bad(
        ModelConfig {
            smear_gate: true,
            ..r0427()
        },
        "exclusive",
    );
}

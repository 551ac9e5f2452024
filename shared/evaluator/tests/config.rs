//! The model config: the baseline's shape and the constraints the forward relies on.

use pgolf_evaluator::config::{Activation, ModelConfig};

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

//! Every stage refuses a params file with an unknown (e.g. misspelt) key, or a misspelt value of
//! the shared vocabulary, before it reads an input or creates its `--out`: exit 1 and one line,
//! `error: <stage>: <params file>: ...`, naming the key. Runs the real release binaries.

use std::path::Path;

/// Each stage with a plausible misspelling of one of its keys.
const MISSPELT: &[(&str, &str)] = &[
    ("tokenize", r#"{"val_doc": 10}"#),
    ("train", r#"{"iteration": 10}"#),
    ("ema-finalize", r#"{"sources": "raw"}"#),
    ("gptq-calibrate", r#"{"sequence": 8}"#),
    ("quantize-pack", r#"{"compresor": "zstd"}"#),
    ("ttt-eval", r#"{"seqlen": 128}"#),
    ("ngram-eval", r#"{"orders": 3}"#),
    ("report", r#"{"nmae": "x"}"#),
];

/// Runs `stage --out DIR --params FILE` with `params`; returns its one-line error.
fn refused(stage: &str, params: &str, dir: &Path) -> String {
    let file = dir.join(format!("{stage}-params.json"));
    std::fs::write(&file, params).unwrap();
    let out_dir = dir.join(format!("{stage}-out"));
    let out = pgolf_e2e::run(
        stage,
        &[
            "--out",
            out_dir.to_str().unwrap(),
            "--params",
            file.to_str().unwrap(),
        ],
        dir,
    );
    let err = pgolf_e2e::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stage} {params}: {err}");
    assert_eq!(err.lines().count(), 1, "{stage}: not one line:\n{err}");
    let prefix = format!("error: {stage}: {}: ", file.display());
    assert!(err.starts_with(&prefix), "{stage}: {err}");
    assert!(
        !out_dir.exists(),
        "{stage} created --out before refusing its params"
    );
    err
}

#[test]
fn every_stage_refuses_a_misspelt_key_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (stage, params) in MISSPELT {
        let key: serde_json::Value = serde_json::from_str(params).unwrap();
        let key = key.as_object().unwrap().keys().next().unwrap().clone();
        let err = refused(stage, params, dir.path());
        assert!(
            err.contains(&format!("unknown field `{key}`")),
            "{stage}: the error does not name `{key}`: {err}"
        );
    }
}

#[test]
fn nested_keys_and_vocabulary_values_are_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused("train", r#"{"model": {"num_layer": 2}}"#, dir.path());
    assert!(err.contains("unknown field `num_layer`"), "{err}");
    for (stage, params, word) in [
        ("train", r#"{"precision": "bfloat16"}"#, "bfloat16"),
        ("gptq-calibrate", r#"{"precision": "fp32"}"#, "fp32"),
        ("ttt-eval", r#"{"compute": "bf16"}"#, "bf16"),
        ("ngram-eval", r#"{"precision": "half"}"#, "half"),
        ("quantize-pack", r#"{"compressor": "xz"}"#, "xz"),
    ] {
        let err = refused(stage, params, dir.path());
        assert!(
            err.contains(&format!("unknown variant `{word}`")),
            "{stage}: {err}"
        );
    }
    // The compressor's refusal lists every valid name, the two of issue 12 among them.
    let err = refused("quantize-pack", r#"{"compressor": "gzip"}"#, dir.path());
    assert!(
        err.contains("expected one of `none`, `zstd`, `brotli`, `zlib`, `lzma`"),
        "{err}"
    );
    // The formulations are `literal` and `fast`; the three-formulation names of before are refused
    // by every stage that runs the model.
    for stage in ["train", "gptq-calibrate", "ttt-eval", "ngram-eval"] {
        for (params, word) in [
            (r#"{"formulation": "kernels"}"#, "unknown variant `kernels`"),
            (r#"{"formulation": "fused"}"#, "unknown variant `fused`"),
            (r#"{"fused": true}"#, "unknown field `fused`"),
        ] {
            let err = refused(stage, params, dir.path());
            assert!(err.contains(word), "{stage} {params}: {err}");
        }
    }
    // The old spelling of an evaluation's precision (`compute: f32`) is refused, not reinterpreted.
    let err = refused("ttt-eval", r#"{"compute": "f32"}"#, dir.path());
    assert!(err.contains("expected `native` or `upstream`"), "{err}");
}

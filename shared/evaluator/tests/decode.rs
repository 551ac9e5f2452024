//! The decoder on the artifacts quantize-pack wrote before chunking (frame version 1, kept as
//! fixtures in shared/quant), and the model built from them: tensors checked by name and shape,
//! a closed-form NLL, causality, and the scoring sums.

use pgolf_evaluator::*;
use std::path::PathBuf;

fn fixture(name: &str) -> Artifact {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../quant/tests/fixtures");
    Artifact::read(&dir.join(name)).unwrap()
}

#[test]
fn version_1_fixtures_decode_to_the_same_model_through_both_compressors() {
    let (z, b) = (fixture("v1_zstd.pgq"), fixture("v1_brotli.pgq"));
    assert_eq!((z.frame_version, z.codec, z.shuffle), (1, Codec::Zstd, 1));
    assert_eq!((b.frame_version, b.codec, b.shuffle), (1, Codec::Brotli, 2));
    assert_eq!(z.tensors, b.tensors);
    let emb = z.decode("tok_emb.weight").unwrap();
    assert_eq!(
        (emb.shape.as_slice(), emb.dtype),
        (&[64, 32][..], DType::Bf16)
    );
    // Dequantized bf16 values are exactly representable in bf16.
    assert!(emb
        .data
        .iter()
        .all(|v| dtype::round_through(DType::Bf16, *v) == *v));
    let Encoding::Rows { q, scales, .. } = &z
        .tensors
        .iter()
        .find(|t| t.name == "tok_emb.weight")
        .unwrap()
        .encoding
    else {
        panic!("tok_emb is stored per row")
    };
    let s = scales[1].to_f32();
    assert_eq!(
        emb.data[32 + 5],
        dtype::round_through(DType::Bf16, q[32 + 5] as f32 * s)
    );
    let tokens: Vec<u16> = (0..40).map(|i| (i * 7 % 64) as u16).collect();
    let (mz, mb) = (
        Model::from_artifact(&z).unwrap(),
        Model::from_artifact(&b).unwrap(),
    );
    let nll = mz.nll(&tokens[..16], &tokens[1..17]).unwrap();
    assert_eq!(nll, mb.nll(&tokens[..16], &tokens[1..17]).unwrap());
    assert!(nll.iter().all(|v| v.is_finite() && *v > 0.0));
}

#[test]
fn damaged_files_are_refused_with_the_reason() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../quant/tests/fixtures");
    let bytes = std::fs::read(dir.join("v1_zstd.pgq")).unwrap();
    let err = |b: &[u8]| format!("{:#}", Artifact::from_bytes(b).unwrap_err());
    assert!(err(&bytes[..40]).contains("truncated"));
    assert!(err(&bytes[..bytes.len() - 1]).contains("truncated"));
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(err(&padded).contains("follow"));
    let mut hash = bytes.clone();
    hash[30] ^= 1;
    assert!(err(&hash).contains("BLAKE3"));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(err(&magic).contains("not a pgolf artifact"));
    let mut codec = bytes;
    codec[5] = 9;
    assert!(err(&codec).contains("unknown compressor id 9"));
}

#[test]
fn the_model_takes_exactly_its_tensors() {
    let art = fixture("v1_zstd.pgq");
    let err = |a: &Artifact| format!("{:#}", Model::from_artifact(a).err().unwrap());
    let mut missing = art.clone();
    missing.tensors.retain(|t| t.name != "blocks.0.mlp_scale");
    assert!(err(&missing).contains("missing tensor blocks.0.mlp_scale"));
    let mut extra = art.clone();
    let mut t = extra.tensors[0].clone();
    t.name = "blocks.0.attn.bogus".into();
    extra.tensors.push(t);
    assert!(err(&extra).contains("unexpected tensor blocks.0.attn.bogus"));
    let mut shape = art.clone();
    shape.config["num_heads"] = 4.into();
    shape.config["num_kv_heads"] = 2.into();
    assert!(err(&shape).contains("blocks.0.attn.q_gain has shape [2], the model expects [4]"));
    let mut bad = art;
    bad.config["layers"] = 2.into();
    assert!(err(&bad).contains("invalid model config"));
}

/// With a zero embedding every activation is zero, so the logits are 0 and −ln p = ln V exactly.
#[test]
fn a_zero_embedding_gives_the_uniform_distribution() {
    let mut art = fixture("v1_zstd.pgq");
    for t in &mut art.tensors {
        if t.name == "tok_emb.weight" {
            let Encoding::Rows { q, .. } = &mut t.encoding else {
                panic!()
            };
            q.iter_mut().for_each(|v| *v = 0);
        }
    }
    let model = Model::from_artifact(&art).unwrap();
    let tokens = [1u16, 5, 9, 63, 0, 2];
    for v in model.nll(&tokens[..5], &tokens[1..]).unwrap() {
        assert!((v as f64 - 64f64.ln()).abs() < 1e-6, "{v}");
    }
    assert!(model.nll(&[64], &[1]).is_err(), "token outside the vocab");
}

#[test]
fn attention_is_causal_and_scores_add_up() {
    let model = Model::from_artifact(&fixture("v1_zstd.pgq")).unwrap();
    let tokens: Vec<u16> = (0..50).map(|i| ((i * 13 + 5) % 64) as u16).collect();
    let all = model.nll(&tokens[..16], &tokens[1..17]).unwrap();
    let mut changed = tokens.clone();
    changed[10] = (changed[10] + 1) % 64;
    let other = model.nll(&changed[..16], &tokens[1..17]).unwrap();
    assert_eq!(all[..10], other[..10]);
    assert_ne!(all[10..], other[10..]);
    // Scoring only the last 4 positions gives the same numbers as scoring all of them.
    assert_eq!(
        model.nll(&tokens[..16], &tokens[13..17]).unwrap(),
        all[12..]
    );

    let bytes: Vec<u32> = (0..tokens.len() as u32).map(|i| i % 3).collect();
    let windows = flat(tokens.len() - 1, 16).unwrap();
    let sums = score(&model, &tokens, &bytes, &windows, |_| {}).unwrap();
    assert_eq!(sums.targets, 49);
    assert_eq!(
        sums.bytes,
        bytes[1..].iter().map(|b| *b as u64).sum::<u64>()
    );
    let by_hand: f64 = windows
        .iter()
        .flat_map(|w| model.nll(&tokens[w.inputs()], &tokens[w.scored()]).unwrap())
        .map(|v| v as f64)
        .sum();
    assert_eq!(sums.nll, by_hand);
    assert!((sums.bpb() - by_hand / (std::f64::consts::LN_2 * sums.bytes as f64)).abs() < 1e-15);
    let slide = score(
        &model,
        &tokens,
        &bytes,
        &sliding(49, 16, 4).unwrap(),
        |_| {},
    )
    .unwrap();
    assert_eq!((slide.targets, slide.bytes), (sums.targets, sums.bytes));
    assert!(slide.nll != sums.nll);
    assert!(score(&model, &tokens, &bytes[1..], &windows, |_| {}).is_err());
}

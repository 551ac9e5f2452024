//! decode(encode(W)) gives exactly the quantizer's `q·s` (cast to the model dtype) for every scheme,
//! through every compressor; damaged files are refused with the reason; pruned entries stay 0.

use std::collections::HashMap;

use half::f16;
use pgolf_quant::container::{decode_body, encode_body};
use pgolf_quant::prune::{prune_count, prune_smallest};
use pgolf_quant::{
    encode_artifact, quantize_all, Artifact, Codec, Compression, DType, Encoding, GptqSettings,
    Method, Override, QuantInputs, Routing, Rule, Scale, StoredTensor, TensorReport, ToTch, Weight,
};
use serde_json::json;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

fn weight(name: &str, shape: &[usize], dtype: DType, seed: &mut u64) -> Weight {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| pgolf_quant::dtype::round_through(dtype, lcg(seed) * 0.2))
        .collect();
    Weight {
        name: name.into(),
        shape: shape.to_vec(),
        dtype,
        data,
    }
}

/// A small model whose tensors, between them, take every scheme.
fn model() -> (Vec<Weight>, HashMap<String, Weight>, Routing) {
    let mut seed = 11u64;
    let weights = vec![
        weight("tok_emb.weight", &[32, 16], DType::Bf16, &mut seed),
        weight("blocks.0.attn.c_q.weight", &[16, 16], DType::F32, &mut seed),
        weight("blocks.0.attn.c_k.weight", &[8, 16], DType::F32, &mut seed),
        weight(
            "blocks.0.attn.proj.weight",
            &[16, 16],
            DType::F32,
            &mut seed,
        ),
        weight("blocks.0.mlp.fc.weight", &[32, 16], DType::F32, &mut seed),
        weight("blocks.0.mlp.proj.weight", &[16, 32], DType::F32, &mut seed),
        weight("blocks.0.conv.weight", &[4, 4, 4], DType::F32, &mut seed),
        weight("blocks.0.extra.weight", &[4, 8], DType::F32, &mut seed),
        weight("blocks.0.gate.weight", &[2, 40], DType::F32, &mut seed),
        weight("blocks.0.attn_scale", &[16], DType::F32, &mut seed),
        weight("blocks.0.norm.weight", &[16], DType::Bf16, &mut seed),
        weight("blocks.0.keep.weight", &[40], DType::Bf16, &mut seed),
    ];
    let mut hessians = HashMap::new();
    for w in &weights {
        let cols = *w.shape.last().unwrap();
        let mut h = vec![0f32; cols * cols];
        for i in 0..cols {
            for j in 0..cols {
                h[i * cols + j] = if i == j {
                    1.0 + i as f32 * 0.1
                } else {
                    0.3 / (1.0 + (i as f32 - j as f32).abs())
                };
            }
        }
        hessians.insert(
            w.name.clone(),
            Weight {
                name: w.name.clone(),
                shape: vec![cols, cols],
                dtype: DType::F32,
                data: h,
            },
        );
    }
    let rule = |method, bits, clip_sigmas| Rule {
        method,
        bits,
        clip_sigmas,
        ..Rule::default()
    };
    let routing = Routing {
        small_numel: 20,
        embed: rule(Method::Int8Upstream, 8, None),
        attn: rule(Method::Gptq, 6, Some(12.85)),
        mlp: rule(Method::Lite, 5, None),
        other: rule(Method::Lite, 7, Some(3.0)),
        overrides: vec![
            Override {
                pattern: "blocks.*.attn.proj.weight".into(),
                rule: rule(Method::Gptq, 6, None),
            },
            Override {
                pattern: "blocks.*.mlp.proj.weight".into(),
                rule: rule(Method::Int8Upstream, 8, None),
            },
            Override {
                pattern: "blocks.*.gate.weight".into(),
                rule: rule(Method::Fp16, 8, None),
            },
            Override {
                pattern: "*.keep.weight".into(),
                rule: rule(Method::Keep, 8, None),
            },
        ],
        ..Routing::default()
    };
    (weights, hessians, routing)
}

fn quantized() -> (Vec<Weight>, Vec<StoredTensor>, Vec<String>) {
    let (weights, hessians, routing) = model();
    let out = quantize_with(&weights, &hessians, &routing);
    let schemes = out.iter().map(|(_, r)| r.scheme.clone()).collect();
    (weights, out.into_iter().map(|(t, _)| t).collect(), schemes)
}

fn quantize_with(
    weights: &[Weight],
    hessians: &HashMap<String, Weight>,
    routing: &Routing,
) -> Vec<(StoredTensor, TensorReport)> {
    let ctx = QuantInputs {
        routing,
        gptq: &GptqSettings::default(),
        hessians,
        device: tch::Device::Cpu,
    };
    quantize_all(weights, &ctx, &|_| {}).unwrap()
}

/// Each compressor at its default level (zstd 22, brotli 11, zlib 9, xz preset 6), and none.
fn every_compressor() -> Vec<Compression> {
    [
        Codec::Zstd,
        Codec::Brotli,
        Codec::Zlib,
        Codec::Lzma,
        Codec::None,
    ]
    .map(|codec| Compression {
        codec,
        ..Compression::default()
    })
    .to_vec()
}

#[test]
fn every_scheme_is_covered() {
    let (_, _, schemes) = quantized();
    for s in [
        "int8_upstream",
        "gptq",
        "lite",
        "rtn",
        "raw_f16",
        "raw_f32",
        "raw_bf16",
    ] {
        assert!(
            schemes.iter().any(|x| x == s),
            "no tensor took {s}: {schemes:?}"
        );
    }
}

#[test]
fn decode_of_encode_reproduces_every_scheme_exactly() {
    let (weights, stored, _) = quantized();
    let config = json!({"num_layers": 1, "model_dim": 16});
    for compression in every_compressor() {
        let bytes = encode_artifact(&config, &stored, &compression).unwrap();
        let art = Artifact::from_bytes(&bytes).unwrap();
        assert_eq!(art.config, config);
        assert_eq!(art.tensors, stored, "{compression:?}");
        assert_eq!(art.file_bytes, bytes.len() as u64);
        for (w, d) in weights.iter().zip(art.decode_all().unwrap()) {
            assert_eq!(
                (d.name.as_str(), &d.shape, d.dtype),
                (w.name.as_str(), &w.shape, w.dtype)
            );
            let t = stored.iter().find(|t| t.name == w.name).unwrap();
            // The decoded values are q·s from the stored integers and scales, cast to the dtype.
            let expect: Vec<f32> = match &t.encoding {
                Encoding::Rows { q, scales, .. } => {
                    let cols = w.numel() / scales.len();
                    q.iter()
                        .enumerate()
                        .map(|(i, v)| *v as f32 * scales[i / cols].to_f32())
                        .collect()
                }
                Encoding::Tensor { q, scale, .. } => {
                    q.iter().map(|v| *v as f32 * scale.value()).collect()
                }
                Encoding::Raw { stored, bytes } => {
                    pgolf_quant::dtype::floats_from_bytes(*stored, bytes).unwrap()
                }
            };
            let expect: Vec<f32> = expect
                .into_iter()
                .map(|v| pgolf_quant::dtype::round_through(w.dtype, v))
                .collect();
            assert_eq!(d.data, expect, "{}", w.name);
        }
    }
}

#[test]
fn hand_checked_int8_rows_with_the_floor_decode_exactly() {
    // Row 0: max |w| 0.5 < 1 → step is the 1/127 floor, stored as fp16(1/127) = 0.00787353515625.
    // Row 1: top two |w| equal 127 → clip 127, step exactly 1, ties to even (2.5 → 2, −3.5 → −4).
    let w = Weight {
        name: "m".into(),
        shape: vec![2, 4],
        dtype: DType::F32,
        data: vec![0.5, -0.25, 0.0, 0.1, 127.0, -127.0, 2.5, -3.5],
    };
    let routing = Routing {
        small_numel: 4,
        ..Routing::default()
    };
    let ctx = QuantInputs {
        routing: &routing,
        gptq: &GptqSettings::default(),
        hessians: &HashMap::new(),
        device: tch::Device::Cpu,
    };
    let (t, report) = quantize_all(std::slice::from_ref(&w), &ctx, &|_| {})
        .unwrap()
        .remove(0);
    assert_eq!(
        t.encoding,
        Encoding::Rows {
            bits: 8,
            q: vec![63, -32, 0, 13, 127, -127, 2, -4],
            scales: vec![f16::from_f32(0.007_873_535), f16::ONE]
        }
    );
    let art =
        Artifact::from_bytes(&encode_artifact(&json!({}), &[t], &Compression::brotli()).unwrap())
            .unwrap();
    let s = 0.007_873_535_f32; // = 0.00787353515625 = 129·2^-14, exactly
    assert_eq!(
        art.decode("m").unwrap().data,
        vec![63.0 * s, -32.0 * s, 0.0, 13.0 * s, 127.0, -127.0, 2.0, -4.0]
    );
    assert_eq!(report.scheme, "int8_upstream");
    assert!(report.mse > 0.0);
}

#[test]
fn bf16_tensors_come_back_as_bf16_in_torch() {
    let (_, stored, _) = quantized();
    let art = Artifact::from_bytes(
        &encode_artifact(&json!({}), &stored, &Compression::default()).unwrap(),
    )
    .unwrap();
    let named = art.to_tch(tch::Device::Cpu).unwrap();
    let (_, emb) = named.iter().find(|(n, _)| n == "tok_emb.weight").unwrap();
    assert_eq!(emb.kind(), tch::Kind::BFloat16);
    assert_eq!(emb.size(), [32, 16]);
    let back = Vec::<f32>::try_from(emb.to_kind(tch::Kind::Float).view([-1])).unwrap();
    assert_eq!(back, art.decode("tok_emb.weight").unwrap().data);
}

fn err_of(bytes: &[u8]) -> String {
    format!("{:#}", Artifact::from_bytes(bytes).unwrap_err())
}

#[test]
fn truncated_and_corrupted_artifacts_are_refused_with_the_reason() {
    let (_, stored, _) = quantized();
    for compression in every_compressor()
        .into_iter()
        .filter(|c| c.codec != Codec::None)
    {
        let good = encode_artifact(&json!({"a": 1}), &stored, &compression).unwrap();
        assert!(
            err_of(&good[..30]).contains("truncated"),
            "{}",
            err_of(&good[..30])
        );
        assert!(err_of(&good[..good.len() - 1]).contains("truncated"));
        assert!(err_of(&good[..good.len() / 2]).contains("truncated"));
        let mut longer = good.clone();
        longer.push(0);
        assert!(err_of(&longer).contains("follow"));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(err_of(&magic).contains("not a pgolf artifact"));
        // Damage inside the compressed stream: the codec or the body hash must notice.
        for at in [60, good.len() / 2, good.len() - 3] {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            let e = err_of(&bad);
            assert!(
                e.contains("corrupt") || e.contains("decompressed to"),
                "byte {at}: {e}"
            );
        }
        let mut hash = good.clone();
        hash[30] ^= 1;
        assert!(err_of(&hash).contains("BLAKE3"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("artifact.pgq");
    std::fs::write(&path, b"PGQA\x01").unwrap();
    let e = format!("{:#}", Artifact::read(&path).unwrap_err());
    assert!(e.contains("artifact.pgq") && e.contains("truncated"), "{e}");
}

#[test]
fn a_directory_that_disagrees_with_the_payload_is_refused() {
    let t = StoredTensor {
        name: "x".into(),
        shape: vec![3],
        dtype: DType::F32,
        encoding: Encoding::Tensor {
            bits: 6,
            q: vec![1, -31, 0],
            scale: Scale::F16(f16::ONE),
        },
        lqer: None,
        layout: Default::default(),
    };
    let body = encode_body(&json!({}), &[t]).unwrap();
    assert!(decode_body(&body).is_ok());
    // One payload byte too many, one too few.
    let mut longer = body.clone();
    longer.push(0);
    assert!(format!("{:#}", decode_body(&longer).unwrap_err()).contains("accounts for"));
    assert!(
        format!("{:#}", decode_body(&body[..body.len() - 1]).unwrap_err()).contains("runs past")
    );
    // An integer outside the 6-bit range.
    let mut wide = body.clone();
    let n = wide.len();
    wide[n - 2 - 2] = 40u8; // q[1], before the 2-byte scale
    assert!(format!("{:#}", decode_body(&wide).unwrap_err()).contains("outside the 6-bit range"));
}

/// `prune` under every scheme that quantizes a matrix (int8_upstream, lite, rtn, GPTQ with SDClip
/// and with the percentile search): exactly round(fraction·numel) entries, the smallest |w|, are
/// counted and decode to 0 through the artifact; raw and non-matrix tensors are not pruned; the
/// report's error is against the unpruned weights.
#[test]
fn pruned_entries_are_counted_and_decode_to_zero_under_every_scheme() {
    let (weights, hessians, routing) = model();
    let plain = quantize_with(&weights, &hessians, &routing);
    let fraction = 0.2;
    let pruned_routing = Routing {
        prune: Some(fraction),
        overrides: routing
            .overrides
            .iter()
            .map(|o| {
                let mut o = o.clone();
                if !matches!(o.rule.method, Method::Fp16 | Method::Keep) {
                    o.rule.prune = fraction;
                }
                o
            })
            .collect(),
        ..routing.clone()
    };
    let pruned = quantize_with(&weights, &hessians, &pruned_routing);
    let stored: Vec<StoredTensor> = pruned.iter().map(|(t, _)| t.clone()).collect();
    let art = Artifact::from_bytes(
        &encode_artifact(&json!({}), &stored, &Compression::default()).unwrap(),
    )
    .unwrap();
    let mut schemes = vec![];
    for ((w, (_, report)), (_, before)) in weights.iter().zip(&pruned).zip(&plain) {
        let decoded = art.decode(&w.name).unwrap().data;
        let matrix = w.shape.len() == 2 && report.bits.is_some();
        if !matrix {
            assert_eq!(report.pruned, 0, "{}", w.name);
            assert_eq!(report, before, "{}: not pruned, so unchanged", w.name);
            continue;
        }
        assert_eq!(
            report.pruned,
            prune_count(w.numel(), fraction),
            "{}",
            w.name
        );
        assert!(report.pruned > 0);
        let mut copy = w.data.clone();
        let mask = prune_smallest(&mut copy, fraction);
        for (i, (m, v)) in mask.iter().zip(&decoded).enumerate() {
            assert!(
                !m || *v == 0.0,
                "{} entry {i}: pruned, decodes to {v}",
                w.name
            );
        }
        // The error is measured against the original weights: it includes the pruned values.
        let floor = w
            .data
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m)
            .map(|(v, _)| (*v as f64).powi(2))
            .sum::<f64>()
            / w.numel() as f64;
        assert!(
            report.mse >= floor * 0.999,
            "{}: mse {} < {floor}",
            w.name,
            report.mse
        );
        schemes.push(report.scheme.clone());
    }
    schemes.sort();
    schemes.dedup();
    assert_eq!(schemes, ["gptq", "int8_upstream", "lite", "rtn"]);
}

/// `prune: 0` (per rule or by the knob) is the unpruned quantization, bit for bit.
#[test]
fn prune_zero_is_the_unpruned_output() {
    let (weights, hessians, routing) = model();
    let plain = quantize_with(&weights, &hessians, &routing);
    let zero = Routing {
        prune: Some(0.0),
        ..routing
    };
    assert_eq!(quantize_with(&weights, &hessians, &zero), plain);
    assert!(plain.iter().all(|(_, r)| r.pruned == 0));
}

/// GPTQ's error feedback would refill a pruned entry; held at 0, the error of the pruned entries
/// is fed into the columns not yet quantized instead, so the layer's output error is lower than
/// pruning the GPTQ result afterwards.
#[test]
fn gptq_holds_pruned_entries_at_zero_and_compensates_for_them() {
    let (weights, _, _) = model();
    let w: Vec<Weight> = weights
        .into_iter()
        .filter(|w| w.name == "blocks.0.mlp.fc.weight")
        .collect();
    // Inputs driven by a few shared factors (H = AᵀA + 0.05·I, A 3 × cols), as real activations
    // nearly are: GPTQ then moves later columns by more than the error it compensates, enough to
    // refill a pruned entry with the rounding errors alone.
    let cols = w[0].shape[1];
    let mut seed = 3u64;
    let a: Vec<f32> = (0..3 * cols).map(|_| lcg(&mut seed)).collect();
    let corr: Vec<f32> = (0..cols * cols)
        .map(|k| {
            let (i, j) = (k / cols, k % cols);
            let dot: f32 = (0..3).map(|f| a[f * cols + i] * a[f * cols + j]).sum();
            dot + if i == j { 0.05 } else { 0.0 }
        })
        .collect();
    let hessians = HashMap::from([(
        w[0].name.clone(),
        Weight {
            name: w[0].name.clone(),
            shape: vec![cols, cols],
            dtype: DType::F32,
            data: corr,
        },
    )]);
    let gptq = Rule {
        method: Method::Gptq,
        bits: 8,
        clip_sigmas: Some(4.0),
        ..Rule::default()
    };
    let routing = |prune| Routing {
        small_numel: 20,
        mlp: Rule {
            prune,
            ..gptq.clone()
        },
        ..Routing::default()
    };
    let (held, held_report) = quantize_with(&w, &hessians, &routing(0.3)).remove(0);
    let (after, _) = quantize_with(&w, &hessians, &routing(0.0)).remove(0);
    let mut pruned_w = w[0].data.clone();
    let mask = prune_smallest(&mut pruned_w, 0.3);
    let (Encoding::Rows { q: qh, .. }, Encoding::Rows { q: qa, scales, .. }) =
        (&held.encoding, &after.encoding)
    else {
        panic!("per-row")
    };
    assert!(mask.iter().zip(qh).all(|(m, q)| !m || *q == 0));
    // The same sweep on the pruned matrix without holding: the feedback refills pruned entries.
    let rows = w[0].shape[0];
    let h = &hessians["blocks.0.mlp.fc.weight"];
    let m = pgolf_quant::rows::Matrix::new(&pruned_w, rows, cols);
    let s = pgolf_quant::rows::sdclip_scales(m, 4.0, 8);
    let prep = pgolf_quant::gptq::prepare(m, &h.data, &GptqSettings::default(), tch::Device::Cpu)
        .unwrap()
        .unwrap();
    let refilled = mask
        .iter()
        .zip(prep.quantize(&s, 8))
        .filter(|(m, q)| **m && *q != 0)
        .count();
    assert!(refilled > 0, "unheld GPTQ kept every pruned entry at 0");
    // GPTQ's result with the same entries zeroed afterwards.
    let zeroed: Vec<f32> = qa
        .iter()
        .zip(&mask)
        .enumerate()
        .map(|(i, (q, m))| {
            if *m {
                0.0
            } else {
                *q as f32 * scales[i / cols].to_f32()
            }
        })
        .collect();
    let out_err = |dec: &[f32]| {
        let e: Vec<f64> = w[0]
            .data
            .iter()
            .zip(dec)
            .map(|(a, b)| (a - b) as f64)
            .collect();
        (0..rows)
            .map(|r| {
                let er = &e[r * cols..(r + 1) * cols];
                (0..cols)
                    .flat_map(|i| (0..cols).map(move |j| (i, j)))
                    .map(|(i, j)| er[i] * h.data[i * cols + j] as f64 * er[j])
                    .sum::<f64>()
            })
            .sum::<f64>()
    };
    let held_err = out_err(&held.dequantize().unwrap());
    assert!(
        held_err < out_err(&zeroed),
        "held {held_err} vs zeroed after {}",
        out_err(&zeroed)
    );
    assert_eq!(held_report.pruned, prune_count(w[0].numel(), 0.3));
}

/// `embed: {method: fp16}` (PROTEUS EMA's and the int6 records' fp16 tied embedding): the tied
/// `tok_emb.weight`, however large, is stored as raw fp16 (never quantized, never pruned) and
/// decodes to each value rounded to fp16, in the model's dtype.
#[test]
fn a_tied_embedding_passes_through_as_fp16() {
    let mut seed = 5u64;
    let emb = weight("tok_emb.weight", &[300, 256], DType::F32, &mut seed);
    assert!(emb.numel() > Routing::default().small_numel);
    let routing = Routing {
        embed: Rule {
            method: Method::Fp16,
            ..Rule::default()
        },
        prune: Some(0.05),
        ..Routing::default()
    };
    let (t, report) =
        quantize_with(std::slice::from_ref(&emb), &HashMap::new(), &routing).remove(0);
    assert_eq!(
        (report.scheme.as_str(), report.bits, report.pruned),
        ("raw_f16", None, 0)
    );
    assert!(matches!(
        t.encoding,
        Encoding::Raw {
            stored: DType::F16,
            ..
        }
    ));
    assert_eq!(report.stored_bytes, 2 * emb.numel());
    let art =
        Artifact::from_bytes(&encode_artifact(&json!({}), &[t], &Compression::default()).unwrap())
            .unwrap();
    let back = art.decode("tok_emb.weight").unwrap();
    assert_eq!(back.dtype, DType::F32);
    let expect: Vec<f32> = emb
        .data
        .iter()
        .map(|v| f16::from_f32(*v).to_f32())
        .collect();
    assert_eq!(back.data, expect);
    assert!(
        back.data != emb.data,
        "fp16 rounding is visible on random f32 values"
    );
}

// ---- LQER and the per-group layout (issue 16) ----

use pgolf_quant::layout::{self, LayoutSettings};
use pgolf_quant::{correct_lqer, Layout, LqerSettings};

/// [`model`] with no GPTQ rule (plain Rust throughout, so its bytes are the same on every
/// machine: libtorch's factorizations may round differently on another CPU).
fn pure_rust_routing() -> Routing {
    let (_, _, mut routing) = model();
    routing.attn.method = Method::Lite;
    routing.overrides[0].rule.method = Method::Lite;
    routing
}

/// The stage's order of operations with both off: quantize, LQER, layout, encode.
fn artifact_with(lqer: &LqerSettings, lay: &LayoutSettings, c: &Compression) -> Vec<u8> {
    let (weights, hessians, _) = model();
    let routing = pure_rust_routing();
    let ctx = QuantInputs {
        routing: &routing,
        gptq: &GptqSettings::default(),
        hessians: &hessians,
        device: tch::Device::Cpu,
    };
    let mut q = quantize_all(&weights, &ctx, &|_| {}).unwrap();
    correct_lqer(&weights, &mut q, lqer, &ctx).unwrap();
    let mut stored: Vec<StoredTensor> = q.into_iter().map(|(t, _)| t).collect();
    let order = layout::apply(&mut stored, lay).unwrap();
    let stored: Vec<StoredTensor> = order.iter().map(|&i| stored[i].clone()).collect();
    encode_artifact(&json!({"num_layers": 1}), &stored, c).unwrap()
}

/// With LQER and the layout off (their defaults) the artifact is byte for byte the one written
/// before they existed: these hashes were taken at commit d73e469, without them.
#[test]
fn lqer_and_layout_off_write_the_bytes_written_before_them() {
    for (codec, pinned) in [
        (
            Codec::Zstd,
            "2cd427225ed206a70ba33f878c4b616391957360bc12b2e6814b1202be53eb9f",
        ),
        (
            Codec::Brotli,
            "58ca8879cc4a0beaac685db6268c3a2238fabdb9fad99fdd1f9f25480e49d011",
        ),
    ] {
        let c = Compression {
            codec,
            chunks: 2,
            ..Compression::default()
        };
        let bytes = artifact_with(&LqerSettings::default(), &LayoutSettings::default(), &c);
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), pinned, "{codec:?}");
    }
}

fn lqer_on(rank: usize, top_k: usize, group: usize) -> LqerSettings {
    LqerSettings {
        enabled: true,
        rank,
        top_k,
        group,
        ..LqerSettings::default()
    }
}

/// ‖W − Q·s‖_F of a rows matrix (f64).
fn residual_norm(w: &Weight, t: &StoredTensor) -> Option<f64> {
    let e = pgolf_quant::lqer::residual(t, &w.data)?;
    Some(e.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
}

#[test]
fn lqer_corrects_the_largest_errors_and_the_decoder_adds_a_times_b() {
    let (weights, hessians, routing) = model();
    let ctx = QuantInputs {
        routing: &routing,
        gptq: &GptqSettings::default(),
        hessians: &hessians,
        device: tch::Device::Cpu,
    };
    let plain = quantize_all(&weights, &ctx, &|_| {}).unwrap();
    for (settings, packing) in [
        (lqer_on(2, 2, 16), "asym"),
        // 3·cols (48, 96) is not a multiple of 20: the symmetric fallback.
        (lqer_on(3, 3, 20), "sym"),
    ] {
        let mut q = plain.clone();
        correct_lqer(&weights, &mut q, &settings, &ctx).unwrap();
        // The chosen ones are the top_k quantized matrices by ‖E‖_F.
        let mut norms: Vec<(f64, &str)> = weights
            .iter()
            .zip(&plain)
            .filter_map(|(w, (t, _))| residual_norm(w, t).map(|n| (n, w.name.as_str())))
            .collect();
        norms.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut expect: Vec<&str> = norms.iter().take(settings.top_k).map(|n| n.1).collect();
        let mut chosen: Vec<&str> = q
            .iter()
            .filter(|(t, _)| t.lqer.is_some())
            .map(|(t, _)| t.name.as_str())
            .collect();
        expect.sort();
        chosen.sort();
        assert_eq!(chosen, expect, "{packing}");
        let bytes = encode_artifact(
            &json!({}),
            &q.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
            &Compression::default(),
        )
        .unwrap();
        let art = Artifact::from_bytes(&bytes).unwrap();
        for ((t, report), ((_, before), w)) in q.iter().zip(plain.iter().zip(&weights)) {
            let back = art.tensors.iter().find(|b| b.name == t.name).unwrap();
            assert_eq!(back, t);
            let Some(l) = &t.lqer else {
                assert_eq!(report, before);
                continue;
            };
            assert!(
                report.lqer.starts_with(&format!("r{} {packing}", l.rank)),
                "{}",
                report.lqer
            );
            assert_eq!(report.lqer_bytes, pgolf_quant::encoded::lqer_bytes(l));
            assert_eq!(report.mse_before_lqer, Some(before.mse));
            assert_eq!(report.stored_bytes, before.stored_bytes + report.lqer_bytes);
            // decoded = dequant(Q·s) + A·B, A and B from their integers and scales.
            let Encoding::Rows { q: qi, scales, .. } = &t.encoding else {
                panic!()
            };
            let (rows, cols, r) = (w.shape[0], w.shape[1], l.rank);
            let fa = |i: usize| l.a.q[i] as f32 * l.a.scales[i / l.a.group].to_f32();
            let fb = |i: usize| l.b.q[i] as f32 * l.b.scales[i / l.b.group].to_f32();
            let decoded = art.decode(&t.name).unwrap().data;
            for i in 0..rows {
                for j in 0..cols {
                    let ab: f32 = (0..r).map(|k| fa(i * r + k) * fb(k * cols + j)).sum();
                    let v = qi[i * cols + j] as f32 * scales[i].to_f32() + ab;
                    let v = pgolf_quant::dtype::round_through(w.dtype, v);
                    assert_eq!(decoded[i * cols + j], v, "{} ({i}, {j})", t.name);
                }
            }
            // The correction changes the values (the factors are not all zero).
            assert_ne!(report.mse, before.mse, "{}", t.name);
        }
    }
    // Off: nothing changes.
    let mut q = plain.clone();
    correct_lqer(&weights, &mut q, &LqerSettings::default(), &ctx).unwrap();
    assert_eq!(q, plain);
}

#[test]
fn the_per_group_layout_round_trips_and_writes_the_integers_where_it_says() {
    let (_, stored, _) = quantized();
    let on = LayoutSettings {
        per_group: true,
        ..LayoutSettings::default()
    };
    let mut laid = stored.clone();
    let order = layout::apply(&mut laid, &on).unwrap();
    let laid: Vec<StoredTensor> = order.iter().map(|&i| laid[i].clone()).collect();
    // Groups first: tok_emb, c_k, c_q, proj, fc, mlp.proj, then the others in their order.
    let names: Vec<&str> = laid.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        &names[..6],
        [
            "tok_emb.weight",
            "blocks.0.attn.c_k.weight",
            "blocks.0.attn.c_q.weight",
            "blocks.0.attn.proj.weight",
            "blocks.0.mlp.fc.weight",
            "blocks.0.mlp.proj.weight"
        ]
    );
    let cq = laid
        .iter()
        .find(|t| t.name == "blocks.0.attn.c_q.weight")
        .unwrap();
    let perm = cq.layout.perm.clone().expect("c_q rows are sorted");
    assert!(cq.layout.column_major);
    assert!(laid
        .iter()
        .find(|t| t.name == "blocks.0.attn.c_k.weight")
        .unwrap()
        .layout
        .perm
        .is_none());
    let config = json!({});
    for compression in every_compressor() {
        let bytes = encode_artifact(&config, &laid, &compression).unwrap();
        let art = Artifact::from_bytes(&bytes).unwrap();
        assert_eq!(art.tensors, laid, "{compression:?}");
        let plain = Artifact::from_bytes(&encode_artifact(&config, &stored, &compression).unwrap())
            .unwrap();
        for d in plain.decode_all().unwrap() {
            assert_eq!(art.decode(&d.name).unwrap(), d, "{}", d.name);
        }
    }
    // In the body: c_q's integers, column by column of the rows in `perm` order.
    let body = encode_body(&config, &laid).unwrap();
    let dir_len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    let dir: serde_json::Value = serde_json::from_slice(&body[4..4 + dir_len]).unwrap();
    let payload = &body[4 + dir_len..];
    let entry = dir["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == cq.name)
        .unwrap();
    let at = |key: &str| {
        [
            entry[key][0].as_u64().unwrap() as usize,
            entry[key][1].as_u64().unwrap() as usize,
        ]
    };
    let [q0, qn] = at("q");
    let Encoding::Rows { q, .. } = &cq.encoding else {
        panic!()
    };
    let (rows, cols) = (cq.shape[0], cq.shape[1]);
    let written: Vec<i8> = payload[q0..q0 + qn].iter().map(|b| *b as i8).collect();
    for c in 0..cols {
        for k in 0..rows {
            assert_eq!(written[c * rows + k], q[perm[k] as usize * cols + c]);
        }
    }
    assert_eq!(entry["cols"], true);
    let [p0, pn] = at("perm");
    let stored_perm: Vec<u16> = payload[p0..p0 + pn]
        .chunks(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(stored_perm, perm);
    // Version 2 marks a body with layouts; version 1 (what readers before them knew, which would
    // ignore the fields) may not carry them.
    assert_eq!(dir["version"], 2);
    let plain_body = encode_body(&config, &stored).unwrap();
    let plain_dir = u32::from_le_bytes(plain_body[..4].try_into().unwrap()) as usize;
    let plain_json: serde_json::Value =
        serde_json::from_slice(&plain_body[4..4 + plain_dir]).unwrap();
    assert_eq!(plain_json["version"], 1);
    let text = String::from_utf8(body[4..4 + dir_len].to_vec()).unwrap();
    let mut v1 = body.clone();
    v1[4..4 + dir_len].copy_from_slice(
        text.replacen("\"version\":2", "\"version\":1", 1)
            .as_bytes(),
    );
    let err = decode_body(&v1).unwrap_err().to_string();
    assert!(err.contains("a layout in a version 1 directory"), "{err}");
    // A permutation that repeats a row is refused.
    let mut bad = body.clone();
    let base = 4 + dir_len + p0;
    bad[base..base + 2].copy_from_slice(&perm[1].to_le_bytes());
    let err = decode_body(&bad).unwrap_err().to_string();
    assert!(err.contains("not a permutation"), "{err}");
    // Off: the order and the layouts are as given.
    let mut same = stored.clone();
    assert_eq!(
        layout::apply(&mut same, &LayoutSettings::default()).unwrap(),
        (0..stored.len()).collect::<Vec<_>>()
    );
    assert!(same.iter().all(|t| t.layout == Layout::default()));
}

#[test]
fn lqer_and_the_layout_together_decode_as_lqer_alone() {
    let c = Compression::default();
    let on = LayoutSettings {
        per_group: true,
        ..LayoutSettings::default()
    };
    let lq = lqer_on(2, 3, 16);
    let alone = Artifact::from_bytes(&artifact_with(&lq, &LayoutSettings::default(), &c)).unwrap();
    let both = Artifact::from_bytes(&artifact_with(&lq, &on, &c)).unwrap();
    assert_eq!(alone.tensors.iter().filter(|t| t.lqer.is_some()).count(), 3);
    assert!(both
        .tensors
        .iter()
        .any(|t| t.lqer.is_some() && t.layout.perm.is_some()));
    for d in alone.decode_all().unwrap() {
        assert_eq!(both.decode(&d.name).unwrap(), d, "{}", d.name);
    }
}

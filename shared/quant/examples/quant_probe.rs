//! Runs one of our quantizers on tensors from a safetensors file and writes what it computed to
//! another, for bench/quant_lqer_reference.py to compare with the record scripts' functions:
//!
//! ```text
//! quant_probe gptq IN OUT BITS K     IN: w (rows × cols), h (cols × cols)
//!                                     OUT: q (the integers, as f32), s (fp16 row scales)
//! quant_probe lqer IN OUT RANK asym GROUP | sym BITS
//!                                     IN: e (rows × cols, the quantization error)
//!                                     OUT: a, b (the f32 factors), qa, sa, qb, sb (packed)
//! quant_probe sort IN OUT            IN: q (integers as f32); OUT: perm (as f32)
//! ```
//!
//! GPTQ is [`pgolf_quant::gptq`] with SDClip scales (act-order, block 128, damp 0.01: the records'
//! `gptq_quantize_weight`); LQER is [`pgolf_quant::lqer`]'s SVD and packing; `sort` is
//! [`pgolf_quant::layout::similarity_order`].

use anyhow::{bail, Context, Result};
use pgolf_quant::gptq::{self, GptqSettings};
use pgolf_quant::lqer::{self, LqerSettings};
use pgolf_quant::rows::{sdclip_scales, Matrix};
use pgolf_quant::{read_safetensors_map, write_safetensors, DType, Weight};
use std::collections::HashMap;
use std::path::Path;

fn tensor(name: &str, shape: Vec<usize>, dtype: DType, data: Vec<f32>) -> Weight {
    Weight {
        name: name.into(),
        shape,
        dtype,
        data,
    }
}

fn get<'a>(m: &'a HashMap<String, Weight>, name: &str) -> Result<&'a Weight> {
    m.get(name)
        .with_context(|| format!("the input has no tensor {name:?}"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: quant_probe gptq|lqer|sort IN OUT [ARGS] (see the source)";
    if args.len() < 3 {
        bail!("{usage}");
    }
    let input = read_safetensors_map(Path::new(&args[1]))?;
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| usage.to_string())
    };
    let out = match args[0].as_str() {
        "gptq" => {
            let (bits, k): (u8, f64) = (arg(3)?.parse()?, arg(4)?.parse()?);
            let (w, h) = (get(&input, "w")?, get(&input, "h")?);
            let m = Matrix::new(&w.data, w.shape[0], w.shape[1]);
            let prepared = gptq::prepare(m, &h.data, &GptqSettings::default(), tch::Device::Cpu)?
                .context("the damped Hessian is not positive definite")?;
            let s = sdclip_scales(m, k, bits);
            let q = prepared.quantize(&s, bits);
            vec![
                tensor(
                    "q",
                    w.shape.clone(),
                    DType::F32,
                    q.iter().map(|v| *v as f32).collect(),
                ),
                tensor(
                    "s",
                    vec![s.len()],
                    DType::F16,
                    s.iter().map(|v| v.to_f32()).collect(),
                ),
            ]
        }
        "lqer" => {
            let rank: usize = arg(3)?.parse()?;
            let settings = match arg(4)? {
                "asym" => LqerSettings {
                    asym: true,
                    group: arg(5)?.parse()?,
                    ..LqerSettings::default()
                },
                "sym" => LqerSettings {
                    asym: false,
                    factor_bits: arg(5)?.parse()?,
                    ..LqerSettings::default()
                },
                other => bail!("packing {other:?}: asym or sym"),
            };
            let e = get(&input, "e")?;
            let (rows, cols) = (e.shape[0], e.shape[1]);
            let (a, b, r) = lqer::factors(&e.data, rows, cols, rank)?;
            let packed = lqer::pack(&a, &b, r, &settings);
            let ints = |q: &[i8]| q.iter().map(|v| *v as f32).collect::<Vec<f32>>();
            let halves = |s: &[half::f16]| s.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
            vec![
                tensor("a", vec![rows, r], DType::F32, a),
                tensor("b", vec![r, cols], DType::F32, b),
                tensor("qa", vec![rows, r], DType::F32, ints(&packed.a.q)),
                tensor(
                    "sa",
                    vec![packed.a.scales.len()],
                    DType::F16,
                    halves(&packed.a.scales),
                ),
                tensor("qb", vec![r, cols], DType::F32, ints(&packed.b.q)),
                tensor(
                    "sb",
                    vec![packed.b.scales.len()],
                    DType::F16,
                    halves(&packed.b.scales),
                ),
            ]
        }
        "sort" => {
            let q = get(&input, "q")?;
            let ints: Vec<i8> = q.data.iter().map(|v| *v as i8).collect();
            let perm = pgolf_quant::layout::similarity_order(&ints, q.shape[0], q.shape[1]);
            vec![tensor(
                "perm",
                vec![perm.len()],
                DType::F32,
                perm.iter().map(|v| *v as f32).collect(),
            )]
        }
        other => bail!("unknown probe {other:?}; {usage}"),
    };
    write_safetensors(Path::new(&args[2]), &out)
}

//! Size of artifacts re-encoded with and without the per-group layout, by compressor (bench/quant.md
//! §6): reads existing artifacts (any compressor, layout or not), re-lays their tensors out as each
//! variant says, compresses the body with each compressor at its artifact default (16 chunks), checks
//! that it reads back to the same values, and prints one TSV row per setting.
//!
//!     cargo run --release -p pgolf-quant --example layout_sweep -- \
//!         [--codecs brotli,zstd,lzma] [--chunks 16] ARTIFACT...
//!
//! Variants: `plain` (tensor order, row-major), `grouped` (role groups, row-major), `grouped+cols`
//! (column-major too) and `per_group` (R0427's: groups, row sort, column-major).

use anyhow::{bail, Context, Result};
use pgolf_quant::layout::{self, LayoutSettings};
use pgolf_quant::{encode_artifact, Artifact, Codec, Compression, Layout, StoredTensor};
use std::path::PathBuf;
use std::time::Instant;

fn variants() -> Vec<(&'static str, LayoutSettings)> {
    let on = LayoutSettings {
        per_group: true,
        ..LayoutSettings::default()
    };
    vec![
        ("plain", LayoutSettings::default()),
        (
            "grouped",
            LayoutSettings {
                sort: vec![],
                column_major: false,
                ..on.clone()
            },
        ),
        (
            "grouped+cols",
            LayoutSettings {
                sort: vec![],
                ..on.clone()
            },
        ),
        ("per_group", on),
    ]
}

fn main() -> Result<()> {
    let mut codecs = vec![Codec::Brotli, Codec::Zstd, Codec::Lzma];
    let mut chunks = 16u32;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--codecs" => {
                codecs = value()?
                    .split(',')
                    .map(|c| serde_json::from_value(serde_json::Value::String(c.into())))
                    .collect::<Result<_, _>>()
                    .context("--codecs: zstd, brotli, zlib, lzma or none")?
            }
            "--chunks" => chunks = value()?.parse().context("--chunks: a count")?,
            _ if arg.starts_with("--") => bail!("unknown option {arg}"),
            _ => files.push(arg.into()),
        }
    }
    if files.is_empty() {
        bail!("usage: layout_sweep [--codecs brotli,zstd,lzma] [--chunks 16] ARTIFACT...");
    }
    println!("artifact\tlayout\tcodec\tfile_bytes\tlayout_s\tcompress_s");
    for file in &files {
        let art = Artifact::read(file)?;
        let values: Vec<_> = art.decode_all()?;
        let base: Vec<StoredTensor> = art
            .tensors
            .iter()
            .cloned()
            .map(|mut t| {
                t.layout = Layout::default();
                t
            })
            .collect();
        let mut base_sorted = base.clone();
        base_sorted.sort_by(|a, b| pgolf_quant::weights::natural_cmp(&a.name, &b.name));
        for (label, settings) in variants() {
            let clock = Instant::now();
            let mut stored = base_sorted.clone();
            let order = layout::apply(&mut stored, &settings)?;
            let stored: Vec<StoredTensor> = order.iter().map(|&i| stored[i].clone()).collect();
            let layout_s = clock.elapsed().as_secs_f64();
            for &codec in &codecs {
                let c = Compression {
                    codec,
                    chunks,
                    ..Compression::default()
                };
                let clock = Instant::now();
                let bytes = encode_artifact(&art.config, &stored, &c)?;
                let compress_s = clock.elapsed().as_secs_f64();
                let back = Artifact::from_bytes(&bytes)?;
                for d in back.decode_all()? {
                    let v = values
                        .iter()
                        .find(|v| v.name == d.name)
                        .context("a tensor")?;
                    if v.data != d.data {
                        bail!(
                            "{}: {label}/{codec:?} decodes {} differently",
                            file.display(),
                            d.name
                        );
                    }
                }
                println!(
                    "{}\t{label}\t{}-{}\t{}\t{layout_s:.2}\t{compress_s:.2}",
                    file.display(),
                    format!("{codec:?}").to_lowercase(),
                    c.level(),
                    bytes.len()
                );
            }
        }
    }
    Ok(())
}

//! Size and time of an artifact's compression by chunk count (bench/quant.md §4): re-encodes the
//! body of existing artifacts (any frame version or compressor) with each compressor and chunk
//! count in a rayon pool of `--threads`, checks the result reads back to the same tensors, and
//! prints one TSV row per setting.
//!
//!     cargo run --release -p pgolf-quant --example chunk_sweep -- \
//!         [--codecs zstd,brotli] [--chunks 1,4,8,16,32] [--threads 2] ARTIFACT...

use anyhow::{bail, Context, Result};
use pgolf_quant::{encode_artifact, Artifact, Codec, Compression};
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    codecs: Vec<Codec>,
    chunks: Vec<u32>,
    threads: usize,
    files: Vec<PathBuf>,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        codecs: vec![Codec::Zstd, Codec::Brotli],
        chunks: vec![1, 4, 8, 16, 32],
        threads: 2,
        files: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--codecs" => {
                a.codecs = value()?
                    .split(',')
                    .map(|c| serde_json::from_value(serde_json::Value::String(c.into())))
                    .collect::<Result<_, _>>()
                    .context("--codecs: none, zstd or brotli")?
            }
            "--chunks" => {
                a.chunks = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--chunks: a list of counts")?
            }
            "--threads" => a.threads = value()?.parse().context("--threads: a count")?,
            _ if arg.starts_with("--") => bail!("unknown option {arg}"),
            _ => a.files.push(arg.into()),
        }
    }
    if a.files.is_empty() {
        bail!("usage: chunk_sweep [--codecs zstd,brotli] [--chunks 1,4,8,16,32] [--threads 2] ARTIFACT...");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = parse()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()?;
    println!(
        "artifact\tbody_bytes\tcompressor\tchunks\tmodel_bytes\tvs_1_chunk\tcompress_s\tread_s"
    );
    for path in &a.files {
        let src = Artifact::read(path)?;
        let body = pgolf_quant::container::encode_body(&src.config, &src.tensors)?.len();
        for codec in &a.codecs {
            let mut one = None;
            for chunks in &a.chunks {
                let c = Compression {
                    codec: *codec,
                    chunks: *chunks,
                    ..Compression::default()
                };
                let clock = Instant::now();
                let bytes = pool.install(|| encode_artifact(&src.config, &src.tensors, &c))?;
                let compress_s = clock.elapsed().as_secs_f64();
                let clock = Instant::now();
                let back = pool.install(|| Artifact::from_bytes(&bytes))?;
                let read_s = clock.elapsed().as_secs_f64();
                if back.tensors != src.tensors || back.config != src.config {
                    bail!("{}: {c:?} does not read back", path.display());
                }
                let base = *one.get_or_insert(bytes.len());
                let name = format!("{:?}-{}", codec, c.level()).to_lowercase();
                let rel = (bytes.len() as f64 / base as f64 - 1.0) * 100.0;
                println!(
                    "{}\t{body}\t{name}\t{chunks}\t{}\t{rel:+.3}%\t{compress_s:.2}\t{read_s:.2}",
                    path.display(),
                    bytes.len()
                );
            }
        }
    }
    Ok(())
}

//! The compressed stream of frame version 2 (docs/ARTIFACT.md): the shuffled body cut into a fixed
//! number of chunks, each compressed on its own into a standard zstd frame or brotli stream, so
//! compression and decompression use every core (one brotli-11 stream of a 17 MB body takes ~45 s
//! on one core). Where the cuts fall depends only on the body length and the chunk count, and each
//! chunk's compression only on its bytes, so the file is the same whatever the thread count.
//!
//! ```text
//! u32 LE      chunk count C (1..=MAX_CHUNKS)
//! C × u32 LE  compressed length of each chunk
//! …           the chunks, in order
//! ```
//!
//! Chunk i holds the next `n/C + (i < n%C)` bytes of the n-byte shuffled body (the byte shuffle's
//! lane rule), so those lengths are not stored.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::compress::{byte_shuffle, byte_unshuffle, decompress_stream, Codec, Compression};

/// 16 chunks keep 16 cores busy, and changed the size by −2.6% to +0.16% against one stream on the
/// 2.7–27 MB bodies of bench/quant.md §4 (often smaller: each chunk's coder adapts to its part).
pub const DEFAULT_CHUNKS: u32 = 16;
/// More than any sensible setting; a larger count in a file means a corrupted table.
pub const MAX_CHUNKS: u32 = 4096;

/// The uncompressed length of each of `chunks` chunks of an `n`-byte body.
pub fn chunk_lengths(n: usize, chunks: usize) -> impl Iterator<Item = usize> {
    (0..chunks).map(move |i| n / chunks + usize::from(i < n % chunks))
}

/// Shuffles `body`, cuts it into `c.chunks` chunks and compresses them in parallel (rayon's current
/// pool); returns the chunk table followed by the chunks.
pub fn compress_chunked(c: &Compression, body: &[u8]) -> Result<Vec<u8>> {
    c.validate()?;
    let shuffled = byte_shuffle(body, c.stride());
    let mut pieces = Vec::with_capacity(c.chunks as usize);
    let mut rest = shuffled.as_slice();
    for len in chunk_lengths(shuffled.len(), c.chunks as usize) {
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    let streams = pieces
        .par_iter()
        .map(|p| c.compress_stream(p))
        .collect::<Result<Vec<_>>>()?;
    let total: usize = streams.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(4 + 4 * streams.len() + total);
    out.extend_from_slice(&c.chunks.to_le_bytes());
    for (i, s) in streams.iter().enumerate() {
        let len = u32::try_from(s.len())
            .with_context(|| format!("chunk {i} compressed to over 4 GiB: use more chunks"))?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    for s in streams {
        out.extend_from_slice(&s);
    }
    Ok(out)
}

/// Reads the chunk table, decompresses the chunks in parallel and undoes the shuffle; the body
/// must have `body_len` bytes. Every length is checked before anything is allocated from it.
pub fn decompress_chunked(
    codec: Codec,
    stride: u8,
    stream: &[u8],
    body_len: usize,
) -> Result<Vec<u8>> {
    let u32_at = |o: usize| u32::from_le_bytes(stream[o..o + 4].try_into().unwrap());
    if stream.len() < 4 {
        bail!(
            "truncated chunk table: the stream has {} bytes, not even a chunk count",
            stream.len()
        );
    }
    let count = u32_at(0);
    if !(1..=MAX_CHUNKS).contains(&count) {
        bail!("corrupted chunk table: chunk count {count} outside 1..={MAX_CHUNKS}");
    }
    let table_end = 4 + 4 * count as usize;
    if stream.len() < table_end {
        bail!(
            "truncated chunk table: {count} chunks need a {table_end}-byte table, the stream has {} bytes",
            stream.len()
        );
    }
    let lens: Vec<usize> = (0..count as usize)
        .map(|i| u32_at(4 + 4 * i) as usize)
        .collect();
    let sum: u64 = lens.iter().map(|l| *l as u64).sum();
    let data = &stream[table_end..];
    if sum != data.len() as u64 {
        bail!(
            "corrupted chunk table: the {count} chunk lengths add up to {sum} bytes, {} follow the table",
            data.len()
        );
    }
    let mut chunks = Vec::with_capacity(lens.len());
    let mut rest = data;
    for (len, raw_len) in lens.iter().zip(chunk_lengths(body_len, count as usize)) {
        let (chunk, tail) = rest.split_at(*len);
        chunks.push((chunk, raw_len));
        rest = tail;
    }
    let parts = chunks
        .par_iter()
        .enumerate()
        .map(|(i, (chunk, raw_len))| {
            decompress_stream(codec, chunk, *raw_len)
                .with_context(|| format!("chunk {i} of {count}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(byte_unshuffle(&parts.concat(), stride))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_lane_rule_and_cover_the_body() {
        assert_eq!(chunk_lengths(10, 4).collect::<Vec<_>>(), [3, 3, 2, 2]);
        assert_eq!(chunk_lengths(2, 4).collect::<Vec<_>>(), [1, 1, 0, 0]);
        for n in [0, 1, 15, 16, 17, 1000] {
            for c in [1, 2, 3, 16, 33] {
                let l: Vec<usize> = chunk_lengths(n, c).collect();
                assert_eq!(l.len(), c);
                assert_eq!(l.iter().sum::<usize>(), n, "n={n} c={c}");
                assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1);
            }
        }
    }
}

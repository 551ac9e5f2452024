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

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::compress::{byte_shuffle, Compression};
/// The reading side and the layout's rules are the evaluator's.
pub use pgolf_evaluator::codec::{chunk_lengths, decompress_chunked, MAX_CHUNKS};

/// 16 chunks keep 16 cores busy, and changed the size by −2.6% to +0.16% against one stream on the
/// 2.7–27 MB bodies of bench/quant.md §4 (often smaller: each chunk's coder adapts to its part).
pub const DEFAULT_CHUNKS: u32 = 16;

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

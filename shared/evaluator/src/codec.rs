//! The compressed stream of an artifact (docs/ARTIFACT.md): compressor ids, the byte shuffle's
//! inverse, and frame version 2's chunk table. Each chunk is one standard stream (a zstd frame, a
//! brotli stream, a zlib stream or an .xz stream); chunk i of an n-byte body holds `n/C + (i < n%C)` bytes (the shuffle's lane rule), so
//! those lengths are not stored.
//!
//! ```text
//! u32 LE      chunk count C (1..=MAX_CHUNKS)
//! C × u32 LE  compressed length of each chunk
//! …           the chunks, in order
//! ```

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// More than any sensible setting; a larger count in a file means a corrupted table.
pub const MAX_CHUNKS: u32 = 4096;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    None = 0,
    Zstd = 1,
    Brotli = 2,
    /// RFC 1950, as Python's `zlib.compress` (BASE, PROTEUS EMA: level 9).
    Zlib = 3,
    /// The .xz container, as Python's `lzma.compress` (R0323, R0329: preset 6).
    Lzma = 4,
}

impl Codec {
    /// The id in the frame's compressor byte.
    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Result<Codec> {
        Ok(match id {
            0 => Codec::None,
            1 => Codec::Zstd,
            2 => Codec::Brotli,
            3 => Codec::Zlib,
            4 => Codec::Lzma,
            other => bail!("unknown compressor id {other}"),
        })
    }
}

/// The uncompressed length of each of `chunks` chunks of an `n`-byte body.
pub fn chunk_lengths(n: usize, chunks: usize) -> impl Iterator<Item = usize> {
    (0..chunks).map(move |i| n / chunks + usize::from(i < n % chunks))
}

/// Decompresses one stream (expected to give exactly `len` bytes) and undoes the shuffle
/// (frame version 1).
pub fn decompress(codec: Codec, stride: u8, stream: &[u8], len: usize) -> Result<Vec<u8>> {
    Ok(byte_unshuffle(
        &decompress_stream(codec, stream, len)?,
        stride,
    ))
}

/// Decompresses one standard stream that must inflate to exactly `len` bytes and end exactly at
/// the end of `stream`.
pub fn decompress_stream(codec: Codec, stream: &[u8], len: usize) -> Result<Vec<u8>> {
    let raw = match codec {
        Codec::None => stream.to_vec(),
        // zstd refuses bytes after the last frame itself (they do not parse as a frame).
        Codec::Zstd => zstd::bulk::decompress(stream, len)
            .map_err(|e| anyhow!("zstd stream is corrupt or truncated: {e}"))?,
        Codec::Brotli => brotli_exact(stream, len)?,
        Codec::Zlib => zlib_exact(stream, len)?,
        Codec::Lzma => xz_exact(stream, len)?,
    };
    if raw.len() != len {
        bail!("decompressed to {} bytes, the header says {len}", raw.len());
    }
    Ok(raw)
}

/// brotli into a buffer of exactly `len` bytes: the stream must end there, with no input left over
/// (the `Read` adapter would silently ignore trailing bytes).
fn brotli_exact(stream: &[u8], len: usize) -> Result<Vec<u8>> {
    use brotli::enc::StandardAlloc;
    use brotli::{BrotliDecompressStream, BrotliResult, BrotliState};
    let a = StandardAlloc::default;
    let mut state = BrotliState::new(a(), a(), a());
    let mut out = vec![0u8; len];
    let (mut avail_in, mut in_at) = (stream.len(), 0);
    let (mut avail_out, mut out_at, mut total) = (len, 0, 0);
    let result = BrotliDecompressStream(
        &mut avail_in,
        &mut in_at,
        stream,
        &mut avail_out,
        &mut out_at,
        &mut out,
        &mut total,
        &mut state,
    );
    match result {
        BrotliResult::ResultSuccess if avail_in > 0 => {
            bail!("brotli stream is corrupt: {avail_in} bytes follow its end")
        }
        BrotliResult::ResultSuccess => {
            out.truncate(out_at);
            Ok(out)
        }
        BrotliResult::NeedsMoreOutput => {
            bail!("brotli stream is corrupt: it inflates past the {len} bytes the header says")
        }
        BrotliResult::NeedsMoreInput => bail!("brotli stream is truncated"),
        BrotliResult::ResultFailure => bail!("brotli stream is corrupt"),
    }
}

/// zlib into a buffer with one byte of room past `len` (a stream that inflates further shows
/// there); zlib checks the stream's Adler-32, and no input may be left after the stream's end.
fn zlib_exact(stream: &[u8], len: usize) -> Result<Vec<u8>> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(true);
    let mut out = vec![0u8; len + 1];
    // Z_FINISH with all the input and room enough inflates in one call.
    let status = z
        .decompress(stream, &mut out, FlushDecompress::Finish)
        .map_err(|e| anyhow!("zlib stream is corrupt: {e}"))?;
    let ended = status == Status::StreamEnd;
    let (unread, wrote) = (stream.len() - z.total_in() as usize, z.total_out() as usize);
    exact_end("zlib", ended, unread, out, wrote, len)
}

/// More than an .xz decoder needs at any preset (65 MiB at 9): a damaged header cannot make it
/// allocate gigabytes.
const XZ_MEMLIMIT: u64 = 1 << 28;

/// One .xz stream (no concatenation) into a buffer with one byte of room past `len`. liblzma
/// checks every header's CRC32 and the stream's integrity check (CRC64 as written); a stream that
/// has none, or one this build cannot verify, is refused, so a damaged chunk cannot decode silently.
fn xz_exact(stream: &[u8], len: usize) -> Result<Vec<u8>> {
    use liblzma::stream::{Action, Status, Stream, TELL_NO_CHECK, TELL_UNSUPPORTED_CHECK};
    let mut xz = Stream::new_stream_decoder(XZ_MEMLIMIT, TELL_NO_CHECK | TELL_UNSUPPORTED_CHECK)
        .map_err(|e| anyhow!("xz decoder: {e}"))?;
    let mut out = vec![0u8; len + 1];
    let mut ended = false;
    // liblzma may stop early (e.g. after the headers); call again while it makes progress.
    loop {
        let (read, wrote) = (xz.total_in() as usize, xz.total_out() as usize);
        let status = xz
            .process(&stream[read..], &mut out[wrote..], Action::Finish)
            .map_err(|e| anyhow!("xz stream is corrupt: {e}"))?;
        ended = ended || status == Status::StreamEnd;
        let moved = (xz.total_in() as usize, xz.total_out() as usize) != (read, wrote);
        if ended || !moved || xz.total_out() as usize > len {
            break;
        }
    }
    let (unread, wrote) = (
        stream.len() - xz.total_in() as usize,
        xz.total_out() as usize,
    );
    exact_end("xz", ended, unread, out, wrote, len)
}

/// The verdict on a stream inflated into `out` (`len` + 1 bytes, `wrote` used, `unread` input left).
fn exact_end(
    what: &str,
    ended: bool,
    unread: usize,
    mut out: Vec<u8>,
    wrote: usize,
    len: usize,
) -> Result<Vec<u8>> {
    if wrote > len {
        bail!("{what} stream is corrupt: it inflates past the {len} bytes the header says");
    }
    if !ended {
        bail!("{what} stream is truncated");
    }
    if unread > 0 {
        bail!("{what} stream is corrupt: {unread} bytes follow its end");
    }
    out.truncate(wrote);
    Ok(out)
}

/// The inverse of the writer's byte shuffle (`D[0::k] ‖ D[1::k] ‖ …`): lane i holds
/// `n/k + (i < n%k)` bytes.
pub fn byte_unshuffle(data: &[u8], stride: u8) -> Vec<u8> {
    let (k, n) = (stride.max(1) as usize, data.len());
    let mut out = vec![0u8; n];
    let mut src = 0;
    for (lane, len) in chunk_lengths(n, k).enumerate() {
        for (i, b) in data[src..src + len].iter().enumerate() {
            out[lane + i * k] = *b;
        }
        src += len;
    }
    out
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
    let mut rest = &stream[table_end..];
    if sum != rest.len() as u64 {
        bail!(
            "corrupted chunk table: the {count} chunk lengths add up to {sum} bytes, {} follow the table",
            rest.len()
        );
    }
    let mut chunks = Vec::with_capacity(lens.len());
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

//! The decoders of every compressor the packer can write: bytes in = bytes out, the streams of
//! Python's `zlib.compress(…, 9)` and `lzma.compress(…, preset=6)` (what the records ship) read
//! as they are, and a damaged stream never decodes to other bytes.

use pgolf_evaluator::codec::{decompress, decompress_chunked, decompress_stream, Codec};
use std::io::Write;
use std::path::PathBuf;

/// The input of the Python fixtures (tests/fixtures/python_*.bin), made by
/// `d = b"".join(b"pgolf %d " % (i*i % 97) for i in range(60)) + bytes(range(256))`,
/// `zlib.compress(d, 9)` and `lzma.compress(d, preset=6)` (CPython 3.11, zlib 1.2.13, xz 5.4.1).
fn python_input() -> Vec<u8> {
    let mut d: Vec<u8> = (0..60)
        .flat_map(|i| format!("pgolf {} ", i * i % 97).into_bytes())
        .collect();
    d.extend(0..=255u8);
    d
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(path).unwrap()
}

fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn xz(data: &[u8], preset: u32, check: liblzma::stream::Check) -> Vec<u8> {
    let s = liblzma::stream::Stream::new_easy_encoder(preset, check).unwrap();
    let mut w = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn sample(n: u32) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2654435761) >> 27) as u8 ^ (i % 7) as u8)
        .collect()
}

#[test]
fn pythons_zlib_and_xz_streams_decode_to_their_input() {
    let d = python_input();
    assert_eq!(d.len(), 787);
    for (codec, file) in [
        (Codec::Zlib, "python_zlib9.bin"),
        (Codec::Lzma, "python_xz6.bin"),
    ] {
        let stream = fixture(file);
        assert_eq!(
            decompress_stream(codec, &stream, d.len()).unwrap(),
            d,
            "{file}"
        );
    }
}

#[test]
fn every_compressor_round_trips_bytes_exactly() {
    use liblzma::stream::Check;
    for data in [sample(50_000), sample(1), vec![]] {
        let n = data.len();
        let streams = [
            (Codec::None, data.clone()),
            (Codec::Zstd, zstd::bulk::compress(&data, 3).unwrap()),
            (Codec::Zlib, zlib(&data, 9)),
            (Codec::Zlib, zlib(&data, 1)),
            (Codec::Lzma, xz(&data, 6, Check::Crc64)),
            (Codec::Lzma, xz(&data, 0, Check::Crc32)),
        ];
        for (codec, stream) in streams {
            let back = decompress_stream(codec, &stream, n).unwrap();
            assert!(back == data, "{codec:?}: {n} bytes");
            assert!(
                decompress_stream(codec, &stream, n + 1).is_err(),
                "{codec:?}"
            );
        }
    }
    let mut b = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut b, 4096, 5, 22);
        w.write_all(&sample(9_999)).unwrap();
    }
    assert_eq!(
        decompress(Codec::Brotli, 1, &b, 9_999).unwrap(),
        sample(9_999)
    );
    // The ids are the frame's (docs/ARTIFACT.md) and only those.
    for (id, codec) in [(3, Codec::Zlib), (4, Codec::Lzma)] {
        assert_eq!(Codec::from_id(id).unwrap(), codec);
        assert_eq!(codec.id(), id);
    }
    assert!(Codec::from_id(5)
        .unwrap_err()
        .to_string()
        .contains("unknown compressor id 5"));
}

#[test]
fn a_chunked_body_of_zlib_or_xz_chunks_reads_back() {
    let body = sample(10_001);
    for codec in [Codec::Zlib, Codec::Lzma] {
        // Three chunks of 3334, 3334 and 3333 bytes (the lane rule), no shuffle.
        let chunks: Vec<Vec<u8>> = [&body[..3334], &body[3334..6668], &body[6668..]]
            .iter()
            .map(|c| match codec {
                Codec::Zlib => zlib(c, 9),
                _ => xz(c, 6, liblzma::stream::Check::Crc64),
            })
            .collect();
        let mut stream = 3u32.to_le_bytes().to_vec();
        for c in &chunks {
            stream.extend((c.len() as u32).to_le_bytes());
        }
        stream.extend(chunks.concat());
        assert_eq!(
            decompress_chunked(codec, 1, &stream, body.len()).unwrap(),
            body
        );
        // One byte short: the chunk lengths no longer add up to what follows the table.
        let e = decompress_chunked(codec, 1, &stream[..stream.len() - 1], body.len()).unwrap_err();
        assert!(format!("{e:#}").contains("corrupted chunk table"), "{e:#}");
    }
}

#[test]
fn a_flipped_bit_anywhere_never_decodes_to_other_bytes() {
    let d = python_input();
    for (codec, stream) in [
        (Codec::Zlib, fixture("python_zlib9.bin")),
        (Codec::Lzma, fixture("python_xz6.bin")),
    ] {
        let mut silent = 0;
        for at in 0..stream.len() {
            let mut bad = stream.clone();
            bad[at] ^= 1 << (at % 8);
            match decompress_stream(codec, &bad, d.len()) {
                Err(_) => {}
                Ok(back) => {
                    assert!(
                        back == d,
                        "{codec:?}: byte {at} flipped decodes to other bytes"
                    );
                    silent += 1;
                }
            }
        }
        // .xz: CRC32 on every header, the index and the footer, CRC64 on the data, so every flip
        // is caught. zlib: Adler-32 on the data; only the padding bits after the last deflate
        // block are unchecked, and a flip there leaves the data as it was.
        let allowed = if codec == Codec::Lzma { 0 } else { 1 };
        assert!(silent <= allowed, "{codec:?}: {silent} flips passed");
    }
}

#[test]
fn an_xz_stream_without_an_integrity_check_is_refused() {
    let data = sample(1000);
    let none = xz(&data, 6, liblzma::stream::Check::None);
    let e = decompress_stream(Codec::Lzma, &none, data.len()).unwrap_err();
    assert!(e.to_string().contains("no integrity check"), "{e}");
    // Two streams back to back are not one stream: the second is bytes after the end.
    let one = xz(&data, 6, liblzma::stream::Check::Crc64);
    let two = [one.clone(), one].concat();
    let e = decompress_stream(Codec::Lzma, &two, data.len()).unwrap_err();
    assert!(e.to_string().contains("follow its end"), "{e}");
    let e = decompress_stream(Codec::Lzma, &two[..two.len() / 4], data.len()).unwrap_err();
    assert!(
        e.to_string().contains("truncated") || e.to_string().contains("corrupt"),
        "{e}"
    );
    let z = zlib(&data, 9);
    let e = decompress_stream(Codec::Zlib, &z[..z.len() - 2], data.len()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

//! Frame version 2 (docs/ARTIFACT.md): the body in independently compressed chunks. Round trips for
//! every compressor and chunk count, the documented layout read by hand with the codecs' own
//! decoders, the same bytes whatever the thread count, damaged chunk tables refused with the
//! reason, and version-1 files (written before chunking) still read.

use half::f16;
use pgolf_quant::artifact::{FRAME_BYTES, FRAME_VERSION};
use pgolf_quant::chunks::chunk_lengths;
use pgolf_quant::compress::byte_unshuffle;
use pgolf_quant::container::encode_body;
use pgolf_quant::{encode_artifact, Artifact, Codec, Compression, DType, Encoding, StoredTensor};
use serde_json::{json, Value};
use std::io::Read;

/// int6-like integers (a peaked distribution, as a quantized matrix), fp16 row scales and raw fp16
/// values: a ~21 KB body, so 16 chunks are ~1.3 KB each.
fn tensors() -> Vec<StoredTensor> {
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    let (rows, cols) = (64, 256);
    let q = (0..rows * cols)
        .map(|_| {
            let (a, b) = (next() % 21, next() % 21);
            (a as i32 - b as i32) as i8 // triangular on ±20, within int6's ±31
        })
        .collect();
    let scales = (0..rows)
        .map(|i| f16::from_f32(0.001 + i as f32 * 1e-5))
        .collect();
    let raw: Vec<u8> = (0..1000)
        .flat_map(|_| f16::from_f32(next() as f32 / u32::MAX as f32).to_le_bytes())
        .collect();
    vec![
        StoredTensor {
            name: "blocks.0.mlp.fc.weight".into(),
            shape: vec![rows, cols],
            dtype: DType::Bf16,
            encoding: Encoding::Rows { bits: 6, q, scales },
            lqer: None,
            layout: Default::default(),
        },
        StoredTensor {
            name: "blocks.0.attn_scale".into(),
            shape: vec![1000],
            dtype: DType::F32,
            encoding: Encoding::Raw {
                stored: DType::F16,
                bytes: raw,
            },
            lqer: None,
            layout: Default::default(),
        },
    ]
}

fn config() -> Value {
    json!({"num_layers": 1, "model_dim": 256})
}

fn compression(codec: Codec, chunks: u32) -> Compression {
    Compression {
        codec,
        chunks,
        // Fast levels keep the test quick; the chunking does not depend on the level.
        level: match codec {
            Codec::Brotli => Some(5),
            _ => Some(3),
        },
        ..Compression::default()
    }
}

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Zstd,
    Codec::Brotli,
    Codec::Zlib,
    Codec::Lzma,
];

fn err_of(bytes: &[u8]) -> String {
    format!("{:#}", Artifact::from_bytes(bytes).unwrap_err())
}

/// The chunk table as docs/ARTIFACT.md lays it out: (count, compressed lengths, data offset).
fn table(file: &[u8]) -> (usize, Vec<usize>, usize) {
    let u32_at = |o: usize| u32::from_le_bytes(file[o..o + 4].try_into().unwrap()) as usize;
    let count = u32_at(FRAME_BYTES);
    let lens = (0..count)
        .map(|i| u32_at(FRAME_BYTES + 4 + 4 * i))
        .collect();
    (count, lens, FRAME_BYTES + 4 + 4 * count)
}

/// `file` with its stream (everything after the frame) replaced, and the frame's stream length
/// updated to match, so only the chunk table can be at fault.
fn with_stream(file: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut out = file[..FRAME_BYTES].to_vec();
    out[16..24].copy_from_slice(&(stream.len() as u64).to_le_bytes());
    out.extend_from_slice(stream);
    out
}

#[test]
fn every_compressor_and_chunk_count_round_trips() {
    let (config, tensors) = (config(), tensors());
    let body_len = encode_body(&config, &tensors).unwrap().len();
    for codec in CODECS {
        for chunks in [1, 2, 3, 7, 16, 64] {
            let file = encode_artifact(&config, &tensors, &compression(codec, chunks)).unwrap();
            let art = Artifact::from_bytes(&file).unwrap();
            assert_eq!(art.tensors, tensors, "{codec:?} {chunks}");
            assert_eq!(art.config, config);
            assert_eq!((art.frame_version, art.codec), (FRAME_VERSION, codec));
            let (count, lens, data) = table(&file);
            assert_eq!(count, chunks as usize);
            assert_eq!(data + lens.iter().sum::<usize>(), file.len());
            if codec == Codec::None {
                // Uncompressed chunks are the cut itself.
                let raw: Vec<usize> = chunk_lengths(body_len, count).collect();
                assert_eq!(lens, raw);
            }
        }
    }
    // More chunks than body bytes: the surplus chunks are empty streams, still valid.
    let tiny = vec![StoredTensor {
        name: "g".into(),
        shape: vec![2],
        dtype: DType::F32,
        encoding: Encoding::Raw {
            stored: DType::F16,
            bytes: vec![0, 60, 0, 188],
        },
        lqer: None,
        layout: Default::default(),
    }];
    let n = encode_body(&json!({}), &tiny).unwrap().len() as u32;
    for codec in CODECS {
        let file = encode_artifact(&json!({}), &tiny, &compression(codec, n + 5)).unwrap();
        assert_eq!(Artifact::from_bytes(&file).unwrap().tensors, tiny);
    }
}

#[test]
fn each_chunk_is_a_standard_stream_as_documented() {
    let (config, tensors) = (config(), tensors());
    let body = encode_body(&config, &tensors).unwrap();
    for codec in [Codec::Zstd, Codec::Brotli, Codec::Zlib, Codec::Lzma] {
        let file = encode_artifact(&config, &tensors, &compression(codec, 5)).unwrap();
        assert_eq!(&file[..5], b"PGQA\x02");
        let stride = file[6];
        assert_eq!(stride, if codec == Codec::Brotli { 2 } else { 1 });
        let (_, lens, mut at) = table(&file);
        let mut shuffled = Vec::new();
        for len in lens {
            let chunk = &file[at..at + len];
            at += len;
            // The codecs' ordinary decoders, not ours.
            match codec {
                Codec::Zstd => shuffled.extend(zstd::decode_all(chunk).unwrap()),
                Codec::Brotli => {
                    brotli::Decompressor::new(chunk, 4096)
                        .read_to_end(&mut shuffled)
                        .unwrap();
                }
                Codec::Zlib => {
                    flate2::read::ZlibDecoder::new(chunk)
                        .read_to_end(&mut shuffled)
                        .unwrap();
                }
                Codec::Lzma => {
                    liblzma::read::XzDecoder::new(chunk)
                        .read_to_end(&mut shuffled)
                        .unwrap();
                }
                Codec::None => unreachable!(),
            }
        }
        let again = byte_unshuffle(&shuffled, stride);
        assert_eq!(again, body, "{codec:?}");
        assert_eq!(blake3::hash(&again).as_bytes(), &file[24..56]);
        assert_eq!(
            u64::from_le_bytes(file[8..16].try_into().unwrap()),
            body.len() as u64
        );
    }
}

#[test]
fn the_bytes_do_not_depend_on_the_thread_count() {
    let (config, tensors) = (config(), tensors());
    for codec in [Codec::Zstd, Codec::Brotli, Codec::Zlib, Codec::Lzma] {
        let c = Compression {
            chunks: 16,
            ..compression(codec, 16)
        };
        let files: Vec<Vec<u8>> = [1, 2, 3, 8]
            .iter()
            .map(|threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(*threads)
                    .build()
                    .unwrap();
                pool.install(|| encode_artifact(&config, &tensors, &c).unwrap())
            })
            .collect();
        for f in &files[1..] {
            assert!(
                f == &files[0],
                "{codec:?}: bytes differ between thread counts"
            );
        }
    }
}

#[test]
fn damaged_chunk_tables_are_refused_with_the_reason() {
    let (config, tensors) = (config(), tensors());
    for codec in CODECS {
        let good = encode_artifact(&config, &tensors, &compression(codec, 16)).unwrap();
        let stream = &good[FRAME_BYTES..];
        let (count, lens, data) = table(&good);
        let table_bytes = data - FRAME_BYTES;

        // Not even a chunk count.
        let e = err_of(&with_stream(&good, &stream[..3]));
        assert!(e.contains("truncated chunk table"), "{codec:?}: {e}");
        // A count of 0, or beyond what any writer makes.
        for bad in [0u32, 5000] {
            let mut s = stream.to_vec();
            s[..4].copy_from_slice(&bad.to_le_bytes());
            let e = err_of(&with_stream(&good, &s));
            assert!(e.contains(&format!("chunk count {bad} outside")), "{e}");
        }
        // A count whose table runs past the stream.
        let mut s = stream[..100].to_vec();
        s[..4].copy_from_slice(&4000u32.to_le_bytes());
        let e = err_of(&with_stream(&good, &s));
        assert!(e.contains("truncated chunk table: 4000 chunks"), "{e}");
        // The table cut short (the chunks gone).
        let e = err_of(&with_stream(&good, &stream[..table_bytes - 2]));
        assert!(e.contains("truncated chunk table"), "{e}");
        // Lengths that do not add up to the data.
        let mut s = stream.to_vec();
        s[4..8].copy_from_slice(&(lens[0] as u32 + 1).to_le_bytes());
        let e = err_of(&with_stream(&good, &s));
        assert!(e.contains("chunk lengths add up to"), "{e}");
        let e = err_of(&with_stream(&good, &stream[..stream.len() - 1]));
        assert!(e.contains("chunk lengths add up to"), "{e}");
        // Lengths that add up but cut the data in the wrong place: the chunk says which.
        let mut s = stream.to_vec();
        s[4..8].copy_from_slice(&(lens[0] as u32 + 3).to_le_bytes());
        s[8..12].copy_from_slice(&(lens[1] as u32 - 3).to_le_bytes());
        let e = err_of(&with_stream(&good, &s));
        assert!(
            e.contains(&format!("chunk 0 of {count}"))
                || e.contains(&format!("chunk 1 of {count}")),
            "{codec:?}: {e}"
        );
        // A damaged byte inside a chunk: its codec or the body hash notices.
        let mut bad = good.clone();
        let mid = data + lens[..8].iter().sum::<usize>() + lens[8] / 2;
        bad[mid] ^= 0x5a;
        let e = err_of(&bad);
        assert!(
            e.contains("chunk 8 of 16") || e.contains("BLAKE3"),
            "{codec:?}: {e}"
        );
        // The file cut inside the table: the frame says so first.
        assert!(err_of(&good[..FRAME_BYTES + 10]).contains("truncated"));
    }
    // The file is named.
    let good = encode_artifact(&config, &tensors, &compression(Codec::Zstd, 16)).unwrap();
    let mut s = good[FRAME_BYTES..].to_vec();
    s[..4].copy_from_slice(&0u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("artifact.pgq");
    std::fs::write(&path, with_stream(&good, &s)).unwrap();
    let e = format!("{:#}", Artifact::read(&path).unwrap_err());
    assert!(
        e.contains("artifact.pgq") && e.contains("corrupted chunk table"),
        "{e}"
    );
    // Unknown versions are refused.
    let mut v3 = good.clone();
    v3[4] = 3;
    assert!(err_of(&v3).contains("frame version 3 is not supported"));
}

#[test]
fn bad_chunk_counts_are_refused_before_compressing() {
    for chunks in [0, 4097] {
        let e = encode_artifact(&config(), &tensors(), &compression(Codec::Zstd, chunks))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("chunks {chunks} outside 1..=4096")),
            "{e}"
        );
    }
}

/// Written by quantize-pack before frame version 2 (9,346 random parameters, int8, zstd-22 and
/// shuffle + brotli-11): they must keep reading, to the same tensors as a re-encoded copy.
#[test]
fn version_1_files_still_read() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let zstd = Artifact::read(&dir.join("v1_zstd.pgq")).unwrap();
    let brotli = Artifact::read(&dir.join("v1_brotli.pgq")).unwrap();
    assert_eq!((zstd.frame_version, zstd.codec), (1, Codec::Zstd));
    assert_eq!(
        (brotli.frame_version, brotli.codec, brotli.shuffle),
        (1, Codec::Brotli, 2)
    );
    assert_eq!(zstd.tensors, brotli.tensors);
    assert_eq!(zstd.config["num_layers"], 1);
    assert_eq!(zstd.tensors.len(), 12);
    // Today's container encoder gives the very body the old file hashed.
    let v1 = std::fs::read(dir.join("v1_zstd.pgq")).unwrap();
    let body = encode_body(&zstd.config, &zstd.tensors).unwrap();
    assert_eq!(blake3::hash(&body).as_bytes(), &v1[24..56]);
    let v2 = encode_artifact(&zstd.config, &zstd.tensors, &Compression::default()).unwrap();
    assert_eq!(Artifact::from_bytes(&v2).unwrap().tensors, zstd.tensors);
}

//! Val shards and byte tables: the upstream shard header, and the LUT rules of REFERENCE.md §2.1–2.2
//! from a SentencePiece model protobuf and for byte260.

use pgolf_evaluator::{read_shard, val_tokens, ByteLut};

fn shard(tokens: &[u16]) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    b[..4].copy_from_slice(&20240520i32.to_le_bytes());
    b[4..8].copy_from_slice(&1i32.to_le_bytes());
    b[8..12].copy_from_slice(&(tokens.len() as i32).to_le_bytes());
    b.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
    b
}

#[test]
fn shards_are_read_in_sorted_order_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fineweb_val_000001.bin"), shard(&[7, 8])).unwrap();
    std::fs::write(dir.path().join("fineweb_val_000000.bin"), shard(&[1, 2, 3])).unwrap();
    std::fs::write(dir.path().join("fineweb_val_bytes_000000.bin"), shard(&[9])).unwrap();
    std::fs::write(dir.path().join("fineweb_train_000000.bin"), shard(&[9])).unwrap();
    assert_eq!(val_tokens(dir.path()).unwrap(), [1, 2, 3, 7, 8]);
    let bad = dir.path().join("bad.bin");
    let mut b = shard(&[1, 2]);
    b.pop();
    std::fs::write(&bad, b).unwrap();
    assert!(format!("{:#}", read_shard(&bad).unwrap_err()).contains("not an upstream token shard"));
    assert!(val_tokens(&dir.path().join("none")).is_err());
}

#[test]
fn byte260_charges_one_byte_per_byte_token() {
    let lut = ByteLut::byte260();
    assert_eq!(
        lut.target_bytes(&[1, 100, 101, 1, 50]).unwrap(),
        [0, 1, 1, 0, 1]
    );
    assert!(lut.target_bytes(&[260]).is_err());
}

/// A protobuf length-delimited field.
fn field(n: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![n << 3 | 2, bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

fn piece(text: &str, kind: Option<u8>) -> Vec<u8> {
    let mut p = field(1, text.as_bytes());
    p.extend([2 << 3 | 5, 0, 0, 128, 63]); // score 1.0 (fixed32), skipped
    if let Some(k) = kind {
        p.extend([3 << 3, k]);
    }
    field(1, &p)
}

#[test]
fn sentencepiece_tables_follow_the_reference_rules() {
    // <unk> (2), <s> (3), "▁" normal, "▁the", "é" user-defined, <0x41> byte, unused.
    let pieces = [
        piece("<unk>", Some(2)),
        piece("<s>", Some(3)),
        piece("\u{2581}", None),
        piece("\u{2581}the", Some(1)),
        piece("é", Some(4)),
        piece("<0x41>", Some(6)),
        piece("x", Some(5)),
    ];
    let mut model: Vec<u8> = pieces.concat();
    model.extend(field(2, b"trainer spec, ignored"));
    let lut = ByteLut::sentencepiece(&model).unwrap();
    assert_eq!(lut.base, [0, 0, 0, 3, 2, 1, 0]);
    assert_eq!(lut.space, [false, false, true, true, false, false, false]);
    assert_eq!(lut.boundary, [true, true, false, false, false, false, true]);
    // After BOS the leading space is free; after a word it is one byte.
    assert_eq!(
        lut.target_bytes(&[1, 3, 3, 4, 2, 5]).unwrap(),
        [0, 3, 4, 2, 1, 1]
    );
    let no_space: Vec<u8> = [piece("<s>", Some(3)), piece("a", None)].concat();
    assert!(
        format!("{:#}", ByteLut::sentencepiece(&no_space).err().unwrap()).contains("standalone")
    );
    assert!(ByteLut::sentencepiece(&model[..model.len() - 3]).is_err());
}

//! Artifact contents made to break the reader: each input here once panicked it or got through
//! (found by the fuzz targets in fuzz/ or by reading the parsers for them); now each is one error.

use pgolf_evaluator::container::decode_body;
use pgolf_evaluator::*;

/// A body: the directory (JSON) with its length, then `payload`.
fn body(dir: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = (dir.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(dir.as_bytes());
    b.extend_from_slice(payload);
    b
}

fn err(b: &[u8]) -> String {
    format!("{:#}", decode_body(b).expect_err("refused"))
}

#[test]
fn a_shape_whose_element_count_wraps_is_refused() {
    // 2^32 · 2^32 elements wrap to 0 in usize: the old size check saw 0 bytes for 0 elements and
    // took the tensor (and a debug build panicked on the overflow).
    let dir = r#"{"format":"pgq","version":1,"config":{},"tensors":[
        {"enc":"raw","name":"w","shape":[4294967296,4294967296],"dtype":"f32","stored":"f32","data":[0,0]}]}"#;
    assert!(err(&body(dir, &[])).contains("tensor w: shape [4294967296, 4294967296] is too large"));
    // Rows and one-scale tensors take the same count.
    let dir = r#"{"format":"pgq","version":1,"config":{},"tensors":[
        {"enc":"tensor","name":"q","shape":[65536,281474976710656],"dtype":"f32","bits":8,"scale_dtype":"f32","q":[0,0],"scale":[0,4]}]}"#;
    assert!(err(&body(dir, &[0; 4])).contains("tensor q: shape"));
}

#[test]
fn a_config_whose_mlp_width_overflows_is_refused() {
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 16, "num_layers": 1, "model_dim": 4611686018427387904u64, "num_heads": 2,
        "num_kv_heads": 1, "mlp_mult": 8, "seq_len": 8
    }))
    .unwrap();
    let e = format!("{:#}", cfg.validate().unwrap_err());
    assert!(e.contains("mlp_mult × model_dim overflows"), "{e}");
}

#[test]
fn a_tokenizer_piece_longer_than_a_byte_count_holds_is_refused() {
    // ModelProto { pieces: [ "▁", "a" × 65536 ] }: the second piece's byte count was cut to u16
    // (65536 → 0 bytes), a silently wrong denominator.
    let piece = |text: &[u8]| {
        let mut p = vec![0x0a];
        let mut n = text.len();
        while n >= 0x80 {
            p.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        p.push(n as u8);
        p.extend_from_slice(text);
        let mut m = vec![0x0a];
        let mut n = p.len();
        while n >= 0x80 {
            m.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        m.push(n as u8);
        m.extend(p);
        m
    };
    let mut model = piece("\u{2581}".as_bytes());
    model.extend(piece(&[b'a'; 65536]));
    let Err(e) = ByteLut::sentencepiece(&model) else {
        panic!("a 65536-byte piece was taken")
    };
    assert!(
        format!("{e:#}").contains("piece 1 is over 65535 bytes"),
        "{e:#}"
    );
}

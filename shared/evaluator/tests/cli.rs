//! The `pgolf-evaluate` binary: the number it prints is the library's, and bad input is one line.

use pgolf_evaluator::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&Path]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgolf-evaluate"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn prints_the_librarys_bpb_and_refuses_bad_input_in_one_line() {
    let art = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../quant/tests/fixtures/v1_zstd.pgq");
    let data = tempfile::tempdir().unwrap();
    let tokens: Vec<u16> = (0..70)
        .map(|i| {
            if i % 9 == 0 {
                1
            } else {
                4 + (i * 5 % 50) as u16
            }
        })
        .collect();
    let mut shard = vec![0u8; 1024];
    shard[..4].copy_from_slice(&20240520i32.to_le_bytes());
    shard[4..8].copy_from_slice(&1i32.to_le_bytes());
    shard[8..12].copy_from_slice(&(tokens.len() as i32).to_le_bytes());
    shard.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
    std::fs::write(data.path().join("fineweb_val_000000.bin"), shard).unwrap();

    let (ok, _, err) = run(&[&art, data.path()]);
    assert!(
        !ok && err.starts_with("error: pgolf-evaluate: ") && err.contains("no tokenizer"),
        "{err}"
    );
    std::fs::write(
        data.path().join(TOKENIZER_INFO_FILE),
        r#"{"kind": "byte260", "vocab_size": 260, "bos_id": 1}"#,
    )
    .unwrap();
    let (ok, out, err) = run(&[&art, data.path()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let model = Model::from_artifact(&Artifact::read(&art).unwrap()).unwrap();
    let bytes = ByteLut::byte260().target_bytes(&tokens).unwrap();
    let sums = score(&model, &tokens, &bytes, &flat(69, 16).unwrap(), |_| {}).unwrap();
    assert_eq!(v["val_bpb"].as_f64(), Some(sums.bpb()));
    assert_eq!(
        (v["mode"].as_str(), v["targets"].as_u64()),
        (Some("flat"), Some(69))
    );
    let (ok, out, _) = run(&[&art, data.path(), Path::new("--stride"), Path::new("4")]);
    assert!(ok && out.contains(r#""mode":"sliding""#), "{out}");

    let (ok, _, err) = run(&[&art]);
    assert!(!ok && err.contains("usage: pgolf-evaluate"), "{err}");
    let (ok, _, err) = run(&[data.path(), data.path()]);
    assert!(
        !ok && err.lines().count() == 1 && err.contains(ARTIFACT_FILE),
        "{err}"
    );
}

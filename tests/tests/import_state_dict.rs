//! `scripts/import_state_dict.py` turns a record script's `torch.save(state_dict)` file into a
//! raw-weights folder that ema-finalize accepts: our own train output, saved as a torch state dict
//! and imported back, finalizes to byte-identical weights; a state dict holding anything but
//! plain tensors is refused in one line, with no output folder left.

use pgolf_e2e::{bin, workspace_root};
use pgolf_store::files;
use std::path::Path;
use std::process::Command;

const TRAIN: &str = r#"{"model": {"vocab_size": 260, "num_layers": 2, "model_dim": 32, "num_heads": 4,
  "num_kv_heads": 2, "seq_len": 32, "smear_gate": true, "bigram": {"buckets": 64, "dim": 8}},
  "iterations": 3, "warmdown_iters": 1, "max_wallclock_seconds": 0, "train_batch_tokens": 512,
  "grad_accum_steps": 1, "val_loss_every": 0, "val_batch_tokens": 2048, "threads": 1, "ema_decay": 0}"#;

fn python() -> std::path::PathBuf {
    workspace_root().join(".venv/bin/python")
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn finalize(dir: &Path, input: &Path) -> Vec<u8> {
    ok(Command::new(bin("ema-finalize"))
        .arg("--out")
        .arg(dir)
        .arg("--in")
        .arg(format!("train={}", input.display())));
    std::fs::read(dir.join(files::WEIGHTS)).unwrap()
}

#[test]
fn a_saved_state_dict_imports_to_the_same_weights_and_bad_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    ok(Command::new(bin("tokenize"))
        .arg("--out")
        .arg(&data)
        .arg("--params")
        .arg(write(
            root,
            "tok.json",
            r#"{"synthetic": {"seed": 3, "docs": 200, "mean_doc_bytes": 200}, "val_docs": 20}"#,
        )));
    let train = root.join("train");
    ok(Command::new(bin("train"))
        .arg("--out")
        .arg(&train)
        .arg("--in")
        .arg(format!("data={}", data.display()))
        .arg("--params")
        .arg(write(root, "train.json", TRAIN)));

    // Our weights as a torch state dict, as `torch.save(model.state_dict(), "final_model.pt")`.
    let state = root.join("final_model.pt");
    let save = r#"
import json, sys, torch
raw = open(sys.argv[1], "rb").read()
n = int.from_bytes(raw[:8], "little"); header = json.loads(raw[8:8 + n]); body = raw[8 + n:]
kinds = {"F32": torch.float32, "BF16": torch.bfloat16}
sd = {k: torch.frombuffer(bytearray(body[m["data_offsets"][0]:m["data_offsets"][1]]), dtype=kinds[m["dtype"]]).reshape(m["shape"]).clone()
      for k, m in header.items() if k != "__metadata__"}
torch.save(sd, sys.argv[2])
if len(sys.argv) > 3:
    sd["step"] = 7
    torch.save(sd, sys.argv[3])
"#;
    let bad = root.join("bad.pt");
    ok(Command::new(python())
        .args(["-c", save])
        .arg(train.join(files::WEIGHTS))
        .arg(&state)
        .arg(&bad));
    let imported = root.join("imported");
    let script = workspace_root().join("scripts/import_state_dict.py");
    ok(Command::new(python())
        .arg(&script)
        .arg(&state)
        .arg(train.join(files::MODEL_CONFIG))
        .arg(&imported));
    assert_eq!(
        finalize(&root.join("fin-ours"), &train),
        finalize(&root.join("fin-imported"), &imported),
        "the imported weights finalize to the same bytes"
    );

    // A state dict with a non-tensor entry: one line naming it, nothing written.
    let out = Command::new(python())
        .arg(&script)
        .arg(&bad)
        .arg(train.join(files::MODEL_CONFIG))
        .arg(root.join("refused"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.pt: entry step is a int, not a tensor"),
        "{err}"
    );
    assert!(!root.join("refused").exists() && !root.join("refused.partial").exists());
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

//! Numerical faults (issue 14 item 7): a NaN/Inf train loss stops the run at that step, and so
//! does a loss above `max_loss` (a diverging run, off by default); the one error line names the
//! step, the micro-batch and the last finite loss, and no output is left. Tiny models on the CPU,
//! made to diverge with huge learning rates.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use support::{data_dir, markov_tokens};

fn params(iterations: u64, extra: Value) -> Value {
    let mut p = json!({
        "model": {"vocab_size": 260, "num_layers": 2, "model_dim": 32, "num_heads": 4, "num_kv_heads": 2, "seq_len": 32},
        "iterations": iterations,
        "warmdown_iters": 0,
        "max_wallclock_seconds": 0.0,
        "train_batch_tokens": 1024,
        "grad_accum_steps": 4,
        "val_batch_tokens": 2048,
        "val_loss_every": 0,
        "train_log_every": 1,
        "threads": 1
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// Runs train; returns (success, stderr, stdout, out dir).
fn train(root: &Path, name: &str, data: &Path, params: &Value) -> (bool, String, String, PathBuf) {
    let out = root.join(name);
    let params_path = root.join(format!("{name}.json"));
    std::fs::write(&params_path, params.to_string()).unwrap();
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/train");
    let o = Command::new(bin)
        .arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", data.display()))
        .arg("--params")
        .arg(&params_path)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        out,
    )
}

/// The step of `step:N/...` log lines that carry a train loss, and that loss.
fn logged_losses(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let step = l.strip_prefix("step:")?.split('/').next()?.parse().ok()?;
            let loss = l
                .split_whitespace()
                .find_map(|t| t.strip_prefix("train_loss:"))?
                .parse()
                .ok()?;
            Some((step, loss))
        })
        .collect()
}

#[test]
fn a_nan_loss_stops_at_its_step_naming_the_micro_batch_and_the_last_finite_loss() {
    let root = tempfile::tempdir().unwrap();
    let tokens = markov_tokens(200, 3);
    let data = data_dir(root.path(), &tokens, &tokens);
    let wild = params(
        30,
        json!({"matrix_lr": 1e30, "tied_embed_lr": 1e30, "scalar_lr": 1e30}),
    );
    let (ok, err, stdout, out) = train(root.path(), "nan", &data, &wild);
    assert!(!ok, "a run with lr 1e30 finished: {stdout}");
    assert!(!out.exists(), "a failed run left {}", out.display());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    let line = lines[0];
    println!("NaN: {line}");
    assert!(line.starts_with("error: train: step "), "{line}");
    assert!(
        line.contains("the train loss is NaN") || line.contains("the train loss is inf"),
        "{line}"
    );
    let step: u64 = line["error: train: step ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let micro: usize = line
        .split("micro-batch ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=4).contains(&micro) && line.contains(&format!("micro-batch {micro} of 4")),
        "{line}"
    );
    // Every logged step before it was finite, and the last of them is the one quoted.
    let logged = logged_losses(&stdout);
    assert!(
        logged.iter().all(|(s, l)| *s < step && l.is_finite()),
        "{logged:?} vs {line}"
    );
    if let Some((s, l)) = logged.last().filter(|(s, _)| *s == step - 1) {
        assert!(
            line.contains(&format!("last finite loss {l:.4} at step {s}")),
            "{line}"
        );
    } else if step == 1 {
        assert!(line.contains("no earlier step"), "{line}");
    } else {
        assert!(line.contains(&format!("at step {}", step - 1)), "{line}");
    }
}

#[test]
fn a_loss_above_max_loss_stops_the_run_and_max_loss_is_off_by_default() {
    let root = tempfile::tempdir().unwrap();
    let tokens = markov_tokens(200, 3);
    let data = data_dir(root.path(), &tokens, &tokens);
    // A learning rate large enough to push the loss up from its start (ln 260 ≈ 5.56) but not to
    // NaN at once: the run diverges.
    let hot = json!({"tied_embed_lr": 30.0, "matrix_lr": 2.0, "scalar_lr": 2.0});
    let (ok, _, stdout, _) = train(root.path(), "hot", &data, &params(12, hot.clone()));
    let logged = logged_losses(&stdout);
    let peak = logged.iter().map(|(_, l)| *l).fold(f64::MIN, f64::max);
    assert!(
        ok || peak > 6.0,
        "without max_loss the hot run must run on (or NaN): {stdout}"
    );
    assert!(peak > 6.0, "the hot run never diverged above 6: {logged:?}");
    let first = logged.first().unwrap().1;

    // With a threshold between its start and its peak it stops at the first step above it.
    let max_loss = (first + peak) / 2.0;
    let mut capped = hot.clone();
    capped["max_loss"] = json!(max_loss);
    let (ok, err, stdout, out) = train(root.path(), "capped", &data, &params(12, capped));
    assert!(!ok && !out.exists(), "{err}");
    let line = err.trim_end();
    println!("max_loss: {line}");
    assert_eq!(line.lines().count(), 1, "{err}");
    let above = logged.iter().find(|(_, l)| *l > max_loss).unwrap();
    assert!(
        line.starts_with(&format!("error: train: step {}, micro-batch ", above.0))
            && line.contains(&format!("is above max_loss {max_loss} (diverging)")),
        "expected a stop at step {} ({logged:?}): {line}",
        above.0
    );
    let before = logged.iter().rev().find(|(s, _)| *s < above.0).unwrap();
    assert!(
        line.contains(&format!(
            "last finite loss {:.4} at step {}",
            before.1, before.0
        )),
        "{line}"
    );
    assert!(logged_losses(&stdout).iter().all(|(s, _)| *s < above.0));

    // Bad thresholds are refused before anything runs.
    for bad in [json!(0.0), json!(-1.0)] {
        let (ok, err, _, _) = train(
            root.path(),
            "bad_max",
            &data,
            &params(2, json!({"max_loss": bad})),
        );
        assert!(
            !ok && err.contains("max_loss must be a positive number"),
            "{err}"
        );
    }
}

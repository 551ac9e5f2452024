//! Faults of the machine (issue 14 item 4): a full disk and a read-only `out/` under each stage,
//! and memos (`out/.hash-cache.json`, the `PGOLF_HASH_CACHE` the stages get, and
//! `out/.identity-cache.json`) that are truncated or lie.
//!
//! The full disk is a real one: a tmpfs of a chosen size mounted on `out/`, holding the inputs of
//! the stage and a little less room than its outputs need (so the write fails with ENOSPC, as on a
//! full disk); the read-only `out/` is a read-only bind mount (root ignores file modes, so `chmod`
//! would prove nothing). Both live in a private mount namespace of an unprivileged user namespace
//! (`unshare -rm`), which needs no root; where the kernel refuses one, the test says so and checks
//! the memos only.
//!
//! For every fault: the driver exits non-zero with exactly one `error:` line on stderr (and no
//! `panicked at`), naming a path under `out/` and the cause; nothing is published (the published
//! runs under `out/` are exactly those before); and once the fault is gone the same command
//! succeeds with the reference key and outputs.

mod reliability_support;

use pgolf_e2e::project::{short_key_of, status_of, TestProject};
use pgolf_e2e::{stderr, stdout};
use reliability_support::*;
use std::path::Path;
use std::process::Command;

fn namespaces_work() -> bool {
    Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp 2>/dev/null || mount -t tmpfs -o size=64k tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `script` (sh) in a private mount namespace, in the project folder.
fn in_namespace(project: &Path, script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-rm", "sh", "-ec", script])
        .current_dir(project)
        .output()
        .expect("unshare")
}

/// The published runs (`stage/key`) under `out`.
fn published(out: &Path) -> Vec<String> {
    let mut runs = Vec::new();
    for stage in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let name = stage.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !stage.path().is_dir() {
            continue;
        }
        for run in std::fs::read_dir(stage.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let key = run.file_name().to_string_lossy().to_string();
            if !key.starts_with('.') {
                runs.push(format!("{name}/{key}"));
            }
        }
    }
    runs.sort();
    runs
}

/// The one-line rule for a driver run: no panic or backtrace anywhere on stderr; exactly one
/// line starts with `error: pipeline: `, it is the last line, and it names `path_part` (a path)
/// and `cause`. The only other `error: ` line allowed is the failing stage's own, passed through
/// by the driver (docs/PIPELINE.md "run"), which the driver's line repeats.
fn one_clean_line(stderr: &str, path_part: &str, cause: &str) -> Result<String, String> {
    if stderr.contains("panicked at")
        || stderr.contains("RUST_BACKTRACE")
        || stderr.contains("stack backtrace")
    {
        return Err(format!("a panic: {stderr}"));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let driver: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error: pipeline: "))
        .collect();
    let [line] = driver.as_slice() else {
        return Err(format!(
            "{} `error: pipeline:` lines: {stderr}",
            driver.len()
        ));
    };
    if lines.last() != Some(line) {
        return Err(format!("the error line is not the last: {stderr}"));
    }
    let others: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error: ") && !l.starts_with("error: pipeline: "))
        .collect();
    match others.as_slice() {
        [] => {}
        [stage] if line.ends_with(stage.trim_start_matches("error: ")) => {}
        _ => return Err(format!("other error lines: {others:?}")),
    }
    if !line.contains(path_part) || !line.to_lowercase().contains(&cause.to_lowercase()) {
        return Err(format!(
            "the error line does not name {path_part:?} and {cause:?}: {line}"
        ));
    }
    Ok(line.to_string())
}

struct Case {
    node: String,
    fault: &'static str,
    outcome: Result<String, String>,
}

#[test]
fn a_full_disk_or_read_only_out_fails_with_one_line_publishes_nothing_and_a_later_run_succeeds() {
    if !namespaces_work() {
        println!("SKIPPED: this kernel refuses unprivileged mount namespaces (unshare -rm), so no tmpfs or read-only mount can be made");
        return;
    }
    let chain = Chain::new();
    let saved = chain.p.path().join("saved-out");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(chain.p.out())
        .arg(&saved)
        .status()
        .unwrap()
        .success());
    let pipeline = pgolf_e2e::bin("pipeline");
    let mut cases = Vec::new();
    for r in chain.refs.clone() {
        // out/ as it was, less this node's run.
        let out = chain.p.out();
        std::fs::remove_dir_all(&out).unwrap();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&saved)
            .arg(&out)
            .status()
            .unwrap()
            .success());
        std::fs::remove_dir_all(chain.run_dir(&r)).unwrap();
        let before = published(&out);
        // Room for what is there and half the stage's outputs (measured on the tmpfs itself).
        let half_kb = output_bytes(&saved.join(&r.stage).join(&r.key)) / 2048;
        for fault in ["disk full", "read-only"] {
            let mount = match fault {
                "disk full" => format!(
                    "rm -rf stash && mkdir stash && cp -a out/. stash/ && mount -t tmpfs -o size=256m tmpfs out && cp -a stash/. out/ && used=$(df -k --output=used out | tail -1) && mount -o remount,size=$((used + {half_kb}))k out",
                ),
                _ => "mount --bind out out && mount -o remount,bind,ro out".to_string(),
            };
            let script = format!(
                "{mount}\n{pipeline} run {node} >logs-fault.out 2>logs-fault.err || echo $? >logs-fault.rc\nfind out -mindepth 2 -maxdepth 2 ! -name '.*' | sort >logs-fault.published\n",
                pipeline = pipeline.display(),
                node = r.node
            );
            let _ = std::fs::remove_file(chain.p.path().join("logs-fault.rc"));
            let ns = in_namespace(chain.p.path(), &script);
            let outcome = (|| -> Result<String, String> {
                if !ns.status.success() {
                    return Err(format!("the namespace script failed: {}", stderr(&ns)));
                }
                let rc = std::fs::read_to_string(chain.p.path().join("logs-fault.rc"))
                    .unwrap_or_default();
                if rc.trim().is_empty() {
                    return Err(format!("{} succeeded despite the fault", r.node));
                }
                let err = std::fs::read_to_string(chain.p.path().join("logs-fault.err")).unwrap();
                let cause = if fault == "disk full" {
                    "No space left on device"
                } else {
                    "Read-only file system"
                };
                let line = one_clean_line(&err, &chain.p.out().display().to_string(), cause)?;
                // Nothing published on the faulty out/ beyond what was there.
                let inside: Vec<String> =
                    std::fs::read_to_string(chain.p.path().join("logs-fault.published"))
                        .unwrap()
                        .lines()
                        .map(|l| l.trim_start_matches("out/").to_string())
                        .filter(|l| l.len() > 64)
                        .collect();
                let new: Vec<&String> = inside.iter().filter(|r| !before.contains(r)).collect();
                if !new.is_empty() {
                    return Err(format!("published on the faulty out/: {new:?}"));
                }
                Ok(line)
            })();
            // The real out/ (the fault is gone): nothing new, then the same command succeeds.
            let outcome = outcome.and_then(|line| {
                if published(&out) != before {
                    return Err("out/ changed".into());
                }
                let rerun = chain.p.pipeline(&["run", &r.node]);
                if !rerun.status.success() {
                    return Err(format!("the later run failed: {}", output_text(&rerun)));
                }
                let text = stdout(&rerun);
                let problems = chain.matches_reference(&text, &[r.node.as_str()]);
                if !problems.is_empty() {
                    return Err(problems.join("; "));
                }
                std::fs::remove_dir_all(chain.run_dir(&r)).unwrap();
                Ok(line)
            });
            cases.push(Case {
                node: r.node.clone(),
                fault,
                outcome,
            });
        }
    }
    let mut table = Table::new(
        "machine faults",
        &[
            "stage",
            "fault",
            "clean one-line error, nothing published, later run ok",
            "the error line",
        ],
    );
    let mut problems = Vec::new();
    for c in &cases {
        let (ok, text) = match &c.outcome {
            Ok(line) => ("yes", line.replace('|', "\\|")),
            Err(e) => {
                problems.push(format!("{} / {}: {e}", c.node, c.fault));
                ("NO", e.lines().next().unwrap_or("").replace('|', "\\|"))
            }
        };
        table.row(vec![
            c.node.clone(),
            c.fault.into(),
            ok.into(),
            format!(
                "`{}`",
                shorten(&text, &chain.p.path().display().to_string())
            ),
        ]);
    }
    table.emit("");
    summary_row(
        6,
        "disk full (tmpfs) and read-only out/",
        &format!("{} cases (9 nodes × 2)", cases.len()),
        problems.len(),
        "one error line naming the path, nothing published, the later run ok",
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The project path shown as `<project>` in the table.
fn shorten(line: &str, project: &str) -> String {
    line.replace(project, "<project>")
}

fn output_bytes(dir: &Path) -> u64 {
    pgolf_store::Manifest::read(dir)
        .unwrap()
        .outputs
        .iter()
        .map(|o| o.bytes.div_ceil(4096) * 4096)
        .sum::<u64>()
        + 8192
}

/// A memo that is truncated, or that lies: the identity memo names a wrong identity for a stage
/// executable (stamps kept); the hash memo keeps a file's size and mtime while its content
/// changed (an edit with the mtime put back), or names a hash it never had with every stamp
/// right. Never a run published under a key that is not its content's: re-hashed (ctime and
/// inode change with any edit) or refused (the stage keys its own inputs; the driver's plan from
/// a lying memo disagrees and is refused, and the next run plans right).
#[test]
fn truncated_or_lying_memos_are_rehashed_or_refused_never_published_under_a_wrong_key() {
    let mut rows = Vec::new();
    // Identity memo.
    let chain = Chain::new();
    let identity_memo = chain.p.out().join(".identity-cache.json");
    let ema = chain.reference("ema-finalize").clone();
    // Truncated: re-asked, everything fresh as before.
    let bytes = std::fs::read(&identity_memo).unwrap();
    std::fs::write(&identity_memo, &bytes[..bytes.len() / 2]).unwrap();
    let out = chain.p.ok(&["run"]);
    assert!(
        !out.contains(" ran "),
        "a truncated identity memo made something rerun: {out}"
    );
    rows.push(vec![
        "identity memo truncated".to_string(),
        "re-asked; all 9 runs reused".into(),
    ]);

    // Lying: ema-finalize's identity replaced (its stamps kept), its run removed.
    let mut memo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&identity_memo).unwrap()).unwrap();
    let mut lied = false;
    for (exe, entry) in memo.as_object_mut().unwrap() {
        if exe.ends_with("/ema-finalize") {
            entry["identity"] = serde_json::json!("ema-finalize@0000000000000000");
            lied = true;
        }
    }
    assert!(lied, "no ema-finalize entry in {memo}");
    std::fs::write(&identity_memo, serde_json::to_vec(&memo).unwrap()).unwrap();
    std::fs::remove_dir_all(chain.run_dir(&ema)).unwrap();
    let before = published(&chain.p.out());
    let err = chain.p.fails(&["run", "ema-finalize"]);
    let line = one_clean_line(&err, "ema-finalize", "disagree").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        published(&chain.p.out()),
        before,
        "published under the lying memo's key"
    );
    assert!(chain.torn_runs().is_empty());
    let again = chain.p.ok(&["run", "ema-finalize"]);
    assert!(
        chain
            .matches_reference(&again, &["ema-finalize"])
            .is_empty(),
        "{again}"
    );
    rows.push(vec![
        "identity memo names a wrong identity".into(),
        format!(
            "refused, memo dropped; next run right: `{}`",
            shorten(&line, &chain.p.path().display().to_string())
        ),
    ]);

    // Hash memo, on a tokenize reading a raw file.
    let p = TestProject::new(
        "stages:\n  tokenize:\n    inputs: {documents: {file: data/docs.jsonl}}\n    params: {val_docs: 1}\n",
    );
    let docs = "{\"text\": \"alpha beta\"}\n{\"text\": \"gamma delta\"}\n{\"text\": \"epsilon\"}\n";
    p.write("data/docs.jsonl", docs);
    let file = p.path().join("data/docs.jsonl");
    let old_mtime = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let set_mtime = || {
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old_mtime)
            .unwrap()
    };
    set_mtime();
    let first = p.ok(&["run"]);
    let k1 = short_key_of(&first, "tokenize");
    let memo_path = p.out().join(".hash-cache.json");
    // Truncated memo: re-hashed, reused.
    let bytes = std::fs::read(&memo_path).unwrap();
    std::fs::write(&memo_path, &bytes[..bytes.len() / 3]).unwrap();
    let out = p.ok(&["run"]);
    assert_eq!(status_of(&out, "tokenize"), "reused", "{out}");
    rows.push(vec![
        "hash memo truncated".into(),
        "re-hashed; run reused (same key)".into(),
    ]);

    // The file edited with its size and mtime kept: its ctime changed, so it is re-hashed.
    p.write("data/docs.jsonl", &docs.replace("alpha", "ALPHA"));
    set_mtime();
    let out = p.ok(&["run"]);
    let k2 = short_key_of(&out, "tokenize");
    assert_eq!(status_of(&out, "tokenize"), "ran", "{out}");
    assert_ne!(k1, k2, "an edit with size and mtime kept was not seen");
    rows.push(vec![
        "file edited, size and mtime kept (memo stale)".into(),
        "re-hashed (ctime): new key, ran".into(),
    ]);

    // A forged memo: every stamp right, the hash of the old content. The driver plans the old
    // key; with that run gone the stage runs, keys its input from the bytes, and is refused.
    let old_hash = blake3::hash(docs.as_bytes()).to_hex().to_string();
    let mut memo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&memo_path).unwrap()).unwrap();
    for (path, entry) in memo.as_object_mut().unwrap() {
        if path.ends_with("docs.jsonl") {
            entry["blake3"] = serde_json::json!(old_hash);
            // Settled: hashed well after the file's last change.
            let ctime = entry["stamp"]["ctime_ns"].as_i64().unwrap();
            entry["hashed_ns"] = serde_json::json!(ctime + 10_000_000_000);
        }
    }
    std::fs::write(&memo_path, serde_json::to_vec(&memo).unwrap()).unwrap();
    for k in p.runs("tokenize") {
        std::fs::remove_dir_all(p.out().join("tokenize").join(k)).unwrap();
    }
    let err = p.fails(&["run"]);
    let line = one_clean_line(&err, "tokenize", "disagree").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.runs("tokenize").is_empty(),
        "published under the forged memo: {:?}",
        p.runs("tokenize")
    );
    let out = p.ok(&["run"]);
    assert_eq!(
        short_key_of(&out, "tokenize"),
        k2,
        "the next run does not key the file by its bytes: {out}"
    );
    rows.push(vec![
        "hash memo forged (stamps right, old hash)".into(),
        format!(
            "refused, stage refreshed the memo; next run right: `{}`",
            shorten(&line, &p.path().display().to_string())
        ),
    ]);

    let mut table = Table::new("lying and truncated memos", &["memo fault", "outcome"]);
    for r in rows {
        table.row(r);
    }
    table.emit("");
    summary_row(
        7,
        "truncated and lying memos",
        &format!("{} cases", table.rows.len()),
        0,
        "re-hashed or refused; never published under a wrong key",
    );
}

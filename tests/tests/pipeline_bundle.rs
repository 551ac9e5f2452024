//! `pipeline export` / `pipeline import`: runs move between projects (machines) and stay fresh;
//! a tampered or truncated bundle is refused and leaves nothing behind.

use pgolf_e2e::project::{status_of, TestProject, CHAIN};
use std::path::Path;

fn chain() -> TestProject {
    let p = TestProject::new(CHAIN);
    p.write("data/a.txt", "alpha");
    p
}

/// A bundle of `last` with its upstream runs, from a project that ran the chain.
fn exported(dir: &Path) -> (TestProject, std::path::PathBuf) {
    let p = chain();
    p.ok(&["run"]);
    let bundle = dir.join("last.tar.zst");
    let out = p.ok(&[
        "export",
        "last",
        "-o",
        bundle.to_str().unwrap(),
        "--with-deps",
    ]);
    assert!(out.contains("3 run(s)"), "{out}");
    (p, bundle)
}

#[test]
fn an_imported_closure_is_fresh_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_origin, bundle) = exported(tmp.path());
    let other = chain();
    let out = other.ok(&["import", bundle.to_str().unwrap()]);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("imported echo-stage/"))
            .count(),
        3,
        "{out}"
    );
    let status = other.ok(&["status"]);
    for node in ["source", "middle", "last"] {
        assert_eq!(status_of(&status, node), "fresh", "{status}");
    }
    let run = other.ok(&["run"]);
    assert!(!run.contains(" ran "), "{run}");
    // Importing again skips what is there.
    let again = other.ok(&["import", bundle.to_str().unwrap()]);
    assert_eq!(
        again
            .lines()
            .filter(|l| l.starts_with("already present"))
            .count(),
        3,
        "{again}"
    );
}

#[test]
fn an_imported_run_without_its_inputs_is_used_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = chain();
    origin.ok(&["run"]);
    let bundle = tmp.path().join("last-only.tar.zst");
    origin.ok(&["export", "last", "-o", bundle.to_str().unwrap()]);
    let other = chain();
    other.ok(&["import", bundle.to_str().unwrap()]);
    assert_eq!(other.runs("echo-stage").len(), 1);
    let run = other.ok(&["run", "last"]);
    assert_eq!(status_of(&run, "last"), "reused", "{run}");
    assert_eq!(status_of(&run, "middle"), "not", "{run}");
    assert_eq!(
        other.runs("echo-stage").len(),
        1,
        "upstream runs were built though not needed"
    );
}

#[test]
fn export_by_key_prefix_and_bad_prefixes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = chain();
    p.ok(&["run"]);
    let key = p.runs("echo-stage")[0].clone();
    let bundle = tmp.path().join("one.tar.zst");
    let out = p.ok(&["export", &key[..10], "-o", bundle.to_str().unwrap()]);
    assert!(out.contains("1 run(s)"), "{out}");
    let err = p.fails(&["export", "zzzz", "-o", bundle.to_str().unwrap()]);
    assert!(err.contains("neither a node nor a key prefix"), "{err}");
    let fresh_project = chain();
    let err = fresh_project.fails(&["export", "last", "-o", bundle.to_str().unwrap()]);
    assert!(err.contains("node last has no fresh run"), "{err}");
}

#[test]
fn a_tampered_bundle_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_origin, bundle) = exported(tmp.path());
    // Change one byte of an output inside the bundle (same size), then repack.
    let tampered = tmp.path().join("tampered.tar.zst");
    let mut data = unpack(&bundle);
    let pos = find(&data, b"text: l").expect("the last run's out.txt is in the bundle");
    data[pos + 6] = b'X';
    std::fs::write(&tampered, zstd::encode_all(data.as_slice(), 3).unwrap()).unwrap();

    let other = chain();
    let err = other.fails(&["import", tampered.to_str().unwrap()]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("refused") && err.contains("content hash differs"),
        "{err}"
    );
    assert_nothing_imported(&other);
}

#[test]
fn a_truncated_bundle_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_origin, bundle) = exported(tmp.path());
    let bytes = std::fs::read(&bundle).unwrap();
    let other = chain();
    for cut in [bytes.len() / 2, bytes.len() - 8] {
        let truncated = tmp.path().join(format!("cut-{cut}.tar.zst"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let err = other.fails(&["import", truncated.to_str().unwrap()]);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("not a complete pgolf bundle") || err.contains("refused"),
            "{err}"
        );
        assert_nothing_imported(&other);
    }
    // A bundle cut at an entry boundary still decompresses; its index shows runs are missing.
    let mut data = unpack(&bundle);
    let at = find(&data, b"text: l").unwrap();
    data.truncate(at - at % 512 - 512); // just before that file's header
    let short = tmp.path().join("short.tar.zst");
    std::fs::write(&short, zstd::encode_all(data.as_slice(), 3).unwrap()).unwrap();
    let err = other.fails(&["import", short.to_str().unwrap()]);
    assert!(err.contains("refused"), "{err}");
    assert_nothing_imported(&other);
}

fn unpack(bundle: &Path) -> Vec<u8> {
    zstd::decode_all(std::fs::File::open(bundle).unwrap()).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn assert_nothing_imported(p: &TestProject) {
    assert!(p.runs("echo-stage").is_empty());
    let leftovers: Vec<String> = p
        .out_listing()
        .into_iter()
        .filter(|n| n.starts_with(".import") || n.contains("echo-stage/"))
        .collect();
    let locks_only = leftovers.iter().all(|n| n.contains(".locks"));
    assert!(locks_only, "left behind: {leftovers:?}");
}

//! `--device`: the adapter listing, picking one by name, and the one line a machine without any
//! adapter gets (the Vulkan loader pointed at no driver stands in for such a machine).

use std::process::{Command, Output};

const PORTABLE: &str = env!("CARGO_BIN_EXE_portable-eval");

fn portable(args: &[&str], no_driver: bool) -> Output {
    let mut cmd = Command::new(PORTABLE);
    cmd.args(args);
    if no_driver {
        // Both spellings of the loader's driver list (VK_DRIVER_FILES since loader 1.3.207).
        cmd.env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json");
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// A stage command line over two empty input folders, writing `out` beside them.
fn empty_inputs() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["data", "artifact"] {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
    }
    let p = |name: &str| dir.path().join(name).display().to_string();
    let args = vec![
        "--out".into(),
        p("out"),
        "--in".into(),
        format!("data={}", p("data")),
        "--in".into(),
        format!("artifact={}", p("artifact")),
    ];
    (dir, args)
}

#[test]
fn list_numbers_the_adapters_and_the_cpu_one_is_there() {
    let out = portable(&["--device", "list"], false);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().starts_with("0: "), "{text}");
    // CI and developer machines have Mesa's software Vulkan (scripts/setup.sh installs it).
    assert!(text.contains("CPU"), "{text}");
}

#[test]
fn no_adapter_is_one_clear_line_and_nothing_is_written() {
    let out = portable(&["--device", "list"], true);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: portable-eval: no adapter"), "{err}");

    // A stage run: the adapter is chosen before any input is read.
    let (dir, args) = empty_inputs();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--device", "gpu"]);
    let out = portable(&args, true);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: portable-eval: no adapter"), "{err}");
    assert!(
        !dir.path().join("out").exists(),
        "nothing half-written in --out"
    );
}

#[test]
fn an_unknown_adapter_name_lists_the_ones_there_are() {
    let (_dir, args) = empty_inputs();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--device", "no-such-gpu"]);
    let out = portable(&args, false);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--device no-such-gpu: no adapter by that name (0: "),
        "{err}"
    );
}

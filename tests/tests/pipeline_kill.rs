//! SIGKILL the driver and its stage mid-run: nothing half-written is taken as complete, and a
//! rerun completes correctly.

use pgolf_e2e::project::{line_of, status_of, TestProject};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_killed_run_leaves_nothing_that_looks_complete_and_a_rerun_completes() {
    let p = TestProject::new("");
    let gate = p.path().join("gate");
    let yaml = format!(
        "stages:\n  first: {{exe: echo-stage, params: {{text: one}}}}\n  held:\n    exe: echo-stage\n    inputs: {{up: first}}\n    params: {{text: two, hold_while_exists: {}}}\n  after: {{exe: echo-stage, inputs: {{up: held}}}}\n",
        gate.display()
    );
    p.write("pipeline.yaml", &yaml);
    std::fs::write(&gate, "").unwrap();

    let mut driver = p
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = wait_for_partial(&p.out().join("echo-stage"));
    let stage_pid = std::fs::read_to_string(&partial)
        .unwrap()
        .trim()
        .trim_start_matches("pid: ")
        .to_string();
    driver.kill().unwrap(); // SIGKILL
    driver.wait().unwrap();
    // The stage dies with its driver (it could never be published without it).
    let start = Instant::now();
    while !pgolf_e2e::process_gone(stage_pid.parse().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the stage process {stage_pid} outlived its driver"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&gate).unwrap();

    // Only `first` finished; the held run's half-written temp dir is not a run.
    assert_eq!(p.runs("echo-stage").len(), 1);
    let status = p.ok(&["status"]);
    assert_eq!(status_of(&status, "first"), "fresh", "{status}");
    // The killed node is stale, and status says why: the dead run's temp dir is there.
    assert_eq!(status_of(&status, "held"), "stale", "{status}");
    assert!(
        line_of(&status, "held").contains("interrupted: out/echo-stage/.tmp-"),
        "{status}"
    );

    let out = p.ok(&["run"]);
    assert_eq!(status_of(&out, "first"), "reused", "{out}");
    assert_eq!(status_of(&out, "held"), "ran", "{out}");
    assert_eq!(status_of(&out, "after"), "ran", "{out}");
    let held = p.run_dir_of(&out, "echo-stage", "held");
    assert!(!held.join("partial.txt").exists());
    assert!(std::fs::read_to_string(held.join("out.txt"))
        .unwrap()
        .contains("text: two"));
    let temps: Vec<String> = std::fs::read_dir(p.out().join("echo-stage"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(
        temps.is_empty(),
        "the rerun left the dead run's temp dir: {temps:?}"
    );
}

/// The `partial.txt` of the held run, once the stage has written it.
fn wait_for_partial(stage_dir: &Path) -> PathBuf {
    let start = Instant::now();
    loop {
        let found = std::fs::read_dir(stage_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("partial.txt"))
            .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.ends_with('\n')));
        if let Some(path) = found {
            assert!(path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-"));
            return path;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the held stage never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! `pipeline gc`: removes runs no profile reaches and temp dirs of dead drivers; keeps the rest.

use pgolf_e2e::project::{status_of, TestProject, CHAIN};

#[test]
fn gc_removes_unreachable_runs_and_dead_leftovers_only() {
    let yaml = format!("{CHAIN}profiles:\n  other: {{last: {{params: {{text: other}}}}}}\n");
    let p = TestProject::new(&yaml);
    p.write("data/a.txt", "alpha");
    p.ok(&["run"]);
    p.ok(&["run", "--profile", "other"]);
    p.ok(&["run", "--set", "middle.value=8,9"]); // sweep runs: not any profile's current keys
    assert_eq!(p.runs("echo-stage").len(), 4 + 4);
    // A dead driver's leftovers.
    let dead = format!(".tmp-{}-999999", "a".repeat(64));
    p.write(&format!("out/echo-stage/{dead}/partial.txt"), "half");
    p.write("out/.import-999999/echo-stage/x", "unverified");

    let dry = p.ok(&["gc", "--dry-run"]);
    assert_eq!(
        dry.lines()
            .filter(|l| l.starts_with("would remove"))
            .count(),
        6,
        "{dry}"
    );
    assert_eq!(p.runs("echo-stage").len(), 8, "--dry-run removed something");

    let out = p.ok(&["gc"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("removed")).count(),
        6,
        "{out}"
    );
    assert!(out.contains(&format!("removed echo-stage/{dead}")), "{out}");
    assert!(
        out.contains("removed .import-999999 (unfinished import"),
        "{out}"
    );
    assert!(
        !p.out().join(".import-999999").exists() && !p.out().join(".locks/import-999999").exists()
    );
    assert_eq!(p.runs("echo-stage").len(), 4);
    let other = p.ok(&["run", "--profile", "other"]);
    assert!(!other.contains(" ran "), "{other}");
    let run = p.ok(&["run"]);
    assert_eq!(status_of(&run, "last"), "reused", "{run}");
}

#[test]
fn gc_keeps_the_temp_dir_of_a_running_stage() {
    let p = TestProject::new("");
    let gate = p.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    p.write(
        "pipeline.yaml",
        &format!(
            "stages:\n  held: {{exe: echo-stage, params: {{hold_while_exists: {}}}}}\n",
            gate.display()
        ),
    );
    let mut driver = p
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stage_dir = p.out().join("echo-stage");
    let start = std::time::Instant::now();
    let temp = loop {
        let found = std::fs::read_dir(&stage_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|d| d.join("partial.txt").is_file());
        if let Some(dir) = found {
            break dir;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "the held stage never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = p.ok(&["gc"]);
    assert!(out.contains("in use, kept: echo-stage/.tmp-"), "{out}");
    assert!(
        temp.join("partial.txt").is_file(),
        "gc removed a running stage's output"
    );
    std::fs::remove_file(&gate).unwrap();
    assert!(driver.wait().unwrap().success());
    assert_eq!(p.runs("echo-stage").len(), 1);
}

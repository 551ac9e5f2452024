//! `pipeline status`: fresh / stale / never run, and why a stale node is stale.

use pgolf_e2e::project::{line_of, status_of, TestProject, CHAIN};

fn chain() -> TestProject {
    let p = TestProject::new(CHAIN);
    p.write("data/a.txt", "alpha");
    p
}

#[test]
fn never_run_then_fresh() {
    let p = chain();
    let before = p.ok(&["status"]);
    assert_eq!(status_of(&before, "source"), "never", "{before}");
    p.ok(&["run"]);
    let after = p.ok(&["status"]);
    for node in ["source", "middle", "last"] {
        assert_eq!(status_of(&after, node), "fresh", "{after}");
    }
}

#[test]
fn a_param_change_is_explained_with_old_and_new_values() {
    let p = chain();
    p.ok(&["run"]);
    p.write(
        "pipeline.yaml",
        &CHAIN.replace("{text: m, value: 1}", "{text: m, value: 1.5}"),
    );
    let out = p.ok(&["status"]);
    assert_eq!(status_of(&out, "source"), "fresh", "{out}");
    assert!(
        line_of(&out, "middle").contains("params changed (value: 1 → 1.5)"),
        "{out}"
    );
    assert!(
        line_of(&out, "last").contains("input up: upstream middle is stale"),
        "{out}"
    );
}

#[test]
fn a_raw_file_change_names_the_file() {
    let p = chain();
    p.ok(&["run"]);
    p.write("data/a.txt", "changed");
    let out = p.ok(&["status"]);
    assert!(
        line_of(&out, "source").contains("input text: content of data/a.txt changed"),
        "{out}"
    );
}

#[test]
fn an_identity_change_is_explained() {
    // A swapped-in executable (a path relative to pipeline.yaml) standing for a rebuilt stage.
    let echo = pgolf_e2e::bin("echo-stage");
    let script = |salt: &str| {
        format!(
            "#!/bin/sh\nECHO_STAGE_SALT={salt} exec {} \"$@\"\n",
            echo.display()
        )
    };
    let p = TestProject::new("stages:\n  solo: {exe: bin/stage.sh, params: {text: s}}\n");
    p.write("bin/stage.sh", &script("a"));
    make_executable(&p.path().join("bin/stage.sh"));
    p.ok(&["run"]);
    assert_eq!(status_of(&p.ok(&["status"]), "solo"), "fresh");
    p.write("bin/stage.sh", &script("bb"));
    let out = p.ok(&["status"]);
    let line = line_of(&out, "solo");
    assert!(
        line.contains("identity changed (echo-stage@") && line.contains("a → echo-stage@"),
        "{out}"
    );
}

#[test]
fn a_changed_upstream_that_was_rerun_is_named() {
    let p = chain();
    p.ok(&["run"]);
    p.write(
        "pipeline.yaml",
        &CHAIN.replace("{text: m, value: 1}", "{text: m2, value: 1}"),
    );
    p.ok(&["run", "middle"]);
    let out = p.ok(&["status"]);
    assert_eq!(status_of(&out, "middle"), "fresh", "{out}");
    assert!(
        line_of(&out, "last").contains("input up: upstream middle changed"),
        "{out}"
    );
}

#[test]
fn nodes_sharing_a_stage_are_compared_with_their_own_runs() {
    let yaml = "stages:\n  flat: {exe: echo-stage, params: {text: flat}}\n  sliding: {exe: echo-stage, params: {text: sliding}}\n";
    let p = TestProject::new(yaml);
    p.ok(&["run"]);
    p.write(
        "pipeline.yaml",
        &yaml.replace("text: sliding}", "text: sliding2}"),
    );
    let out = p.ok(&["status"]);
    assert_eq!(status_of(&out, "flat"), "fresh", "{out}");
    assert!(
        line_of(&out, "sliding").contains(r#"params changed (text: "sliding" → "sliding2")"#),
        "{out}"
    );
}

#[test]
fn a_profile_switch_is_explained_against_the_other_profile() {
    let p = TestProject::new(&format!(
        "{CHAIN}profiles:\n  other: {{last: {{params: {{text: other}}}}}}\n"
    ));
    p.write("data/a.txt", "alpha");
    p.ok(&["run"]);
    let out = p.ok(&["status", "--profile", "other"]);
    assert!(out.starts_with("pipeline.yaml (profile other)"), "{out}");
    assert_eq!(status_of(&out, "middle"), "fresh", "{out}");
    assert!(
        line_of(&out, "last").contains(r#"params changed (text: "l" → "other")"#),
        "{out}"
    );
}

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

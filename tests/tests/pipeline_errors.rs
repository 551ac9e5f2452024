//! Bad input gets one clear line and a non-zero exit: YAML errors with file:line:col, unknown
//! nodes, cycles, missing inputs, unknown profiles, `--set` on an unknown node, and a stage given
//! an input folder without a valid manifest.

use pgolf_e2e::project::{TestProject, CHAIN};

/// The single error line of a failing `pipeline ARGS`.
fn one_error(p: &TestProject, args: &[&str]) -> String {
    let err = p.fails(args);
    assert_eq!(err.lines().count(), 1, "expected one line, got:\n{err}");
    assert!(err.starts_with("error: pipeline: "), "{err}");
    err.trim_end().to_string()
}

fn chain() -> TestProject {
    let p = TestProject::new(CHAIN);
    p.write("data/a.txt", "alpha");
    p
}

#[test]
fn yaml_syntax_error_names_file_line_and_column() {
    let p = TestProject::new("stages:\n  a:\n    params: {text: [1, 2}\n");
    let err = one_error(&p, &["run"]);
    assert!(
        err.starts_with("error: pipeline: pipeline.yaml:3:"),
        "{err}"
    );
}

#[test]
fn unknown_field_names_its_location() {
    let p = TestProject::new("stages:\n  a:\n    exe: echo-stage\n    parms: {}\n");
    let err = one_error(&p, &["status"]);
    assert!(
        err.starts_with("error: pipeline: pipeline.yaml:4:5: ") && err.contains("parms"),
        "{err}"
    );
}

#[test]
fn unknown_node_in_inputs() {
    let p = TestProject::new("stages:\n  a: {exe: echo-stage, inputs: {up: nowhere}}\n");
    assert_eq!(
        one_error(&p, &["run"]),
        "error: pipeline: pipeline.yaml: node a: input up: unknown node 'nowhere'"
    );
}

#[test]
fn a_cycle_is_named() {
    let p = TestProject::new(
        "stages:\n  a: {exe: echo-stage, inputs: {x: b}}\n  b: {exe: echo-stage, inputs: {x: a}}\n",
    );
    assert_eq!(
        one_error(&p, &["run"]),
        "error: pipeline: pipeline.yaml: cycle: a → b → a"
    );
}

#[test]
fn a_missing_raw_input() {
    let p = TestProject::new(CHAIN);
    let err = one_error(&p, &["run"]);
    assert_eq!(
        err,
        "error: pipeline: node source: input text: data/a.txt: not found"
    );
    let globbed = TestProject::new(
        "stages:\n  a: {exe: echo-stage, inputs: {docs: {files: ['data/*.parquet']}}}\n",
    );
    assert_eq!(
        one_error(&globbed, &["run"]),
        "error: pipeline: node a: input docs: data/*.parquet: no file matches"
    );
    assert!(!p.out().join("echo-stage").exists());
}

#[test]
fn unknown_profile() {
    let p = chain();
    assert_eq!(
        one_error(&p, &["run", "--profile", "gpu"]),
        "error: pipeline: pipeline.yaml: unknown profile 'gpu' (profiles: none)"
    );
}

#[test]
fn set_on_an_unknown_node_or_malformed() {
    let p = chain();
    let err = one_error(&p, &["run", "--set", "midle.value=1"]);
    assert!(
        err.contains("--set midle.value=1: unknown node 'midle'"),
        "{err}"
    );
    let err = one_error(&p, &["run", "--set", "middle=1"]);
    assert!(err.contains("expected NODE.PARAM=VALUE"), "{err}");
}

#[test]
fn unknown_target_and_missing_executable() {
    let p = chain();
    assert!(one_error(&p, &["run", "nope"]).contains("unknown node 'nope'"));
    let missing = TestProject::new("stages:\n  a: {exe: ./no-such-stage}\n");
    let err = one_error(&missing, &["run"]);
    assert!(
        err.contains("node a: executable") && err.contains("no-such-stage not found"),
        "{err}"
    );
}

#[test]
fn no_pipeline_file() {
    let p = chain();
    std::fs::remove_file(p.path().join("pipeline.yaml")).unwrap();
    assert_eq!(
        one_error(&p, &["status"]),
        "error: pipeline: no pipeline.yaml in the current directory (use -f FILE)"
    );
}

#[test]
fn a_stage_given_an_input_folder_without_a_valid_manifest_fails_with_one_line() {
    let p = chain();
    let out_dir = p.path().join("direct-out");
    // A folder with a corrupt manifest, and one left unfinished by a killed run.
    p.write("broken/manifest.json", "{not json");
    p.write("unfinished/.pgolf-incomplete", "");
    p.write("unfinished/partial.txt", "half");
    for (folder, expect) in [
        ("broken", "not a valid pgolf manifest"),
        ("unfinished", "unfinished stage output"),
    ] {
        let arg = format!("up={}", p.path().join(folder).display());
        let out = pgolf_e2e::run(
            "echo-stage",
            &["--out", out_dir.to_str().unwrap(), "--in", &arg],
            p.path(),
        );
        let err = pgolf_e2e::stderr(&out);
        assert!(!out.status.success());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: echo-stage: ") && err.contains(expect),
            "{err}"
        );
        assert!(!out_dir.exists(), "the failed stage left its --out behind");
    }
}

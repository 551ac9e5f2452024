//! The driver reruns exactly what is stale: nothing on a no-op, a changed node and its downstream
//! after a param change, a raw file's consumer after a content change.

use chrono::{DateTime, FixedOffset};
use pgolf_e2e::project::{line_of, status_of, TestProject, CHAIN};
use pgolf_e2e::stdout;
use std::time::Instant;

fn chain() -> TestProject {
    let p = TestProject::new(CHAIN);
    p.write("data/a.txt", "alpha");
    p
}

#[test]
fn first_run_runs_all_and_a_rerun_runs_nothing() {
    let p = chain();
    let first = p.ok(&["run"]);
    for node in ["source", "middle", "last"] {
        assert_eq!(status_of(&first, node), "ran", "{first}");
    }
    let out_txt = std::fs::read_to_string(
        p.out()
            .join("echo-stage")
            .join(&p.runs("echo-stage")[0])
            .join("out.txt"),
    )
    .unwrap();
    assert!(out_txt.contains("text: "), "{out_txt}");
    let before = p.out_listing();

    let clock = Instant::now();
    let again = p.ok(&["run"]);
    let elapsed = clock.elapsed();
    for node in ["source", "middle", "last"] {
        assert_eq!(status_of(&again, node), "reused", "{again}");
    }
    assert_eq!(p.out_listing(), before, "a no-op run changed out/");
    assert!(elapsed.as_secs_f64() < 1.0, "no-op run took {elapsed:?}");
}

#[test]
fn outputs_carry_upstream_content_and_headlines() {
    let p = chain();
    let out = p.ok(&["run"]);
    assert!(line_of(&out, "last").contains("double=4"), "{out}");
    let text =
        std::fs::read_to_string(p.run_dir_of(&out, "echo-stage", "last").join("out.txt")).unwrap();
    assert!(
        text.contains("text: l") && text.contains("text: m") && text.contains("alpha"),
        "{text}"
    );
}

#[test]
fn a_downstream_param_change_reruns_only_that_node_and_below() {
    let p = chain();
    p.ok(&["run"]);
    p.write(
        "pipeline.yaml",
        &CHAIN.replace("{text: m, value: 1}", "{text: m, value: 5}"),
    );
    let out = p.ok(&["run"]);
    assert_eq!(status_of(&out, "source"), "reused", "{out}");
    assert_eq!(status_of(&out, "middle"), "ran", "{out}");
    assert_eq!(status_of(&out, "last"), "ran", "{out}");
    assert_eq!(p.runs("echo-stage").len(), 5);
}

#[test]
fn a_set_override_changes_the_key_like_an_edit() {
    let p = chain();
    p.ok(&["run"]);
    let out = p.ok(&["run", "--set", "last.settings.depth=3"]);
    assert_eq!(status_of(&out, "middle"), "reused", "{out}");
    assert_eq!(status_of(&out, "last"), "ran", "{out}");
    let text =
        std::fs::read_to_string(p.run_dir_of(&out, "echo-stage", "last").join("out.txt")).unwrap();
    assert!(text.contains(r#""settings":{"depth":3}"#), "{text}");
}

#[test]
fn a_raw_input_content_change_reruns_its_consumer() {
    let p = chain();
    p.ok(&["run"]);
    p.write("data/a.txt", "beta!");
    let out = p.ok(&["run"]);
    for node in ["source", "middle", "last"] {
        assert_eq!(status_of(&out, node), "ran", "{out}");
    }
    // Same content again (new mtime): keyed by content, so everything is reused.
    p.write("data/a.txt", "beta!");
    let out = p.ok(&["run"]);
    assert_eq!(status_of(&out, "source"), "reused", "{out}");
}

#[test]
fn a_target_runs_only_its_upstream_closure() {
    let p = chain();
    let out = p.ok(&["run", "middle"]);
    assert_eq!(status_of(&out, "middle"), "ran", "{out}");
    assert!(!out.contains("last"), "{out}");
}

#[test]
fn a_failing_stage_leaves_nothing_and_skips_downstream() {
    let p = chain();
    p.write(
        "pipeline.yaml",
        &CHAIN.replace("{text: m, value: 1}", "{text: m, fail: deliberate failure}"),
    );
    let out = p.pipeline(&["run"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert_eq!(status_of(&text, "source"), "ran", "{text}");
    assert_eq!(status_of(&text, "middle"), "FAILED", "{text}");
    assert_eq!(status_of(&text, "last"), "skipped", "{text}");
    let err = pgolf_e2e::stderr(&out);
    let last = err.lines().last().unwrap();
    assert_eq!(
        last, "error: pipeline: middle failed: echo-stage: deliberate failure",
        "{err}"
    );
    // Only the finished source run, no temp dir, no params file.
    let listing: Vec<String> = std::fs::read_dir(p.out().join("echo-stage"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        listing.iter().all(|n| n.len() == 64 || n == ".locks"),
        "{listing:?}"
    );
    assert_eq!(p.runs("echo-stage").len(), 1);
}

#[test]
fn independent_runs_go_concurrently_with_jobs() {
    let yaml = "\
stages:
  a: {exe: echo-stage, params: {text: a, sleep_ms: 600}}
  b: {exe: echo-stage, params: {text: b, sleep_ms: 600}}
  c: {exe: echo-stage, params: {text: c, sleep_ms: 600}}
  join: {exe: echo-stage, inputs: {x: a, y: b, z: c}}
";
    let p = TestProject::new(yaml);
    let out = p.ok(&["run", "--jobs", "3"]);
    assert_eq!(status_of(&out, "join"), "ran", "{out}");
    // The three runs overlapped in time (their manifests' start and end times), whatever the load.
    let spans: Vec<(DateTime<FixedOffset>, DateTime<FixedOffset>)> = ["a", "b", "c"]
        .iter()
        .map(|node| {
            let manifest =
                pgolf_store::Manifest::read(&p.run_dir_of(&out, "echo-stage", node)).unwrap();
            let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
            (t(&manifest.started), t(&manifest.finished))
        })
        .collect();
    let last_start = spans.iter().map(|s| s.0).max().unwrap();
    let first_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(
        last_start < first_end,
        "--jobs 3 ran them one after another: {spans:?}\n{out}"
    );
}

#[test]
fn a_stage_whose_key_disagrees_with_the_driver_is_refused() {
    // A stand-in executable whose identity differs between `--identity` and the actual run.
    let echo = pgolf_e2e::bin("echo-stage");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --identity ]; then exec {echo}  \"$@\"; fi\nECHO_STAGE_SALT=x exec {echo} \"$@\"\n",
        echo = echo.display()
    );
    let p = TestProject::new("stages:\n  odd: {exe: ./bin/odd-stage, params: {text: o}}\n");
    p.write("bin/odd-stage", &script);
    make_executable(&p.path().join("bin/odd-stage"));
    let err = p.fails(&["run"]);
    assert!(
        err.contains("but the driver computed") && err.contains("disagree"),
        "{err}"
    );
    assert!(p.runs("echo-stage").is_empty());
}

pub fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_raw_folder_input_is_keyed_by_its_content() {
    let p =
        TestProject::new("stages:\n  read: {exe: echo-stage, inputs: {corpus: {file: data}}}\n");
    p.write("data/one.txt", "1");
    p.write("data/sub/two.txt", "2");
    assert_eq!(status_of(&p.ok(&["run"]), "read"), "ran");
    assert_eq!(status_of(&p.ok(&["run"]), "read"), "reused");
    p.write("data/sub/two.txt", "two");
    assert_eq!(status_of(&p.ok(&["run"]), "read"), "ran");
}

#[test]
fn a_pipeline_file_elsewhere_keeps_out_beside_it() {
    let p = TestProject::new("");
    p.write(
        "project/pipeline.yaml",
        "stages:\n  solo: {exe: echo-stage, params: {text: hi}}\n",
    );
    let out = p.ok(&["run", "-f", "project/pipeline.yaml"]);
    assert_eq!(status_of(&out, "solo"), "ran", "{out}");
    assert!(p.path().join("project/out/echo-stage").is_dir());
    assert!(!p.out().exists());
}

#[test]
fn a_damaged_run_is_stale_and_replaced() {
    let p = chain();
    let first = p.ok(&["run"]);
    let middle = p.run_dir_of(&first, "echo-stage", "middle");
    std::fs::write(middle.join("out.txt"), "short").unwrap();
    let status = p.ok(&["status"]);
    assert!(
        line_of(&status, "middle").contains("stale")
            && line_of(&status, "middle").contains("output damaged"),
        "{status}"
    );
    let again = p.ok(&["run"]);
    assert_eq!(status_of(&again, "middle"), "ran", "{again}");
    assert_eq!(status_of(&again, "last"), "reused", "{again}");
    assert!(std::fs::read_to_string(middle.join("out.txt"))
        .unwrap()
        .contains("text: m"));
}

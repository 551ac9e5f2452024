//! The default `pipeline run` (profile cpu-smoke: the synthetic corpus on the CPU) ends with the
//! report and prints its path; the report is made from those very runs: its submission.json
//! carries the scored evaluation's own headline numbers, and every link in report.md resolves to a
//! manifest in the store.

use pgolf_e2e::{bin, workspace_root};
use pgolf_store::files;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

#[test]
fn default_pipeline_run_ends_with_the_report_made_from_its_runs() {
    // A copy of the project's pipeline.yaml in a fresh folder: the real DAG and profile, with its
    // own out/ (cpu-smoke reads no files, so nothing else is needed beside it).
    let tmp = tempfile::tempdir().unwrap();
    fs::copy(
        workspace_root().join("pipeline.yaml"),
        tmp.path().join("pipeline.yaml"),
    )
    .unwrap();
    let out = Command::new(bin("pipeline"))
        .arg("run")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The last line names the report, stored under out/report/<key>/.
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with("report: "))
        .unwrap_or_else(|| panic!("no report line:\n{stdout}"));
    let html = Path::new(line.trim_start_matches("report: ").trim()).to_path_buf();
    assert!(html.is_file(), "{}", html.display());
    let dir = html.parent().unwrap();
    assert_eq!(dir.parent().unwrap().file_name().unwrap(), "report");
    let store = dir.parent().unwrap().parent().unwrap();
    for f in [
        files::REPORT_MD,
        files::SUBMISSION,
        files::PROVENANCE,
        "plots/bpb_by_stage.svg",
        "plots/training.svg",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing from {}", dir.display());
    }

    // submission.json: the scored evaluation's own numbers, read from its manifest in the store.
    let sub = read_json(&dir.join(files::SUBMISSION));
    let (_, result) = sub["seed_results"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let eval_role = format!("eval {}", sub["score_eval"].as_str().unwrap());
    let eval_key = result["runs"][&eval_role]
        .as_str()
        .unwrap_or_else(|| panic!("no {eval_role} run in {result}"));
    let eval_dir = fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path().join(eval_key))
        .find(|p| p.join(files::MANIFEST).is_file())
        .unwrap_or_else(|| panic!("run {eval_key} not in the store"));
    let eval = read_json(&eval_dir.join(files::MANIFEST));
    assert_eq!(sub["val_bpb"], eval["headline"]["val_bpb"]);
    assert_eq!(sub["val_loss"], eval["headline"]["val_loss"]);
    let report_manifest = read_json(&dir.join(files::MANIFEST));
    assert_eq!(
        report_manifest["headline"]["val_bpb"],
        eval["headline"]["val_bpb"]
    );

    // Provenance: every link in report.md opens a manifest in the store.
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    let links: Vec<&str> = md
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|l| l.starts_with("../../"))
        .collect();
    assert!(links.len() >= 5, "{md}");
    for link in links {
        assert!(
            dir.join(link).is_file(),
            "report.md links {link}, which is not in the store"
        );
    }
    // The synthetic corpus' entropy floor and the CPU device are judged in the compliance section.
    assert!(
        md.contains("score ≥ source entropy (synthetic corpus)"),
        "{md}"
    );
    assert!(
        md.contains("## Compliance") && md.contains("## Provenance"),
        "{md}"
    );
}

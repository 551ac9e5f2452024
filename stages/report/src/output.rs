//! Writing the report's files: report.md, report.html, plots/*.svg, submission.json,
//! provenance.json, and the train logs copied (after checking their hashes) into logs/.

use anyhow::{bail, Context, Result};
use pgolf_store::files;
use serde::Serialize;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;

use crate::doc::Doc;
use crate::findings::Findings;
use crate::runs::Run;

fn write(out: &Path, relative: &str, bytes: &[u8]) -> Result<()> {
    let path = out.join(relative);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    fs::write(&path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

pub fn json(out: &Path, relative: &str, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)
        .with_context(|| format!("{relative}: cannot serialise"))?;
    text.push(b'\n');
    write(out, relative, &text)
}

/// The page twice (Markdown and HTML) and each figure's SVG beside report.md.
pub fn page(out: &Path, doc: &Doc) -> Result<()> {
    for fig in doc.figures() {
        write(out, &fig.file(), fig.svg.as_bytes())?;
    }
    write(
        out,
        files::REPORT_MD,
        crate::markdown::render(doc).as_bytes(),
    )?;
    write(out, files::REPORT_HTML, crate::html::render(doc).as_bytes())
}

/// Copies each train run's `train.log` to `logs/`, refusing one whose content is not what its
/// manifest recorded. Returns (file in the report, train run).
pub fn copy_logs<'a>(out: &Path, f: &Findings<'a>) -> Result<Vec<(String, &'a Run)>> {
    let mut copied = Vec::new();
    for (run, label) in f.train_runs() {
        let Some(listed) = run
            .manifest
            .outputs
            .iter()
            .find(|o| o.path == files::TRAIN_LOG)
        else {
            continue;
        };
        let source = run.dir.join(files::TRAIN_LOG);
        let hash = pgolf_store::hashing::hash_file(&source)?;
        if hash != listed.blake3 {
            bail!(
                "{}: content differs from its manifest (corrupted or tampered)",
                source.display()
            );
        }
        let name: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let file = format!(
            "logs/train_{}_{}.log",
            name.trim_matches('_'),
            run.short_key()
        );
        let bytes =
            fs::read(&source).with_context(|| format!("{}: cannot read", source.display()))?;
        write(out, &file, &bytes)?;
        copied.push((file, run));
    }
    Ok(copied)
}

/// Which runs each figure and each part of the report was read from (the manifest lists the same
/// runs as inputs; this says which number came from which).
pub fn provenance(doc: &Doc, f: &Findings, submission_runs: &[String]) -> Value {
    let figures: serde_json::Map<String, Value> = doc
        .figures()
        .map(|fig| (fig.id.clone(), json!(fig.sources)))
        .collect();
    let points: Vec<Value> = f
        .points
        .iter()
        .zip(&f.labels)
        .map(|(p, label)| {
            let runs: serde_json::Map<String, Value> = p
                .runs()
                .iter()
                .map(|r| (r.role.label(), json!(r.key())))
                .collect();
            json!({"label": label, "artifact": p.artifact_key, "runs": runs})
        })
        .collect();
    let inputs: Vec<Value> =
        f.runs.all.iter().map(|r| json!({"input": r.input, "role": r.role.label(), "stage": r.manifest.stage, "key": r.key()})).collect();
    json!({
        "score": f.score_kind.label(),
        "points": points,
        "figures": figures,
        "submission": submission_runs,
        "inputs": inputs,
    })
}

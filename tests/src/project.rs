//! A throwaway pipeline project in a temp dir: a `pipeline.yaml`, raw input files, and `pipeline`
//! commands run inside it. Nodes run `echo-stage` (src/bin/echo-stage.rs), a contract-honouring
//! stage that is fast and whose output shows what flowed into it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, stderr, stdout};

pub struct TestProject {
    dir: tempfile::TempDir,
}

impl TestProject {
    pub fn new(yaml: &str) -> TestProject {
        let project = TestProject {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        project.write("pipeline.yaml", yaml);
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    /// Writes a file relative to the project (folders created).
    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// `pipeline ARGS` in the project folder.
    pub fn pipeline(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn pipeline")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("pipeline"));
        cmd.args(args).current_dir(self.path());
        cmd
    }

    /// `pipeline ARGS`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        assert!(
            out.status.success(),
            "pipeline {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// `pipeline ARGS`, which must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        assert!(
            !out.status.success(),
            "pipeline {args:?} should have failed\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        stderr(&out)
    }

    /// Finished run keys under `out/<stage>/`, sorted.
    pub fn runs(&self, stage: &str) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(self.out().join(stage))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.len() == 64)
            .collect();
        keys.sort();
        keys
    }

    /// Every path under `out/` (relative, sorted), for "nothing changed" checks.
    pub fn out_listing(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                out.push(
                    entry
                        .path()
                        .strip_prefix(root)
                        .unwrap()
                        .display()
                        .to_string(),
                );
                if entry.path().is_dir() {
                    walk(root, &entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.out(), &self.out(), &mut out);
        out.sort();
        out
    }
}

/// The status word of `label` in `pipeline run`/`status` output (`reused`, `ran`, `fresh`, ...).
pub fn status_of(output: &str, label: &str) -> String {
    output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no line for {label} in:\n{output}"))
        .to_string()
}

/// The whole line of `label`.
pub fn line_of<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .unwrap_or_else(|| panic!("no line for {label} in:\n{output}"))
}

/// A three-node chain of echo stages reading a raw file: `source` (reads `data/a.txt`) → `middle`
/// → `last`.
pub const CHAIN: &str = "\
stages:
  source:
    exe: echo-stage
    inputs: {text: {file: data/a.txt}}
    params: {text: s}
  middle:
    exe: echo-stage
    inputs: {up: source}
    params: {text: m, value: 1}
  last:
    exe: echo-stage
    inputs: {up: middle}
    params: {text: l, value: 2}
";

/// The short key (8 hex digits) printed on `label`'s line.
pub fn short_key_of(output: &str, label: &str) -> String {
    line_of(output, label)
        .split_whitespace()
        .skip(1)
        .find(|t| t.len() == 8 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no key on {label}'s line in:\n{output}"))
        .to_string()
}

impl TestProject {
    /// The run directory of `label` as printed in `output` (stored under `out/<stage>/`).
    pub fn run_dir_of(&self, output: &str, stage: &str, label: &str) -> PathBuf {
        let short = short_key_of(output, label);
        let key = self
            .runs(stage)
            .into_iter()
            .find(|k| k.starts_with(&short))
            .unwrap_or_else(|| panic!("no run {short} of {stage}"));
        self.out().join(stage).join(key)
    }
}

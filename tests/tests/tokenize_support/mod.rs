//! Shared by the tokenize_* tests: run the real `tokenize` binary into a temp folder and read what
//! it wrote with the pgolf-data readers.

#![allow(dead_code)] // each test file uses its own subset

use pgolf_data::{list_shards, read_doc_table, DocRecord, Shard, Split};
use pgolf_e2e::{bin, stderr, workspace_root};
use pgolf_store::files;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Run {
    pub dir: tempfile::TempDir,
    pub output: Output,
}

impl Run {
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn manifest(&self) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.out().join(files::MANIFEST)).expect(files::MANIFEST);
        serde_json::from_str(&text).unwrap()
    }

    pub fn headline(&self, name: &str) -> serde_json::Value {
        self.manifest()["headline"][name].clone()
    }

    pub fn docs(&self) -> Vec<DocRecord> {
        read_doc_table(&self.out().join(files::DOC_TABLE)).unwrap()
    }

    /// A split's shards concatenated.
    pub fn tokens(&self, split: Split) -> Vec<u16> {
        list_shards(&self.out(), split)
            .unwrap()
            .iter()
            .flat_map(|p| Shard::open(p).unwrap().tokens().to_vec())
            .collect()
    }

    /// The single error line of a failed run; asserts the run failed cleanly.
    pub fn error(&self) -> String {
        let err = stderr(&self.output);
        assert_eq!(
            self.output.status.code(),
            Some(1),
            "expected exit 1, stderr:\n{err}"
        );
        assert_eq!(err.lines().count(), 1, "expected one line, got:\n{err}");
        assert!(err.starts_with("error: tokenize: "), "{err}");
        assert!(
            !self.out().exists(),
            "a failed run left {} behind",
            self.out().display()
        );
        err.trim_end().to_string()
    }
}

/// Runs `tokenize --out TMP/out --in NAME=PATH... --params TMP/params.json`.
pub fn tokenize(inputs: &[(&str, &Path)], params: serde_json::Value) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let params_path = dir.path().join("params.json");
    std::fs::write(&params_path, params.to_string()).unwrap();
    let mut cmd = Command::new(bin("tokenize"));
    cmd.arg("--out")
        .arg(dir.path().join("out"))
        .arg("--params")
        .arg(&params_path);
    for (name, path) in inputs {
        cmd.arg("--in").arg(format!("{name}={}", path.display()));
    }
    let output = cmd.output().expect("spawn tokenize");
    Run { dir, output }
}

/// Panics with the stage's stderr unless the run succeeded.
pub fn tokenize_ok(inputs: &[(&str, &Path)], params: serde_json::Value) -> Run {
    let run = tokenize(inputs, params);
    assert!(run.ok(), "tokenize failed:\n{}", stderr(&run.output));
    run
}

pub fn python() -> PathBuf {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    python
}

/// Runs a Python snippet with arguments; panics with its stderr on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("spawn python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn sp1024() -> PathBuf {
    pgolf_e2e::shared_material().join("tokenizers/fineweb_1024_bpe.model")
}

pub fn wiki_part(n: usize) -> PathBuf {
    pgolf_e2e::shared_material().join(format!("data/enwiki2015/part-{n:02}.parquet"))
}

/// byte260 tokens of a document back to its text (BOS dropped).
pub fn byte260_text(tokens: &[u16]) -> String {
    assert_eq!(tokens[0], 1, "documents start with BOS");
    String::from_utf8(tokens[1..].iter().map(|&t| (t - 4) as u8).collect()).unwrap()
}

/// Writes a one-batch Parquet file with the given columns.
pub fn write_parquet(path: &Path, columns: Vec<(&str, arrow::array::ArrayRef)>) {
    let batch = arrow::array::RecordBatch::try_from_iter(columns).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

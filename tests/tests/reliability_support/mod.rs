//! Shared by the reliability_* tests (issue 14): the whole stage chain at a tiny size (each stage
//! well under a second on one core), checks of everything under `out/`, output digests that leave
//! out wall-clock fields, process control by pid and process group, and the results table.
//!
//! Counts come from the environment so CI runs a short version and one command the full one
//! (`scripts/reliability.sh`, README "Tests"): `PGOLF_RELIABILITY=full` (50 kills per stage, 25
//! driver kills, more concurrent rounds) or the single counts `PGOLF_KILLS`, `PGOLF_DRIVER_KILLS`;
//! `PGOLF_SEED` seeds every random choice (printed with each table); `PGOLF_RELIABILITY_OUT`
//! names a folder where each test also writes its table rows for the summary.

#![allow(dead_code)] // each test file uses its own subset

use pgolf_e2e::project::{line_of, short_key_of, status_of, TestProject};
use pgolf_e2e::{process_gone, stderr, stdout};
use pgolf_store::Manifest;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// The nodes of [`TINY_CHAIN`] in dependency order, with the stage each stores under.
pub const NODES: [(&str, &str); 9] = [
    ("tokenize", "tokenize"),
    ("train", "train"),
    ("ema-finalize", "ema-finalize"),
    ("gptq-calibrate", "gptq-calibrate"),
    ("quantize-pack", "quantize-pack"),
    ("eval-flat", "ttt-eval"),
    ("eval-sliding", "ttt-eval"),
    ("ngram", "ngram-eval"),
    ("report", "report"),
];

/// The default chain of pipeline.yaml's cpu-smoke profile, shrunk: the built-in synthetic corpus
/// (300 docs), a 2×32 byte-level model for 6 steps, GPTQ int6, all three evaluations, the report.
pub const TINY_CHAIN: &str = "\
stages:
  tokenize:
    params:
      synthetic: {seed: 1337, docs: 300, mean_doc_bytes: 300}
      val_docs: 12
  train:
    inputs: {data: tokenize}
    params:
      model: {vocab_size: 260, num_layers: 2, model_dim: 32, num_heads: 2, num_kv_heads: 1, mlp_mult: 2, seq_len: 64}
      iterations: 6
      warmdown_iters: 2
      max_wallclock_seconds: 0
      train_batch_tokens: 1024
      grad_accum_steps: 1
      val_loss_every: 0
      val_batch_tokens: 4096
      train_log_every: 1
      threads: 1
      ema_decay: 0.5
  ema-finalize:
    inputs: {train: train}
    params: {source: auto}
  gptq-calibrate:
    inputs: {weights: ema-finalize, data: tokenize}
    params: {source: train, sequences: 4, batch_sequences: 4}
  quantize-pack:
    inputs: {weights: ema-finalize, hessians: gptq-calibrate}
    params:
      embed: {method: int8_upstream}
      small_numel: 512
      attn: {method: gptq, bits: 6, clip_sigmas: 12.85}
      mlp: {method: gptq, bits: 6, clip_sigmas: 12.85}
      compressor: zstd
      level: 3
  eval-flat:
    exe: ttt-eval
    inputs: {artifact: quantize-pack, data: tokenize}
    params: {mode: flat, probes: 4}
  eval-sliding:
    exe: ttt-eval
    inputs: {artifact: quantize-pack, data: tokenize}
    params: {mode: sliding, stride: 32, probes: 4}
  ngram:
    exe: ngram-eval
    inputs: {artifact: quantize-pack, data: tokenize}
    params: {mode: mix, order: 2, windows: flat, probes: 4}
  report:
    inputs:
      data: {gather: tokenize}
      train: {gather: train}
      ema: {gather: ema-finalize}
      gptq: {gather: gptq-calibrate}
      artifact: {gather: quantize-pack}
      eval-flat: {gather: eval-flat}
      eval-sliding: {gather: eval-sliding}
      ngram: {gather: ngram}
    params: {score: sliding}
";

pub fn full() -> bool {
    std::env::var("PGOLF_RELIABILITY").is_ok_and(|v| v == "full")
}

/// `name` from the environment, else `full` under `PGOLF_RELIABILITY=full`, else `short`.
pub fn count(name: &str, short: usize, full_count: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { full_count } else { short })
}

pub fn seed() -> u64 {
    std::env::var("PGOLF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14)
}

pub fn rng(salt: u64) -> rand_pcg::Pcg64 {
    rand_pcg::Pcg64::seed_from_u64(seed() ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// What a finished run of one node must be, from the first complete run of the chain.
#[derive(Clone, Debug)]
pub struct Reference {
    pub node: String,
    pub stage: String,
    pub key: String,
    /// path → digest (see [`digests`]).
    pub digests: BTreeMap<String, String>,
    /// The stage's run time in the driver's line (process start to exit).
    pub secs: f64,
}

/// A project holding the tiny chain, run once to completion: the reference of every node.
pub struct Chain {
    pub p: TestProject,
    pub refs: Vec<Reference>,
}

impl Chain {
    pub fn new() -> Chain {
        Chain::with_yaml(TINY_CHAIN)
    }

    pub fn with_yaml(yaml: &str) -> Chain {
        let p = TestProject::new(yaml);
        let out = p.ok(&["run"]);
        let refs = NODES
            .iter()
            .map(|&(node, stage)| {
                let line = line_of(&out, node);
                assert!(
                    line.split_whitespace().nth(1) == Some("ran"),
                    "{node} did not run: {out}"
                );
                let secs = line
                    .split_once("ran (")
                    .and_then(|(_, r)| r.split_once(" s)"))
                    .and_then(|(s, _)| s.trim().parse().ok())
                    .unwrap_or(1.0);
                let dir = p.run_dir_of(&out, stage, node);
                let key = dir.file_name().unwrap().to_string_lossy().to_string();
                Reference {
                    node: node.into(),
                    stage: stage.into(),
                    key,
                    digests: digests(&dir, stage),
                    secs,
                }
            })
            .collect();
        Chain { p, refs }
    }

    /// Another project with the same pipeline file and a copy of this one's `out/` (its own runs,
    /// locks and memos), for trials that run beside this project's.
    pub fn copy(&self) -> Chain {
        let p = TestProject::new(
            &std::fs::read_to_string(self.p.path().join("pipeline.yaml")).unwrap(),
        );
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.p.out())
            .arg(p.path())
            .status()
            .unwrap();
        assert!(status.success());
        Chain {
            p,
            refs: self.refs.clone(),
        }
    }

    /// Runs `node` again from scratch (upstream reused) and takes that as its reference. For the
    /// report, whose outputs quote its inputs' manifests (times, dates): once an upstream stage
    /// was rerun, the same key's report differs in those quotes only.
    pub fn rebaseline(&mut self, node: &str) {
        let i = self.refs.iter().position(|r| r.node == node).unwrap();
        let dir = self.run_dir(&self.refs[i]);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let out = self.p.ok(&["run", node]);
        assert_eq!(status_of(&out, node), "ran", "{out}");
        let r = &mut self.refs[i];
        assert!(r.key.starts_with(&short_key_of(&out, node)), "{out}");
        r.digests = digests(&dir, &r.stage);
    }

    pub fn reference(&self, node: &str) -> &Reference {
        self.refs.iter().find(|r| r.node == node).unwrap()
    }

    pub fn run_dir(&self, r: &Reference) -> PathBuf {
        self.p.out().join(&r.stage).join(&r.key)
    }

    /// `pipeline ARGS` in its own process group (so a test can kill the driver with its stages),
    /// output to files in `logs`.
    pub fn spawn(&self, args: &[&str], env: &[(&str, String)], logs: &Path) -> Child {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(logs).unwrap();
        let mut cmd = self.p.command(args);
        cmd.process_group(0)
            .stdout(std::fs::File::create(logs.join("stdout")).unwrap())
            .stderr(std::fs::File::create(logs.join("stderr")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn pipeline")
    }

    /// The status word of every node (`fresh`, `stale`, `never`, `running`).
    pub fn status(&self) -> (BTreeMap<String, String>, String) {
        let out = self.p.ok(&["status"]);
        let words = NODES
            .iter()
            .map(|&(n, _)| (n.to_string(), status_of(&out, n)))
            .collect();
        (words, out)
    }

    /// Checks every published run and returns the problems (empty: no torn run).
    pub fn torn_runs(&self) -> Vec<String> {
        torn_runs(&self.p.out(), &self.refs)
    }

    /// After a rerun printed `out`: each of `nodes` is there under its reference key with its
    /// reference outputs. Returns the problems.
    pub fn matches_reference(&self, out: &str, nodes: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        for &node in nodes {
            let r = self.reference(node);
            let short = short_key_of(out, node);
            if !r.key.starts_with(&short) {
                problems.push(format!(
                    "{node}: rerun key {short} ≠ reference {}",
                    &r.key[..8]
                ));
                continue;
            }
            let dir = self.run_dir(r);
            if !dir.is_dir() {
                problems.push(format!("{node}: no run at {}", dir.display()));
                continue;
            }
            let now = digests(&dir, &r.stage);
            if now != r.digests {
                let differ: Vec<&String> = r
                    .digests
                    .keys()
                    .chain(now.keys())
                    .filter(|k| r.digests.get(*k) != now.get(*k))
                    .collect();
                problems.push(format!(
                    "{node}: outputs differ from the reference: {differ:?}"
                ));
            }
        }
        problems
    }
}

/// Every `out/<stage>/<key>/` folder: its manifest reads, names that stage and key, and every file
/// is listed with its size and BLAKE3 (nothing unlisted). A run whose key is a reference key must
/// also hold the reference outputs (a complete-looking run with wrong content is torn too).
pub fn torn_runs(out: &Path, refs: &[Reference]) -> Vec<String> {
    let mut problems = Vec::new();
    for stage_dir in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let stage = stage_dir.file_name().to_string_lossy().to_string();
        if stage.starts_with('.') || !stage_dir.path().is_dir() {
            continue;
        }
        for run in std::fs::read_dir(stage_dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let key = run.file_name().to_string_lossy().to_string();
            if key.starts_with('.') {
                continue; // temp dirs, params files, locks: not published runs
            }
            let dir = run.path();
            let checked = Manifest::read(&dir).and_then(|m| {
                anyhow::ensure!(
                    m.stage == stage && m.key == key,
                    "manifest names {}/{}",
                    m.stage,
                    m.key
                );
                m.verify_hashes(&dir)
            });
            if let Err(e) = checked {
                problems.push(format!("{stage}/{key}: {e:#}"));
                continue;
            }
            if let Some(r) = refs
                .iter()
                .find(|r| r.key == key && r.stage == stage && !r.digests.is_empty())
            {
                if digests(&dir, &r.stage) != r.digests {
                    problems.push(format!(
                        "{stage}/{key}: verifies but differs from the reference"
                    ));
                }
            }
        }
    }
    problems
}

/// Per output file of a finished run: its BLAKE3, except for the files that record wall-clock
/// times (train's log and metrics, the evaluations' summaries), whose digest leaves those fields
/// out; plus the headline, timing figures left out. Two runs of one key agree on all of it.
pub fn digests(dir: &Path, stage: &str) -> BTreeMap<String, String> {
    let m = Manifest::read(dir).expect("a finished run");
    let mut out = BTreeMap::new();
    for f in &m.outputs {
        let path = dir.join(&f.path);
        let name = f.path.as_str();
        let digest = match (stage, name) {
            ("train", "train.log") => {
                hash_text(&mask_log(&std::fs::read_to_string(&path).unwrap()))
            }
            ("train", "metrics.parquet") => parquet_digest(&path, &["step_ms", "elapsed_ms"]),
            (_, "summary.json") => {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                hash_text(&untimed(v).to_string())
            }
            _ => f.blake3.clone(),
        };
        out.insert(name.to_string(), digest);
    }
    let headline = serde_json::to_value(&m.headline).unwrap();
    out.insert(
        "(headline)".into(),
        hash_text(&untimed(headline).to_string()),
    );
    out
}

fn hash_text(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex().to_string()
}

fn is_timing(name: &str) -> bool {
    name.contains("seconds")
        || name.contains("per_second")
        || name.ends_with("_ms")
        || name.starts_with("ms_")
        || name.contains("time")
        || name == "date"
}

/// JSON without its timing fields (at any depth).
pub fn untimed(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(k, _)| !is_timing(k))
                .map(|(k, v)| (k, untimed(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(untimed).collect())
        }
        other => other,
    }
}

/// train.log with the values of its `name:value` timing fields replaced by `*`.
pub fn mask_log(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split(' ')
                .map(|tok| match tok.split_once(':') {
                    Some((name, _)) if is_timing(name) || name == "step_avg" => format!("{name}:*"),
                    _ => tok.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parquet_digest(path: &Path, skip: &[&str]) -> String {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut h = blake3::Hasher::new();
    for batch in reader {
        let batch = batch.unwrap();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            if skip.contains(&field.name().as_str()) {
                continue;
            }
            h.update(format!("{}={:?};", field.name(), column).as_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

/// Pids of `pid`'s child processes (every thread's).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A child of `driver` that is a stage run (its command line has `--out`), once one is running.
pub fn wait_for_stage(driver: &mut Child, limit: Duration) -> Option<u32> {
    let start = Instant::now();
    loop {
        for c in children(driver.id()) {
            let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            if cmdline.split(|&b| b == 0).any(|a| a == b"--out") && !process_gone(c) {
                return Some(c);
            }
        }
        if driver.try_wait().ok().flatten().is_some() || start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// SIGKILL to one process (`pid > 0`) or a process group (`-pgid`).
pub fn sigkill(target: i32) -> bool {
    // SAFETY: kill(2) has no memory effects; the targets are processes this test spawned.
    unsafe { libc::kill(target, libc::SIGKILL) == 0 }
}

/// Waits for `file` to hold a pid (a hold point was reached).
pub fn wait_for_hold(file: &Path, driver: &mut Child, limit: Duration) -> Option<u32> {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Some(pid);
        }
        if driver.try_wait().ok().flatten().is_some() || start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn output_text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

/// One row of a results table, also written to `PGOLF_RELIABILITY_OUT/<table>.tsv` when set.
pub struct Table {
    pub name: &'static str,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(name: &'static str, header: &[&'static str]) -> Table {
        Table {
            name,
            header: header.to_vec(),
            rows: vec![],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A markdown table.
    pub fn render(&self) -> String {
        let mut s = format!(
            "| {} |\n|{}\n",
            self.header.join(" | "),
            "---|".repeat(self.header.len())
        );
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }

    /// Prints the table (with the seed) and writes it for the summary.
    pub fn emit(&self, note: &str) {
        let text = format!(
            "{} (seed {}){}\n\n{}",
            self.name,
            seed(),
            note,
            self.render()
        );
        println!("\n{text}");
        if let Some(dir) = std::env::var_os("PGOLF_RELIABILITY_OUT") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join(format!("{}.md", self.name.replace(' ', "_"))),
                text,
            )
            .unwrap();
        }
    }
}

/// A uniformly random moment in `0..=max`.
pub fn random_delay(rng: &mut impl Rng, max: Duration) -> Duration {
    Duration::from_micros(rng.random_range(0..=max.as_micros() as u64))
}

/// One row of the suite's summary (scripts/reliability.sh prints them in `order`): what was tried,
/// how many went wrong (must be 0), and a note.
pub fn summary_row(order: u32, area: &str, tried: &str, wrong: usize, note: &str) {
    println!("summary: {area}: {tried}, {wrong} wrong; {note}");
    if let Some(dir) = std::env::var_os("PGOLF_RELIABILITY_OUT") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("summary-{order:02}.row")),
            format!("| {area} | {tried} | {wrong} | {note} |\n"),
        )
        .unwrap();
    }
}

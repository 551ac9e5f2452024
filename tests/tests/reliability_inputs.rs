//! Bad input, exhaustively (issue 14 item 5): one table of every input kind a stage or the driver
//! reads — token shards, byte sidecars, Parquet documents, tokenizer models, safetensors weights,
//! artifacts, bundles, pipeline.yaml and params JSON — each damaged the ways the issue lists, fed
//! to the real binary that reads it. The good files are the real outputs of the tiny chain
//! (reliability_support::TINY_CHAIN), so every case is one change to a file a stage really wrote.
//!
//! Every case must end with
//! - a non-zero exit status, not a signal;
//! - *one line*: for a stage run by hand, its whole stderr is exactly one line (`\n`-terminated
//!   or not), starting `error: <stage>: `; for `pipeline`, exactly one line starts
//!   `error: pipeline: `, it is the last line of stderr, and the only other `error: ` line allowed
//!   is the failing stage's own (passed through), which it repeats; that line names the file (a
//!   fragment of its path) and the problem (a fragment of the message, case-insensitive);
//! - no panic: no `panicked at`, `stack backtrace` or `RUST_BACKTRACE` anywhere on stderr;
//! - nothing written: a stage's `--out` does not exist afterwards and its case folder holds
//!   exactly what it held before; a driver's `out/` has no new published run, temp dir or import
//!   staging dir.

mod reliability_support;

use pgolf_e2e::{bin, stderr};
use reliability_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What a case runs.
enum Run {
    /// `<stage> --out CASE/out --in NAME=PATH... [--params CASE/params.json]`.
    Stage {
        exe: &'static str,
        inputs: Vec<(&'static str, PathBuf)>,
        params: Option<String>,
    },
    /// `pgolf-evaluate ARTIFACT DATA` (the counted evaluator's reader, no libtorch).
    Evaluate { artifact: PathBuf, data: PathBuf },
    /// `pipeline ARGS` in a project folder.
    Pipeline { project: PathBuf, args: Vec<String> },
}

struct Case {
    kind: &'static str,
    what: String,
    run: Run,
    /// Fragments the error line must hold: the file, and the problem.
    file: String,
    problem: String,
}

fn case(kind: &'static str, what: &str, run: Run, file: &str, problem: &str) -> Case {
    Case {
        kind,
        what: what.into(),
        run,
        file: file.into(),
        problem: problem.into(),
    }
}

/// (what, how the good bytes are damaged, the problem the error must name).
type ByteCase = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, &'static str);
/// (what, the columns of the file, the problem the error must name).
type ParquetCase = (
    &'static str,
    Vec<(&'static str, arrow::array::ArrayRef)>,
    &'static str,
);

/// Every path below `dir` (relative, sorted).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            if e.path().is_dir() && !e.path().is_symlink() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn no_panic(err: &str) -> Result<(), String> {
    for bad in ["panicked at", "stack backtrace", "RUST_BACKTRACE"] {
        if err.contains(bad) {
            return Err(format!("a panic ({bad}): {err}"));
        }
    }
    Ok(())
}

fn names(line: &str, c: &Case) -> Result<(), String> {
    if line.contains(&c.file) && line.to_lowercase().contains(&c.problem.to_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "the line does not name {:?} and {:?}: {line}",
            c.file, c.problem
        ))
    }
}

fn exit_nonzero(out: &Output) -> Result<(), String> {
    match out.status.code() {
        Some(0) => Err(format!("exit 0: {}", output_text(out))),
        Some(_) => Ok(()),
        None => Err(format!(
            "killed by a signal ({}): {}",
            out.status,
            stderr(out)
        )),
    }
}

/// Runs one case in its own folder `dir`; `Ok(line)` when it met every rule.
fn check(c: &Case, dir: &Path) -> Result<String, String> {
    match &c.run {
        Run::Stage {
            exe,
            inputs,
            params,
        } => {
            let before = listing(dir);
            let mut cmd = Command::new(bin(exe));
            let out_dir = dir.join("out");
            cmd.arg("--out").arg(&out_dir).current_dir(dir);
            for (name, path) in inputs {
                cmd.arg("--in").arg(format!("{name}={}", path.display()));
            }
            if let Some(text) = params {
                let path = dir.join("params.json");
                std::fs::write(&path, text).unwrap();
                cmd.arg("--params").arg(&path);
            }
            let before = if params.is_some() {
                listing(dir)
            } else {
                before
            };
            let out = cmd.output().unwrap();
            exit_nonzero(&out)?;
            let err = stderr(&out);
            no_panic(&err)?;
            let lines: Vec<&str> = err.lines().collect();
            let [line] = lines.as_slice() else {
                return Err(format!("{} stderr lines: {err}", lines.len()));
            };
            if !line.starts_with(&format!("error: {exe}: ")) {
                return Err(format!("not `error: {exe}: `: {line}"));
            }
            names(line, c)?;
            if out_dir.exists() {
                return Err(format!("{} was left behind", out_dir.display()));
            }
            if listing(dir) != before {
                return Err("the stage wrote outside its output folder".into());
            }
            Ok(line.to_string())
        }
        Run::Evaluate { artifact, data } => {
            let out = Command::new(bin("pgolf-evaluate"))
                .arg(artifact)
                .arg(data)
                .output()
                .unwrap();
            exit_nonzero(&out)?;
            let err = stderr(&out);
            no_panic(&err)?;
            let lines: Vec<&str> = err.lines().collect();
            let [line] = lines.as_slice() else {
                return Err(format!("{} stderr lines: {err}", lines.len()));
            };
            names(line, c)?;
            Ok(line.to_string())
        }
        Run::Pipeline { project, args } => {
            let out_dir = project.join("out");
            let before = published_and_temps(&out_dir);
            let outside = |p: &Path| -> Vec<String> {
                listing(p)
                    .into_iter()
                    .filter(|e| e != "out" && !e.starts_with("out/"))
                    .collect()
            };
            let outside_before = outside(project);
            let escaped = Path::new("/tmp/pgolf-escaped.txt");
            let _ = std::fs::remove_file(escaped);
            let out = Command::new(bin("pipeline"))
                .args(args)
                .current_dir(project)
                .output()
                .unwrap();
            if outside(project) != outside_before || escaped.exists() {
                return Err("wrote outside out/".into());
            }
            exit_nonzero(&out)?;
            let err = stderr(&out);
            no_panic(&err)?;
            let lines: Vec<&str> = err.lines().collect();
            let driver: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("error: pipeline: "))
                .collect();
            let [line] = driver.as_slice() else {
                return Err(format!("{} `error: pipeline:` lines: {err}", driver.len()));
            };
            if lines.last() != Some(line) {
                return Err(format!("the error line is not the last: {err}"));
            }
            let others: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("error: ") && l != line)
                .collect();
            match others.as_slice() {
                [] => {}
                [stage] if line.ends_with(stage.trim_start_matches("error: ")) => {}
                _ => return Err(format!("other error lines: {others:?}")),
            }
            names(line, c)?;
            let after = published_and_temps(&out_dir);
            if after != before {
                return Err(format!("out/ changed: {before:?} → {after:?}"));
            }
            Ok(line.to_string())
        }
    }
}

/// Published runs, temp dirs and import staging dirs under `out`.
fn published_and_temps(out: &Path) -> Vec<String> {
    listing(out)
        .into_iter()
        .filter(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [top] => top.starts_with(".import-"),
                [stage, run] => {
                    !stage.starts_with('.') && !run.starts_with(".locks") && !run.ends_with(".use")
                }
                _ => false,
            }
        })
        .collect()
}

/// A copy of a run folder without its manifest (a raw folder input), or with it.
fn copy_dir(from: &Path, to: &Path, manifest: bool) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if !manifest && name == "manifest.json" {
            continue;
        }
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(&name), true);
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
    to.to_path_buf()
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn put_i32(bytes: &mut [u8], at: usize, v: i32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn write_parquet(path: &Path, columns: Vec<(&str, arrow::array::ArrayRef)>) {
    let batch = arrow::record_batch::RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Rewrites a safetensors file through `f` (name → (dtype, shape, bytes)).
fn rewrite_safetensors(
    path: &Path,
    f: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    f(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, out).unwrap();
}

/// A `.tar.zst` bundle rewritten entry by entry: (path, kind, data); kind 'f' file, 'l' symlink
/// (data = target). Paths are written into the header bytes as they are (the tar crate refuses
/// `..` when set through its API, as any honest writer would).
fn write_bundle(path: &Path, entries: &[(String, char, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let enc = zstd::Encoder::new(file, 3).unwrap();
    let mut b = tar::Builder::new(enc);
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        h.set_mode(0o644);
        match kind {
            'l' => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            _ => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_slice()).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn read_bundle(path: &Path) -> Vec<(String, char, Vec<u8>)> {
    let dec = zstd::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut a = tar::Archive::new(dec);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((name, 'f', data));
    }
    out
}

#[test]
fn every_bad_input_fails_with_one_line_no_panic_and_writes_nothing() {
    let chain = Chain::new();
    let root = chain.p.path().join("cases");
    std::fs::create_dir_all(&root).unwrap();
    let run_of = |node: &str| chain.run_dir(chain.reference(node));
    let tok = run_of("tokenize");
    let train = run_of("train");
    let qp = run_of("quantize-pack");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(TINY_CHAIN).unwrap();
    let train_params = serde_json::to_string(&yaml["stages"]["train"]["params"]).unwrap();
    let mut cases: Vec<Case> = Vec::new();
    let mut n = 0usize;
    let mut fresh = |tag: &str| -> PathBuf {
        n += 1;
        let d = root.join(format!("{n:03}-{tag}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    // Token shards: the train stage reading a data folder, and tokenize importing a shard folder.
    let shard = "fineweb_train_000000.bin";
    let shard_cases: Vec<ByteCase> = vec![
        (
            "wrong magic",
            Box::new(|b: &mut Vec<u8>| put_i32(b, 0, 1234)),
            "magic",
        ),
        (
            "wrong version",
            Box::new(|b: &mut Vec<u8>| put_i32(b, 4, 7)),
            "version 7",
        ),
        (
            "header count above the file's tokens",
            Box::new(|b: &mut Vec<u8>| {
                let n = i32::from_le_bytes(b[8..12].try_into().unwrap());
                put_i32(b, 8, n + 100)
            }),
            "header",
        ),
        (
            "header count below the file's tokens",
            Box::new(|b: &mut Vec<u8>| {
                let n = i32::from_le_bytes(b[8..12].try_into().unwrap());
                put_i32(b, 8, n - 100)
            }),
            "header",
        ),
        (
            "negative header count",
            Box::new(|b: &mut Vec<u8>| put_i32(b, 8, -5)),
            "token count",
        ),
        (
            "token id ≥ vocab",
            Box::new(|b: &mut Vec<u8>| {
                let at = 1024 + 2 * 10;
                b[at..at + 2].copy_from_slice(&300u16.to_le_bytes())
            }),
            "300",
        ),
        (
            "empty file",
            Box::new(|b: &mut Vec<u8>| b.clear()),
            "header",
        ),
        (
            "cut inside the header",
            Box::new(|b: &mut Vec<u8>| b.truncate(100)),
            "header",
        ),
    ];
    for (what, f, problem) in &shard_cases {
        let d = fresh("shard-train");
        let data = copy_dir(&tok, &d.join("data"), false);
        edit(&data.join(shard), f);
        cases.push(case(
            "token shard",
            &format!("{what} (train's data)"),
            Run::Stage {
                exe: "train",
                inputs: vec![("data", data)],
                params: Some(train_params.clone()),
            },
            shard,
            problem,
        ));
        let d = fresh("shard-import");
        let shards = d.join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        for s in ["fineweb_train_000000.bin", "fineweb_val_000000.bin"] {
            std::fs::copy(tok.join(s), shards.join(s)).unwrap();
        }
        edit(&shards.join(shard), f);
        cases.push(case(
            "token shard",
            &format!("{what} (tokenize import)"),
            Run::Stage {
                exe: "tokenize",
                inputs: vec![("shards", shards)],
                params: None,
            },
            shard,
            problem,
        ));
    }

    // Byte sidecars beside an imported val shard.
    let val = "fineweb_val_000000.bin";
    let sidecar = "fineweb_val_bytes_000000.bin";
    let val_bytes = std::fs::read(tok.join(val)).unwrap();
    let val_n = i32::from_le_bytes(val_bytes[8..12].try_into().unwrap()) as usize;
    let good_sidecar = || {
        let mut b = val_bytes[..1024].to_vec();
        let tokens: Vec<u16> = val_bytes[1024..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        for t in tokens {
            let count: u16 = if t == 1 { 0 } else { 1 };
            b.extend(count.to_le_bytes());
        }
        b
    };
    let sidecar_cases: Vec<ByteCase> = vec![
        (
            "count ≠ its shard's tokens",
            Box::new(move |b: &mut Vec<u8>| put_i32(b, 8, val_n as i32 - 1)),
            "token shard",
        ),
        (
            "wrong magic",
            Box::new(|b: &mut Vec<u8>| put_i32(b, 0, 99)),
            "not a byte sidecar",
        ),
        (
            "payload cut short",
            Box::new(|b: &mut Vec<u8>| {
                let l = b.len();
                b.truncate(l - 3)
            }),
            "truncated",
        ),
        (
            "nonzero count at a BOS",
            Box::new(|b: &mut Vec<u8>| b[1024..1026].copy_from_slice(&5u16.to_le_bytes())),
            "BOS",
        ),
    ];
    for (what, f, problem) in &sidecar_cases {
        let d = fresh("sidecar");
        let shards = d.join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        for s in ["fineweb_train_000000.bin", val] {
            std::fs::copy(tok.join(s), shards.join(s)).unwrap();
        }
        let mut b = good_sidecar();
        f(&mut b);
        std::fs::write(shards.join(sidecar), b).unwrap();
        cases.push(case(
            "byte sidecar",
            what,
            Run::Stage {
                exe: "tokenize",
                inputs: vec![("shards", shards)],
                params: None,
            },
            sidecar,
            problem,
        ));
    }

    // Parquet documents.
    {
        use arrow::array::{ArrayRef, BinaryArray, Int64Array, StringArray};
        use std::sync::Arc;
        let parquet_cases: Vec<ParquetCase> = vec![
            (
                "no `text` column",
                vec![(
                    "body",
                    Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
                )],
                "text",
            ),
            (
                "`text` not strings",
                vec![("text", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)],
                "not strings",
            ),
            (
                "null text",
                vec![(
                    "text",
                    Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
                )],
                "null",
            ),
            (
                "non-UTF-8 text",
                vec![(
                    "text",
                    Arc::new(BinaryArray::from(vec![&b"fine"[..], &b"a\xc3"[..]])) as ArrayRef,
                )],
                "UTF-8",
            ),
        ];
        for (what, columns, problem) in parquet_cases {
            let d = fresh("parquet");
            let path = d.join("docs.parquet");
            write_parquet(&path, columns);
            cases.push(case(
                "parquet",
                what,
                Run::Stage {
                    exe: "tokenize",
                    inputs: vec![("documents", path)],
                    params: Some(r#"{"val_docs": 1}"#.into()),
                },
                "docs.parquet",
                problem,
            ));
        }
        let d = fresh("parquet");
        let path = d.join("docs.parquet");
        std::fs::write(&path, b"PAR1 this is not parquet at all").unwrap();
        cases.push(case(
            "parquet",
            "not a Parquet file",
            Run::Stage {
                exe: "tokenize",
                inputs: vec![("documents", path)],
                params: Some(r#"{"val_docs": 1}"#.into()),
            },
            "docs.parquet",
            "parquet",
        ));
    }

    // Tokenizer models.
    {
        let d = fresh("tokenizer");
        let docs = d.join("docs.txt");
        std::fs::write(&docs, "some text\n").unwrap();
        let model = d.join("bad.model");
        std::fs::write(
            &model,
            b"\x0a\xff\xff\xff\xff\x0fgarbage that is no protobuf",
        )
        .unwrap();
        cases.push(case(
            "tokenizer model",
            "not a SentencePiece model",
            Run::Stage {
                exe: "tokenize",
                inputs: vec![("documents", docs), ("tokenizer", model)],
                params: Some(r#"{"val_docs": 1}"#.into()),
            },
            "bad.model",
            "model",
        ));
        // Shards holding ids beyond the model's vocab (sp1024 shards read as byte260).
        let d = fresh("tokenizer");
        let shards = d.join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        for s in ["fineweb_train_000000.bin", val] {
            std::fs::copy(tok.join(s), shards.join(s)).unwrap();
        }
        edit(&shards.join(val), |b| {
            b[1024 + 8..1024 + 10].copy_from_slice(&1000u16.to_le_bytes())
        });
        let sp = pgolf_e2e::shared_material().join("tokenizers/fineweb_1024_bpe.model");
        let _ = sp;
        cases.push(case(
            "tokenizer model",
            "shards with ids beyond the tokenizer's vocab",
            Run::Stage {
                exe: "tokenize",
                inputs: vec![("shards", shards)],
                params: None,
            },
            val,
            "1000",
        ));
    }

    // Safetensors weights: ema-finalize reading a raw train folder.
    let weights = "model.safetensors";
    type StEdit = Box<dyn Fn(&Path)>;
    let st_cases: Vec<(&str, StEdit, &str)> = vec![
        (
            "truncated",
            Box::new(|p: &Path| {
                edit(p, |b| {
                    let l = b.len();
                    b.truncate(l / 2)
                })
            }),
            weights,
        ),
        (
            "header length field oversize",
            Box::new(|p: &Path| edit(p, |b| put_u64(b, 0, u64::MAX / 2))),
            weights,
        ),
        (
            "header not JSON",
            Box::new(|p: &Path| edit(p, |b| b[8..16].copy_from_slice(b"!!!!!!!!"))),
            weights,
        ),
        (
            "dtype mismatch (F32 stored as I32)",
            Box::new(|p: &Path| {
                rewrite_safetensors(p, |t| {
                    t[0].1 = safetensors::Dtype::I32;
                })
            }),
            "I32",
        ),
        (
            "a tensor missing",
            Box::new(|p: &Path| {
                rewrite_safetensors(p, |t| {
                    t.remove(0);
                })
            }),
            "missing",
        ),
        (
            "an extra tensor",
            Box::new(|p: &Path| {
                rewrite_safetensors(p, |t| {
                    t.push((
                        "blocks.99.extra.weight".into(),
                        safetensors::Dtype::F32,
                        vec![2],
                        vec![0; 8],
                    ));
                })
            }),
            "blocks.99.extra.weight",
        ),
        (
            "a tensor of the wrong shape",
            Box::new(|p: &Path| {
                rewrite_safetensors(p, |t| {
                    let i = t.iter().position(|x| x.2.len() == 2).unwrap();
                    let (r, c) = (t[i].2[0], t[i].2[1]);
                    t[i].2 = vec![c, r];
                    if r == c {
                        t[i].2 = vec![r * c];
                    }
                })
            }),
            "shape",
        ),
    ];
    for (what, f, problem) in &st_cases {
        let d = fresh("safetensors");
        let raw = copy_dir(&train, &d.join("train"), false);
        for extra in ["ema.safetensors", "swa.safetensors"] {
            let _ = std::fs::remove_file(raw.join(extra));
        }
        f(&raw.join(weights));
        cases.push(case(
            "safetensors",
            what,
            Run::Stage {
                exe: "ema-finalize",
                inputs: vec![("train", raw)],
                params: Some(r#"{"source": "raw"}"#.into()),
            },
            weights,
            problem,
        ));
    }

    // Artifacts: every frame byte flipped, and bytes across the stream, through the counted
    // evaluator's reader; a few through ttt-eval (the stage run keeps the manifest, so only
    // same-size changes reach the decoder and a truncation is caught by the manifest's size).
    let artifact = std::fs::read(qp.join("artifact.pgq")).unwrap();
    let mut rng = rng(77);
    let mut positions: Vec<usize> = (0..56).collect();
    use rand::Rng;
    positions.extend((0..64).map(|_| rng.random_range(56..artifact.len())));
    let mut flips = Vec::new();
    for (i, &pos) in positions.iter().enumerate() {
        let d = fresh("artifact-flip");
        let path = d.join("artifact.pgq");
        let mut b = artifact.clone();
        b[pos] ^= 1 << (i % 8);
        std::fs::write(&path, b).unwrap();
        flips.push(case(
            "artifact",
            &format!("bit {} of byte {pos} flipped", i % 8),
            Run::Evaluate {
                artifact: path,
                data: tok.clone(),
            },
            "artifact.pgq",
            "",
        ));
    }
    let artifact_cases: Vec<ByteCase> = vec![
        (
            "truncated by one byte",
            Box::new(|b: &mut Vec<u8>| {
                b.pop();
            }),
            "",
        ),
        (
            "truncated to its frame",
            Box::new(|b: &mut Vec<u8>| b.truncate(56)),
            "",
        ),
        (
            "truncated inside the frame",
            Box::new(|b: &mut Vec<u8>| b.truncate(20)),
            "",
        ),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear()), ""),
        (
            "wrong version",
            Box::new(|b: &mut Vec<u8>| b[4] = 9),
            "version",
        ),
        (
            "body length u64::MAX",
            Box::new(|b: &mut Vec<u8>| put_u64(b, 8, u64::MAX)),
            "",
        ),
        (
            "stream length u64::MAX",
            Box::new(|b: &mut Vec<u8>| put_u64(b, 16, u64::MAX)),
            "",
        ),
        (
            "chunk count 0xFFFFFFFF",
            Box::new(|b: &mut Vec<u8>| b[56..60].copy_from_slice(&u32::MAX.to_le_bytes())),
            "",
        ),
        (
            "first chunk length 0xFFFFFFFF",
            Box::new(|b: &mut Vec<u8>| b[60..64].copy_from_slice(&u32::MAX.to_le_bytes())),
            "",
        ),
    ];
    for (what, f, problem) in &artifact_cases {
        let d = fresh("artifact");
        let path = d.join("artifact.pgq");
        let mut b = artifact.clone();
        f(&mut b);
        std::fs::write(&path, b).unwrap();
        cases.push(case(
            "artifact",
            what,
            Run::Evaluate {
                artifact: path,
                data: tok.clone(),
            },
            "artifact.pgq",
            problem,
        ));
    }
    for (what, pos) in [
        ("a stream bit flipped (ttt-eval)", artifact.len() / 2),
        ("version byte (ttt-eval)", 4),
    ] {
        let d = fresh("artifact-stage");
        let dir = copy_dir(&qp, &d.join("qp"), true);
        edit(&dir.join("artifact.pgq"), |b| {
            b[pos] ^= if pos == 4 { 0x0c } else { 0x10 }
        });
        cases.push(case(
            "artifact",
            what,
            Run::Stage {
                exe: "ttt-eval",
                inputs: vec![("artifact", dir), ("data", tok.clone())],
                params: Some(r#"{"mode": "flat"}"#.into()),
            },
            "artifact.pgq",
            "",
        ));
    }
    {
        let d = fresh("artifact-stage");
        let dir = copy_dir(&qp, &d.join("qp"), true);
        edit(&dir.join("artifact.pgq"), |b| b.truncate(b.len() - 10));
        cases.push(case(
            "artifact",
            "truncated (ttt-eval: the manifest's size)",
            Run::Stage {
                exe: "ttt-eval",
                inputs: vec![("artifact", dir), ("data", tok.clone())],
                params: Some(r#"{"mode": "flat"}"#.into()),
            },
            "artifact.pgq",
            "size",
        ));
    }

    // Bundles: a real export of the ema-finalize run, then tampered.
    let bundle = chain.p.path().join("good.tar.zst");
    chain
        .p
        .ok(&["export", "ema-finalize", "-o", bundle.to_str().unwrap()]);
    let good_entries = read_bundle(&bundle);
    let first_file = good_entries
        .iter()
        .position(|(n, _, _)| n.ends_with("model.safetensors"))
        .unwrap();
    let run_prefix = good_entries[first_file]
        .0
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    let bundle_bytes = std::fs::read(&bundle).unwrap();
    type BundleEdit = Box<dyn Fn(&Path)>;
    let bundle_cases: Vec<(&str, BundleEdit, &str)> = {
        let e = good_entries.clone();
        let p = run_prefix.clone();
        let bb = bundle_bytes.clone();
        vec![
            (
                "a bit flipped",
                Box::new(move |path: &Path| {
                    let mut b = bb.clone();
                    let m = b.len() / 2;
                    b[m] ^= 4;
                    std::fs::write(path, b).unwrap()
                }),
                "",
            ),
            (
                "truncated",
                {
                    let bb = bundle_bytes.clone();
                    Box::new(move |path: &Path| {
                        std::fs::write(path, &bb[..bb.len() * 2 / 3]).unwrap()
                    })
                },
                "",
            ),
            (
                "a `../` path",
                {
                    let (e, p) = (e.clone(), p.clone());
                    Box::new(move |path: &Path| {
                        let mut x = e.clone();
                        let stage = p.split('/').next().unwrap().to_string();
                        x.push((format!("{stage}/../../../escaped.txt"), 'f', b"x".to_vec()));
                        write_bundle(path, &x)
                    })
                },
                "..",
            ),
            (
                "an absolute path",
                {
                    let e = e.clone();
                    Box::new(move |path: &Path| {
                        let mut x = e.clone();
                        x.push(("/tmp/pgolf-escaped.txt".into(), 'f', b"x".to_vec()));
                        write_bundle(path, &x)
                    })
                },
                "/tmp/pgolf-escaped.txt",
            ),
            (
                "a symlink entry",
                {
                    let (e, p) = (e.clone(), p.clone());
                    Box::new(move |path: &Path| {
                        let mut x = e.clone();
                        x.push((format!("{p}/link"), 'l', b"/etc/passwd".to_vec()));
                        write_bundle(path, &x)
                    })
                },
                "link",
            ),
            (
                "a duplicate entry",
                {
                    let e = e.clone();
                    let i = first_file;
                    Box::new(move |path: &Path| {
                        let mut x = e.clone();
                        let mut dup = x[i].clone();
                        dup.2 = vec![0; dup.2.len()];
                        x.push(dup);
                        write_bundle(path, &x)
                    })
                },
                "model.safetensors",
            ),
            (
                "a file whose hash is not the manifest's",
                {
                    let e = e.clone();
                    let i = first_file;
                    Box::new(move |path: &Path| {
                        let mut x = e.clone();
                        let m = x[i].2.len() / 2;
                        x[i].2[m] ^= 1;
                        write_bundle(path, &x)
                    })
                },
                "hash",
            ),
            (
                "a file the manifest does not list",
                {
                    let (e, p) = (e.clone(), p.clone());
                    Box::new(move |path: &Path| {
                        let mut x = e.clone();
                        x.push((format!("{p}/unlisted.txt"), 'f', b"x".to_vec()));
                        write_bundle(path, &x)
                    })
                },
                "unlisted.txt",
            ),
            (
                "its index naming a run it lacks",
                {
                    let e = e.clone();
                    Box::new(move |path: &Path| {
                        let mut x = e.clone();
                        x.retain(|(n, _, _)| n == "pgolf-bundle.json");
                        write_bundle(path, &x)
                    })
                },
                "ema-finalize",
            ),
        ]
    };
    for (what, f, problem) in &bundle_cases {
        let d = fresh("bundle");
        std::fs::write(d.join("pipeline.yaml"), "stages: {}\n").unwrap();
        let path = d.join("bundle.tar.zst");
        f(&path);
        cases.push(case(
            "bundle",
            what,
            Run::Pipeline {
                project: d,
                args: vec!["import".into(), path.display().to_string()],
            },
            "",
            problem,
        ));
    }

    // pipeline.yaml and params.
    let yaml_cases: Vec<(&str, String, Vec<&str>, &str, &str)> = vec![
        (
            "syntax error",
            "stages:\n  a: {exe: train\n  b: [\n".into(),
            vec!["run"],
            "pipeline.yaml:",
            ":",
        ),
        (
            "a cycle",
            "stages:\n  a: {exe: train, inputs: {x: b}}\n  b: {exe: train, inputs: {x: a}}\n"
                .into(),
            vec!["run"],
            "pipeline.yaml",
            "cycle",
        ),
        (
            "an unknown stage executable",
            "stages:\n  a: {exe: no-such-stage}\n".into(),
            vec!["run"],
            "no-such-stage",
            "not found",
        ),
        (
            "an input naming an unknown node",
            "stages:\n  a: {exe: train, inputs: {data: nowhere}}\n".into(),
            vec!["run"],
            "pipeline.yaml",
            "nowhere",
        ),
        (
            "an unknown param",
            "stages:\n  train:\n    inputs: {data: {file: data}}\n    params: {iterationz: 6}\n"
                .into(),
            vec!["run"],
            "params.json",
            "iterationz",
        ),
        (
            "an unknown field in a node",
            "stages:\n  a: {exe: train, parms: {}}\n".into(),
            vec!["run"],
            "pipeline.yaml",
            "parms",
        ),
    ];
    for (what, text, args, file, problem) in yaml_cases {
        let d = fresh("yaml");
        std::fs::write(d.join("pipeline.yaml"), text).unwrap();
        copy_dir(&tok, &d.join("data"), false);
        cases.push(case(
            "pipeline.yaml",
            what,
            Run::Pipeline {
                project: d,
                args: args.into_iter().map(String::from).collect(),
            },
            file,
            problem,
        ));
    }
    let params_cases: Vec<(&str, &str, &str)> = vec![
        ("invalid JSON", "{\"iterations\": 6,", "invalid JSON"),
        ("not an object", "[1, 2]", "object"),
        ("an unknown field", "{\"iterationz\": 6}", "iterationz"),
        ("a wrong type", "{\"iterations\": \"six\"}", "iterations"),
        (
            "a nested unknown field",
            "{\"model\": {\"layers\": 2}}",
            "layers",
        ),
        (
            "a value outside its vocabulary",
            "{\"precision\": \"f64\"}",
            "f64",
        ),
    ];
    for (what, text, problem) in params_cases {
        let d = fresh("params");
        let data = copy_dir(&tok, &d.join("data"), false);
        cases.push(case(
            "params JSON",
            what,
            Run::Stage {
                exe: "train",
                inputs: vec![("data", data)],
                params: Some(text.into()),
            },
            "params.json",
            problem,
        ));
    }

    // Run them all.
    let mut by_kind: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut problems = Vec::new();
    let mut detail = Table::new(
        "bad inputs, case by case",
        &["kind", "case", "clean", "the error line"],
    );
    let total_flips = flips.len();
    let mut flips_clean = 0;
    for c in flips.iter() {
        let d = fresh("run");
        match check(c, &d) {
            Ok(_) => flips_clean += 1,
            Err(e) => problems.push(format!("artifact / {}: {e}", c.what)),
        }
    }
    let e = by_kind.entry("artifact").or_default();
    e.0 += total_flips;
    e.1 += flips_clean;
    detail.row(vec![
        "artifact".into(),
        format!(
            "one bit flipped at each of the 56 frame bytes and {} random stream bytes",
            total_flips - 56
        ),
        format!("{flips_clean}/{total_flips}"),
        String::new(),
    ]);
    for c in &cases {
        let d = fresh("run");
        let result = check(c, &d);
        let e = by_kind.entry(c.kind).or_default();
        e.0 += 1;
        let (clean, line) = match &result {
            Ok(line) => {
                e.1 += 1;
                ("yes", line.clone())
            }
            Err(err) => {
                problems.push(format!("{} / {}: {err}", c.kind, c.what));
                ("NO", err.lines().next().unwrap_or("").to_string())
            }
        };
        let line = line
            .replace(&chain.p.path().display().to_string(), "<tmp>")
            .replace('|', "\\|");
        let line: String = line.chars().take(160).collect();
        detail.row(vec![
            c.kind.into(),
            c.what.clone(),
            clean.into(),
            format!("`{line}`"),
        ]);
    }
    let mut table = Table::new(
        "bad inputs",
        &["input kind", "cases", "clean one-line errors"],
    );
    let (mut all, mut clean) = (0, 0);
    for (kind, (n, ok)) in &by_kind {
        table.row(vec![kind.to_string(), n.to_string(), ok.to_string()]);
        all += n;
        clean += ok;
    }
    table.row(vec!["**all**".into(), all.to_string(), clean.to_string()]);
    table.emit(&format!(": {clean} of {all} clean"));
    summary_row(
        8,
        "bad inputs",
        &format!("{all} cases over {} input kinds", by_kind.len()),
        all - clean,
        "exit ≠ 0, one line naming file and problem, no panic, nothing written",
    );
    detail.emit("");
    assert!(
        problems.is_empty(),
        "{} of {all} cases not clean:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

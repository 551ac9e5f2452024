//! The stage command-line contract and the wrapper that makes a stage body a well-behaved program:
//!
//! ```text
//! <stage> --out DIR [--in NAME=PATH]... [--params FILE.json] [--device cpu|cuda|cuda:N]
//! <stage> --identity        # prints the stage's source identity (used by the driver)
//! ```
//!
//! An `--in` path is either a finished stage output (a directory with `manifest.json`; its key is the
//! run key it was stored under) or a raw file/directory (keyed by content). A name may repeat to give
//! a list of raw files. On any error the stage prints one line, `error: <stage>: <cause>`, removes
//! what it wrote, and exits 1; on success it writes `manifest.json` last.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::device::DeviceRecord;
use crate::files::MANIFEST;
use crate::hashing::{hash_file, HashCache};
use crate::inputs::{input_key, Keyed};
use crate::key::{canonical_json, run_key};
use crate::manifest::{describe_outputs, list_files, InputRef, Manifest, MANIFEST_SCHEMA};

/// Marks an output directory as being written; a directory holding it may be cleared by a rerun.
pub const INCOMPLETE_MARKER: &str = ".pgolf-incomplete";
/// Environment variable through which the driver shares its hash memo with the stages it runs.
pub const HASH_CACHE_ENV: &str = "PGOLF_HASH_CACHE";
/// Environment variable naming a file where a failing stage also writes its one-line error, so the
/// driver can repeat it while the stage's stderr goes straight to the terminal.
pub const ERROR_FILE_ENV: &str = "PGOLF_ERROR_FILE";

#[derive(Parser, Debug)]
#[command(disable_version_flag = true)]
struct StageCli {
    /// Output directory (created; must not hold a finished run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// An input: NAME=PATH, a finished stage output directory or a raw file. Repeat a NAME for a list.
    #[arg(long = "in", value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// Params as a JSON object; unknown fields are an error.
    #[arg(long)]
    params: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print this stage's source identity and exit.
    #[arg(long)]
    identity: bool,
}

/// One named input of a stage run: one or more stage outputs, or one or more raw files/directories.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    /// The path(s) given on the command line, in order.
    pub paths: Vec<PathBuf>,
    /// For stage outputs: their manifests, in the order of `paths` (empty for raw inputs).
    pub manifests: Vec<Manifest>,
    pub key: String,
}

impl Input {
    /// The (first) path of this input.
    pub fn path(&self) -> &Path {
        &self.paths[0]
    }

    /// The manifest of an input that must be exactly one stage output.
    pub fn stage_manifest(&self) -> Result<&Manifest> {
        match self.manifests.as_slice() {
            [one] => Ok(one),
            [] => bail!(
                "--in {}={}: expected a stage output directory with a manifest",
                self.name,
                self.path().display()
            ),
            _ => bail!(
                "--in {}: expected one stage output, got {}",
                self.name,
                self.manifests.len()
            ),
        }
    }

    pub fn is_stage_output(&self) -> bool {
        !self.manifests.is_empty()
    }
}

/// What a stage body sees: its typed params, inputs, output directory and device.
pub struct Stage<P> {
    pub name: &'static str,
    pub identity: &'static str,
    pub params: P,
    /// The params as given (what the key is computed from).
    pub params_json: Value,
    pub out: PathBuf,
    pub device: String,
    pub key: String,
    inputs: BTreeMap<String, Input>,
    headline: BTreeMap<String, Value>,
    device_record: Option<DeviceRecord>,
}

impl<P> Stage<P> {
    pub fn input(&self, name: &str) -> Result<&Input> {
        self.inputs
            .get(name)
            .ok_or_else(|| anyhow!("missing input: pass --in {name}=PATH"))
    }

    pub fn optional_input(&self, name: &str) -> Option<&Input> {
        self.inputs.get(name)
    }

    /// The directory of a required stage-output input.
    pub fn input_dir(&self, name: &str) -> Result<&Path> {
        let input = self.input(name)?;
        input.stage_manifest()?;
        Ok(input.path())
    }

    pub fn inputs(&self) -> impl Iterator<Item = &Input> {
        self.inputs.values()
    }

    /// A path inside the output directory.
    pub fn out_path(&self, relative: &str) -> PathBuf {
        self.out.join(relative)
    }

    /// Records a headline figure for the manifest (and the driver's status line).
    pub fn headline(&mut self, name: &str, value: impl Serialize) {
        self.headline.insert(
            name.to_string(),
            serde_json::to_value(value).expect("headline value serialises"),
        );
    }

    /// Records the device the run computed on (`pgolf_runtime::describe` fills it); a stage that
    /// never calls this computed on the CPU ([`DeviceRecord::cpu`]).
    pub fn set_device(&mut self, record: DeviceRecord) {
        self.device_record = Some(record);
    }
}

/// Rank `rank`'s share of `n` work items (windows, calibration batches, micro-batches):
/// contiguous, in rank order, sizes differing by at most one.
pub fn share(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// How a process takes part in a stage run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAs {
    /// The stage run itself: writes `--out` and the manifest. Alone (`world_size` 1) or rank 0 of
    /// `world_size` ranks; the world size is part of the run's key (see [`crate::run_key`]), and the
    /// device record the body sets must say the same.
    Stage { world_size: usize },
    /// A worker rank of a multi-process run whose rank 0 is the stage run: same command line,
    /// params and inputs, but its body writes into a private scratch folder (removed when it
    /// ends, success or not), no manifest is written, no progress bar drawn, and its error line
    /// names its rank.
    Worker { rank: usize },
}

/// Runs a stage body under the contract and exits the process. `identity` is
/// `env!("PGOLF_STAGE_IDENTITY")` from the stage's build script.
pub fn run_stage<P, F>(name: &'static str, identity: &'static str, body: F) -> !
where
    P: DeserializeOwned + Serialize,
    F: FnOnce(&mut Stage<P>) -> Result<()>,
{
    run_stage_as(name, identity, RunAs::Stage { world_size: 1 }, body)
}

/// [`run_stage`] for a process that may be a worker rank ([`RunAs`]).
pub fn run_stage_as<P, F>(name: &'static str, identity: &'static str, role: RunAs, body: F) -> !
where
    P: DeserializeOwned + Serialize,
    F: FnOnce(&mut Stage<P>) -> Result<()>,
{
    let cli = StageCli::parse();
    if cli.identity {
        println!("{identity}");
        std::process::exit(0);
    }
    let mut created_out: Option<PathBuf> = None;
    let result = run(name, identity, cli, role, body, &mut created_out);
    if let (RunAs::Worker { .. }, Some(out)) = (role, &created_out) {
        let _ = fs::remove_dir_all(out);
    }
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            let err = name_the_disk(err, created_out.as_deref());
            if let Some(out) = created_out {
                let _ = fs::remove_dir_all(&out);
            }
            let who = match role {
                RunAs::Stage { .. } => String::new(),
                RunAs::Worker { rank } => format!("rank {rank}: "),
            };
            let line = format!("error: {name}: {who}{}", one_line(&err));
            eprintln!("{line}");
            if let Some(path) = std::env::var_os(ERROR_FILE_ENV) {
                let _ = fs::write(path, format!("{line}\n"));
            }
            std::process::exit(1);
        }
    }
}

fn worker_scratch(name: &str, rank: usize, pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("pgolf-{name}-rank{rank}-{pid}"))
}

/// Removes the scratch folders of `name`'s worker ranks whose process is gone (a worker that was
/// killed cannot remove its own). Workers call it when they start; launchers may when they end.
pub fn sweep_worker_scratch(name: &str) {
    let prefix = format!("pgolf-{name}-rank");
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A full disk or a read-only one surfaces as a bare `No space left on device (os error 28)` from
/// whichever write hit it; the stage bodies do not name every file they write, so the wrapper names
/// the output folder when the message does not already name a path in it.
fn name_the_disk(err: anyhow::Error, out: Option<&Path>) -> anyhow::Error {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, ReadOnlyFilesystem, StorageFull};
    let disk = err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                StorageFull | ReadOnlyFilesystem | QuotaExceeded | FileTooLarge
            )
        })
    });
    match out {
        Some(out) if disk && !format!("{err:#}").contains(&out.display().to_string()) => {
            err.context(format!("writing into {}", out.display()))
        }
        _ => err,
    }
}

/// An error chain on one line: `outer: inner: root`.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

fn run<P, F>(
    name: &'static str,
    identity: &'static str,
    cli: StageCli,
    role: RunAs,
    body: F,
    created_out: &mut Option<PathBuf>,
) -> Result<()>
where
    P: DeserializeOwned + Serialize,
    F: FnOnce(&mut Stage<P>) -> Result<()>,
{
    let out = cli
        .out
        .clone()
        .ok_or_else(|| anyhow!("--out DIR is required"))?;
    // A worker writes nothing where the stage run writes: its own scratch folder instead.
    let out = match role {
        RunAs::Stage { .. } => out,
        RunAs::Worker { rank } => {
            crate::progress::hide_all();
            sweep_worker_scratch(name);
            worker_scratch(name, rank, std::process::id())
        }
    };
    let params_json = read_params(cli.params.as_deref())?;
    let params: P = serde_json::from_value(params_json.clone()).map_err(|e| {
        let source = cli
            .params
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "params".into());
        // serde names an unknown or missing field, not the field holding a value of the wrong
        // type: parsed again from the text, the error's position gives its key.
        let key = cli
            .params
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|text| {
                let at = serde_json::from_str::<P>(&text).err()?;
                key_before(&text, at.line(), at.column())
            });
        match key {
            Some(key) if !e.to_string().contains(&format!("`{key}`")) => {
                anyhow!("{source}: `{key}`: {e}")
            }
            _ => anyhow!("{source}: {e}"),
        }
    })?;
    let inputs = resolve_inputs(&cli.inputs)?;
    let input_keys: BTreeMap<String, String> = inputs
        .iter()
        .map(|(n, i)| (n.clone(), i.key.clone()))
        .collect();
    let world_size = match role {
        RunAs::Stage { world_size } => world_size,
        RunAs::Worker { .. } => 0,
    };
    let key = run_key(name, identity, &params_json, &input_keys, world_size);

    prepare_out(&out)?;
    *created_out = Some(out.clone());
    fs::write(out.join(INCOMPLETE_MARKER), b"")?;

    let started = chrono::Local::now();
    let clock = Instant::now();
    let mut stage = Stage {
        name,
        identity,
        params,
        params_json,
        out: out.clone(),
        device: cli.device.clone(),
        key,
        inputs,
        headline: BTreeMap::new(),
        device_record: None,
    };
    body(&mut stage)?;
    if matches!(role, RunAs::Worker { .. }) {
        return Ok(());
    }
    let device = stage
        .device_record
        .clone()
        .unwrap_or_else(DeviceRecord::cpu);
    // The key promises the world size; a body that ran on another number of ranks would publish
    // a run under a key that does not describe it.
    if device.world_size != world_size.max(1) {
        bail!(
            "{name} ran on {} rank(s) but its key is for {}",
            device.world_size,
            world_size.max(1)
        );
    }

    crate::testing::hold(crate::testing::STAGE_OUTPUTS_WRITTEN, name);
    fs::remove_file(out.join(INCOMPLETE_MARKER))
        .with_context(|| format!("{}: cannot remove", out.join(INCOMPLETE_MARKER).display()))?;
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        stage: name.to_string(),
        identity: identity.to_string(),
        key: stage.key.clone(),
        params: serde_json::from_str(&canonical_json(&stage.params_json))?,
        inputs: stage
            .inputs
            .values()
            .map(|i| {
                let reference = InputRef {
                    key: i.key.clone(),
                    stage: i.manifests.first().map(|m| m.stage.clone()),
                    runs: if i.manifests.len() > 1 {
                        i.manifests.iter().map(|m| m.key.clone()).collect()
                    } else {
                        vec![]
                    },
                    paths: if i.is_stage_output() {
                        vec![]
                    } else {
                        i.paths.iter().map(|p| p.display().to_string()).collect()
                    },
                };
                (i.name.clone(), reference)
            })
            .collect(),
        outputs: describe_outputs(&out)?,
        started: started.to_rfc3339(),
        finished: chrono::Local::now().to_rfc3339(),
        wall_seconds: clock.elapsed().as_secs_f64(),
        host: host_description(),
        device,
        headline: stage.headline.clone(),
    };
    let path = out.join(MANIFEST);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    crate::testing::hold(crate::testing::STAGE_MANIFEST_TEMP, name);
    fs::rename(&tmp, &path)
        .with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(())
}

/// The object key whose value holds byte `column` (1-based) of line `line` of a JSON text: the
/// nearest `"key":` before that position.
fn key_before(text: &str, line: usize, column: usize) -> Option<String> {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let end = (start + column).min(text.len());
    let before = text.get(..end)?;
    let mut rest = before;
    while let Some(colon) = rest.rfind(':') {
        let head = rest[..colon].trim_end();
        if let Some(key_end) = head.strip_suffix('"') {
            if let Some(open) = key_end.rfind('"') {
                return Some(key_end[open + 1..].to_string());
            }
        }
        rest = &rest[..colon];
    }
    None
}

fn read_params(path: Option<&Path>) -> Result<Value> {
    let Some(path) = path else {
        return Ok(Value::Object(Default::default()));
    };
    let text = fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read params", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: invalid JSON: {e}", path.display()))?;
    if !value.is_object() {
        bail!("{}: params must be a JSON object", path.display());
    }
    Ok(value)
}

fn resolve_inputs(specs: &[String]) -> Result<BTreeMap<String, Input>> {
    let mut grouped: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for spec in specs {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--in {spec}: expected NAME=PATH"))?;
        if name.is_empty() || path.is_empty() {
            bail!("--in {spec}: expected NAME=PATH");
        }
        grouped
            .entry(name.to_string())
            .or_default()
            .push(PathBuf::from(path));
    }
    // Hashed afresh, whatever the memo says: the key this run publishes rests on the bytes it
    // reads (the memo is refreshed for the driver's next plan).
    let cache = std::env::var_os(HASH_CACHE_ENV).map(|p| HashCache::refreshing(Path::new(&p)));
    let mut inputs = BTreeMap::new();
    for (name, paths) in grouped {
        let Keyed { key, manifests } =
            input_key(&paths, cache.as_ref()).with_context(|| format!("--in {name}"))?;
        let input = Input {
            name: name.clone(),
            key,
            paths,
            manifests,
        };
        inputs.insert(name, input);
    }
    if let Some(cache) = cache {
        let _ = cache.save();
    }
    Ok(inputs)
}

/// Content hash of a raw input: a file's BLAKE3, or for a directory the hash of its files' relative
/// paths and hashes.
pub fn content_hash(path: &Path, cache: Option<&HashCache>) -> Result<String> {
    let file_hash = |p: &Path| match cache {
        Some(c) => c.hash(p),
        None => hash_file(p),
    };
    if path.is_file() {
        return file_hash(path);
    }
    let mut h = blake3::Hasher::new();
    for (rel, abs) in list_files(path)? {
        h.update(rel.as_bytes());
        h.update(b"\0");
        h.update(file_hash(&abs)?.as_bytes());
        h.update(b"\n");
    }
    Ok(h.finalize().to_hex().to_string())
}

fn prepare_out(out: &Path) -> Result<()> {
    if out.join(MANIFEST).exists() {
        bail!(
            "--out {}: already holds a finished run (remove it or choose another directory)",
            out.display()
        );
    }
    if out.exists() {
        let empty = fs::read_dir(out)?.next().is_none();
        if out.join(INCOMPLETE_MARKER).exists() {
            fs::remove_dir_all(out)
                .with_context(|| format!("{}: cannot clear an unfinished run", out.display()))?;
        } else if !empty {
            bail!(
                "--out {}: directory is not empty and holds no pgolf run",
                out.display()
            );
        }
    }
    fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create", out.display()))?;
    Ok(())
}

fn host_description() -> String {
    let host = gethostname::gethostname().to_string_lossy().to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!(
        "{host} ({cpus} CPUs, {} {})",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrongly_typed_value_is_named_by_its_key() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            layers: u32,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            iterations: u64,
            model: Inner,
        }
        for (text, key) in [
            (
                r#"{"iterations": "six", "model": {"layers": 2}}"#,
                "iterations",
            ),
            (
                "{\"iterations\": 6,\n \"model\": {\"layers\": [2]}}",
                "layers",
            ),
        ] {
            let e = serde_json::from_str::<P>(text).unwrap_err();
            assert_eq!(
                key_before(text, e.line(), e.column()).as_deref(),
                Some(key),
                "{e}"
            );
        }
    }
}

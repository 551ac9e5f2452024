//! `pipeline gc [--dry-run]`: removes temp dirs left by drivers that died (their key's lock is
//! free) and runs that no profile's current keys reach (directly or as an input of one). A node
//! that cannot be planned (its data or executable missing here) protects every run of its stage:
//! we cannot tell which of them it would use.

use anyhow::Result;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgolf_store::lock::KeyLock;
use pgolf_store::Manifest;

use crate::display;
use crate::graph::Graph;
use crate::project::{is_key, short, Project};
use crate::session::{plan_graph, Session};

const UNFINISHED_IMPORT: &str = "unfinished import";

/// (stage, key)
type Run = (String, String);

struct Candidate {
    what: String,
    path: PathBuf,
    lock: PathBuf,
    /// A finished run's use-lock: shared by every driver whose plan uses it.
    use_lock: Option<PathBuf>,
    why: &'static str,
}

pub fn gc(session: &Session, dry_run: bool) -> Result<()> {
    let project = &session.project;
    let (keep, protected) = reachable(session)?;
    let candidates = candidates(project, &keep, &protected);
    let (mut removed, mut bytes) = (0usize, 0u64);
    for c in candidates {
        // Held lock: a driver is running this key (or an import is under way) right now.
        let Ok(_lock) = KeyLock::acquire(&c.lock, Duration::ZERO) else {
            println!("in use, kept: {}", c.what);
            continue;
        };
        // A driver's plan uses it (a sweep variant, another pipeline file): it may be reading it.
        let _use = match &c.use_lock {
            Some(path) => match KeyLock::acquire(path, Duration::ZERO) {
                Ok(lock) => Some(lock),
                Err(_) => {
                    println!("in use, kept: {}", c.what);
                    continue;
                }
            },
            None => None,
        };
        let size = disk_bytes(&c.path);
        if dry_run {
            println!(
                "would remove {} ({}, {})",
                c.what,
                c.why,
                display::size(size)
            );
        } else {
            let gone = if c.path.is_dir() {
                std::fs::remove_dir_all(&c.path)
            } else {
                std::fs::remove_file(&c.path)
            };
            match gone {
                Ok(()) => {
                    if c.why == UNFINISHED_IMPORT {
                        // Its importer is dead and the pid-named lock will never be used again.
                        let _ = std::fs::remove_file(&c.lock);
                    }
                    println!("removed {} ({}, {})", c.what, c.why, display::size(size))
                }
                Err(e) => {
                    println!("could not remove {}: {e}", c.what);
                    continue;
                }
            }
        }
        removed += 1;
        bytes += size;
    }
    let verb = if dry_run { "would free" } else { "freed" };
    println!("gc: {removed} item(s), {verb} {}", display::size(bytes));
    Ok(())
}

/// (stage, key) of every run some profile's current plan uses, with their upstream runs; and the
/// stages whose runs are all kept because a node of theirs cannot be planned.
fn reachable(session: &Session) -> Result<(BTreeSet<Run>, BTreeSet<String>)> {
    let file = &session.file;
    // Without a default_profile, a plain `run` uses the file without any profile: keep that too.
    let mut profiles: Vec<Option<&str>> = file.profiles.keys().map(|p| Some(p.as_str())).collect();
    if file.default_profile.is_none() {
        profiles.push(None);
    }
    let mut keep = BTreeSet::new();
    let mut protected = BTreeSet::new();
    for profile in profiles {
        let graph = Graph::build(file, &session.project.yaml_display, profile)?;
        let plan = plan_graph(&session.project, &graph, None, &[])?;
        for (node, planned) in &plan.nodes {
            match planned {
                Ok(ids) => keep.extend(ids.iter().map(|&i| {
                    (
                        plan.instances[i].stage.clone(),
                        plan.instances[i].key.clone(),
                    )
                })),
                Err(e) => {
                    // Without its identity the stage name is unknown; the executable's name is
                    // the stage name for every pgolf stage.
                    let exe = &graph.nodes[node].exe;
                    let stage = Path::new(exe)
                        .file_name()
                        .map(|f| f.to_string_lossy().to_string())
                        .unwrap_or_else(|| exe.clone());
                    println!("keeping every run of {stage}: node {node} (profile {}) cannot be planned: {e}", profile.unwrap_or("none"));
                    protected.insert(stage);
                }
            }
        }
    }
    let mut todo: Vec<Run> = keep.iter().cloned().collect();
    while let Some((stage, key)) = todo.pop() {
        let Ok(manifest) = Manifest::read(&session.project.run_dir(&stage, &key)) else {
            continue;
        };
        for input in manifest.inputs.values() {
            let Some(up) = &input.stage else { continue };
            let keys = if input.runs.is_empty() {
                vec![input.key.clone()]
            } else {
                input.runs.clone()
            };
            for k in keys {
                if keep.insert((up.clone(), k.clone())) {
                    todo.push((up.clone(), k));
                }
            }
        }
    }
    Ok((keep, protected))
}

fn candidates(
    project: &Project,
    keep: &BTreeSet<Run>,
    protected: &BTreeSet<String>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    let entries = |dir: &Path| -> Vec<(String, PathBuf)> {
        let mut list: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
            .collect();
        list.sort();
        list
    };
    for (name, path) in entries(&project.out) {
        if let Some(pid) = name.strip_prefix(".import-") {
            let lock = project.out.join(".locks").join(format!("import-{pid}"));
            out.push(Candidate {
                what: name.clone(),
                path,
                lock,
                use_lock: None,
                why: UNFINISHED_IMPORT,
            });
            continue;
        }
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        let stage = name;
        for (entry, run_path) in entries(&path) {
            if let Some(rest) = entry.strip_prefix(".tmp-") {
                let key = rest.get(..64).unwrap_or("");
                if is_key(key) {
                    out.push(Candidate {
                        what: format!("{stage}/{entry}"),
                        path: run_path,
                        lock: project.lock_path(&stage, key),
                        use_lock: None,
                        why: "left by a driver that died",
                    });
                }
            } else if is_key(&entry)
                && !protected.contains(&stage)
                && !keep.contains(&(stage.clone(), entry.clone()))
            {
                let what = format!("{stage}/{}", short(&entry));
                out.push(Candidate {
                    what,
                    path: run_path,
                    lock: project.lock_path(&stage, &entry),
                    use_lock: Some(project.use_lock_path(&stage, &entry)),
                    why: "not reachable from any profile",
                });
            }
        }
    }
    out
}

fn disk_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_bytes(&e.path()))
        .sum()
}

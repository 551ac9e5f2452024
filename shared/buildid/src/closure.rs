//! What the build of one workspace crate reads: the crates of its build closure, found from the
//! manifests (not from Cargo.lock, which also lists dev-dependencies), and their files.
//!
//! The closure follows normal and build dependencies, and an optional dependency only where a
//! feature asks for it, starting from the crate's default features — what `cargo build -p <crate>`
//! compiles. (A workspace-wide build may unify more features into a shared crate; that code is not
//! reachable from this crate, so it does not belong to its identity.)

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Top-level folders of a crate that its library and binaries are never built from.
const NOT_BUILT: [&str; 3] = ["tests", "benches", "examples"];

/// Every file of every workspace crate in the build closure of `package` (itself, and the
/// workspace crates it depends on through normal and build dependencies with the features it
/// enables), plus every `include_str!`/`include_bytes!`/`include!` target outside those crates'
/// hashed files; sorted, absolute (joined to `workspace`).
///
/// A crate's files are all files under its directory, of any kind, except its `tests/`,
/// `benches/` and `examples/` folders, `target` folders and hidden files and folders. The stage
/// identity ([`crate::identity`]) hashes exactly these files, plus the workspace's `Cargo.toml`
/// and `Cargo.lock`.
///
/// # Panics
/// For build scripts: panics with one line naming the problem when the workspace cannot be read
/// (a manifest that does not parse, a member without one) or `package` is not a workspace crate.
pub fn closure_sources(workspace: &Path, package: &str) -> Vec<PathBuf> {
    match Sources::collect(workspace, package) {
        Ok(sources) => sources.files,
        Err(e) => panic!("error: pgolf-buildid: {package}: {e:#}"),
    }
}

pub(crate) struct Sources {
    /// The hashed files, sorted.
    pub files: Vec<PathBuf>,
    /// The directories walked below each crate's root (a new file there changes the identity).
    pub dirs: Vec<PathBuf>,
}

impl Sources {
    pub fn collect(workspace: &Path, package: &str) -> Result<Sources> {
        let ws = Workspace::load(workspace)?;
        let mut files = BTreeSet::new();
        let mut dirs = Vec::new();
        for name in ws.closure(package)? {
            let dir = &ws.crates[&name].dir;
            walk_crate(dir, dir, &mut files, &mut dirs)?;
        }
        let mut todo: Vec<PathBuf> = files.iter().cloned().collect();
        while let Some(file) = todo.pop() {
            if file.extension().is_some_and(|e| e == "rs") {
                for target in include_targets(&file)? {
                    if files.insert(target.clone()) {
                        todo.push(target);
                    }
                }
            }
        }
        Ok(Sources {
            files: files.into_iter().collect(),
            dirs,
        })
    }
}

/// A workspace dependency of a crate: the key it is known by (in `features`), the package it is.
struct Dep {
    key: String,
    package: String,
    optional: bool,
    default_features: bool,
    features: Vec<String>,
}

struct Crate {
    dir: PathBuf,
    /// Normal and build dependencies on workspace crates (external ones are pinned by Cargo.lock).
    deps: Vec<Dep>,
    features: BTreeMap<String, Vec<String>>,
}

struct Workspace {
    crates: BTreeMap<String, Crate>,
}

impl Workspace {
    fn load(root: &Path) -> Result<Workspace> {
        let root_manifest = read_manifest(&root.join("Cargo.toml"))?;
        let members = root_manifest
            .get("workspace")
            .and_then(|w| w.get("members"))
            .and_then(|m| m.as_array())
            .with_context(|| format!("{}: no [workspace] members", root.display()))?;
        let mut dirs = Vec::new();
        for member in members {
            let member = member
                .as_str()
                .context("a workspace member is not a string")?;
            match member.strip_suffix("/*") {
                Some(parent) => {
                    let parent = root.join(parent);
                    let entries = fs::read_dir(&parent)
                        .with_context(|| format!("{}: cannot list", parent.display()))?;
                    for entry in entries {
                        let dir = entry?.path();
                        if dir.join("Cargo.toml").is_file() {
                            dirs.push(dir);
                        }
                    }
                }
                None if member.contains('*') => {
                    bail!("workspace member {member}: only `dir/*` globs are understood")
                }
                None => dirs.push(root.join(member)),
            }
        }
        let empty = toml::Table::new();
        let inherited = root_manifest
            .get("workspace")
            .and_then(|w| w.get("dependencies"))
            .and_then(|d| d.as_table())
            .unwrap_or(&empty);
        // Names first: a dependency is a workspace crate when its path is a member's directory.
        let mut manifests = Vec::new();
        let mut by_dir = BTreeMap::new();
        for dir in dirs {
            let dir = normalize(&dir);
            let manifest = read_manifest(&dir.join("Cargo.toml"))?;
            let name = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .with_context(|| format!("{}: no package name", dir.join("Cargo.toml").display()))?
                .to_string();
            by_dir.insert(dir.clone(), name.clone());
            manifests.push((name, dir, manifest));
        }
        let mut crates = BTreeMap::new();
        for (name, dir, manifest) in manifests {
            let mut deps = Vec::new();
            let mut tables = vec![&manifest];
            if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
                tables.extend(targets.values().filter_map(|t| t.as_table()));
            }
            for table in tables {
                for kind in ["dependencies", "build-dependencies", "build_dependencies"] {
                    let Some(entries) = table.get(kind).and_then(|d| d.as_table()) else {
                        continue;
                    };
                    for (key, spec) in entries {
                        let dep = workspace_dep(root, &dir, key, spec, inherited, &by_dir)
                            .with_context(|| {
                                format!("{}: [{kind}] {key}", dir.join("Cargo.toml").display())
                            })?;
                        deps.extend(dep);
                    }
                }
            }
            let features = manifest
                .get("features")
                .and_then(|f| f.as_table())
                .map(|f| {
                    f.iter()
                        .map(|(k, v)| {
                            let items = v.as_array().into_iter().flatten();
                            let items = items.filter_map(|i| i.as_str()).map(str::to_string);
                            (k.clone(), items.collect())
                        })
                        .collect()
                })
                .unwrap_or_default();
            crates.insert(
                name,
                Crate {
                    dir,
                    deps,
                    features,
                },
            );
        }
        Ok(Workspace { crates })
    }

    /// `package` and the workspace crates its build compiles, resolving features to a fixpoint.
    fn closure(&self, package: &str) -> Result<BTreeSet<String>> {
        let Some(start) = self.crates.get(package) else {
            bail!("not a crate of this workspace");
        };
        // Per active crate: its enabled features, and the keys of its enabled optional deps.
        let mut features: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut deps_on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut sub_features: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> =
            BTreeMap::new();
        let mut initial = BTreeSet::new();
        if start.features.contains_key("default") {
            initial.insert("default".to_string());
        }
        features.insert(package.to_string(), initial);
        loop {
            let before = (features.clone(), deps_on.clone(), sub_features.clone());
            for name in features.keys().cloned().collect::<Vec<_>>() {
                let krate = &self.crates[&name];
                // Expand this crate's features into enabled features, deps and deps' features.
                let mut todo: Vec<String> = features[&name].iter().cloned().collect();
                let mut seen = BTreeSet::new();
                while let Some(feature) = todo.pop() {
                    if !seen.insert(feature.clone()) {
                        continue;
                    }
                    features
                        .entry(name.clone())
                        .or_default()
                        .insert(feature.clone());
                    let Some(items) = krate.features.get(&feature) else {
                        // Not declared: the implicit feature of an optional dependency.
                        deps_on.entry(name.clone()).or_default().insert(feature);
                        continue;
                    };
                    for item in items {
                        if let Some(dep) = item.strip_prefix("dep:") {
                            deps_on.entry(name.clone()).or_default().insert(dep.into());
                        } else if let Some((dep, sub)) = item.split_once('/') {
                            let (dep, weak) = match dep.strip_suffix('?') {
                                Some(dep) => (dep, true),
                                None => (dep, false),
                            };
                            if !weak {
                                deps_on.entry(name.clone()).or_default().insert(dep.into());
                            }
                            sub_features
                                .entry(name.clone())
                                .or_default()
                                .entry(dep.into())
                                .or_default()
                                .insert(sub.into());
                        } else {
                            todo.push(item.clone());
                        }
                    }
                }
                for dep in &krate.deps {
                    let enabled = deps_on.get(&name).is_some_and(|d| d.contains(&dep.key));
                    if dep.optional && !enabled {
                        continue;
                    }
                    let mut asked: BTreeSet<String> = dep.features.iter().cloned().collect();
                    if dep.default_features
                        && self.crates[&dep.package].features.contains_key("default")
                    {
                        asked.insert("default".into());
                    }
                    if let Some(subs) = sub_features.get(&name).and_then(|s| s.get(&dep.key)) {
                        asked.extend(subs.iter().cloned());
                    }
                    features
                        .entry(dep.package.clone())
                        .or_default()
                        .extend(asked);
                }
            }
            if before == (features.clone(), deps_on.clone(), sub_features.clone()) {
                return Ok(features.into_keys().collect());
            }
        }
    }
}

/// The dependency `key = spec` of the crate in `dir`, when it is a workspace crate.
fn workspace_dep(
    root: &Path,
    dir: &Path,
    key: &str,
    spec: &toml::Value,
    inherited: &toml::Table,
    by_dir: &BTreeMap<PathBuf, String>,
) -> Result<Option<Dep>> {
    let Some(spec) = spec.as_table() else {
        return Ok(None); // `name = "1.2"`: from a registry
    };
    let flag = |t: &toml::Table, k: &str| {
        t.get(k)
            .or_else(|| t.get(&k.replace('-', "_")))
            .and_then(|v| v.as_bool())
    };
    let list = |t: &toml::Table| -> Vec<String> {
        let items = t
            .get("features")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten();
        items
            .filter_map(|i| i.as_str())
            .map(str::to_string)
            .collect()
    };
    let mut features = list(spec);
    let optional = flag(spec, "optional").unwrap_or(false);
    let (path, default_features) = if flag(spec, "workspace") == Some(true) {
        let name = spec.get("package").and_then(|p| p.as_str()).unwrap_or(key);
        let Some(base) = inherited.get(name) else {
            bail!("not in [workspace.dependencies]");
        };
        let Some(base) = base.as_table() else {
            return Ok(None);
        };
        features.extend(list(base));
        // Cargo: a member can only turn default features off where the workspace does.
        let default = match flag(base, "default-features") {
            Some(false) => flag(spec, "default-features").unwrap_or(false),
            _ => true,
        };
        (
            base.get("path")
                .and_then(|p| p.as_str())
                .map(|p| root.join(p)),
            default,
        )
    } else {
        let path = spec
            .get("path")
            .and_then(|p| p.as_str())
            .map(|p| dir.join(p));
        (path, flag(spec, "default-features").unwrap_or(true))
    };
    let Some(path) = path else {
        return Ok(None);
    };
    let Some(package) = by_dir.get(&normalize(&path)) else {
        bail!("path {} is not a workspace member", path.display());
    };
    Ok(Some(Dep {
        key: key.to_string(),
        package: package.clone(),
        optional,
        default_features,
        features,
    }))
}

fn read_manifest(path: &Path) -> Result<toml::Table> {
    let text =
        fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    text.parse()
        .with_context(|| format!("{}: not a valid manifest", path.display()))
}

/// Adds the files of the crate at `root` found under `path` to `files`, and the directories
/// walked below the root to `dirs`.
fn walk_crate(
    root: &Path,
    path: &Path,
    files: &mut BTreeSet<PathBuf>,
    dirs: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries = fs::read_dir(path).with_context(|| format!("{}: cannot list", path.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let child = entry.path();
        if name.starts_with('.') {
            continue;
        }
        if child.is_dir() {
            if name == "target" || (path == root && NOT_BUILT.contains(&name.as_ref())) {
                continue;
            }
            dirs.push(child.clone());
            walk_crate(root, &child, files, dirs)?;
        } else if child.is_file() {
            files.insert(child);
        }
    }
    Ok(())
}

/// The files that `include_str!`, `include_bytes!` and `include!` with a literal path in `file`
/// name (relative to `file`'s folder), where they exist.
fn include_targets(file: &Path) -> Result<Vec<PathBuf>> {
    let text =
        fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for mac in ["include_str!", "include_bytes!", "include!"] {
        for (at, _) in text.match_indices(mac) {
            let rest = text[at + mac.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('(').map(str::trim_start) else {
                continue;
            };
            let Some(rest) = rest.strip_prefix('"') else {
                continue; // not a literal (`env!("OUT_DIR")`, `concat!`): generated at build time
            };
            let Some(end) = rest.find('"') else {
                continue;
            };
            let target = normalize(&dir.join(&rest[..end]));
            if target.is_file() {
                out.push(target);
            }
        }
    }
    Ok(out)
}

/// `path` with `.` and `dir/..` removed, without touching the file system (so links are kept).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    out
}

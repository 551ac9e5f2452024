//! The counted code of an artifact (docs/ARTIFACT.md "Size accounting"): a tar of the sources of a
//! package and of every workspace package it depends on, found from the manifests (never a hand list),
//! so the count follows the dependency graph: exactly the files its build reads
//! ([`crate::closure_sources`]), not its tests, benches or examples. Deterministic: sorted `/`-separated
//! paths from the workspace root, mtime 0, uid/gid 0, mode 0644.

use std::fs;
use std::path::{Path, PathBuf};

/// The tar of `package`'s closure sources, and the files in it (absolute, sorted), for
/// `rerun-if-changed`.
pub fn code_tar(workspace: &Path, package: &str) -> (Vec<u8>, Vec<PathBuf>) {
    let mut files = crate::closure_sources(workspace, package);
    let rel = |p: &Path| {
        p.strip_prefix(workspace)
            .expect("under the workspace")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    files.retain(|p| !rel(p).split('/').any(|c| c.starts_with('.')));
    files.sort_by_key(|p| rel(p));
    let mut builder = tar::Builder::new(Vec::new());
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut header = tar::Header::new_ustar();
        header
            .set_path(rel(path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder
            .append(&header, data.as_slice())
            .expect("append to tar");
    }
    (builder.into_inner().expect("finish tar"), files)
}

//! `pipeline export KEY|NODE -o FILE.tar.zst [--with-deps]`: a run (and on request everything it
//! was computed from) as one bundle, written through a temp file so a failed export leaves none.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::Path;

use crate::bundle::{upstream_runs, Index, FORMAT, INDEX_FILE};
use crate::display;
use crate::freshness::{check, RunState};
use crate::project::{is_key, short, Project};
use crate::session::Session;

const ZSTD_LEVEL: i32 = 3;

pub fn export(session: &Session, what: &str, output: &Path, with_deps: bool) -> Result<()> {
    let root = find_run(session, what)?;
    let runs = if with_deps {
        upstream_runs(&session.project, root)?
    } else {
        just(&session.project, root)?
    };
    let tmp = output.with_extension(format!("tmp-{}", std::process::id()));
    let written = write_bundle(&session.project, &runs, &tmp);
    if let Err(e) = written.and_then(|_| {
        std::fs::rename(&tmp, output).with_context(|| format!("{}: cannot write", output.display()))
    }) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    for (stage, key) in &runs {
        println!("exported {stage}/{}", short(key));
    }
    println!(
        "{}: {} run(s), {}",
        output.display(),
        runs.len(),
        display::size(bytes)
    );
    Ok(())
}

/// A node name (its current run under the profile, which must be fresh) or a unique key prefix.
fn find_run(session: &Session, what: &str) -> Result<(String, String)> {
    if session.graph.nodes.contains_key(what) {
        let closure = session.graph.upstream_closure(what);
        let plan = session.plan(Some(&closure), &[])?;
        plan.first_error(std::iter::once(&what.to_string()))?;
        let inst = &plan.instances[plan.instances_of(what)[0]];
        return match check(&session.project, &inst.stage, &inst.key) {
            RunState::Fresh(_) => Ok((inst.stage.clone(), inst.key.clone())),
            _ => bail!(
                "node {what} has no fresh run {} (run `pipeline run {what}` first)",
                short(&inst.key)
            ),
        };
    }
    if what.len() < 4 || !is_key(&format!("{what:0<64}")) {
        bail!("'{what}' is neither a node nor a key prefix (4+ hex digits)");
    }
    let matches = runs_with_prefix(&session.project, what);
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no run in {} has a key starting with {what}",
            session.project.out.display()
        ),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(s, k)| format!("{s}/{}", short(k)))
                .collect();
            bail!("key prefix {what} is ambiguous: {}", names.join(", "))
        }
    }
}

fn runs_with_prefix(project: &Project, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stage in std::fs::read_dir(&project.out)
        .into_iter()
        .flatten()
        .flatten()
    {
        let stage_name = stage.file_name().to_string_lossy().to_string();
        for run in std::fs::read_dir(stage.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let key = run.file_name().to_string_lossy().to_string();
            if is_key(&key) && key.starts_with(prefix) {
                out.push((stage_name.clone(), key));
            }
        }
    }
    out.sort();
    out
}

/// Without --with-deps only the run itself is shipped; it must still be intact.
fn just(project: &Project, root: (String, String)) -> Result<Vec<(String, String)>> {
    let dir = project.run_dir(&root.0, &root.1);
    pgolf_store::Manifest::read(&dir)?.verify_sizes(&dir)?;
    Ok(vec![root])
}

fn write_bundle(project: &Project, runs: &[(String, String)], path: &Path) -> Result<()> {
    let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    let encoder = zstd::Encoder::new(file, ZSTD_LEVEL)?;
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    let index = Index {
        format: FORMAT.into(),
        runs: runs.iter().map(|(s, k)| format!("{s}/{k}")).collect(),
    };
    let index_bytes = serde_json::to_vec_pretty(&index)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(index_bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, INDEX_FILE, index_bytes.as_slice())?;
    for (stage, key) in runs {
        tar.append_dir_all(format!("{stage}/{key}"), project.run_dir(stage, key))
            .with_context(|| format!("{}: cannot read", project.run_dir(stage, key).display()))?;
    }
    let encoder = tar.into_inner()?;
    encoder.finish()?.sync_all()?;
    Ok(())
}

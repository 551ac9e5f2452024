//! `pipeline run [TARGET]`: plan, run what is stale, reuse the rest, then the sweep table and the
//! report's path.

use anyhow::{bail, Result};
use pgolf_store::files;
use pgolf_store::lock::{KeyLock, LockError};
use std::collections::BTreeSet;

use crate::display::sweep_table;
use crate::last_runs::LastRuns;
use crate::plan::Plan;
use crate::project::Project;
use crate::schedule;
use crate::session::Session;
use crate::settings;

pub struct RunArgs {
    pub target: Option<String>,
    pub sets: Vec<String>,
    pub jobs: usize,
}

/// Shared locks on the use-lock of every run in the plan (held until the driver ends).
fn in_use(project: &Project, plan: &Plan) -> Result<Vec<KeyLock>> {
    let mut locks = Vec::new();
    let mut seen = BTreeSet::new();
    for inst in &plan.instances {
        if seen.insert((inst.stage.as_str(), inst.key.as_str())) {
            match KeyLock::shared(&project.use_lock_path(&inst.stage, &inst.key)) {
                Ok(lock) => locks.push(lock),
                // A read-only out/: no gc can remove anything there either.
                Err(LockError::ReadOnly) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(locks)
}

pub fn run(session: &Session, args: &RunArgs) -> Result<()> {
    let graph = &session.graph;
    let targets: Vec<String> = match &args.target {
        Some(t) => vec![graph.node(t)?.name.clone()],
        None => graph.nodes.keys().cloned().collect(),
    };
    let closure: BTreeSet<String> = targets
        .iter()
        .flat_map(|t| graph.upstream_closure(t))
        .collect();
    let settings = settings::parse_all(&args.sets, graph)?;
    for s in settings.iter().filter(|s| !closure.contains(&s.node)) {
        eprintln!(
            "pipeline: --set {}: node {} is not upstream of the target; ignored",
            s.label, s.node
        );
    }
    let plan = session.plan(Some(&closure), &settings)?;
    plan.first_error(graph.nodes.keys().filter(|n| closure.contains(*n)))?;
    // Before anything is checked for freshness: from here on `gc` keeps every run this plan uses.
    let _in_use = in_use(&session.project, &plan)?;

    let target_ids: Vec<usize> = targets
        .iter()
        .flat_map(|t| plan.instances_of(t).to_vec())
        .collect();
    let results = schedule::run(&session.project, &plan, &target_ids, args.jobs.max(1));

    let mut last = LastRuns::new(&session.project);
    for inst in plan
        .instances
        .iter()
        .filter(|i| i.variant.is_empty() && results.manifests[i.id].is_some())
    {
        last.record(session.profile(), &inst.node, &inst.key);
    }
    let _ = last.save();

    if !plan.dims.is_empty() {
        let last_node = targets.last().expect("at least one target");
        println!("\n{}", sweep_table(&plan, last_node, &results.manifests));
    }
    for &t in &target_ids {
        let inst = &plan.instances[t];
        let report = session
            .project
            .run_dir(&inst.stage, &inst.key)
            .join(files::REPORT_HTML);
        if results.manifests[t].is_some() && report.is_file() {
            println!("report: {}", report.display());
        }
    }
    match results.failures.as_slice() {
        [] => Ok(()),
        [(label, cause)] => bail!("{label} failed: {cause}"),
        [(label, cause), rest @ ..] => {
            bail!("{label} failed: {cause} (and {} more failed)", rest.len())
        }
    }
}

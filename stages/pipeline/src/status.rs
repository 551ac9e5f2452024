//! `pipeline status`: for every node, fresh / stale / never run, and why a stale one is stale,
//! against the node's previous run.

use anyhow::Result;

use pgolf_store::Manifest;

use crate::display::{label_width, run_line};
use crate::freshness::{check, RunState};
use crate::last_runs::LastRuns;
use crate::plan::Instance;
use crate::project::short;
use crate::session::Session;
use crate::settings;
use crate::why::explain;

pub fn status(session: &Session, sets: &[String]) -> Result<()> {
    let settings = settings::parse_all(sets, &session.graph)?;
    let plan = session.plan(None, &settings)?;
    let states: Vec<RunState> = plan
        .instances
        .iter()
        .map(|i| check(&session.project, &i.stage, &i.key))
        .collect();
    let last = LastRuns::new(&session.project);
    let width = label_width(&plan);
    println!(
        "{} (profile {})",
        session.project.yaml_display,
        session.profile().unwrap_or("none")
    );
    for (node, planned) in &plan.nodes {
        let ids = match planned {
            Ok(ids) => ids,
            Err(e) => {
                println!("{}", run_line(width, node, "cannot plan", "", e));
                continue;
            }
        };
        for &id in ids {
            let inst = &plan.instances[id];
            let label = plan.label(inst);
            let line = match &states[id] {
                RunState::Fresh(_) => run_line(width, &label, "fresh", short(&inst.key), ""),
                RunState::Damaged(why) => run_line(
                    width,
                    &label,
                    "stale",
                    short(&inst.key),
                    &format!("output damaged: {why}"),
                ),
                RunState::Missing => match previous_run(session, &last, inst) {
                    None => run_line(width, &label, "never run", short(&inst.key), ""),
                    Some(prev) => run_line(
                        width,
                        &label,
                        "stale",
                        short(&inst.key),
                        &explain(&plan, inst, &prev, &states).join("; "),
                    ),
                },
            };
            println!("{line}");
        }
    }
    Ok(())
}

/// The node's previous run: the one it last ran or reused under this profile, else under another.
fn previous_run(session: &Session, last: &LastRuns, inst: &Instance) -> Option<Manifest> {
    last.get(session.profile(), &inst.node)
        .into_iter()
        .filter(|k| *k != inst.key)
        .find_map(|k| match check(&session.project, &inst.stage, &k) {
            RunState::Fresh(m) => Some(*m),
            _ => None,
        })
}

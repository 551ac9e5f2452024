//! `pipeline status`: for every node, fresh / stale / never run, and why a stale one is stale,
//! against the node's previous run.

use anyhow::Result;

use pgolf_store::lock::KeyLock;
use pgolf_store::Manifest;

use crate::display::{label_width, run_line};
use crate::freshness::{check, RunState};
use crate::last_runs::LastRuns;
use crate::plan::Instance;
use crate::project::{short, Project};
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
                RunState::Missing => {
                    let mut reasons = match previous_run(session, &last, inst) {
                        Some(prev) => explain(&plan, inst, &prev, &states),
                        None => vec![],
                    };
                    let leftover = leftover_of(&session.project, inst);
                    let running = leftover.is_some()
                        && KeyLock::is_held(&session.project.lock_path(&inst.stage, &inst.key))
                            .unwrap_or(false);
                    match &leftover {
                        Some(tmp) if running => {
                            reasons.push(format!("another pipeline is running it ({tmp})"))
                        }
                        Some(tmp) => reasons.push(format!(
                            "interrupted: {tmp} was left by a killed run (the next run removes it)"
                        )),
                        None if reasons.is_empty() && ran_before(session, &last, inst) => {
                            reasons.push("its finished run was removed".into())
                        }
                        None => {}
                    }
                    let word = if running { "running" } else { "stale" };
                    if reasons.is_empty() {
                        run_line(width, &label, "never run", short(&inst.key), "")
                    } else {
                        run_line(width, &label, word, short(&inst.key), &reasons.join("; "))
                    }
                }
            };
            println!("{line}");
        }
    }
    Ok(())
}

/// `out/<stage>/.tmp-<key>-<pid>` of this key, as a path relative to the project, if one is there.
fn leftover_of(project: &Project, inst: &Instance) -> Option<String> {
    let prefix = format!(".tmp-{}-", inst.key);
    let mut found: Vec<String> = std::fs::read_dir(project.stage_dir(&inst.stage))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix) && !n.ends_with(".json") && !n.ends_with(".error"))
        .collect();
    found.sort();
    let name = found.into_iter().next()?;
    Some(format!("out/{}/{name}", inst.stage))
}

/// Whether the node last ran (or reused) with this very key, whose run is now gone.
fn ran_before(session: &Session, last: &LastRuns, inst: &Instance) -> bool {
    last.get(session.profile(), &inst.node)
        .first()
        .is_some_and(|k| *k == inst.key)
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

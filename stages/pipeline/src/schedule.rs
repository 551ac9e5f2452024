//! Runs what is stale in the target's upstream closure, `jobs` stage runs at a time, in dependency
//! order; reuses what is fresh; skips what depends on a failure. A fresh run's own inputs are not
//! needed, so they are not rebuilt (an imported checkpoint is used without its corpus).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc;

use pgolf_store::Manifest;

use crate::display::{headline_summary, label_width, run_line, Reporter};
use crate::freshness::{check, RunState};
use crate::plan::{Instance, Plan, Source};
use crate::project::{short, Project};
use crate::runner::{execute, Outcome, StageOutput};

#[derive(Clone, PartialEq)]
enum Step {
    NotNeeded,
    Waiting,
    Running,
    Done,
    Failed,
}

pub struct Results {
    /// By instance id: the manifest of every run that is now in place.
    pub manifests: Vec<Option<Manifest>>,
    /// (label, one-line cause) of every failed run, in order.
    pub failures: Vec<(String, String)>,
}

pub fn run(project: &Project, plan: &Plan, targets: &[usize], jobs: usize) -> Results {
    let n = plan.instances.len();
    let width = label_width(plan);
    // One stage at a time on a terminal: it owns the terminal and draws its own progress bars (a
    // spinner of ours would fight them). Otherwise its output comes through us, above our
    // spinners on a terminal.
    let own_terminal = jobs == 1 && std::io::stderr().is_terminal();
    let reporter = &Reporter::new(!own_terminal);
    let states: Vec<RunState> = plan
        .instances
        .iter()
        .map(|i| check(project, &i.stage, &i.key))
        .collect();
    let mut steps = vec![Step::NotNeeded; n];
    for &t in targets {
        steps[t] = Step::Waiting;
    }
    // Instances are in dependency order, so walking backwards reaches every consumer first. A
    // stale run needs its inputs; a fresh one does not, but its fresh inputs are listed as reused.
    for i in (0..n).rev() {
        if steps[i] == Step::Waiting {
            for u in plan.upstream_ids(&plan.instances[i]) {
                if !states[i].is_fresh() || states[u].is_fresh() {
                    steps[u] = Step::Waiting;
                }
            }
        }
    }
    let mut manifests: Vec<Option<Manifest>> =
        states.iter().map(|s| s.manifest().cloned()).collect();
    let mut failures = Vec::new();
    for (i, inst) in plan.instances.iter().enumerate() {
        if steps[i] == Step::NotNeeded && !states[i].is_fresh() {
            reporter.line(&run_line(
                width,
                &plan.label(inst),
                "not needed",
                short(&inst.key),
                "(its consumers are fresh)",
            ));
        }
    }

    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, Outcome)>();
        let mut running = 0usize;
        let mut spinners = BTreeMap::new();
        loop {
            for i in 0..n {
                if steps[i] != Step::Waiting {
                    continue;
                }
                let inst = &plan.instances[i];
                // A fresh run is reused as it is: its inputs are not needed.
                if let Some(m) = &manifests[i] {
                    steps[i] = Step::Done;
                    reporter.line(&run_line(
                        width,
                        &plan.label(inst),
                        "reused",
                        short(&inst.key),
                        &headline_summary(&m.headline),
                    ));
                    continue;
                }
                let ups: Vec<usize> = plan.upstream_ids(inst).collect();
                if let Some(&bad) = ups.iter().find(|&&u| steps[u] == Step::Failed) {
                    steps[i] = Step::Failed;
                    let why = format!(
                        "(input {} did not complete)",
                        plan.label(&plan.instances[bad])
                    );
                    reporter.line(&run_line(
                        width,
                        &plan.label(inst),
                        "skipped",
                        short(&inst.key),
                        &why,
                    ));
                    continue;
                }
                if !ups.iter().all(|&u| steps[u] == Step::Done) {
                    continue;
                }
                if running >= jobs {
                    continue;
                }
                steps[i] = Step::Running;
                running += 1;
                let output = if own_terminal {
                    StageOutput::Inherit
                } else {
                    StageOutput::Forward(reporter)
                };
                if !own_terminal {
                    spinners.insert(i, reporter.spinner(&plan.label(inst)));
                }
                let inputs = input_paths(project, plan, inst);
                let tx = done_tx.clone();
                scope.spawn(move || {
                    let outcome = execute(project, inst, &inputs, output);
                    let _ = tx.send((i, outcome));
                });
            }
            if running == 0 {
                break;
            }
            let (i, outcome) = done_rx.recv().expect("a running stage reports back");
            running -= 1;
            if let Some(Some(bar)) = spinners.remove(&i) {
                bar.finish_and_clear();
            }
            let inst = &plan.instances[i];
            let label = plan.label(inst);
            match outcome {
                Outcome::Reused(m) => {
                    reporter.line(&run_line(
                        width,
                        &label,
                        "reused",
                        short(&inst.key),
                        &headline_summary(&m.headline),
                    ));
                    manifests[i] = Some(*m);
                    steps[i] = Step::Done;
                }
                Outcome::Ran(m, secs) => {
                    reporter.line(&run_line(
                        width,
                        &label,
                        &format!("ran ({secs:.1} s)"),
                        short(&inst.key),
                        &headline_summary(&m.headline),
                    ));
                    manifests[i] = Some(*m);
                    steps[i] = Step::Done;
                }
                Outcome::Failed(cause, secs) => {
                    reporter.line(&run_line(
                        width,
                        &label,
                        &format!("FAILED ({secs:.1} s)"),
                        short(&inst.key),
                        &cause,
                    ));
                    failures.push((label, cause));
                    steps[i] = Step::Failed;
                }
            }
        }
    });
    Results {
        manifests,
        failures,
    }
}

/// `--in` pairs for an instance: upstream run directories and raw paths, in input order.
fn input_paths(project: &Project, plan: &Plan, inst: &Instance) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for input in &inst.inputs {
        match &input.source {
            Source::Runs { ids, .. } => {
                for &u in ids {
                    let up = &plan.instances[u];
                    out.push((input.name.clone(), project.run_dir(&up.stage, &up.key)));
                }
            }
            Source::Raw(raw) => {
                out.extend(raw.paths.iter().map(|p| (input.name.clone(), p.clone())))
            }
        }
    }
    out
}

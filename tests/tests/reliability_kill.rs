//! Crash safety, measured (issue 14 item 2): SIGKILL every stage of the real chain at random
//! moments, and the `pipeline` driver itself with `--jobs 4`, and after every kill check that
//!
//! - no run under `out/<stage>/<key>/` looks complete but is not (every published run's manifest
//!   names its stage and key and its files' sizes and BLAKE3 hashes match; a run of a reference
//!   key also holds the reference outputs) — a failure is a *torn run*;
//! - `pipeline status` names the killed node `stale` (or `fresh` when the kill came after the
//!   publishing rename, and then the run is complete);
//! - a rerun completes with the same key and the same outputs, bit for bit (files that record
//!   wall-clock times are compared without those fields: reliability_support::digests).
//!
//! Kill moments: a random delay from the stage process's start, uniform over 0..1.1 × the stage's
//! measured run time (so they fall while it loads, computes, writes its outputs and its manifest),
//! killing the stage alone (the driver then cleans up) or the whole process group (nobody cleans
//! up); plus kills at the four hold points of pgolf_store::testing (outputs written / manifest's
//! temp file written / driver verified the run / driver renamed it into place), which a random
//! delay almost never hits. Short version by default (3 kills per stage, 2 driver kills); the
//! full one with `PGOLF_RELIABILITY=full` (50 per stage, 25 driver kills): scripts/reliability.sh.

mod reliability_support;

use pgolf_e2e::process_gone;
use pgolf_e2e::project::status_of;
use pgolf_store::testing::{
    DRIVER_PUBLISHED, DRIVER_VERIFIED, HOLD_ENV, HOLD_FILE_ENV, STAGE_MANIFEST_TEMP,
    STAGE_OUTPUTS_WRITTEN,
};
use rand::Rng;
use reliability_support::*;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// SIGKILL the stage process after a delay; the driver lives and cleans up.
    Stage(Duration),
    /// SIGKILL the driver's whole process group (driver and stage) after a delay.
    Group(Duration),
    /// SIGKILL at a hold point: the stage alone (`true`) or the group.
    Hold(&'static str, bool),
}

const HOLDS: [&str; 4] = [
    STAGE_OUTPUTS_WRITTEN,
    STAGE_MANIFEST_TEMP,
    DRIVER_VERIFIED,
    DRIVER_PUBLISHED,
];

/// The trials for one stage: about a quarter at hold points (each point in turn), the rest at
/// random moments, alternating stage-only and group kills.
fn plan_kills(n: usize, stage_secs: f64, rng: &mut impl Rng) -> Vec<Kill> {
    let span = Duration::from_secs_f64(stage_secs * 1.1);
    let holds = if n >= 4 { n / 4 } else { 1.min(n) };
    let mut kills = Vec::new();
    for i in 0..n {
        if i < holds {
            let point = HOLDS[(i + rng.random_range(0..HOLDS.len())) % HOLDS.len()];
            let stage_only = point.starts_with("stage") && rng.random_bool(0.5);
            kills.push(Kill::Hold(point, stage_only));
        } else if i % 2 == 0 {
            kills.push(Kill::Stage(random_delay(rng, span)));
        } else {
            kills.push(Kill::Group(random_delay(rng, span)));
        }
    }
    kills
}

#[derive(Default)]
struct Tally {
    kills: usize,
    /// The process had already finished when the kill came (not counted as a kill).
    missed: usize,
    /// Kills after the publishing rename: the run was complete and fresh.
    published: usize,
    holds: usize,
    torn: usize,
    status_ok: usize,
    reruns_ok: usize,
    problems: Vec<String>,
}

#[test]
fn every_stage_killed_at_random_moments_leaves_no_torn_run_and_reruns_identically() {
    let started = Instant::now();
    let per_stage = count("PGOLF_KILLS", 3, 50);
    let workers = count("PGOLF_KILL_WORKERS", 2, 2).max(1);
    let chain = Chain::new();
    // The nodes shared out over `workers` projects (copies of this one), longest first.
    let mut order: Vec<usize> = (0..chain.refs.len()).collect();
    order.sort_by(|&a, &b| chain.refs[b].secs.total_cmp(&chain.refs[a].secs));
    let mut shares: Vec<(f64, Vec<usize>)> = vec![(0.0, vec![]); workers];
    for i in order {
        let least = (0..workers)
            .min_by(|&a, &b| shares[a].0.total_cmp(&shares[b].0))
            .unwrap();
        shares[least].0 += chain.refs[i].secs + 0.2;
        shares[least].1.push(i);
    }
    let results: Vec<(usize, Tally)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|(_, nodes)| {
                let mut mine = chain.copy();
                scope.spawn(move || {
                    let mut nodes = nodes;
                    nodes.sort(); // dependency order: the report (rebaselined) comes last
                    nodes
                        .into_iter()
                        .map(|i| (i, kill_node(&mut mine, i, per_stage)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a kill worker panicked"))
            .collect()
    });
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);

    let mut table = Table::new(
        "kill each stage",
        &[
            "stage",
            "kills",
            "at hold points",
            "after publication",
            "missed (done first)",
            "torn runs",
            "status stale",
            "reruns ok",
        ],
    );
    let mut all_problems = Vec::new();
    let (mut total, mut torn) = (0, 0);
    for (i, t) in &results {
        let node = &chain.refs[*i].node;
        total += t.kills;
        torn += t.torn;
        table.row(vec![
            node.clone(),
            t.kills.to_string(),
            t.holds.to_string(),
            t.published.to_string(),
            t.missed.to_string(),
            t.torn.to_string(),
            format!("{}/{}", t.status_ok, t.kills),
            format!("{}/{}", t.reruns_ok, t.kills),
        ]);
        all_problems.extend(t.problems.iter().map(|p| format!("{node}: {p}")));
    }
    table.row(vec![
        "**all**".into(),
        total.to_string(),
        results
            .iter()
            .map(|(_, t)| t.holds)
            .sum::<usize>()
            .to_string(),
        results
            .iter()
            .map(|(_, t)| t.published)
            .sum::<usize>()
            .to_string(),
        results
            .iter()
            .map(|(_, t)| t.missed)
            .sum::<usize>()
            .to_string(),
        torn.to_string(),
        format!(
            "{}/{total}",
            results.iter().map(|(_, t)| t.status_ok).sum::<usize>()
        ),
        format!(
            "{}/{total}",
            results.iter().map(|(_, t)| t.reruns_ok).sum::<usize>()
        ),
    ]);
    table.emit(&format!(
        ": {total} kills, {torn} torn runs, {workers} projects side by side, {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let holds: usize = results.iter().map(|(_, t)| t.holds).sum();
    let status_ok: usize = results.iter().map(|(_, t)| t.status_ok).sum();
    let reruns_ok: usize = results.iter().map(|(_, t)| t.reruns_ok).sum();
    summary_row(
        1,
        "SIGKILL of each stage",
        &format!("{total} kills over 9 nodes ({per_stage} each, {holds} at hold points)"),
        torn + (total - status_ok) + (total - reruns_ok),
        &format!("torn runs {torn}; status stale {status_ok}/{total}; reruns same key and outputs {reruns_ok}/{total}"),
    );
    assert!(all_problems.is_empty(), "{}", all_problems.join("\n"));
}

/// `per_stage` kills of node `i`'s stage in `chain`'s project.
fn kill_node(chain: &mut Chain, i: usize, per_stage: usize) -> Tally {
    if chain.refs[i].node == "report" {
        let node = chain.refs[i].node.clone();
        chain.rebaseline(&node);
    }
    let r = chain.refs[i].clone();
    let logs = chain.p.path().join("logs");
    let mut rng = rng(i as u64 + 1);
    // The span of random moments follows the stage's latest measured run time (the machine's
    // load changes it).
    let mut secs = r.secs;
    let mut t = Tally::default();
    let mut queue: std::collections::VecDeque<Kill> = plan_kills(per_stage, secs, &mut rng).into();
    let mut attempts = 0;
    while let Some(kill) = queue.pop_front() {
        attempts += 1;
        assert!(
            attempts < per_stage * 4 + 10,
            "{}: too many missed kills",
            r.node
        );
        let kill = match kill {
            Kill::Stage(_) | Kill::Group(_) if attempts > 1 => {
                let d = random_delay(&mut rng, Duration::from_secs_f64(secs * 1.1));
                if matches!(kill, Kill::Stage(_)) {
                    Kill::Stage(d)
                } else {
                    Kill::Group(d)
                }
            }
            other => other,
        };
        match trial(chain, &r, kill, &logs, &mut t) {
            None => {
                // Done before the kill: try again with another moment.
                t.missed += 1;
                queue.push_back(kill);
            }
            Some(rerun_secs) => {
                t.kills += 1;
                t.holds += usize::from(matches!(kill, Kill::Hold(..)));
                if let Some(s) = rerun_secs {
                    secs = s;
                }
            }
        }
    }
    t
}

/// One kill of `r`'s stage and the checks after it. `None`: the kill came too late (nothing was
/// killed); else the rerun's run time, when it ran.
fn trial(
    chain: &Chain,
    r: &Reference,
    kill: Kill,
    logs: &std::path::Path,
    t: &mut Tally,
) -> Option<Option<f64>> {
    let run_dir = chain.run_dir(r);
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).unwrap();
    }
    let hold_file = logs.join("hold");
    let _ = std::fs::remove_file(&hold_file);
    let env: Vec<(&str, String)> = match kill {
        Kill::Hold(point, _) => vec![
            (HOLD_ENV, point.to_string()),
            (HOLD_FILE_ENV, hold_file.display().to_string()),
        ],
        _ => vec![],
    };
    let mut driver = chain.spawn(&["run", &r.node], &env, logs);
    let pgid = -(driver.id() as i32);
    let landed = match kill {
        Kill::Stage(delay) | Kill::Group(delay) => {
            match wait_for_stage(&mut driver, Duration::from_secs(60)) {
                None => false,
                Some(stage) => {
                    std::thread::sleep(delay);
                    if process_gone(stage) {
                        false
                    } else if let Kill::Stage(_) = kill {
                        sigkill(stage as i32)
                    } else {
                        sigkill(pgid)
                    }
                }
            }
        }
        Kill::Hold(point, stage_only) => {
            match wait_for_hold(&hold_file, &mut driver, Duration::from_secs(60)) {
                None => {
                    t.problems.push(format!("hold point {point} never reached"));
                    false
                }
                Some(pid) if stage_only => sigkill(pid as i32),
                Some(_) => sigkill(pgid),
            }
        }
    };
    let status = driver.wait().unwrap();
    if !landed {
        let _ = sigkill(pgid);
        return None;
    }
    let torn = chain.torn_runs();
    t.torn += torn.len();
    t.problems.extend(torn);

    let published = run_dir.exists();
    if published {
        t.published += 1;
    }
    let (words, text) = chain.status();
    let want = if published { "fresh" } else { "stale" };
    if words[&r.node] == want {
        t.status_ok += 1;
    } else {
        t.problems.push(format!(
            "after {kill:?} (driver {status}) status says {} not {want}:\n{text}",
            words[&r.node]
        ));
    }

    let rerun = chain.p.pipeline(&["run", &r.node]);
    let out = pgolf_e2e::stdout(&rerun);
    let mut problems = Vec::new();
    if !rerun.status.success() {
        problems.push(format!(
            "rerun failed after {kill:?}: {}",
            output_text(&rerun)
        ));
    } else {
        let word = status_of(&out, &r.node);
        if word != if published { "reused" } else { "ran" } {
            problems.push(format!("rerun after {kill:?}: {} ({out})", word));
        }
        problems.extend(chain.matches_reference(&out, &[r.node.as_str()]));
        let leftovers: Vec<String> = std::fs::read_dir(chain.p.out().join(&r.stage))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&format!(".tmp-{}", r.key)))
            .collect();
        if !leftovers.is_empty() {
            problems.push(format!("the rerun left {leftovers:?}"));
        }
    }
    if problems.is_empty() {
        t.reruns_ok += 1;
    }
    t.problems.extend(problems);
    Some(ran_secs(&out, &r.node))
}

/// The run time on `node`'s `ran (X s)` line.
fn ran_secs(out: &str, node: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(node))?
        .split_once("ran (")?
        .1
        .split_once(" s)")?
        .0
        .trim()
        .parse()
        .ok()
}

/// SIGKILL the driver alone, running the whole chain with `--jobs 4`, at a random moment: its
/// stages die with it, nothing torn is left, status calls every unfinished node stale, and a rerun
/// with `--jobs 4` completes with every reference key and output.
#[test]
fn the_driver_killed_mid_chain_with_jobs_4_leaves_no_torn_run_and_reruns_identically() {
    let started = Instant::now();
    let n = count("PGOLF_DRIVER_KILLS", 2, 25);
    let mut chain = Chain::new();
    let logs = chain.p.path().join("logs");
    // Every rerun reruns the report's inputs, whose manifests it quotes (times): the report is
    // checked by its key and by a second run over the same inputs instead.
    let report = chain.refs.iter().position(|r| r.node == "report").unwrap();
    chain.refs[report].digests.clear();
    let mut rng = rng(1000);
    let (mut kills, mut torn, mut orphans, mut status_ok, mut reruns_ok) = (0, 0, 0, 0, 0);
    let mut problems = Vec::new();
    let mut published_total = 0;
    while kills < n {
        // The chain from a random node on is missing (half the chain on average, so the full
        // count stays in budget); the driver runs it with --jobs 4 and is killed in its span.
        let from = rng.random_range(1..chain.refs.len());
        for r in &chain.refs[from..] {
            let dir = chain.run_dir(r);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
        let span: f64 = chain.refs[from..].iter().map(|r| r.secs).sum();
        let mut driver = chain.spawn(&["run", "--jobs", "4"], &[], &logs);
        let delay = random_delay(&mut rng, Duration::from_secs_f64(span * 0.9));
        std::thread::sleep(delay);
        let stages = children(driver.id());
        if driver.try_wait().unwrap().is_some() || !sigkill(driver.id() as i32) {
            continue; // finished first
        }
        driver.wait().unwrap();
        kills += 1;
        // Its stages die with it.
        let start = Instant::now();
        while stages.iter().any(|&s| !process_gone(s)) && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let alive: Vec<u32> = stages
            .iter()
            .copied()
            .filter(|&s| !process_gone(s))
            .collect();
        if !alive.is_empty() {
            orphans += alive.len();
            problems.push(format!("stages {alive:?} outlived their driver"));
            for s in alive {
                sigkill(s as i32);
            }
        }
        let found = chain.torn_runs();
        torn += found.len();
        problems.extend(found);
        let (words, text) = chain.status();
        let mut ok = true;
        for r in &chain.refs {
            let want = if chain.run_dir(r).exists() {
                "fresh"
            } else {
                "stale"
            };
            published_total += usize::from(want == "fresh");
            if words[&r.node] != want {
                ok = false;
                problems.push(format!(
                    "after a driver kill at {delay:?}: {} is {} not {want}:\n{text}",
                    r.node, words[&r.node]
                ));
            }
        }
        status_ok += usize::from(ok);
        let rerun = chain.p.pipeline(&["run", "--jobs", "4"]);
        let mut bad = Vec::new();
        if !rerun.status.success() {
            bad.push(format!("rerun failed: {}", output_text(&rerun)));
        } else {
            let out = pgolf_e2e::stdout(&rerun);
            let nodes: Vec<&str> = NODES
                .iter()
                .map(|&(n, _)| n)
                .filter(|&n| n != "report")
                .collect();
            bad.extend(chain.matches_reference(&out, &nodes));
            let r = &chain.refs[report];
            if !r
                .key
                .starts_with(&pgolf_e2e::project::short_key_of(&out, "report"))
            {
                bad.push(format!("report: rerun key differs: {out}"));
            } else {
                let first = digests(&chain.run_dir(r), "report");
                let mut again = chain.copy();
                again.rebaseline("report");
                if again.refs[report].digests != first {
                    bad.push("report: a second run over the same inputs differs".into());
                }
            }
        }
        reruns_ok += usize::from(bad.is_empty());
        problems.extend(bad);
    }
    let mut table = Table::new(
        "kill the driver (--jobs 4)",
        &[
            "driver kills",
            "runs already published",
            "stages outliving the driver",
            "torn runs",
            "status right",
            "reruns ok",
        ],
    );
    table.row(vec![
        kills.to_string(),
        published_total.to_string(),
        orphans.to_string(),
        torn.to_string(),
        format!("{status_ok}/{kills}"),
        format!("{reruns_ok}/{kills}"),
    ]);
    table.emit(&format!(": {:.0} s", started.elapsed().as_secs_f64()));
    summary_row(
        2,
        "SIGKILL of the driver (--jobs 4)",
        &format!("{kills} kills"),
        torn + orphans + (kills - status_ok) + (kills - reruns_ok),
        &format!("torn runs {torn}; stages outliving it {orphans}; reruns ok {reruns_ok}/{kills}"),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

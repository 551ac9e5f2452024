//! Concurrency (issue 14 item 3): several `pipeline run` drivers on one `out/` with overlapping
//! DAGs, a lock holder killed while another driver waits for it, and `gc` in a loop while a sweep
//! runs.
//!
//! The per-key lock is `out/<stage>/.locks/<key>`, an exclusive `flock` (fs4) taken by the driver
//! for the whole run of the key: the OS drops it when its holder dies, even by SIGKILL, so no
//! stale lock needs breaking (a lock file with a pid in it would need a liveness guess, and a pid
//! can be reused). A driver that waited re-checks freshness under the lock and reuses what the
//! holder published. `gc` removes a finished run only while it holds both that run's key lock and
//! its use-lock `<key>.use`, which every driver holds shared for each run its plan uses, for its
//! whole life (docs/PIPELINE.md "gc").

mod reliability_support;

use pgolf_e2e::stdout;
use reliability_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Watches the stage processes of one project: (stage, key) → the pids seen running it, and
/// whether two were ever seen at the same moment.
struct Sampler {
    seen: Mutex<BTreeMap<String, BTreeSet<u32>>>,
    overlaps: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Sampler {
    fn new() -> Sampler {
        Sampler {
            seen: Mutex::new(BTreeMap::new()),
            overlaps: Mutex::new(vec![]),
            stop: AtomicBool::new(false),
        }
    }

    /// Polls /proc every millisecond for processes whose `--out` is a temp dir of `out`.
    fn watch(&self, out: &std::path::Path) {
        let prefix = out.display().to_string();
        while !self.stop.load(Ordering::Relaxed) {
            let mut now: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if pgolf_e2e::process_gone(pid) {
                    continue;
                }
                let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    continue;
                };
                let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
                let Some(i) = args.iter().position(|a| *a == b"--out") else {
                    continue;
                };
                let Some(dir) = args
                    .get(i + 1)
                    .map(|a| String::from_utf8_lossy(a).to_string())
                else {
                    continue;
                };
                let Some(rest) = dir.strip_prefix(&prefix) else {
                    continue;
                };
                // /<stage>/.tmp-<key>-<pid>
                let mut parts = rest.trim_start_matches('/').splitn(2, '/');
                let stage = parts.next().unwrap_or("").to_string();
                let key = parts
                    .next()
                    .unwrap_or("")
                    .trim_start_matches(".tmp-")
                    .get(..64)
                    .unwrap_or("")
                    .to_string();
                now.entry(format!("{stage}/{key}")).or_default().push(pid);
            }
            let mut seen = self.seen.lock().unwrap();
            for (k, pids) in now {
                if pids.len() > 1 {
                    self.overlaps
                        .lock()
                        .unwrap()
                        .push(format!("{k}: pids {pids:?} at once"));
                }
                seen.entry(k).or_default().extend(pids);
            }
            drop(seen);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct Round {
    drivers: usize,
    runs: usize,
    computed_twice: usize,
    overlaps: usize,
    lock_waits: usize,
    failures: usize,
    torn: usize,
    secs: f64,
}

/// `sets[i]` are driver i's `--set` arguments; every driver runs the target `eval-flat` (the
/// chain up to one evaluation) on one fresh `out/`, all started together.
fn round(sets: &[Vec<&str>], problems: &mut Vec<String>) -> Round {
    let started = Instant::now();
    let p = pgolf_e2e::project::TestProject::new(TINY_CHAIN);
    let sampler = Sampler::new();
    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| sampler.watch(&p.out()));
        let drivers: Vec<_> = sets
            .iter()
            .map(|set| {
                let mut args = vec!["run", "eval-flat", "--jobs", "2"];
                for s in set {
                    args.extend(["--set", s]);
                }
                let mut cmd = p.command(&args);
                cmd.stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().expect("spawn pipeline")
            })
            .collect();
        let outs = drivers
            .into_iter()
            .map(|d| d.wait_with_output().unwrap())
            .collect();
        sampler.stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        outs
    });
    // Each run key must have been computed by exactly one driver ("ran" once over all drivers),
    // the others reusing it.
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let mut all: BTreeSet<String> = BTreeSet::new();
    let mut failures = 0;
    let mut lock_waits = 0;
    for (i, out) in outputs.iter().enumerate() {
        if !out.status.success() {
            failures += 1;
            problems.push(format!("driver {i} failed: {}", output_text(out)));
        }
        lock_waits += pgolf_e2e::stderr(out)
            .matches("another pipeline is running this key")
            .count();
        for line in stdout(out).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(key) = words
                .iter()
                .find(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            else {
                continue;
            };
            let stage = stage_of(words[0]);
            all.insert(format!("{stage}/{key}"));
            if words.get(1) == Some(&"ran") {
                *ran.entry(format!("{stage}/{key}")).or_default() += 1;
            }
        }
    }
    let computed_twice = ran.values().filter(|&&n| n > 1).count();
    for (k, n) in &ran {
        if *n > 1 {
            problems.push(format!("{k} was computed {n} times"));
        }
    }
    let seen = sampler.seen.lock().unwrap();
    for (k, pids) in seen.iter() {
        if pids.len() > 1 {
            problems.push(format!(
                "{k} was run by {} stage processes: {pids:?}",
                pids.len()
            ));
        }
    }
    let overlaps = sampler.overlaps.lock().unwrap().len();
    problems.extend(sampler.overlaps.lock().unwrap().iter().cloned());
    let torn = torn_runs(&p.out(), &[]);
    problems.extend(torn.iter().cloned());
    Round {
        drivers: sets.len(),
        runs: all.len(),
        computed_twice,
        overlaps,
        lock_waits,
        failures,
        torn: torn.len(),
        secs: started.elapsed().as_secs_f64(),
    }
}

/// The stage of a status line's label (`quantize-pack[quantize-pack.level=1]` → quantize-pack).
fn stage_of(label: &str) -> &'static str {
    let node = label.split('[').next().unwrap_or(label);
    NODES
        .iter()
        .find(|(n, _)| *n == node)
        .map(|(_, s)| *s)
        .unwrap_or("?")
}

#[test]
fn two_and_four_drivers_on_one_out_compute_each_key_once_and_all_finish() {
    let rounds = count("PGOLF_CONCURRENT_ROUNDS", 1, 3);
    let mut problems = Vec::new();
    let mut table = Table::new(
        "concurrent drivers",
        &[
            "drivers",
            "rounds",
            "distinct runs",
            "computed twice",
            "seen running twice at once",
            "lock waits",
            "failed drivers",
            "torn runs",
            "s",
        ],
    );
    // Two quantize sweeps sharing tokenize → train → ema-finalize → gptq-calibrate, overlapping
    // in one value; then four drivers, two of them identical.
    let two: Vec<Vec<&str>> = vec![
        vec!["quantize-pack.level=1,2"],
        vec!["quantize-pack.level=2,3"],
    ];
    let four: Vec<Vec<&str>> = vec![
        vec!["quantize-pack.level=1,2"],
        vec!["quantize-pack.level=2,3"],
        vec!["quantize-pack.level=3,1"],
        vec!["quantize-pack.level=1,2"],
    ];
    for sets in [&two, &four] {
        let mut sum: Option<Round> = None;
        for _ in 0..rounds {
            let r = round(sets, &mut problems);
            sum = Some(match sum {
                None => r,
                Some(s) => Round {
                    drivers: s.drivers,
                    runs: s.runs + r.runs,
                    computed_twice: s.computed_twice + r.computed_twice,
                    overlaps: s.overlaps + r.overlaps,
                    lock_waits: s.lock_waits + r.lock_waits,
                    failures: s.failures + r.failures,
                    torn: s.torn + r.torn,
                    secs: s.secs + r.secs,
                },
            });
        }
        let s = sum.unwrap();
        table.row(vec![
            s.drivers.to_string(),
            rounds.to_string(),
            s.runs.to_string(),
            s.computed_twice.to_string(),
            s.overlaps.to_string(),
            s.lock_waits.to_string(),
            s.failures.to_string(),
            s.torn.to_string(),
            format!("{:.0}", s.secs),
        ]);
        assert!(
            s.lock_waits > 0,
            "the drivers never contended for a key: the test shows nothing"
        );
    }
    table.emit("");
    let cell = |col: usize| -> usize {
        table
            .rows
            .iter()
            .map(|r| r[col].parse::<usize>().unwrap())
            .sum()
    };
    summary_row(
        3,
        "concurrent drivers on one out/",
        &format!(
            "2 and 4 drivers × {rounds} round(s), {} runs, {} lock waits",
            cell(2),
            cell(5)
        ),
        cell(3) + cell(4) + cell(6) + cell(7),
        "no key computed twice or by two processes at once; every driver finished; no torn run",
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A driver waiting for a key whose holder is SIGKILLed gets the lock at once, clears the dead
/// run's temp dir and computes the key itself.
#[test]
fn a_killed_lock_holder_frees_its_key_for_the_waiting_driver() {
    let p = pgolf_e2e::project::TestProject::new(TINY_CHAIN);
    let logs = p.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let hold = logs.join("hold");
    let chain = Chain { p, refs: vec![] };
    let mut holder = chain.spawn(
        &["run", "tokenize"],
        &[
            (
                "PGOLF_TEST_HOLD",
                pgolf_store::testing::STAGE_OUTPUTS_WRITTEN.to_string(),
            ),
            ("PGOLF_TEST_HOLD_FILE", hold.display().to_string()),
        ],
        &logs.join("holder"),
    );
    wait_for_hold(&hold, &mut holder, Duration::from_secs(60))
        .expect("the holder reached its hold point");
    let waiter = chain
        .p
        .command(&["run", "tokenize"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The waiter is waiting (it says so) while the holder holds.
    std::thread::sleep(Duration::from_millis(500));
    assert!(sigkill(-(holder.id() as i32)));
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("another pipeline is running this key; waiting"),
        "{text}"
    );
    assert_eq!(
        pgolf_e2e::project::status_of(&stdout(&out), "tokenize"),
        "ran",
        "{text}"
    );
    assert!(torn_runs(&chain.p.out(), &[]).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(chain.p.out().join("tokenize"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the dead holder's temp dir is left: {leftovers:?}"
    );
}

/// `gc` while a sweep is held mid-run (its first gptq-calibrate variant holding, the train and
/// ema-finalize variants it made and uses finished): sweep variants are no profile's current keys,
/// so gc would remove them, but they are in use: kept. Once the driver is dead gc removes them.
#[test]
fn gc_during_a_held_sweep_keeps_every_run_the_sweep_uses() {
    let p = pgolf_e2e::project::TestProject::new(TINY_CHAIN);
    p.ok(&["run", "tokenize"]);
    let logs = p.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let hold = logs.join("hold");
    let chain = Chain { p, refs: vec![] };
    let mut driver = chain.spawn(
        &["run", "gptq-calibrate", "--set", "train.seed=1,2,3"],
        &[
            (
                "PGOLF_TEST_HOLD",
                format!(
                    "{}@gptq-calibrate",
                    pgolf_store::testing::STAGE_OUTPUTS_WRITTEN
                ),
            ),
            ("PGOLF_TEST_HOLD_FILE", hold.display().to_string()),
        ],
        &logs.join("sweep"),
    );
    wait_for_hold(&hold, &mut driver, Duration::from_secs(120))
        .expect("the sweep reached gptq-calibrate");
    let variants = chain.p.runs("train").len() + chain.p.runs("ema-finalize").len();
    assert!(
        variants >= 4,
        "the sweep made {variants} train/ema-finalize runs before holding"
    );
    let before = chain.p.out_listing();
    let out = chain.p.ok(&["gc"]);
    let kept = out
        .lines()
        .filter(|l| l.starts_with("in use, kept"))
        .count();
    assert!(
        kept >= variants,
        "gc kept {kept} of the sweep's {variants} runs:\n{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("removed")), "{out}");
    let after = chain.p.out_listing();
    let gone: Vec<&String> = before.iter().filter(|b| !after.contains(b)).collect();
    assert!(gone.is_empty(), "gc removed {gone:?}");

    assert!(sigkill(-(driver.id() as i32)));
    driver.wait().unwrap();
    let out = chain.p.ok(&["gc"]);
    let removed = out.lines().filter(|l| l.starts_with("removed")).count();
    assert!(
        removed >= variants,
        "with the sweep dead gc removed only {removed}:\n{out}"
    );
    let mut table = Table::new(
        "gc during a sweep",
        &[
            "sweep runs in use",
            "kept by gc while it ran",
            "removed while it ran",
            "removed after it died",
        ],
    );
    table.row(vec![
        variants.to_string(),
        kept.to_string(),
        "0".into(),
        removed.to_string(),
    ]);
    table.emit("");
    summary_row(
        4,
        "gc during a held sweep",
        &format!("{variants} runs in use"),
        0,
        &format!("kept {kept}, removed 0 while alive, {removed} after its death"),
    );
}

/// `gc` in a loop while a sweep runs to the end: the sweep's consumers never find an input
/// removed under them, so it finishes.
#[test]
fn gc_in_a_loop_during_a_sweep_never_breaks_it() {
    let p = pgolf_e2e::project::TestProject::new(TINY_CHAIN);
    p.ok(&["run", "tokenize"]);
    let done = AtomicBool::new(false);
    let (out, passes) = std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            let mut passes = 0;
            while !done.load(Ordering::Relaxed) {
                let o = p.pipeline(&["gc"]);
                assert!(o.status.success(), "gc failed: {}", output_text(&o));
                passes += 1;
            }
            passes
        });
        let out = p.pipeline(&["run", "gptq-calibrate", "--set", "train.seed=1,2,3"]);
        done.store(true, Ordering::Relaxed);
        (out, gc.join().unwrap())
    });
    assert!(
        out.status.success(),
        "the sweep failed under gc: {}",
        output_text(&out)
    );
    assert!(passes >= 5, "gc ran only {passes} times during the sweep");
    assert!(torn_runs(&p.out(), &[]).is_empty());
    let mut table = Table::new(
        "gc in a loop during a sweep",
        &["gc passes during the run", "sweep finished"],
    );
    table.row(vec![passes.to_string(), "yes".into()]);
    table.emit("");
    summary_row(
        5,
        "gc in a loop during a sweep",
        &format!("{passes} gc passes"),
        0,
        "the sweep finished, nothing torn",
    );
}

//! The workspace's crate graph, pinned: every edge between workspace crates (normal, build and
//! dev) is one the table below allows, the graph has no cycle (dev-dependencies included), no
//! library depends on a stage, and the light stages do not link the model, the kernels or
//! libtorch, even transitively. Edges come from `cargo metadata`, the transitive check from
//! `cargo tree` (cargo's own feature resolution).
//!
//! The table allows what the crates may use; an allowed edge need not exist.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const NORMAL: &str = "normal";
const BUILD: &str = "build";
const DEV: &str = "dev";
/// In the table: any library crate (under `shared/`) other than the crate itself.
const ANY_LIBRARY: &str = "<any library>";

/// Allowed edges of the library crates (`shared/*`): (crate, kind, may depend on). A crate or kind
/// not listed may depend on no workspace crate. What a crate may use normally, its tests may too.
#[rustfmt::skip]
const LIBRARY_EDGES: &[(&str, &str, &[&str])] = &[
    // The stage contract: run keys, manifests, file names, the device record. At the bottom.
    ("pgolf-store",     NORMAL, &[]),
    ("pgolf-buildid",   NORMAL, &[]),
    // Its byte tables use the counted evaluator's rule (written once).
    ("pgolf-data",      NORMAL, &["pgolf-store", "pgolf-evaluator"]),
    // The counted evaluator: config, artifact decode, CPU forward, BPB. Self-contained.
    ("pgolf-evaluator", NORMAL, &[]),
    // libtorch/device glue (device parsing, the CUDA probe and shims, the profiler) and the
    // device record; its build compiles the C++ shims.
    ("pgolf-runtime",   NORMAL, &["pgolf-store"]),
    ("pgolf-runtime",   BUILD,  &["pgolf-buildid"]),
    ("pgolf-kernels",   NORMAL, &["pgolf-runtime"]),
    ("pgolf-kernels",   BUILD,  &["pgolf-buildid"]),
    ("pgolf-model",     NORMAL, &["pgolf-kernels", "pgolf-runtime", "pgolf-evaluator"]),
    ("pgolf-model",     DEV,    &["pgolf-data", "pgolf-testkit"]),
    ("pgolf-optim",     NORMAL, &[]),
    // c10d process groups behind pgolf-optim's Collective.
    ("pgolf-dist",      NORMAL, &["pgolf-optim", "pgolf-store"]),
    ("pgolf-dist",      BUILD,  &["pgolf-buildid"]),
    ("pgolf-quant",     NORMAL, &["pgolf-evaluator", "pgolf-store"]),
    // Core needs data/evaluator/store; model, quant and runtime behind its `torch` feature, and
    // optim's Collective there too (TTT across ranks sums its gradients through the stage's group).
    ("pgolf-eval",      NORMAL, &["pgolf-data", "pgolf-evaluator", "pgolf-store",
                                  "pgolf-model", "pgolf-quant", "pgolf-runtime", "pgolf-optim"]),
    ("pgolf-eval",      DEV,    &["pgolf-testkit"]),
    // Test fixtures: may build on any library; only ever a dev-dependency (checked below).
    ("pgolf-testkit",   NORMAL, &[ANY_LIBRARY]),
];

/// Stages (`stages/*`) may depend on library crates only (pgolf-testkit as a dev-dependency
/// only). These may not reach the listed crates through normal or build edges, even transitively.
#[rustfmt::skip]
const STAGE_FORBIDDEN: &[(&str, &[&str])] = &[
    ("ema-finalize",  &["pgolf-model", "pgolf-kernels", "pgolf-runtime", "tch", "torch-sys"]),
    ("report",        &["pgolf-model", "pgolf-kernels", "pgolf-runtime", "tch", "torch-sys"]),
    ("pipeline",      &["pgolf-model", "pgolf-kernels", "pgolf-runtime", "tch", "torch-sys"]),
    ("tokenize",      &["pgolf-model", "pgolf-kernels", "pgolf-runtime", "tch", "torch-sys"]),
    ("quantize-pack", &["pgolf-model", "pgolf-kernels"]),
    // The portable evaluator: its point is to run where neither libtorch nor CUDA is.
    ("portable-eval", &["pgolf-model", "pgolf-kernels", "pgolf-runtime", "tch", "torch-sys", "cudarc"]),
];

const TESTKIT: &str = "pgolf-testkit";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Library,
    Stage,
    /// The end-to-end test crate (`tests/`): runs the stage binaries, links only libraries.
    Harness,
    /// The fuzz targets (`fuzz/`): call the parsers themselves, so they link libraries and the
    /// libraries of the stages named in [`FUZZ_STAGES`]; nothing depends on them.
    Fuzz,
}

/// The stages whose parsers the fuzz targets call through the stage's library (lib.rs).
const FUZZ_STAGES: &[&str] = &["pipeline"];

struct Graph {
    roles: BTreeMap<String, Role>,
    /// (from, kind, to), workspace-internal only.
    edges: BTreeSet<(String, String, String)>,
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(pgolf_e2e::workspace_root());
    cmd
}

fn graph() -> Graph {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let root = pgolf_e2e::workspace_root().canonicalize().unwrap();
    let packages = meta["packages"].as_array().expect("packages");
    let mut roles = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().unwrap().to_string();
        let manifest = std::path::Path::new(p["manifest_path"].as_str().unwrap())
            .canonicalize()
            .unwrap();
        let rel = manifest.strip_prefix(&root).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let role = match top.as_ref() {
            "shared" => Role::Library,
            "stages" => Role::Stage,
            "tests" => Role::Harness,
            "fuzz" => Role::Fuzz,
            other => {
                panic!("{name}: a workspace crate under {other}/, which this test does not know")
            }
        };
        roles.insert(name, role);
    }
    let mut edges = BTreeSet::new();
    for p in packages {
        let from = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            let to = d["name"].as_str().unwrap();
            if !roles.contains_key(to) || !d["source"].is_null() {
                continue;
            }
            let kind = d["kind"].as_str().unwrap_or(NORMAL);
            edges.insert((from.to_string(), kind.to_string(), to.to_string()));
        }
    }
    Graph { roles, edges }
}

/// Why the edge is not allowed, if it is not.
fn refusal(g: &Graph, from: &str, kind: &str, to: &str) -> Option<String> {
    let to_role = g.roles[to];
    if g.roles[from] == Role::Fuzz && to_role == Role::Stage && FUZZ_STAGES.contains(&to) {
        return None;
    }
    if to_role != Role::Library {
        return Some(format!("{to} is a {to_role:?}, not a library"));
    }
    if to == TESTKIT && kind != DEV {
        return Some(format!("{TESTKIT} may only be a dev-dependency"));
    }
    match g.roles[from] {
        Role::Harness | Role::Fuzz => None,
        Role::Stage => {
            let forbidden = STAGE_FORBIDDEN
                .iter()
                .find(|(s, _)| *s == from)
                .map_or(&[][..], |(_, f)| f);
            (kind != DEV && forbidden.contains(&to)).then(|| format!("{from} may not link {to}"))
        }
        Role::Library => {
            assert!(
                LIBRARY_EDGES.iter().any(|(c, _, _)| *c == from),
                "{from}: a library crate missing from LIBRARY_EDGES (add its allowed edges)"
            );
            let allowed = |k: &str| {
                LIBRARY_EDGES
                    .iter()
                    .filter(|(c, kk, _)| *c == from && *kk == k)
                    .flat_map(|(_, _, to)| to.iter())
                    .any(|t| *t == to || (*t == ANY_LIBRARY && to != from))
            };
            let ok = allowed(kind) || (kind == DEV && allowed(NORMAL));
            (!ok).then(|| "not in LIBRARY_EDGES".to_string())
        }
    }
}

#[test]
fn every_workspace_edge_is_allowed() {
    let g = graph();
    assert!(g.roles.len() >= 15, "crates: {:?}", g.roles.keys());
    let bad: Vec<String> = g
        .edges
        .iter()
        .filter_map(|(from, kind, to)| {
            refusal(&g, from, kind, to).map(|why| format!("{from} -[{kind}]-> {to}: {why}"))
        })
        .collect();
    assert!(bad.is_empty(), "edges not allowed:\n{}", bad.join("\n"));
}

#[test]
fn no_library_depends_on_a_stage() {
    let g = graph();
    for (from, kind, to) in &g.edges {
        if g.roles[from] == Role::Library {
            assert_eq!(g.roles[to], Role::Library, "{from} -[{kind}]-> {to}");
        }
    }
}

#[test]
fn the_graph_has_no_cycle_dev_dependencies_included() {
    let g = graph();
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, _, to) in &g.edges {
        next.entry(from).or_default().insert(to);
    }
    // Depth-first search; a crate met again while on the current path closes a cycle.
    fn visit<'a>(
        at: &'a str,
        next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|p| *p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at);
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at);
        for to in next.get(at).into_iter().flatten() {
            if let Some(cycle) = visit(to, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at);
        None
    }
    let mut done = BTreeSet::new();
    for start in g.roles.keys() {
        if let Some(cycle) = visit(start, &next, &mut Vec::new(), &mut done) {
            panic!("dependency cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn light_stages_do_not_link_the_model_kernels_or_libtorch() {
    let g = graph();
    for (stage, forbidden) in STAGE_FORBIDDEN {
        assert_eq!(g.roles.get(*stage), Some(&Role::Stage), "{stage}");
        // What `cargo build -p <stage>` compiles and links: normal and build edges, its features.
        let out = cargo()
            .args(["tree", "--locked", "-p", stage, "-e", "normal,build"])
            .args(["--prefix", "none", "--format", "{p}"])
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "cargo tree -p {stage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let linked: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(linked.contains(stage), "cargo tree -p {stage}: {text}");
        let reached: Vec<&&str> = forbidden.iter().filter(|f| linked.contains(**f)).collect();
        assert!(reached.is_empty(), "{stage} links {reached:?}");
    }
}

//! The fuzz targets under `cargo test` (CI's short version of bench/fuzz.sh): every file of
//! `corpus/<target>/` and `regressions/<target>/` (each crash the fuzzer found, kept), the
//! repository's real pipeline.yaml and the team's tokenizer models, then a seeded mutation run
//! of each target over its seeds — not coverage-guided, a few seconds each (`PGOLF_FUZZ_MS`,
//! default 1500 per target), so a shallow defect shows in CI before anyone runs the fuzzer.
//!
//! An input that panics is written to `target/fuzz-failures/<target>/` and named in the failure.

use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Seeds of `target`: its corpus, its regressions, and real files of the repository.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut paths = files_in(&crate_dir().join("corpus").join(target));
    paths.extend(files_in(&crate_dir().join("regressions").join(target)));
    let repo = crate_dir().join("..");
    match target {
        "pipeline_yaml" => paths.push(repo.join("pipeline.yaml")),
        "tokenizer_model" => paths.extend(
            files_in(&repo.join("../shared/tokenizers"))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "model")),
        ),
        _ => {}
    }
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect()
}

/// Runs `f` on `input`; a panic saves the input and fails naming it.
fn check(target: &str, f: fn(&[u8]), what: &str, input: &[u8]) {
    let result = catch_unwind(AssertUnwindSafe(|| f(input)));
    if let Err(panic) = result {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let dir = crate_dir().join("../target/fuzz-failures").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("crash-{}", blake3::hash(input).to_hex()));
        std::fs::write(&file, input).unwrap();
        panic!(
            "{target}: {what} panics: {msg}; input saved as {}",
            file.display()
        );
    }
}

/// One random edit of the kinds that break parsers: bit flips, interesting bytes and 32/64-bit
/// integers at random or header offsets, cuts, insertions, duplicated and spliced runs.
fn mutate(rng: &mut rand_pcg::Pcg64, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let n = v.len();
        let at = |rng: &mut rand_pcg::Pcg64, n: usize| {
            if n == 0 {
                0
            } else if rng.random_bool(0.3) {
                rng.random_range(0..n.min(64))
            } else {
                rng.random_range(0..n)
            }
        };
        match rng.random_range(0..8) {
            0 if n > 0 => {
                let i = at(rng, n);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if n > 0 => {
                let i = at(rng, n);
                v[i] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'.', b'/'][rng.random_range(0..9)];
            }
            2 if n >= 8 => {
                let i = at(rng, n - 7);
                let x: u64 = [
                    0,
                    1,
                    u32::MAX as u64,
                    i32::MAX as u64,
                    u64::MAX,
                    n as u64 * 2,
                ][rng.random_range(0..6)];
                let w = if rng.random_bool(0.5) { 4 } else { 8 };
                v[i..i + w].copy_from_slice(&x.to_le_bytes()[..w]);
            }
            3 => v.truncate(rng.random_range(0..=n)),
            4 => {
                let i = rng.random_range(0..=n);
                let k = rng.random_range(1..=16);
                let fill: Vec<u8> = (0..k).map(|_| rng.random()).collect();
                v.splice(i..i, fill);
            }
            5 if n > 0 => {
                let (i, j) = (rng.random_range(0..n), rng.random_range(0..n));
                let a = i.min(j);
                let b = i.max(j).min(a + 256);
                v.drain(a..b);
            }
            6 if n > 0 => {
                let (i, k) = (rng.random_range(0..n), rng.random_range(1..=64));
                let run = v[i..(i + k).min(n)].to_vec();
                let j = rng.random_range(0..=n);
                v.splice(j..j, run);
            }
            7 if !other.is_empty() => {
                let i = rng.random_range(0..other.len());
                let tail = &other[i..(i + 256).min(other.len())];
                let j = rng.random_range(0..=n);
                v.splice(j..j, tail.iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn budget() -> Duration {
    let ms = std::env::var("PGOLF_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    Duration::from_millis(ms)
}

fn run_target(target: &str) {
    let f = pgolf_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .unwrap()
        .1;
    let seeds = seeds(target);
    assert!(
        !seeds.is_empty(),
        "{target}: no seeds in fuzz/corpus/{target}"
    );
    for (name, bytes) in &seeds {
        check(target, f, name, bytes);
    }
    let mut rng = rand_pcg::Pcg64::seed_from_u64(14 ^ target.len() as u64);
    let (start, mut runs) = (Instant::now(), 0u64);
    while start.elapsed() < budget() {
        let (name, seed) = &seeds[rng.random_range(0..seeds.len())];
        let (_, other) = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, seed, other);
        check(target, f, &format!("mutation {runs} of {name}"), &input);
        runs += 1;
    }
    println!(
        "{target}: {} seeds, {runs} mutations, 0 panics",
        seeds.len()
    );
}

#[test]
fn shard() {
    run_target("shard");
}

#[test]
fn sidecar() {
    run_target("sidecar");
}

#[test]
fn artifact() {
    run_target("artifact");
}

#[test]
fn artifact_body() {
    run_target("artifact_body");
}

#[test]
fn manifest() {
    run_target("manifest");
}

#[test]
fn bundle() {
    run_target("bundle");
}

#[test]
fn pipeline_yaml() {
    run_target("pipeline_yaml");
}

#[test]
fn tokenizer_model() {
    run_target("tokenizer_model");
}

#[test]
fn every_target_has_a_test_and_a_binary() {
    let tests = std::fs::read_to_string(crate_dir().join("tests/targets.rs")).unwrap();
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).unwrap();
    for (name, _) in pgolf_fuzz::TARGETS {
        assert!(tests.contains(&format!("fn {name}()")), "{name}: no test");
        let bin = format!("name = \"fuzz-{}\"", name.replace('_', "-"));
        assert!(manifest.contains(&bin), "{name}: no libFuzzer binary");
    }
}

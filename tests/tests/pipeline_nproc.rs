//! A node's `nproc: N` runs its stage on N ranks (`train --nproc N`: Gloo on the CPU here): the
//! manifest records the world size and, since it changes results, so does the run's key: another
//! `nproc` is another run, and `pipeline status` says why.

use pgolf_e2e::project::{status_of, TestProject};
use pgolf_store::files;

const TWO_RANKS: &str = "\
stages:
  tokenize:
    params: {synthetic: {seed: 7, docs: 400, mean_doc_bytes: 300}, val_docs: 40}
  train:
    inputs: {data: tokenize}
    nproc: 2
    params:
      model: {vocab_size: 260, num_layers: 2, model_dim: 32, num_heads: 4, num_kv_heads: 2, mlp_mult: 2, seq_len: 64}
      iterations: 4
      warmdown_iters: 2
      max_wallclock_seconds: 0
      train_batch_tokens: 1024
      grad_accum_steps: 1
      val_loss_every: 0
      val_batch_tokens: 4096
      threads: 1
      ema_decay: 0
profiles:
  single:
    train: {nproc: 1}
  zero:
    train: {nproc: 0}
";

#[test]
fn nproc_runs_the_stage_on_that_many_ranks_under_a_key_of_its_own() {
    let p = TestProject::new(TWO_RANKS);
    let out = p.ok(&["run", "train"]);
    assert_eq!(status_of(&out, "train"), "ran", "{out}");
    let runs = p.runs("train");
    assert_eq!(runs.len(), 1);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.out().join("train").join(&runs[0]).join(files::MANIFEST)).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["headline"]["world_size"], 2, "{manifest}");
    assert_eq!(manifest["headline"]["dist_backend"], "gloo", "{manifest}");

    // One rank: another key, named as stale for its world size, then a run of its own.
    let status = p.ok(&["status", "--profile", "single"]);
    assert!(status.contains("world size changed (2 → 1)"), "{status}");
    let again = p.ok(&["run", "train", "--profile", "single"]);
    assert_eq!(status_of(&again, "train"), "ran", "{again}");
    assert_eq!(p.runs("train").len(), 2);
    // And two ranks again: the first run, reused.
    let back = p.ok(&["run", "train"]);
    assert_eq!(status_of(&back, "train"), "reused", "{back}");

    let err = p.fails(&["run", "train", "--profile", "zero"]);
    assert!(
        err.contains("nproc must be a positive number of ranks"),
        "{err}"
    );
}

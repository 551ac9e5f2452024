//! The train binary end to end on the CPU with tiny models: loss falls (a synthetic Markov corpus
//! and a Wikipedia sample), two runs are bit-identical, the checkpoint reproduces the reported
//! validation loss, and bad inputs fail with one clear line.

use arrow::array::{Array, LargeStringArray, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pgolf_data::{write_shard, Split, TokenizerInfo};
use pgolf_model::{load_safetensors, ModelConfig};
use pgolf_store::files;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

mod support;

use support::{data_dir, markov_tokens, BOS};

/// A tiny model over the byte260 vocabulary, 32-token sequences.
fn tiny_model() -> Value {
    json!({"vocab_size": 260, "num_layers": 3, "model_dim": 32, "num_heads": 4, "num_kv_heads": 2, "seq_len": 32})
}

fn tiny_params(iterations: u64) -> Value {
    json!({
        "model": tiny_model(),
        "iterations": iterations,
        "warmdown_iters": iterations / 2,
        "max_wallclock_seconds": 0.0,
        "train_batch_tokens": 1024,
        "grad_accum_steps": 2,
        "val_batch_tokens": 2048,
        "val_loss_every": 0,
        "train_log_every": 10,
        "threads": 1
    })
}

/// The first `docs` articles of a wiki part as byte260 documents `[BOS] + bytes + 4`.
fn wiki_tokens(part: &str, docs: usize, max_bytes: usize) -> Vec<u16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/enwiki2015")
        .join(part);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let mut taken = 0;
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("text").unwrap();
        let texts: Vec<String> = if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
            (0..a.len()).map(|i| a.value(i).to_string()).collect()
        } else {
            let a = col.as_any().downcast_ref::<LargeStringArray>().unwrap();
            (0..a.len()).map(|i| a.value(i).to_string()).collect()
        };
        for text in texts {
            out.push(BOS);
            out.extend(text.bytes().take(max_bytes).map(|b| b as u16 + 4));
            taken += 1;
            if taken == docs {
                return out;
            }
        }
    }
    out
}

struct Run {
    out: PathBuf,
    ok: bool,
    stderr: String,
}

impl Run {
    fn manifest(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.out.join(files::MANIFEST)).unwrap())
            .unwrap()
    }
    fn headline(&self, name: &str) -> f64 {
        self.manifest()["headline"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("headline {name}"))
    }
}

fn run_train(root: &Path, name: &str, data: &Path, params: &Value) -> Run {
    let out = root.join(name);
    let params_path = root.join(format!("{name}.params.json"));
    std::fs::write(&params_path, params.to_string()).unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_train"))
        .arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", data.display()))
        .arg("--params")
        .arg(&params_path)
        .output()
        .unwrap();
    Run {
        out,
        ok: result.status.success(),
        stderr: String::from_utf8_lossy(&result.stderr).to_string(),
    }
}

/// Val loss of the untrained model (same seed, same data): the step-0 validation of a 1-step run.
fn initial_val_loss(root: &Path, data: &Path) -> f64 {
    let mut p = tiny_params(1);
    p["val_loss_every"] = json!(1);
    let run = run_train(root, "initial", data, &p);
    assert!(run.ok, "{}", run.stderr);
    let log = std::fs::read_to_string(run.out.join(files::TRAIN_LOG)).unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with("step:0/1 val_loss:"))
        .expect("a step-0 validation line");
    line["step:0/1 val_loss:".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn loss_falls_on_the_synthetic_corpus_and_runs_are_bit_identical() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), &markov_tokens(400, 1), &markov_tokens(40, 2));
    let before = initial_val_loss(root.path(), &data);
    let a = run_train(root.path(), "a", &data, &tiny_params(40));
    assert!(a.ok, "{}", a.stderr);
    let after = a.headline("val_loss");
    // ln 260 = 5.56 at the start; the chain's entropy rate is ~0.56 nats; 40 tiny steps get well below 3.
    assert!(before > 5.0 && after < 3.0, "val loss {before} → {after}");
    // Every document is BOS + 60 one-byte tokens: 61 targets carry 60 bytes.
    let expected_bpb = after / std::f64::consts::LN_2 * 61.0 / 60.0;
    assert!(
        (a.headline("val_bpb") - expected_bpb).abs() < 0.02 * expected_bpb,
        "bpb {} vs {expected_bpb}",
        a.headline("val_bpb")
    );

    let b = run_train(root.path(), "b", &data, &tiny_params(40));
    assert!(b.ok, "{}", b.stderr);
    for file in [files::WEIGHTS, files::EMA_WEIGHTS] {
        let (x, y) = (
            std::fs::read(a.out.join(file)).unwrap(),
            std::fs::read(b.out.join(file)).unwrap(),
        );
        assert!(x == y, "{file} differs between two runs with the same seed");
    }
    assert_eq!(a.headline("ema_updates"), 40.0);
    assert_eq!(a.headline("ema_decay"), 0.997);
    assert_eq!(a.headline("steps"), 40.0);
}

#[test]
fn loss_falls_on_a_wiki_sample() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(
        root.path(),
        &wiki_tokens("part-00.parquet", 40, 2000),
        &wiki_tokens("part-07.parquet", 8, 1000),
    );
    let before = initial_val_loss(root.path(), &data);
    let run = run_train(root.path(), "wiki", &data, &tiny_params(40));
    assert!(run.ok, "{}", run.stderr);
    let after = run.headline("val_loss");
    // Bytes of English text: unigram statistics alone are worth ~3 nats; 40 steps must get there.
    assert!(before > 5.0 && after < 3.6, "val loss {before} → {after}");
}

/// The saved raw weights, loaded into a fresh model, give the validation loss the run reported.
#[test]
fn the_checkpoint_reproduces_the_reported_val_loss() {
    let root = tempfile::tempdir().unwrap();
    let val = markov_tokens(20, 2);
    let data = data_dir(root.path(), &markov_tokens(200, 1), &val);
    let mut p = tiny_params(12);
    p["ema_decay"] = json!(0.0);
    let run = run_train(root.path(), "ckpt", &data, &p);
    assert!(run.ok, "{}", run.stderr);
    assert!(
        !run.out.join(files::EMA_WEIGHTS).exists(),
        "no EMA file when the EMA is off"
    );
    let cfg = ModelConfig::read(&run.out.join(files::MODEL_CONFIG)).unwrap();
    let (mut vs, gpt) = pgolf_model::build(&cfg, Device::Cpu).unwrap();
    load_safetensors(&mut vs, &run.out.join(files::WEIGHTS)).unwrap();

    let t = cfg.seq_len;
    let usable = (val.len() - 1) / t * t;
    let ids: Vec<i64> = val[..usable + 1].iter().map(|&v| v as i64).collect();
    let all = Tensor::from_slice(&ids);
    let x = all.narrow(0, 0, usable as i64).view([-1, t as i64]);
    let y = all.narrow(0, 1, usable as i64).view([-1, t as i64]);
    let nll = tch::no_grad(|| {
        gpt.token_nll(&x, &y)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    });
    let reported = run.headline("val_loss");
    assert!(
        (nll - reported).abs() < 1e-5,
        "checkpoint gives {nll}, the run reported {reported}"
    );
    let metrics = std::fs::metadata(run.out.join(files::METRICS)).unwrap();
    assert!(metrics.len() > 0);
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let root = tempfile::tempdir().unwrap();
    let good = markov_tokens(100, 1);

    // No train shards.
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    TokenizerInfo::byte260().write(&empty).unwrap();
    let run = run_train(root.path(), "no_shards", &empty, &tiny_params(2));
    assert!(
        !run.ok && run.stderr.contains("no fineweb_train_*.bin shards"),
        "{}",
        run.stderr
    );
    assert!(!run.out.exists(), "a failed run leaves no output directory");

    // A tokenizer larger than the model's embedding.
    let data = data_dir(root.path(), &good, &good);
    let mut small = tiny_params(2);
    small["model"]["vocab_size"] = json!(128);
    let run = run_train(root.path(), "small_vocab", &data, &small);
    assert!(
        !run.ok
            && run
                .stderr
                .contains("tokenizer vocab 260 is larger than the model's vocab 128"),
        "{}",
        run.stderr
    );

    // A corrupted shard is named.
    let bad = root.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    TokenizerInfo::byte260().write(&bad).unwrap();
    write_shard(&bad.join(Split::Val.shard_name(0)), &good).unwrap();
    std::fs::write(
        bad.join(Split::Train.shard_name(0)),
        b"not a shard at all, but long enough to have a header?",
    )
    .unwrap();
    let run = run_train(root.path(), "bad_shard", &bad, &tiny_params(2));
    assert!(
        !run.ok && run.stderr.contains("fineweb_train_000000.bin"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "one line: {}",
        run.stderr
    );

    // Divergence stops the run at the step where the loss stopped being finite.
    let mut wild = tiny_params(20);
    wild["matrix_lr"] = json!(1e30);
    wild["tied_embed_lr"] = json!(1e30);
    wild["scalar_lr"] = json!(1e30);
    let run = run_train(root.path(), "diverge", &data, &wild);
    assert!(
        !run.ok && run.stderr.contains("the train loss is") && run.stderr.contains("step "),
        "{}",
        run.stderr
    );

    // Unknown params are refused.
    let run = run_train(root.path(), "unknown", &data, &json!({"iterationz": 3}));
    assert!(
        !run.ok && run.stderr.contains("unknown field"),
        "{}",
        run.stderr
    );
}

/// SWA: the saved average is the mean of the weights after the due steps. Each single-snapshot run
/// (`swa_every` = 8, 10 or 12 of 12 steps) saves the weights after that one step, so the average
/// of a run taking all three is checked against them.
#[test]
fn swa_averages_the_weights_after_every_due_step() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), &markov_tokens(200, 1), &markov_tokens(20, 2));
    // 12 steps, warm-down over the last 6: steps 8..=12 run at lr_mul 5/6..1/6 < 0.9.
    let swa_run = |name: &str, every: u64| {
        let mut p = tiny_params(12);
        p["warmdown_iters"] = json!(6);
        p["swa_every"] = json!(every);
        p["swa_lr_threshold"] = json!(0.9);
        let run = run_train(root.path(), name, &data, &p);
        assert!(run.ok, "{}", run.stderr);
        run
    };
    let weights = |run: &Run, file: &str| -> Vec<(String, Vec<f32>)> {
        let t = Tensor::read_safetensors(run.out.join(file)).unwrap();
        let mut v: Vec<(String, Vec<f32>)> = t
            .into_iter()
            .map(|(n, t)| {
                let t = t.to_kind(Kind::Float).flatten(0, -1);
                (n, Vec::<f32>::try_from(&t).unwrap())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let all = swa_run("swa_all", 2); // steps 8, 10, 12
    assert_eq!(all.headline("swa_snapshots"), 3.0);
    let log = std::fs::read_to_string(all.out.join(files::TRAIN_LOG)).unwrap();
    assert!(log.contains("swa:start step:8"), "{log}");
    let w8 = weights(&swa_run("swa_8", 8), files::SWA_WEIGHTS);
    let w10 = weights(&swa_run("swa_10", 10), files::SWA_WEIGHTS);
    let last = swa_run("swa_12", 12);
    assert_eq!(last.headline("swa_snapshots"), 1.0);
    let w12 = weights(&last, files::SWA_WEIGHTS);
    // One snapshot after the last step is the final raw weights.
    assert_eq!(w12, weights(&last, files::WEIGHTS));
    let avg = weights(&all, files::SWA_WEIGHTS);
    assert_eq!(avg.len(), w12.len());
    let mut worst = 0f32;
    for (i, (name, values)) in avg.iter().enumerate() {
        assert_eq!(name, &w8[i].0);
        for (k, v) in values.iter().enumerate() {
            let want = (w8[i].1[k] + w10[i].1[k] + w12[i].1[k]) / 3.0;
            worst = worst.max((v - want).abs() / want.abs().max(1e-3));
        }
    }
    assert!(worst < 1e-5, "SWA average off by {worst} (relative)");
    // The average differs from the final weights (the test would pass vacuously otherwise).
    assert_ne!(avg, w12);

    // SWA off (the default): no file, a zero count; above the threshold throughout: the same.
    let off = run_train(root.path(), "swa_off", &data, &tiny_params(4));
    assert!(off.ok, "{}", off.stderr);
    assert_eq!(off.headline("swa_snapshots"), 0.0);
    assert!(!off.out.join(files::SWA_WEIGHTS).exists());
    let mut never = tiny_params(4);
    never["swa_every"] = json!(1);
    never["swa_lr_threshold"] = json!(0.01);
    let never = run_train(root.path(), "swa_never", &data, &never);
    assert!(never.ok, "{}", never.stderr);
    assert_eq!(never.headline("swa_snapshots"), 0.0);
    assert!(!never.out.join(files::SWA_WEIGHTS).exists());
    let mut bad = tiny_params(4);
    bad["swa_lr_threshold"] = json!(0.0);
    let bad = run_train(root.path(), "swa_bad", &data, &bad);
    assert!(
        !bad.ok && bad.stderr.contains("swa_lr_threshold must be in (0, 1]"),
        "{}",
        bad.stderr
    );
}

/// Depth recurrence switched on mid-run: at `recurrence_enable_at` · iterations the loop turns on
/// (logged, in the headline); before it the run is the plain U-Net's (the same losses as a run
/// that never loops), from it on the losses leave that run's; a run looping from the start differs
/// from the first step.
#[test]
fn the_recurrence_switches_on_mid_run() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), &markov_tokens(200, 1), &markov_tokens(20, 2));
    let run = |name: &str, enable_at: f64| {
        let mut p = tiny_params(8);
        p["model"]["recurrence"] = json!({"start": 1, "end": 1, "loops": 1});
        p["model"]["skip_gates"] = json!(true);
        p["train_log_every"] = json!(1);
        p["recurrence_enable_at"] = json!(enable_at);
        let run = run_train(root.path(), name, &data, &p);
        assert!(run.ok, "{}", run.stderr);
        let log = std::fs::read_to_string(run.out.join(files::TRAIN_LOG)).unwrap();
        let losses: Vec<String> = (1..=8)
            .map(|s| {
                let prefix = format!("step:{s}/8 train_loss:");
                let line = log.lines().find(|l| l.starts_with(&prefix)).unwrap();
                line[prefix.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        (run, log, losses)
    };
    let (mid, log, mid_losses) = run("mid", 0.5);
    assert!(
        log.contains("layer_loop:enabled step:4 frac:0.500 encoder:[0, 1] decoder:[1, 2]"),
        "{log}"
    );
    assert_eq!(mid.headline("recurrence_step"), 4.0);
    let (never, _, never_losses) = run("never", 1.0);
    assert!(never.manifest()["headline"]["recurrence_step"].is_null());
    let (always, _, always_losses) = run("always", 0.0);
    assert_eq!(always.headline("recurrence_step"), 0.0);
    // Steps 1–4 ran before the switch (step index 4 is the fifth step).
    assert_eq!(mid_losses[..4], never_losses[..4]);
    assert_ne!(mid_losses[4], never_losses[4]);
    // (The first step cannot tell: the zero-initialised output projections make every block the
    // identity, looped or not.)
    assert_ne!(always_losses[1..], never_losses[1..]);
    let mut bad = tiny_params(2);
    bad["recurrence_enable_at"] = json!(1.5);
    let bad = run_train(root.path(), "bad_enable_at", &data, &bad);
    assert!(
        !bad.ok
            && bad
                .stderr
                .contains("recurrence_enable_at must be in [0, 1]")
    );
}

/// The step's `lr_mul` in the train log line of 1-based step `s` of `n`.
fn logged_lr_mul(log: &str, s: u64, n: u64) -> f64 {
    let prefix = format!("step:{s}/{n} train_loss:");
    let line = log
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line {prefix} in {log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("lr_mul:"))
        .unwrap()
        .parse()
        .unwrap()
}

/// R0405's shuffled windows and R0427's packed documents train (loss falls) and draw other
/// batches than the sequential stream; a packed run repeats bit for bit; data whose shards hold
/// no BOS is refused for packing in one line.
#[test]
fn the_record_loaders_train_and_draw_their_own_batches() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), &markov_tokens(300, 1), &markov_tokens(20, 2));
    let initial = initial_val_loss(root.path(), &data);
    let run = |name: &str, loader: &str| {
        let mut p = tiny_params(30);
        p["loader"] = json!(loader);
        let run = run_train(root.path(), name, &data, &p);
        assert!(run.ok, "{name}: {}", run.stderr);
        let weights = std::fs::read(run.out.join(files::WEIGHTS)).unwrap();
        (run.headline("val_loss"), weights)
    };
    let (seq_loss, seq) = run("sequential", "sequential");
    let (shuf_loss, shuf) = run("shuffled", "shuffled");
    let (packed_loss, packed) = run("packed", "packed");
    let (_, packed_again) = run("packed_again", "packed");
    for (name, loss) in [
        ("sequential", seq_loss),
        ("shuffled", shuf_loss),
        ("packed", packed_loss),
    ] {
        assert!(
            loss < initial - 0.3,
            "{name}: val loss {loss} vs initial {initial}"
        );
    }
    assert_ne!(seq, shuf);
    assert_ne!(seq, packed);
    assert_eq!(packed, packed_again);

    let no_bos: Vec<u16> = markov_tokens(300, 1)
        .into_iter()
        .filter(|&t| t != BOS)
        .collect();
    let sub = tempfile::tempdir().unwrap();
    let bad_data = data_dir(sub.path(), &no_bos, &markov_tokens(20, 2));
    let mut p = tiny_params(2);
    p["loader"] = json!("packed");
    let bad = run_train(root.path(), "packed_no_bos", &bad_data, &p);
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("fineweb_train_000000.bin")
            && bad.stderr.contains("after its first BOS"),
        "{}",
        bad.stderr
    );
}

/// R0427's warm-down: the multiplier is 1 until `1 − warmdown_frac` of the run, then falls
/// linearly to its `min_lr` floor; `min_lr` without `warmdown_frac` is refused.
#[test]
fn the_fraction_warmdown_falls_to_its_floor() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), &markov_tokens(200, 1), &markov_tokens(20, 2));
    let mut p = tiny_params(8);
    p["train_log_every"] = json!(1);
    p["warmdown_frac"] = json!(0.5);
    p["min_lr"] = json!(0.3);
    let run = run_train(root.path(), "frac", &data, &p);
    assert!(run.ok, "{}", run.stderr);
    let log = std::fs::read_to_string(run.out.join(files::TRAIN_LOG)).unwrap();
    // Step index s − 1 runs at fraction (s − 1)/8.
    let expected = [1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.3];
    for (s, want) in (1..=8).zip(expected) {
        let got = logged_lr_mul(&log, s, 8);
        assert!(
            (got - want).abs() < 1e-4,
            "step {s}: lr_mul {got}, want {want}"
        );
    }
    let mut bad = tiny_params(2);
    bad["min_lr"] = json!(0.1);
    let bad = run_train(root.path(), "min_lr_alone", &data, &bad);
    assert!(
        !bad.ok && bad.stderr.contains("set warmdown_frac too"),
        "{}",
        bad.stderr
    );
}

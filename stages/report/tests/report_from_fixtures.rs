//! The report binary on fixture stage outputs: a 3-seed record attempt, a single run with optional
//! stages missing, a clip sweep, a report used as another's baseline, and the one-line errors.

mod common;

use common::*;
use pgolf_store::files;
use serde_json::{json, Value};
use std::fs;

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn three_seeds_give_a_submission_that_matches_the_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let seeds = three_seeds();
    let chains: Vec<Chain> = seeds.iter().map(|s| chain(&mut store, &data, s)).collect();
    let mut inputs: Vec<(&str, &Made)> = vec![("data", &data)];
    chains.iter().for_each(|c| inputs.extend(c.inputs()));
    // The reference case of stats.rs: baseline 2.0727 ± 0.0012 nats over 3 seeds.
    let params = json!({"name": "Fixture record", "author": "pgolf", "baseline": {"mean": 2.0727, "std": 0.0012, "n": 3, "unit": "nats", "label": "fixture baseline"}});
    let (out, dir) = report(tmp.path(), &inputs, Some(params));
    assert!(out.status.success(), "{}", stderr(&out));

    // Every number of submission.json is the manifests' own.
    let sub = read_json(&dir.join(files::SUBMISSION));
    let sliding_loss: Vec<f64> = chains
        .iter()
        .map(|c| headline(&c.sliding, "val_loss"))
        .collect();
    let sliding_bpb: Vec<f64> = chains
        .iter()
        .map(|c| headline(&c.sliding, "val_bpb"))
        .collect();
    let artifacts: Vec<f64> = chains
        .iter()
        .map(|c| headline(&c.quantize, "artifact_bytes"))
        .collect();
    assert_eq!(sub["name"], "Fixture record");
    assert_eq!(sub["score_eval"], "sliding");
    assert!(
        (sub["val_loss"].as_f64().unwrap() - mean(&sliding_loss)).abs() < 1e-12,
        "{sub}"
    );
    assert!(
        (sub["val_bpb"].as_f64().unwrap() - mean(&sliding_bpb)).abs() < 1e-12,
        "{sub}"
    );
    assert_eq!(
        sub["bytes_total"].as_f64().unwrap(),
        artifacts.iter().cloned().fold(0.0, f64::max)
    );
    assert_eq!(sub["bytes_code"], CODE_BYTES);
    assert_eq!(sub["seeds"], json!([1337, 42, 2024]));
    assert_eq!(
        sub["seed_results"]["42"]["val_loss"].as_f64().unwrap(),
        sliding_loss[1]
    );
    assert_eq!(
        sub["seed_results"]["42"]["runs"]["eval sliding"],
        chains[1].sliding.key.as_str()
    );
    assert_eq!(sub["seed_results"]["2024"]["train_time_s"], 600.01);
    assert_eq!(sub["hardware"], h100_record().summary());
    assert_eq!(
        sub["date"],
        read_json(&chains[2].sliding.dir.join(files::MANIFEST))["finished"]
    );

    // Significance: improvement 0.012533 nats, p = 8.511937e-4 (mpmath; see stats.rs).
    let sig = &sub["significance"];
    assert_eq!(sig["significant"], true, "{sig}");
    assert!(
        (sig["p_value"].as_f64().unwrap() - 8.51193670974279e-4).abs() < 1e-9,
        "{sig}"
    );
    assert!((sig["improvement_nats"].as_f64().unwrap() - 0.0125333333333).abs() < 1e-9);

    // Compliance: the artifacts fit; two seeds trained past 600 s, which the report must say.
    assert_eq!(sub["compliance"]["artifact_under_16mb"], true);
    assert_eq!(sub["compliance"]["train_under_600s"], false);
    assert_eq!(sub["compliance"]["eval_under_600s"], true);
    assert_eq!(sub["compliance"]["guard_scored_once"], true);
    assert_eq!(sub["compliance"]["guard_byte_denominator"], true);

    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    for needle in [
        "significant at p<0.01 for ≥ 0.005 nats: yes",
        "Not run: TTT, n-gram.",
        "![Training curves](plots/training.svg)",
        "![BPB by stage](plots/bpb_by_stage.svg)",
        "![Artifact bytes by tensor group](plots/artifact_bytes.svg)",
        "600.0 s (longest of 3)",
        "✗ FAIL",
        "At least one check failed.",
        "ΣNLL/(ln2·Σbytes) from results.parquet",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    // Numbers link to the run they came from.
    assert!(
        md.contains(&format!(
            "](../../ttt-eval/{}/manifest.json)",
            chains[0].sliding.key
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "](../../quantize-pack/{}/manifest.json)",
            chains[1].quantize.key
        )),
        "{md}"
    );
    for f in [
        "plots/training.svg",
        "plots/bpb_by_stage.svg",
        "plots/artifact_bytes.svg",
        files::REPORT_HTML,
        files::PROVENANCE,
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(
        !dir.join("plots/sweep.svg").exists(),
        "seeds are not a sweep"
    );
    let logs: Vec<_> = fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(logs.len(), 3, "{logs:?}");
    assert!(
        logs.iter().any(|l| l.starts_with("train_seed_1337_")),
        "{logs:?}"
    );

    // The report's manifest: its headline agrees with submission.json, its inputs list every run.
    let manifest = read_json(&dir.join(files::MANIFEST));
    assert_eq!(manifest["headline"]["val_bpb"], sub["val_bpb"]);
    assert_eq!(manifest["headline"]["n_runs"], 3);
    assert_eq!(manifest["headline"]["significant"], true);
    let listed: Vec<&str> = manifest["inputs"]["eval-sliding"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        chains
            .iter()
            .map(|c| c.sliding.key.as_str())
            .collect::<Vec<_>>()
    );
    let provenance = read_json(&dir.join(files::PROVENANCE));
    assert_eq!(
        provenance["figures"]["training"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn missing_optional_stages_say_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, Some(1.0));
    let s = &three_seeds()[0];
    let Chain {
        train: t,
        quantize: q,
        flat,
        ..
    } = chain(&mut store, &data, s);
    // No ema-finalize and no sliding: the one train run given is the artifact's (the chain is broken).
    let (out, dir) = report(
        tmp.path(),
        &[
            ("train", &t),
            ("quantize", &q),
            ("eval", &flat),
            ("data", &data),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    for needle in [
        "Not run: sliding, TTT, n-gram.",
        "No baseline given",
        "score ≥ source entropy",
        "one run by the round-trip evaluation",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let sub = read_json(&dir.join(files::SUBMISSION));
    assert_eq!(sub["score_eval"], "round-trip");
    assert_eq!(
        sub["val_loss"].as_f64().unwrap(),
        headline(&flat, "val_loss")
    );
    assert!(
        sub.get("val_bpb_std").is_none() && sub.get("significance").is_none(),
        "{sub}"
    );

    // Only an evaluation: no training curves, no bytes chart, still a report.
    let (out, dir) = report(tmp.path(), &[("eval", &flat)], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    assert!(
        md.contains("Training curves: no train run with a metrics.parquet"),
        "{md}"
    );
    assert!(
        md.contains("Artifact bytes: no quantize-pack output"),
        "{md}"
    );
    assert_eq!(
        read_json(&dir.join(files::SUBMISSION))["compliance"]["artifact_under_16mb"],
        Value::Null
    );
}

#[test]
fn a_clip_sweep_draws_sweep_curves_and_submits_its_best_point() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let base = &three_seeds()[0];
    let t = train(&mut store, &data, base);
    let e = ema(&mut store, &t);
    let mut inputs: Vec<(String, Made)> =
        vec![("train".into(), t.clone()), ("ema".into(), e.clone())];
    let mut slidings = Vec::new();
    for (clip, loss, bytes) in [
        (12.0, 2.0650, 15_950_000u64),
        (12.5, 2.0610, 15_900_000),
        (13.0, 2.0630, 15_850_000),
    ] {
        let s = Seed {
            clip,
            sliding_loss: loss,
            artifact_model_bytes: bytes,
            ..three_seeds().remove(0)
        };
        let q = quantize(&mut store, &e, &s);
        let sl = eval(&mut store, &q, &data, "sliding", loss, good_guards());
        inputs.push(("quantize".into(), q));
        inputs.push(("eval".into(), sl.clone()));
        slidings.push(sl);
    }
    let refs: Vec<(&str, &Made)> = inputs.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let (out, dir) = report(tmp.path(), &refs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.join("plots/sweep.svg").is_file());
    let svg = fs::read_to_string(dir.join("plots/sweep.svg")).unwrap();
    assert!(
        svg.contains("quantize-pack.clip_sigmas"),
        "the x axis names the swept param"
    );
    let sub = read_json(&dir.join(files::SUBMISSION));
    assert_eq!(
        sub["sweep_point"],
        json!({"quantize-pack.clip_sigmas": 12.5})
    );
    assert_eq!(
        sub["val_loss"].as_f64().unwrap(),
        headline(&slidings[1], "val_loss")
    );
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    assert!(
        md.contains("at the best of 3 sweep points (quantize-pack.clip_sigmas=12.5)"),
        "{md}"
    );
}

#[test]
fn a_report_is_the_baseline_of_another() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let chains: Vec<_> = three_seeds()
        .iter()
        .map(|s| chain(&mut store, &data, s))
        .collect();
    let mut inputs: Vec<(&str, &Made)> = vec![];
    for c in &chains {
        inputs.extend([("quantize", &c.quantize), ("eval", &c.sliding)]);
    }
    let (out, first) = report(tmp.path(), &inputs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let moved = tmp.path().join("out/report/baseline");
    fs::rename(&first, &moved).unwrap();
    let baseline = Made {
        dir: moved,
        key: read_json(&tmp.path().join("out/report/baseline/manifest.json"))["key"]
            .as_str()
            .unwrap()
            .into(),
        stage: "report".into(),
    };

    // The same runs against themselves: no improvement, so not significant.
    inputs.push(("baseline", &baseline));
    let (out, dir) = report(tmp.path(), &inputs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let sig = &read_json(&dir.join(files::SUBMISSION))["significance"];
    assert_eq!(sig["significant"], false, "{sig}");
    assert!(sig["improvement_nats"].as_f64().unwrap().abs() < 1e-12);
    assert_eq!(sig["baseline_n"], 3);
}

#[test]
fn failing_guards_are_reported_as_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let s = &three_seeds()[1];
    let t = train(&mut store, &data, s);
    let e = ema(&mut store, &t);
    let q = quantize(
        &mut store,
        &e,
        &Seed {
            artifact_model_bytes: 16_100_000,
            ..three_seeds().remove(1)
        },
    );
    let mut guards = good_guards();
    guards["guard_coverage"] = json!("FAIL: 17 targets scored twice");
    let bad = eval(&mut store, &q, &data, "ttt", 2.06, guards);
    let (out, dir) = report(
        tmp.path(),
        &[("train", &t), ("ema", &e), ("quantize", &q), ("eval", &bad)],
        None,
    );
    assert!(
        out.status.success(),
        "a failing check is reported, not a crash: {}",
        stderr(&out)
    );
    let sub = read_json(&dir.join(files::SUBMISSION));
    assert_eq!(sub["score_eval"], "TTT");
    assert_eq!(sub["compliance"]["guard_scored_once"], false);
    assert_eq!(sub["compliance"]["artifact_under_16mb"], false);
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    assert!(
        md.contains("✗ FAIL — FAIL: 17 targets scored twice"),
        "{md}"
    );
}

#[test]
fn bad_inputs_fail_with_one_line_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let Chain {
        train: t,
        quantize: q,
        ..
    } = chain(&mut store, &data, &three_seeds()[0]);

    let one_line_error = |inputs: &[(&str, &Made)], needle: &str| {
        let (out, dir) = report(tmp.path(), inputs, None);
        let err = stderr(&out);
        assert!(!out.status.success());
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: report: ") && err.contains(needle),
            "{err}"
        );
        assert!(!dir.exists(), "a failed report leaves nothing behind");
    };
    one_line_error(
        &[("train", &t), ("quantize", &q)],
        "no evaluation among the inputs",
    );

    let broken = store.run(
        "ttt-eval",
        json!({"mode": "sliding"}),
        &[("artifact", &q)],
        json!({"mode": "sliding", "val_loss": 2.0, "val_bpb": 1.2}),
        h100(),
        |d| fs::write(d.join(files::RESULTS), b"not a parquet file").unwrap(),
    );
    one_line_error(&[("eval", &broken)], "results.parquet: not a Parquet file");

    let no_bpb = store.run(
        "ngram-eval",
        json!({}),
        &[("artifact", &q)],
        json!({"val_loss": 2.0}),
        h100(),
        |_| {},
    );
    one_line_error(&[("eval", &no_bpb)], "headline has no number `val_bpb`");

    let no_step = store.run("train", json!({}), &[], json!({}), h100(), |d| {
        write_parquet(
            &d.join(files::METRICS),
            vec![(
                "train_loss",
                std::sync::Arc::new(arrow::array::Float64Array::from(vec![1.0])) as _,
            )],
        )
    });
    let ok_eval = eval(&mut store, &q, &data, "flat", 2.1, good_guards());
    one_line_error(
        &[("train", &no_step), ("eval", &ok_eval)],
        "metrics.parquet: no column step",
    );
}

#[test]
fn runs_made_by_different_code_are_different_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let chains: Vec<Chain> = three_seeds()
        .iter()
        .map(|s| chain(&mut store, &data, s))
        .collect();
    // The third seed's train run came from other train code.
    let path = chains[2].train.dir.join(files::MANIFEST);
    let mut m = read_json(&path);
    m["identity"] = json!(format!("train@{}", "7".repeat(32)));
    fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let mut inputs: Vec<(&str, &Made)> = vec![];
    chains.iter().for_each(|c| inputs.extend(c.inputs()));
    let (out, dir) = report(tmp.path(), &inputs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    assert!(
        md.contains("| code v1 | 2 |") && md.contains("| code v2 | 1 |"),
        "{md}"
    );
    assert!(md.contains("code v2: `train@77777777`"), "{md}");
    assert!(
        md.contains("| code v1, seed 1337 |") && md.contains("| code v2, seed 2024 |"),
        "{md}"
    );
}

/// Replaces the `device` of a fixture run's manifest (a record, or an older manifest's text).
fn set_device(run: &Made, device: Value) {
    let path = run.dir.join(files::MANIFEST);
    let mut m = read_json(&path);
    m["device"] = device;
    fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// The markdown row of the compliance check `name`.
fn check_row<'a>(md: &'a str, name: &str) -> &'a str {
    let start = format!("| {name} |");
    md.lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no {name} row in:\n{md}"))
}

#[test]
fn the_device_check_reads_records_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize(&mut store, None);
    let c = chain(&mut store, &data, &three_seeds()[0]);
    let inputs = [
        ("train", &c.train),
        ("ema", &c.ema),
        ("quantize", &c.quantize),
        ("eval", &c.flat),
        ("data", &data),
    ];
    let cuda = |name: &str, n: usize| {
        serde_json::to_value(pgolf_store::DeviceRecord::cuda(vec![name.into(); n], n)).unwrap()
    };

    // A 1-GPU train run on an H100 does not meet the 8×H100 rule: flagged, not passed. The
    // evaluation's device (here a single H200) is shown as info with the record's fields.
    set_device(&c.train, cuda("NVIDIA H100 80GB HBM3", 1));
    set_device(&c.flat, cuda("NVIDIA H200", 1));
    let (out, dir) = report(tmp.path(), &inputs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    let train = check_row(&md, "training device");
    assert!(
        train.contains("cuda, world size 1: 1 × NVIDIA H100 80GB HBM3") && train.contains("⚠ flag"),
        "{train}"
    );
    let eval = check_row(&md, "evaluation device");
    assert!(
        eval.contains("cuda, world size 1: 1 × NVIDIA H200") && eval.contains("· info"),
        "{eval}"
    );
    let sub = read_json(&dir.join(files::SUBMISSION));
    assert_eq!(
        sub["hardware"],
        "cuda, world size 1: 1 × NVIDIA H100 80GB HBM3"
    );
    assert_eq!(sub["eval_hardware"], "cuda, world size 1: 1 × NVIDIA H200");

    // On the rule's hardware the training check passes.
    set_device(&c.train, h100());
    let (out, dir) = report(tmp.path(), &inputs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    assert!(check_row(&md, "training device").contains("✓ pass"), "{md}");

    // Manifests written before the record (free-form strings) still make a report: the training
    // device cannot be checked by field (unknown), the evaluation's is shown as its old text.
    set_device(&c.train, json!("cuda:0 NVIDIA H100 80GB HBM3"));
    set_device(
        &c.flat,
        json!("cuda (BFloat16 compute, Native numerics, fused blocks)"),
    );
    let (out, dir) = report(tmp.path(), &inputs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    let train = check_row(&md, "training device");
    assert!(
        train.contains("? unknown") && train.contains("old manifest"),
        "{train}"
    );
    let eval = check_row(&md, "evaluation device");
    assert!(
        eval.contains("· info") && eval.contains("BFloat16 compute"),
        "{eval}"
    );
}

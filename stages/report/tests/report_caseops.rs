//! The report on evaluations of CaseOps data (a tokenizer that transforms the text): it reads the
//! tokenizer from the data's tokenize run, refuses an evaluation whose BPB divides by lookup-table
//! bytes (the SP8192 Headwise Gate submission's mistake), and shows a valid one's LUT figure only
//! as a rejected diagnostic with the ratio of the two byte counts.

mod common;

use common::*;
use pgolf_store::files;
use serde_json::json;
use std::fs;

#[test]
fn a_lut_byte_bpb_of_caseops_data_is_refused_and_a_valid_ones_lut_figure_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::new(tmp.path());
    let data = tokenize_caseops(&mut store);
    let seed = &three_seeds()[0];
    let c = chain(&mut store, &data, seed);

    // Valid: raw bytes. An older eval (no val_bpb_lut_rejected) still has its LUT figure shown as
    // rejected, since the report reads the tokenizer itself.
    let mut inputs: Vec<(&str, &Made)> = vec![("data", &data)];
    inputs.extend(c.inputs());
    let (out, dir) = report(tmp.path(), &inputs, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = fs::read_to_string(dir.join(files::REPORT_MD)).unwrap();
    assert!(md.contains("rejected diagnostic, not a score"), "{md}");
    let ratio = headline(&c.sliding, "val_lut_bytes") / headline(&c.sliding, "val_bytes");
    assert!(md.contains(&format!("{ratio:.4}×")), "{md}");
    let sub = read_json(&dir.join(files::SUBMISSION));
    assert_eq!(
        sub["val_bpb"].as_f64(),
        Some(headline(&c.sliding, "val_bpb"))
    );

    // The submission's evaluation: its BPB over LUT bytes. Refused in one line naming it.
    let mut guards = good_guards();
    guards["byte_denominator"] = json!("lut");
    let bad = eval(
        &mut store,
        &c.quantize,
        &data,
        "sliding",
        seed.sliding_loss,
        guards,
    );
    let (out, dir) = report(tmp.path(), &[("data", &data), ("eval", &bad)], None);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&bad.key)
            && err.contains("refusing to publish")
            && err.contains("divides by lut"),
        "{err}"
    );
    assert!(!dir.exists());

    // Without the tokenize run among the inputs the eval's own headline says it.
    let mut guards = good_guards();
    guards["byte_denominator"] = json!("lut (raw UTF-8 bytes unknown for these shards)");
    guards["tokenizer_transforms_text"] = json!(true);
    let bad = eval(
        &mut store,
        &c.quantize,
        &data,
        "flat",
        seed.sliding_loss,
        guards,
    );
    let (out, _) = report(tmp.path(), &[("eval", &bad)], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing to publish"),
        "{}",
        stderr(&out)
    );
}

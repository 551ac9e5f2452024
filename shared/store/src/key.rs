//! Cache keys. A run key is BLAKE3 over the stage name, the stage's source identity, the canonical
//! params, the keys of its inputs sorted by input name and, for a run on several ranks, the world
//! size. Nothing machine-specific (paths, mtimes, hosts) enters a key, so an exported run is fresh
//! on the machine that imports it.
//!
//! The world size is in the key because it changes results: gradients are summed in another order
//! (Muon's Newton–Schulz amplifies that), and an evaluation split over ranks sees other contexts.
//! A run on one rank hashes exactly as before ranks existed, so no older key moves.

use serde_json::Value;
use std::collections::BTreeMap;

/// JSON with object keys sorted and no insignificant whitespace: equal params give equal bytes.
pub fn canonical_json(value: &Value) -> String {
    // serde_json's Map is a BTreeMap (no `preserve_order` feature), so keys serialise sorted.
    serde_json::to_string(&sort(value)).expect("JSON values always serialise")
}

fn sort(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), sort(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
        other => other.clone(),
    }
}

/// The run key of a stage: 64 hex characters.
pub fn run_key(
    stage: &str,
    identity: &str,
    params: &Value,
    inputs: &BTreeMap<String, String>,
    world_size: usize,
) -> String {
    let mut h = blake3::Hasher::new();
    for part in [
        b"pgolf-run-key-v1".as_slice(),
        stage.as_bytes(),
        identity.as_bytes(),
        canonical_json(params).as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for (name, key) in inputs {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key.as_bytes());
    }
    if world_size > 1 {
        // After the inputs, behind a tag no input name can be (names are never empty).
        h.update(&0u64.to_le_bytes());
        h.update(&(world_size as u64).to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Key of a raw (non-stage) input: its content hash, or for a list of files the hash of their
/// content hashes in order.
pub fn raw_input_key(content_hashes: &[String]) -> String {
    if let [single] = content_hashes {
        return format!("file:{single}");
    }
    let mut h = blake3::Hasher::new();
    for c in content_hashes {
        h.update(c.as_bytes());
        h.update(b"\n");
    }
    format!("files:{}", h.finalize().to_hex())
}

/// Key of a list of stage outputs given as one input (e.g. the seeds of a multi-seed report): a
/// hash of their run keys in order. A list of one is keyed by that run's own key.
pub fn runs_key(keys: &[String]) -> String {
    if let [single] = keys {
        return single.clone();
    }
    format!("runs:{}", blake3::hash(keys.join("\n").as_bytes()).to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": null}});
        let b: Value = serde_json::from_str(r#"{ "a": {"x": null, "y": [1,2]}, "b": 1 }"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
    }

    #[test]
    fn key_changes_with_each_part() {
        let inputs: BTreeMap<String, String> = [("shards".to_string(), "k1".to_string())].into();
        let base = run_key("train", "id1", &json!({"lr": 0.04}), &inputs, 1);
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            run_key("train", "id1", &json!({"lr": 0.04}), &inputs, 1)
        );
        assert_ne!(
            base,
            run_key("train", "id2", &json!({"lr": 0.04}), &inputs, 1)
        );
        assert_ne!(
            base,
            run_key("train", "id1", &json!({"lr": 0.05}), &inputs, 1)
        );
        assert_ne!(
            base,
            run_key("tokenize", "id1", &json!({"lr": 0.04}), &inputs, 1)
        );
        let other: BTreeMap<String, String> = [("shards".to_string(), "k2".to_string())].into();
        assert_ne!(
            base,
            run_key("train", "id1", &json!({"lr": 0.04}), &other, 1)
        );
        // World size 1 (or unknown, 0) is the key of a single process; each other world size is
        // a key of its own.
        let two = run_key("train", "id1", &json!({"lr": 0.04}), &inputs, 2);
        assert_ne!(base, two);
        assert_ne!(
            two,
            run_key("train", "id1", &json!({"lr": 0.04}), &inputs, 8)
        );
        assert_eq!(
            base,
            run_key("train", "id1", &json!({"lr": 0.04}), &inputs, 0)
        );
    }

    #[test]
    fn runs_key_is_ordered_and_a_single_run_keeps_its_key() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(runs_key(std::slice::from_ref(&a)), a);
        let ab = runs_key(&[a.clone(), b.clone()]);
        assert!(ab.starts_with("runs:"));
        assert_ne!(ab, runs_key(&[b, a]));
    }
}

//! Params are JSON objects: profiles deep-merge into them, `--set` writes dotted paths, and
//! `status` explains a change as the list of paths whose values differ.

use serde_json::{Map, Value};

/// `over` merged into `base`: objects merge key by key, anything else replaces; a `null` in `over`
/// removes the key (so a profile can drop a param and fall back to the stage's default).
pub fn deep_merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut merged = b.clone();
            for (k, v) in o {
                if v.is_null() {
                    merged.remove(k);
                } else {
                    let next = match b.get(k) {
                        Some(existing) => deep_merge(existing, v),
                        None => v.clone(),
                    };
                    merged.insert(k.clone(), next);
                }
            }
            Value::Object(merged)
        }
        _ => over.clone(),
    }
}

/// Sets `path` (e.g. `["optim", "lr"]`) to `value`, creating objects on the way (a non-object on
/// the way is replaced).
pub fn set_path(params: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = params;
    for part in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node
            .as_object_mut()
            .unwrap()
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    node.as_object_mut().unwrap().insert(last.clone(), value);
}

/// Every leaf path whose value differs: `(path, old, new)`, `None` where absent.
pub fn diff(old: &Value, new: &Value) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

fn walk(
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<(String, Option<Value>, Option<Value>)>,
) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&sub, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a != b => out.push((path.to_string(), a.cloned(), b.cloned())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_deep_and_null_removes() {
        let base = json!({"a": 1, "m": {"x": 1, "y": 2}, "gone": true});
        let over = json!({"m": {"y": 3, "z": 4}, "gone": null, "b": [1]});
        assert_eq!(
            deep_merge(&base, &over),
            json!({"a": 1, "m": {"x": 1, "y": 3, "z": 4}, "b": [1]})
        );
    }

    #[test]
    fn set_path_creates_nested_objects() {
        let mut p = json!({"a": 1});
        set_path(&mut p, &["m".into(), "lr".into()], json!(0.5));
        set_path(&mut p, &["a".into()], json!("s"));
        assert_eq!(p, json!({"a": "s", "m": {"lr": 0.5}}));
    }

    #[test]
    fn diff_lists_changed_leaves() {
        let d = diff(
            &json!({"a": 1, "m": {"x": 1}, "old": 2}),
            &json!({"a": 1, "m": {"x": 2}, "new": 3}),
        );
        assert_eq!(
            d,
            vec![
                ("m.x".into(), Some(json!(1)), Some(json!(2))),
                ("new".into(), None, Some(json!(3))),
                ("old".into(), Some(json!(2)), None),
            ]
        );
    }
}

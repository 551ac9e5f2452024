//! Why a run is stale: the differences between what the plan would run now and the node's previous
//! run (its manifest), in the order a user would look for them: the stage's code, its params, its
//! inputs.

use pgolf_store::{canonical_json, Manifest};
use serde_json::Value;

use crate::freshness::RunState;
use crate::params::diff;
use crate::plan::{Instance, Plan, Source};
use crate::project::short;

pub fn explain(
    plan: &Plan,
    inst: &Instance,
    previous: &Manifest,
    states: &[RunState],
) -> Vec<String> {
    let mut reasons = Vec::new();
    if previous.identity != inst.identity {
        let (old, new) = distinct_prefixes(&previous.identity, &inst.identity);
        reasons.push(format!("identity changed ({old} → {new})"));
    }
    let changed: Vec<String> = diff(&previous.params, &inst.params)
        .into_iter()
        .map(|(path, old, new)| {
            format!("{path}: {} → {}", shown(old.as_ref()), shown(new.as_ref()))
        })
        .collect();
    if !changed.is_empty() {
        reasons.push(format!("params changed ({})", changed.join(", ")));
    }
    let (ranks_before, ranks_now) = (previous.device.world_size.max(1), inst.nproc.unwrap_or(1));
    if ranks_before != ranks_now {
        reasons.push(format!("world size changed ({ranks_before} → {ranks_now})"));
    }
    for input in &inst.inputs {
        let Some(before) = previous.inputs.get(&input.name) else {
            reasons.push(format!("input {} added", input.name));
            continue;
        };
        if before.key == input.key {
            continue;
        }
        reasons.push(match &input.source {
            Source::Runs { node, ids } => match ids.iter().find(|&&i| !states[i].is_fresh()) {
                Some(&stale) => format!(
                    "input {}: upstream {} is stale",
                    input.name,
                    plan.label(&plan.instances[stale])
                ),
                None => format!(
                    "input {}: upstream {node} changed ({} → {})",
                    input.name,
                    short(&before.key),
                    short(&input.key)
                ),
            },
            Source::Raw(raw) => {
                let now: Vec<String> = raw.paths.iter().map(|p| p.display().to_string()).collect();
                if before.paths == now {
                    match raw.shown.as_slice() {
                        [one] => format!("input {}: content of {one} changed", input.name),
                        many => format!(
                            "input {}: content of one of {} files changed ({}, ...)",
                            input.name,
                            many.len(),
                            many[0]
                        ),
                    }
                } else {
                    format!(
                        "input {}: file list changed ({} → {} files)",
                        input.name,
                        before.paths.len(),
                        now.len()
                    )
                }
            }
        });
    }
    for name in previous.inputs.keys() {
        if !inst.inputs.iter().any(|i| &i.name == name) {
            reasons.push(format!("input {name} removed"));
        }
    }
    if reasons.is_empty() && previous.stage != inst.stage {
        reasons.push(format!(
            "stage changed ({} → {})",
            previous.stage, inst.stage
        ));
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "key changed ({} → {})",
            short(&previous.key),
            short(&inst.key)
        ));
    }
    reasons
}

/// Both strings cut to the shortest length (at least `name@` + 8) that still tells them apart.
fn distinct_prefixes<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let name = a.find('@').map(|i| i + 1).unwrap_or(0);
    // Identities come from manifests: cut at a character boundary, whatever their text.
    let cut = |s: &'a str| {
        let mut at = s.len().min((common + 1).max(name + 8));
        while !s.is_char_boundary(at) {
            at += 1;
        }
        &s[..at]
    };
    (cut(a), cut(b))
}

fn shown(v: Option<&Value>) -> String {
    v.map(canonical_json).unwrap_or_else(|| "(unset)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cut_at_character_boundaries() {
        assert_eq!(
            distinct_prefixes("train@0123456789ab", "train@0123456789cd"),
            ("train@0123456789a", "train@0123456789c")
        );
        // Identities read from manifests may hold any text: the cut never splits a character.
        let (a, b) = distinct_prefixes("é@ééééééééé", "é@éééééééé€");
        assert!(a.starts_with("é@") && b.starts_with("é@"), "{a} {b}");
        let (a, b) = distinct_prefixes("ab", "aé");
        assert_eq!((a, b), ("ab", "aé"));
    }
}

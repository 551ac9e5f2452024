//! The DAG of one profile: pipeline.yaml's nodes with the profile's overrides applied, checked
//! (every input names a node, no cycle) and put in dependency order.

use anyhow::{bail, Result};
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::BTreeSet;

use crate::config::{InputSpec, PipelineFile};
use crate::params::deep_merge;

pub struct Node {
    pub name: String,
    /// As written (default: the node name); resolved by the planner.
    pub exe: String,
    pub params: Value,
    pub inputs: IndexMap<String, InputSpec>,
    pub device: Option<String>,
    pub nproc: Option<usize>,
}

pub struct Graph {
    /// The profile applied, if any.
    pub profile: Option<String>,
    /// Nodes in dependency order (every node after its inputs; otherwise file order).
    pub nodes: IndexMap<String, Node>,
}

/// The profile to use: the requested one, else the file's `default_profile`, else none.
pub fn select_profile(
    file: &PipelineFile,
    yaml: &str,
    requested: Option<&str>,
) -> Result<Option<String>> {
    let Some(name) = requested
        .map(str::to_string)
        .or_else(|| file.default_profile.clone())
    else {
        return Ok(None);
    };
    if !file.profiles.contains_key(&name) {
        let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
        let what = if requested.is_some() {
            "unknown profile"
        } else {
            "default_profile names an unknown profile"
        };
        bail!(
            "{yaml}: {what} '{name}' (profiles: {})",
            list_or_none(&known)
        );
    }
    Ok(Some(name))
}

impl Graph {
    pub fn build(file: &PipelineFile, yaml: &str, profile: Option<&str>) -> Result<Graph> {
        if file.stages.is_empty() {
            bail!("{yaml}: no stages");
        }
        let overrides = match profile {
            Some(p) => file.profiles.get(p).cloned().unwrap_or_default(),
            None => IndexMap::new(),
        };
        for name in overrides.keys() {
            if !file.stages.contains_key(name) {
                bail!(
                    "{yaml}: profile {}: unknown node '{name}'",
                    profile.unwrap_or_default()
                );
            }
        }
        let mut nodes = IndexMap::new();
        for (name, spec) in &file.stages {
            if name.is_empty() || name.contains(['.', '/', '=', ',']) || name.starts_with('-') {
                bail!("{yaml}: node name '{name}' may not be empty, start with '-' or contain . / = ,");
            }
            let mut params = object_params(spec.params.as_ref(), yaml, name)?;
            let mut inputs = spec.inputs.clone();
            let mut device = spec.device.clone();
            let mut nproc = spec.nproc;
            if let Some(over) = overrides.get(name) {
                if let Some(p) = &over.params {
                    params = deep_merge(&params, &object_params(Some(p), yaml, name)?);
                }
                if let Some(i) = &over.inputs {
                    inputs = i.clone();
                }
                if over.device.is_some() {
                    device = over.device.clone();
                }
                if over.nproc.is_some() {
                    nproc = over.nproc;
                }
            }
            let exe = spec.exe.clone().unwrap_or_else(|| name.clone());
            nodes.insert(
                name.clone(),
                Node {
                    name: name.clone(),
                    exe,
                    params,
                    inputs,
                    device,
                    nproc,
                },
            );
            if nproc == Some(0) {
                bail!("{yaml}: node {name}: nproc must be a positive number of ranks");
            }
        }
        for node in nodes.values() {
            for (input, spec) in &node.inputs {
                if let Some(up) = spec.upstream() {
                    if !nodes.contains_key(up) {
                        bail!(
                            "{yaml}: node {}: input {input}: unknown node '{up}'",
                            node.name
                        );
                    }
                }
            }
        }
        let order = dependency_order(&nodes, yaml)?;
        let mut sorted = IndexMap::new();
        for name in order {
            let node = nodes.swap_remove(&name).expect("ordered names are nodes");
            sorted.insert(name, node);
        }
        Ok(Graph {
            profile: profile.map(str::to_string),
            nodes: sorted,
        })
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        match self.nodes.get(name) {
            Some(n) => Ok(n),
            None => bail!("unknown node '{name}' (nodes: {})", self.names().join(", ")),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.nodes.keys().map(String::as_str).collect()
    }

    /// `target` and every node it reads from, directly or not.
    pub fn upstream_closure(&self, target: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![target.to_string()];
        while let Some(name) = todo.pop() {
            if seen.insert(name.clone()) {
                todo.extend(
                    self.nodes[&name]
                        .inputs
                        .values()
                        .filter_map(|s| s.upstream().map(str::to_string)),
                );
            }
        }
        seen
    }
}

fn object_params(params: Option<&Value>, yaml: &str, node: &str) -> Result<Value> {
    match params {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => bail!("{yaml}: node {node}: params must be a mapping"),
    }
}

/// Depth-first order (inputs first, file order otherwise); a cycle is an error that names it.
fn dependency_order(nodes: &IndexMap<String, Node>, yaml: &str) -> Result<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        nodes: &'a IndexMap<String, Node>,
        marks: &mut IndexMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        order: &mut Vec<String>,
    ) -> std::result::Result<(), String> {
        match marks[name] {
            Mark::Done => return Ok(()),
            Mark::Open => {
                let start = path.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<&str> = path[start..].to_vec();
                cycle.push(name);
                return Err(cycle.join(" → "));
            }
            Mark::New => {}
        }
        marks.insert(name, Mark::Open);
        path.push(name);
        for spec in nodes[name].inputs.values() {
            if let Some(up) = spec.upstream() {
                visit(up, nodes, marks, path, order)?;
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        order.push(name.to_string());
        Ok(())
    }
    let mut marks: IndexMap<&str, Mark> = nodes.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let mut order = Vec::new();
    for name in nodes.keys() {
        visit(name, nodes, &mut marks, &mut Vec::new(), &mut order)
            .map_err(|cycle| anyhow::anyhow!("{yaml}: cycle: {cycle}"))?;
    }
    Ok(order)
}

pub fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn graph(text: &str, profile: Option<&str>) -> Result<Graph> {
        Graph::build(&parse(text, "p.yaml")?, "p.yaml", profile)
    }

    #[test]
    fn orders_inputs_first() {
        let g = graph(
            "stages:\n  c: {inputs: {x: b}}\n  a: {}\n  b: {inputs: {x: a}}\n",
            None,
        )
        .unwrap();
        assert_eq!(g.names(), vec!["a", "b", "c"]);
        assert_eq!(
            g.upstream_closure("b"),
            ["a".to_string(), "b".to_string()].into()
        );
    }

    #[test]
    fn names_the_cycle() {
        let err = graph(
            "stages:\n  a: {inputs: {x: c}}\n  b: {inputs: {x: a}}\n  c: {inputs: {x: b}}\n",
            None,
        )
        .err()
        .unwrap();
        assert_eq!(err.to_string(), "p.yaml: cycle: a → c → b → a");
    }

    #[test]
    fn unknown_upstream_is_an_error() {
        let err = graph("stages:\n  a: {inputs: {x: nope}}\n", None)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "p.yaml: node a: input x: unknown node 'nope'"
        );
    }

    #[test]
    fn profile_merges_params_and_replaces_inputs() {
        let text = "stages:\n  up: {}\n  a: {inputs: {x: up, y: {file: f}}, params: {p: {q: 1, r: 2}}}\n\
                    profiles:\n  small: {a: {inputs: {x: up}, params: {p: {q: 5}}, device: cuda}}\n";
        let g = graph(text, Some("small")).unwrap();
        let a = g.node("a").unwrap();
        assert_eq!(a.params, serde_json::json!({"p": {"q": 5, "r": 2}}));
        assert_eq!(a.inputs.len(), 1);
        assert_eq!(a.device.as_deref(), Some("cuda"));
    }

    #[test]
    fn profile_of_unknown_node_is_an_error() {
        let err = graph("stages:\n  a: {}\nprofiles:\n  p: {b: {}}\n", Some("p"))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "p.yaml: profile p: unknown node 'b'");
    }
}

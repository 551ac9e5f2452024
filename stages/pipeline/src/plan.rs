//! The plan: every stage run a command is about, with its exact params, inputs and run key.
//!
//! A node swept by `--set` (a comma list) gets one *instance* per value, and so does everything
//! downstream of it through plain inputs; upstream instances are shared. A `{gather: NODE}` input
//! collects all of NODE's instances that agree with the reader on the dimensions they share, so a
//! report can read every seed of a sweep.

use anyhow::{anyhow, Result};
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use pgolf_store::hashing::HashCache;
use pgolf_store::key::{run_key, runs_key};

use crate::config::InputSpec;
use crate::graph::{Graph, Node};
use crate::identity::{stage_name, Identities};
use crate::inputs::{self, RawInput};
use crate::params::set_path;
use crate::project::Project;
use crate::settings::Setting;

/// One stage run: a node under one assignment of sweep values.
pub struct Instance {
    pub id: usize,
    pub node: String,
    /// (sweep dimension, value index) for every dimension this node depends on, by dimension.
    pub variant: Vec<(usize, usize)>,
    pub exe: PathBuf,
    pub identity: String,
    /// The name the stage stores its outputs under (`out/<stage>/<key>`).
    pub stage: String,
    pub params: Value,
    pub device: Option<String>,
    pub nproc: Option<usize>,
    pub inputs: Vec<PlannedInput>,
    pub key: String,
}

pub struct PlannedInput {
    pub name: String,
    pub source: Source,
    pub key: String,
}

pub enum Source {
    /// Outputs of upstream instances: one for a plain input, every variant for a gather.
    Runs {
        node: String,
        ids: Vec<usize>,
    },
    Raw(RawInput),
}

pub struct Plan {
    /// The sweep dimensions (settings with several values), in command-line order.
    pub dims: Vec<Setting>,
    pub instances: Vec<Instance>,
    /// Node -> its instances, or why it cannot be planned (missing file, executable, ...).
    pub nodes: IndexMap<String, std::result::Result<Vec<usize>, String>>,
}

pub struct Planner<'a> {
    pub project: &'a Project,
    pub graph: &'a Graph,
    pub identities: &'a mut Identities,
    pub hashes: &'a HashCache,
}

impl Planner<'_> {
    /// Plans the nodes in `wanted` (every node when `None`). A node that cannot be planned is
    /// recorded with its reason, and so is everything downstream of it.
    pub fn plan(&mut self, wanted: Option<&BTreeSet<String>>, settings: &[Setting]) -> Plan {
        let dims: Vec<Setting> = settings.iter().filter(|s| s.is_sweep()).cloned().collect();
        let mut plan = Plan {
            dims,
            instances: Vec::new(),
            nodes: IndexMap::new(),
        };
        let mut node_dims: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for node in self.graph.nodes.values() {
            if wanted.is_some_and(|w| !w.contains(&node.name)) {
                continue;
            }
            let result = self
                .plan_node(node, settings, &mut plan, &mut node_dims)
                .map_err(|e| format!("{e:#}"));
            plan.nodes.insert(node.name.clone(), result);
        }
        plan
    }

    fn plan_node(
        &mut self,
        node: &Node,
        settings: &[Setting],
        plan: &mut Plan,
        node_dims: &mut BTreeMap<String, BTreeSet<usize>>,
    ) -> Result<Vec<usize>> {
        for spec in node.inputs.values() {
            if let Some(up) = spec.upstream() {
                if let Some(Err(_)) = plan.nodes.get(up) {
                    return Err(anyhow!("upstream {up} cannot be planned"));
                }
            }
        }
        let exe = self.resolve_exe(&node.exe)?;
        let identity = self.identities.of(&exe).map_err(|e| anyhow!("{e:#}"))?;
        let stage = stage_name(&identity)
            .expect("identities are checked when read")
            .to_string();

        let mut raw: BTreeMap<&str, RawInput> = BTreeMap::new();
        for (name, spec) in &node.inputs {
            let patterns = match spec {
                InputSpec::File { file } => vec![file.clone()],
                InputSpec::Files { files } => files.clone(),
                _ => continue,
            };
            let resolved = inputs::resolve(self.project, &patterns, self.hashes)
                .map_err(|e| anyhow!("input {name}: {e:#}"))?;
            raw.insert(name, resolved);
        }

        let mut base = node.params.clone();
        for s in settings
            .iter()
            .filter(|s| s.node == node.name && !s.is_sweep())
        {
            set_path(&mut base, &s.path, s.values[0].clone());
        }
        let own: Vec<usize> = plan
            .dims
            .iter()
            .enumerate()
            .filter(|(_, d)| d.node == node.name)
            .map(|(i, _)| i)
            .collect();
        let mut dims: BTreeSet<usize> = own.iter().copied().collect();
        for spec in node.inputs.values() {
            if let InputSpec::Node(up) = spec {
                dims.extend(node_dims[up].iter().copied());
            }
        }

        let mut ids = Vec::new();
        for variant in assignments(&dims, &plan.dims) {
            let mut params = base.clone();
            for &(dim, value) in variant.iter().filter(|(d, _)| own.contains(d)) {
                set_path(
                    &mut params,
                    &plan.dims[dim].path,
                    plan.dims[dim].values[value].clone(),
                );
            }
            let mut planned = Vec::new();
            for (name, spec) in &node.inputs {
                let source = match spec {
                    InputSpec::Node(up) | InputSpec::Gather { gather: up } => {
                        let gather = matches!(spec, InputSpec::Gather { .. });
                        let matching = upstream_instances(plan, node_dims, up, &variant, gather);
                        Source::Runs {
                            node: up.clone(),
                            ids: matching,
                        }
                    }
                    _ => Source::Raw(raw[name.as_str()].clone()),
                };
                let key = match &source {
                    Source::Runs { ids, .. } => runs_key(
                        &ids.iter()
                            .map(|&i| plan.instances[i].key.clone())
                            .collect::<Vec<_>>(),
                    ),
                    Source::Raw(r) => r.key.clone(),
                };
                planned.push(PlannedInput {
                    name: name.clone(),
                    source,
                    key,
                });
            }
            let input_keys: BTreeMap<String, String> = planned
                .iter()
                .map(|i| (i.name.clone(), i.key.clone()))
                .collect();
            let key = run_key(
                &stage,
                &identity,
                &params,
                &input_keys,
                node.nproc.unwrap_or(1),
            );
            let id = plan.instances.len();
            plan.instances.push(Instance {
                id,
                node: node.name.clone(),
                variant,
                exe: exe.clone(),
                identity: identity.clone(),
                stage: stage.clone(),
                params,
                device: node.device.clone(),
                nproc: node.nproc,
                inputs: planned,
                key,
            });
            ids.push(id);
        }
        node_dims.insert(node.name.clone(), dims);
        Ok(ids)
    }

    /// A bare name is a sibling of this binary (`target/release/<exe>`); a path is relative to
    /// pipeline.yaml.
    fn resolve_exe(&self, exe: &str) -> Result<PathBuf> {
        let path = if exe.contains('/') {
            self.project.resolve(exe)
        } else {
            let me = std::env::current_exe()?;
            me.parent().expect("an executable has a folder").join(exe)
        };
        if !path.is_file() {
            return Err(anyhow!("executable {} not found", path.display()));
        }
        Ok(path)
    }
}

/// Every assignment of values to `dims`, the first dimension varying slowest.
fn assignments(dims: &BTreeSet<usize>, all: &[Setting]) -> Vec<Vec<(usize, usize)>> {
    let mut out = vec![Vec::new()];
    for &d in dims {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..all[d].values.len()).map(move |v| {
                    let mut next = prefix.clone();
                    next.push((d, v));
                    next
                })
            })
            .collect();
    }
    out
}

/// The instances of `up` a reader with `variant` takes: the one that agrees on all of `up`'s
/// dimensions, or for a gather every one that agrees on the dimensions they share.
fn upstream_instances(
    plan: &Plan,
    node_dims: &BTreeMap<String, BTreeSet<usize>>,
    up: &str,
    variant: &[(usize, usize)],
    gather: bool,
) -> Vec<usize> {
    let up_dims = &node_dims[up];
    let shared: Vec<(usize, usize)> = variant
        .iter()
        .copied()
        .filter(|(d, _)| up_dims.contains(d))
        .collect();
    let ids = plan.nodes[up].as_ref().expect("upstream was planned");
    ids.iter()
        .copied()
        .filter(|&i| {
            let v = &plan.instances[i].variant;
            if gather {
                shared.iter().all(|s| v.contains(s))
            } else {
                *v == shared
            }
        })
        .collect()
}

impl Plan {
    /// The first node that cannot be planned among `nodes`, as an error.
    pub fn first_error<'a>(&self, mut nodes: impl Iterator<Item = &'a String>) -> Result<()> {
        match nodes.find_map(|n| {
            self.nodes
                .get(n)
                .and_then(|r| r.as_ref().err().map(|e| (n, e)))
        }) {
            Some((node, e)) => Err(anyhow!("node {node}: {e}")),
            None => Ok(()),
        }
    }

    pub fn instances_of(&self, node: &str) -> &[usize] {
        match self.nodes.get(node) {
            Some(Ok(ids)) => ids,
            _ => &[],
        }
    }

    /// `node` or `node[dim=value,...]` for a swept instance.
    pub fn label(&self, inst: &Instance) -> String {
        if inst.variant.is_empty() {
            return inst.node.clone();
        }
        let parts: Vec<String> = inst
            .variant
            .iter()
            .map(|&(d, v)| format!("{}={}", self.dims[d].label, scalar(&self.dims[d].values[v])))
            .collect();
        format!("{}[{}]", inst.node, parts.join(","))
    }

    /// Every instance `inst` reads from, directly.
    pub fn upstream_ids<'a>(&'a self, inst: &'a Instance) -> impl Iterator<Item = usize> + 'a {
        inst.inputs.iter().flat_map(|i| match &i.source {
            Source::Runs { ids, .. } => ids.clone(),
            Source::Raw(_) => vec![],
        })
    }
}

/// A scalar as a user would type it (strings without quotes).
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

//! The schema of `pipeline.yaml` and its loading. Syntax and schema errors are reported as
//! `FILE:LINE:COL: message`, the form editors jump to.

use anyhow::{anyhow, Context, Result};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use crate::project::Project;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// The profile `run`/`status` use without `--profile`.
    #[serde(default)]
    pub default_profile: Option<String>,
    /// Nodes in file order (the order status lines follow where the DAG allows).
    pub stages: IndexMap<String, NodeSpec>,
    /// Profile name -> node name -> override.
    #[serde(default)]
    pub profiles: IndexMap<String, IndexMap<String, NodeOverride>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// A bare name is a sibling of the pipeline binary; a path is relative to pipeline.yaml.
    #[serde(default)]
    pub exe: Option<String>,
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub device: Option<String>,
    /// Ranks to run the stage on (`--nproc N`, for stages that take it: train). Unlike the device
    /// it changes results (the order of gradient sums), so a world size above 1 is in the run's
    /// key as well as in its manifest.
    #[serde(default)]
    pub nproc: Option<usize>,
}

/// A profile's change to one node: params are deep-merged, inputs replace the node's inputs.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeOverride {
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub inputs: Option<IndexMap<String, InputSpec>>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub nproc: Option<usize>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(
    untagged,
    expecting = "an upstream node name, {file: PATH}, {files: [PATH or glob, ...]} or {gather: NODE}"
)]
pub enum InputSpec {
    Node(String),
    File {
        file: String,
    },
    Files {
        files: Vec<String>,
    },
    /// Every sweep variant of a node, as one list input (e.g. the seeds of a multi-seed report).
    Gather {
        gather: String,
    },
}

impl InputSpec {
    /// The upstream node this input reads, if any.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            InputSpec::Node(n) | InputSpec::Gather { gather: n } => Some(n),
            _ => None,
        }
    }
}

pub fn load(project: &Project) -> Result<PipelineFile> {
    let text = std::fs::read_to_string(&project.yaml)
        .with_context(|| format!("{}: cannot read", project.yaml_display))?;
    parse(&text, &project.yaml_display)
}

pub fn parse(text: &str, file_name: &str) -> Result<PipelineFile> {
    serde_yaml_ng::from_str(text).map_err(|e| {
        let message = e.to_string();
        // The library appends " at line L column C"; we lead with FILE:L:C instead.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        match e.location() {
            Some(at) => anyhow!("{file_name}:{}:{}: {message}", at.line(), at.column()),
            None => anyhow!("{file_name}: {message}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let err = parse("stages:\n  a:\n    params: {x: [1, 2}\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.yaml:3:"), "{err}");
    }

    #[test]
    fn unknown_field_is_an_error_with_its_location() {
        let err = parse("stages:\n  a:\n    parms: {}\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.yaml:3:5: "), "{err}");
        assert!(err.contains("parms"), "{err}");
    }

    #[test]
    fn input_forms_parse() {
        let file = parse(
            "stages:\n  a:\n    inputs: {x: up, y: {file: f.txt}, z: {files: [a, 'b*']}, w: {gather: up}}\n  up: {}\n",
            "p.yaml",
        )
        .unwrap();
        let inputs = &file.stages["a"].inputs;
        assert_eq!(inputs["x"], InputSpec::Node("up".into()));
        assert_eq!(
            inputs["y"],
            InputSpec::File {
                file: "f.txt".into()
            }
        );
        assert_eq!(
            inputs["z"],
            InputSpec::Files {
                files: vec!["a".into(), "b*".into()]
            }
        );
        assert_eq!(
            inputs["w"],
            InputSpec::Gather {
                gather: "up".into()
            }
        );
        assert!(parse("stages:\n  a:\n    inputs: {x: {fil: f}}\n", "p.yaml").is_err());
    }
}

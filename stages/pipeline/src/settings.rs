//! `--set node.param.path=v1,v2,...`: values are YAML scalars; one value overrides the param, a
//! comma list makes a sweep dimension (one run per value of that node and everything downstream).

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::graph::Graph;

#[derive(Debug, Clone)]
pub struct Setting {
    pub node: String,
    pub path: Vec<String>,
    pub values: Vec<Value>,
    /// The `node.param` part as written, for tables and labels.
    pub label: String,
}

impl Setting {
    pub fn is_sweep(&self) -> bool {
        self.values.len() > 1
    }
}

pub fn parse_all(specs: &[String], graph: &Graph) -> Result<Vec<Setting>> {
    let mut out: Vec<Setting> = Vec::new();
    for spec in specs {
        let setting = parse(spec)?;
        graph
            .node(&setting.node)
            .map_err(|e| anyhow!("--set {spec}: {e}"))?;
        if out.iter().any(|s| s.label == setting.label) {
            bail!("--set {spec}: {} is set twice", setting.label);
        }
        out.push(setting);
    }
    Ok(out)
}

fn parse(spec: &str) -> Result<Setting> {
    let usage = || anyhow!("--set {spec}: expected NODE.PARAM=VALUE or NODE.PARAM=V1,V2,...");
    let (lhs, rhs) = spec.split_once('=').ok_or_else(usage)?;
    let mut parts = lhs.split('.').map(str::to_string);
    let node = parts.next().filter(|n| !n.is_empty()).ok_or_else(usage)?;
    let path: Vec<String> = parts.collect();
    if path.is_empty() || path.iter().any(String::is_empty) {
        return Err(usage());
    }
    let values = rhs
        .split(',')
        .map(|text| {
            if text.trim().is_empty() {
                bail!("--set {spec}: empty value");
            }
            let value: Value = serde_yaml_ng::from_str(text)
                .map_err(|e| anyhow!("--set {spec}: {text:?} is not a YAML scalar: {e}"))?;
            if value.is_object() || value.is_array() {
                bail!("--set {spec}: {text:?} is not a scalar");
            }
            Ok(value)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Setting {
        node,
        path,
        values,
        label: lhs.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_yaml_scalars() {
        let s = parse("quantize-pack.clip_sigmas=12,12.5,x,true").unwrap();
        assert_eq!(s.node, "quantize-pack");
        assert_eq!(s.path, vec!["clip_sigmas"]);
        assert_eq!(
            s.values,
            vec![json!(12), json!(12.5), json!("x"), json!(true)]
        );
        assert!(s.is_sweep());
        let nested = parse("train.optim.lr='0.5'").unwrap();
        assert_eq!(nested.path, vec!["optim", "lr"]);
        assert_eq!(nested.values, vec![json!("0.5")]);
    }

    #[test]
    fn malformed_settings_are_errors() {
        for bad in [
            "train",
            "train=1",
            ".lr=1",
            "train.=1",
            "train.lr=",
            "train.lr=1,,2",
            "train.lr=[1]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

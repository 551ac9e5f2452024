//! What the driver prints: one line per stage run, spinners on a terminal, and the sweep table.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use pgolf_store::Manifest;

use crate::plan::{scalar, Plan};

/// Figures users look for first (the stages' key results, docs/STAGES.md); the rest follow by name.
const FIRST: [&str; 9] = [
    "val_bpb",
    "artifact_bytes",
    "within_cap",
    "val_loss",
    "ms_per_step",
    "steps",
    "vocab_size",
    "train_tokens",
    "val_tokens",
];
const SHOWN_HEADLINES: usize = 4;

/// Prints lines, above live spinners when asked for them and stdout is a terminal, plainly
/// otherwise.
pub struct Reporter {
    multi: Option<MultiProgress>,
}

impl Reporter {
    pub fn new(spinners: bool) -> Reporter {
        Reporter {
            multi: (spinners && std::io::stdout().is_terminal()).then(MultiProgress::new),
        }
    }

    pub fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => m.println(text).unwrap_or_else(|_| println!("{text}")),
            None => println!("{text}"),
        }
    }

    /// A line of a stage's own output: above the spinners on a terminal, else on stderr (our
    /// stdout carries only the driver's lines).
    pub fn stage_line(&self, text: &str) {
        match &self.multi {
            Some(m) => m.println(text).unwrap_or_else(|_| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// A spinner for a running stage (none when stdout is not a terminal).
    pub fn spinner(&self, label: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        bar.set_message(format!("{label} running"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    }
}

/// `label  status  key  figures`, aligned (labels padded to `width`).
pub fn run_line(width: usize, label: &str, status: &str, key: &str, figures: &str) -> String {
    format!("{label:<width$}  {status:<14} {key:<8}  {figures}")
        .trim_end()
        .to_string()
}

/// The label width that aligns every line of a plan.
pub fn label_width(plan: &Plan) -> usize {
    let nodes = plan.nodes.keys().map(|n| n.chars().count());
    plan.instances
        .iter()
        .map(|i| plan.label(i).chars().count())
        .chain(nodes)
        .max()
        .unwrap_or(0)
}

/// Bytes for people: kB below a megabyte, MB above.
pub fn size(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// A few headline figures, `name=value`, the well-known ones first.
pub fn headline_summary(headline: &BTreeMap<String, Value>) -> String {
    let mut names: Vec<&String> = FIRST
        .iter()
        .filter_map(|f| headline.get_key_value(*f).map(|(k, _)| k))
        .collect();
    names.extend(headline.keys().filter(|k| !FIRST.contains(&k.as_str())));
    names
        .iter()
        .take(SHOWN_HEADLINES)
        .map(|k| format!("{k}={}", figure(&headline[*k])))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A headline value, compact: integers as they are, other numbers to 4 significant-ish digits.
pub fn figure(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) {
                format!("{x:.4e}")
            } else if x.abs() >= 100.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.4}")
            }
        }
        other => scalar(other),
    }
}

/// The sweep table: one row per combination of sweep values; columns are the values, then the
/// headline figures of each swept node and of the final node.
pub fn sweep_table(plan: &Plan, target: &str, results: &[Option<Manifest>]) -> String {
    let mut nodes: Vec<&str> = Vec::new();
    for node in plan.dims.iter().map(|d| d.node.as_str()).chain([target]) {
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    // (node, headline name) for every figure column.
    let mut figures: Vec<(&str, String)> = Vec::new();
    for node in &nodes {
        let mut names: Vec<&String> = plan
            .instances_of(node)
            .iter()
            .filter_map(|&i| results[i].as_ref())
            .flat_map(|m| m.headline.keys())
            .collect();
        names.sort();
        names.dedup();
        figures.extend(names.into_iter().map(|f| (*node, f.clone())));
    }
    let mut header: Vec<String> = plan.dims.iter().map(|d| d.label.clone()).collect();
    header.extend(figures.iter().map(|(node, f)| format!("{node}:{f}")));

    let mut combos: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
    for (d, dim) in plan.dims.iter().enumerate() {
        combos = combos
            .into_iter()
            .flat_map(|c| (0..dim.values.len()).map(move |v| [c.clone(), vec![(d, v)]].concat()))
            .collect();
    }
    let rows: Vec<Vec<String>> = combos
        .iter()
        .map(|combo| {
            let values = combo.iter().map(|&(d, v)| scalar(&plan.dims[d].values[v]));
            let cells = figures.iter().map(|(node, name)| {
                // The node's instance for this combination: the one whose variant is part of it.
                let inst = plan
                    .instances_of(node)
                    .iter()
                    .find(|&&i| plan.instances[i].variant.iter().all(|p| combo.contains(p)));
                match inst.and_then(|&i| results[i].as_ref()) {
                    Some(m) => m.headline.get(name).map(figure).unwrap_or_default(),
                    None => "—".into(),
                }
            });
            values.chain(cells).collect()
        })
        .collect();
    render(&header, &rows)
}

fn render(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = vec![
        line(header),
        format!(
            "|{}|",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        ),
    ];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_are_compact() {
        assert_eq!(figure(&json!(1234567)), "1234567");
        assert_eq!(figure(&json!(1.23456789)), "1.2346");
        assert_eq!(figure(&json!(1234.5678)), "1234.6");
        assert_eq!(figure(&json!("raw")), "raw");
    }

    #[test]
    fn well_known_figures_come_first() {
        let h: BTreeMap<String, Value> =
            [("a", json!(1)), ("val_bpb", json!(1.5)), ("b", json!(2))]
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
        assert_eq!(headline_summary(&h), "val_bpb=1.5000 a=1 b=2");
    }
}

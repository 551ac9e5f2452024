//! The page, section by section: summary, results, statistics and significance, figures, artifact
//! bytes, compliance, logs and provenance. Every number is a link to the run it was read from.

use crate::compliance::{Check, GuardRow, Verdict, GUARDS};
use crate::doc::{Doc, Figure, Line};
use crate::figures::{artifact_segments, sources_line, GROUPS};
use crate::findings::Findings;
use crate::params::Unit;
use crate::plots::thousands;
use crate::points::{is_identity_key, value_text};
use crate::runs::{EvalKind, Role, Run};
use crate::stats::Sample;
use crate::tables::tensor_group;

/// A number that links to the run it came from.
fn linked(text: impl Into<String>, run: &Run) -> Line {
    Line::default().push_link(text, run.href())
}

fn headline_cell(run: Option<&Run>, name: &str, fmt: fn(f64) -> String) -> Line {
    match run {
        None => Line::text("not run"),
        Some(r) => match r.headline_f64(name) {
            Some(v) => linked(fmt(v), r),
            None => Line::text("not reported"),
        },
    }
}

fn f5(v: f64) -> String {
    format!("{v:.5}")
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn int(v: f64) -> String {
    thousands(v)
}

fn mean_std(s: &Sample, digits: usize) -> String {
    if s.n > 1 {
        format!("{:.digits$} ± {:.digits$}", s.mean, s.std)
    } else {
        format!("{:.digits$}", s.mean)
    }
}

pub fn summary(doc: &mut Doc, f: &Findings) {
    if let Some(blurb) = &f.params.blurb {
        doc.para(Line::text(blurb.clone()));
    }
    let Some(stats) = &f.stats[f.chosen] else {
        return;
    };
    let n = stats.points.len();
    let mut line = Line::default().push_strong(format!(
        "val_bpb {} (val_loss {} nats)",
        mean_std(&stats.val_bpb, 5),
        mean_std(&stats.val_loss, 5)
    ));
    line = line.push_text(format!(
        ", {} by the {} evaluation",
        if n > 1 {
            format!("mean ± std of {n} runs")
        } else {
            "one run".to_string()
        },
        f.score_kind.label()
    ));
    if f.is_sweep() {
        line = line.push_text(format!(
            ", at the best of {} sweep points ({})",
            f.groups.len(),
            f.groups[f.chosen].label()
        ));
    }
    let sizes: Vec<(f64, &Run)> = stats
        .points
        .iter()
        .filter_map(|&i| {
            f.points[i]
                .quantize
                .and_then(|q| q.headline_f64("artifact_bytes").map(|b| (b, q)))
        })
        .collect();
    if let Some((bytes, q)) = sizes.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0)) {
        line = line
            .push_text(". Artifact ")
            .append(linked(format!("{} bytes", thousands(bytes)), q))
            .push_text(format!(
                " ({}cap {})",
                if sizes.len() > 1 {
                    format!("largest of {}; ", sizes.len())
                } else {
                    String::new()
                },
                thousands(crate::compliance::CAP_BYTES)
            ));
    }
    doc.para(line.push_text("."));
    if let Some(claim) = &f.claims[f.chosen] {
        doc.para(
            Line::default()
                .push_strong(sentence_case(&claim.verdict()))
                .push_text(" (see Significance)."),
        );
    }
}

fn sentence_case(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|first| first.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

pub fn results(doc: &mut Doc, f: &Findings) {
    doc.heading(2, "Results");
    let mut kinds: Vec<EvalKind> = f
        .points
        .iter()
        .flat_map(|p| p.evals.keys().cloned())
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut head: Vec<String> = ["run", "steps", "train s", "pre-quant BPB"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    head.extend(kinds.iter().map(|k| format!("{} BPB", k.label())));
    head.extend([
        "artifact bytes".to_string(),
        format!("score val_loss ({})", f.score_kind.label()),
    ]);
    let rows = f
        .points
        .iter()
        .zip(&f.labels)
        .zip(&f.scores)
        .map(|((p, label), score)| {
            let mut row = vec![
                Line::text(label.clone()),
                headline_cell(p.train, "steps", int),
                headline_cell(p.train, "train_seconds", f1),
                headline_cell(p.train, "val_bpb", f5),
            ];
            row.extend(
                kinds
                    .iter()
                    .map(|k| headline_cell(p.evals.get(k).copied(), "val_bpb", f5)),
            );
            row.push(headline_cell(p.quantize, "artifact_bytes", int));
            row.push(match score {
                Some(s) => linked(f5(s.val_loss), s.run),
                None => Line::text("not evaluated"),
            });
            row
        })
        .collect();
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    doc.table(&head, rows);
    let all = [
        EvalKind::Flat,
        EvalKind::Sliding,
        EvalKind::Ttt,
        EvalKind::Ngram,
    ];
    let missing: Vec<String> = all
        .iter()
        .filter(|k| !kinds.contains(k))
        .map(|k| k.label())
        .collect();
    let mut notes = vec![Line::text(format!(
        "The score is the {} evaluation ({}); BPB is bits per byte of the raw validation text, val_loss nats per token.",
        f.score_kind.label(),
        if f.params.score == crate::params::ScoreChoice::Auto { "params score: auto, the most refined evaluation every run has" } else { "params score" }
    ))];
    if !missing.is_empty() {
        notes.push(Line::text(format!("Not run: {}.", missing.join(", "))));
    }
    // A text-transforming tokenizer's LUT figure: shown, labelled, never a score.
    for r in &f.rejected_lut {
        let ratio = r
            .ratio
            .map(|x| format!("its lookup tables charge {x:.4}× the original text's bytes"))
            .unwrap_or_else(|| "its lookup tables overstate the original text's bytes".into());
        notes.push(
            Line::text(format!(
                "{}: rejected diagnostic, not a score — against lookup-table bytes ",
                f.labels[r.point]
            ))
            .push_link(r.run.tag(), r.run.href())
            .push_text(format!(
                " would report {} BPB (its score, against the original text's bytes: {}); the tokenizer transforms the text (its case operators stand for no text), and {ratio} (REFERENCE.md §2.5).",
                f5(r.lut_bpb),
                f5(r.val_bpb)
            )),
        );
    }
    // Late QAT is easy to configure and silently never run (R0322's never did under
    // torch.compile), so the report says for each run whether and when it switched on.
    for (p, label) in f.points.iter().zip(&f.labels) {
        let Some(t) = p.train else { continue };
        let threshold = t.headline_f64("late_qat_threshold").unwrap_or(0.0);
        if threshold <= 0.0 {
            continue;
        }
        let steps = t.headline_f64("steps").unwrap_or(0.0) as u64;
        notes.push(Line::text(match t.headline_f64("late_qat_step") {
            Some(step) => format!(
                "{label}: late QAT (lr_mul < {threshold}) switched on at step {} of {steps}.",
                step as u64
            ),
            None => format!(
                "{label}: late QAT was configured (lr_mul < {threshold}) but never switched on in {steps} steps."
            ),
        }));
    }
    if f.points.iter().any(|p| p.train.is_none()) {
        notes.push(Line::text(
            "Runs with \"not run\" under steps/train were given without their train run.",
        ));
    }
    doc.list(notes);
}

pub fn statistics(doc: &mut Doc, f: &Findings) {
    doc.heading(2, "Statistics");
    let rows = f
        .groups
        .iter()
        .zip(&f.stats)
        .map(|(g, s)| match s {
            Some(s) => vec![
                Line::text(g.label()),
                Line::text(s.val_loss.n.to_string()),
                Line::text(mean_std(&s.val_loss, 5)),
                Line::text(mean_std(&s.val_bpb, 5)),
            ],
            None => vec![
                Line::text(g.label()),
                Line::text("0"),
                Line::text("—"),
                Line::text("—"),
            ],
        })
        .collect();
    doc.table(
        &[
            "configuration",
            "runs",
            "val_loss (nats) mean ± std",
            "val_bpb mean ± std",
        ],
        rows,
    );
    doc.para("Standard deviations are sample standard deviations (n − 1). Each run's numbers link to their evaluation in Results.");
    // Runs made by different code are different configurations: say which code each version is.
    let mut versions: Vec<(usize, String)> = f
        .groups
        .iter()
        .filter_map(|g| {
            let ids = g
                .axes
                .iter()
                .filter(|(k, _)| is_identity_key(k))
                .map(|(_, v)| value_text(v))
                .collect::<Vec<_>>();
            g.code.map(|n| (n, ids.join(", ")))
        })
        .collect();
    versions.sort();
    versions.dedup();
    if !versions.is_empty() {
        doc.para("The runs were made by different code (stage source identities that differ between configurations):");
        doc.list(
            versions
                .into_iter()
                .map(|(n, ids)| Line::text(format!("code v{n}: ")).push_code(ids))
                .collect(),
        );
    }

    doc.heading(2, "Significance");
    let Some(b) = &f.baseline else {
        doc.para(format!(
            "No baseline given (params baseline {{mean, std, n, unit}} or a baseline report input): no claim of significance is made. The record bar is an improvement of ≥ {} nats at p < {}.",
            f.params.min_improvement_nats, f.params.alpha
        ));
        return;
    };
    let mut what = Line::text(format!(
        "Baseline: {}: {} {} (std {}, n = {}).",
        b.label,
        b.sample.mean,
        match b.unit {
            Unit::Nats => "nats (val_loss)",
            Unit::Bpb => "BPB",
        },
        b.sample.std,
        b.sample.n
    ));
    if let Some(r) = b.run {
        what = what
            .push_text(" Read from ")
            .push_link(r.tag(), r.href())
            .push_text(".");
    }
    doc.para(what);
    doc.para(format!(
        "Test: one-sided Welch t-test of H0: baseline − ours ≤ δ = {} nats against H1: baseline − ours > δ, on val_loss in nats per token (the unit of the rule's bar), Welch–Satterthwaite degrees of freedom, p from Student's t. {}",
        f.params.min_improvement_nats,
        if b.unit == Unit::Bpb {
            "The baseline was given in BPB and is converted to nats with our runs' own factor val_loss/val_bpb = ln 2 · bytes/token, which assumes it was measured with the same tokenizer on the same validation text."
        } else {
            ""
        }
    ));
    let mut rows = Vec::new();
    for (g, claim) in f.groups.iter().zip(&f.claims) {
        let Some(c) = claim else { continue };
        let (t, df, p) = match &c.test {
            Ok(w) => (
                format!("{:.3}", w.t),
                format!("{:.2}", w.df),
                format!("{:.3e}", w.p),
            ),
            Err(_) => ("—".into(), "—".into(), "—".into()),
        };
        rows.push(vec![
            Line::text(g.label()),
            Line::text(mean_std(&c.ours, 5)),
            Line::text(format!(
                "{:.5} ± {:.5}",
                c.baseline_nats.mean, c.baseline_nats.std
            )),
            Line::text(format!(
                "{:.5} nats ({:.5} BPB)",
                c.baseline_nats.mean - c.ours.mean,
                (c.baseline_nats.mean - c.ours.mean) / c.nats_per_bpb
            )),
            Line::text(t),
            Line::text(df),
            Line::text(p),
            Line::default().push_strong(c.verdict()),
        ]);
    }
    doc.table(
        &[
            "configuration",
            "ours (nats)",
            "baseline (nats)",
            "improvement",
            "t",
            "df",
            "p",
            "verdict",
        ],
        rows,
    );
}

pub fn figures(doc: &mut Doc, figures: Vec<Figure>, missing: Vec<String>) {
    doc.heading(2, "Figures");
    for fig in figures {
        doc.heading(3, fig.title.clone());
        doc.figure(fig);
    }
    doc.list(missing.into_iter().map(Line::text).collect());
}

pub fn artifact(doc: &mut Doc, f: &Findings) {
    doc.heading(2, "Artifact bytes");
    let chosen = f.chosen_points();
    let Some(q) = chosen
        .iter()
        .copied()
        .chain(0..f.points.len())
        .find_map(|i| f.points[i].quantize)
    else {
        doc.para("No quantize-pack output was given: artifact sizes are not known.");
        return;
    };
    let mut intro = Line::text("For artifact ").push_link(q.tag(), q.href());
    let rows_in = f.tensors.get(q.key());
    if rows_in.is_none() {
        intro = intro.push_text(" (its tensors.parquet is not available: no per-group split)");
    }
    doc.para(intro.push_text(":"));
    let mut rows = Vec::new();
    if let (Some(tensors), Some((_, shares))) = (rows_in, artifact_segments(f, q)) {
        for (g, share) in GROUPS.iter().zip(&shares) {
            let members: Vec<_> = tensors
                .iter()
                .filter(|t| tensor_group(&t.name) == *g)
                .collect();
            if members.is_empty() {
                continue;
            }
            let raw: Option<f64> = members.iter().map(|t| t.raw).sum();
            rows.push(vec![
                Line::text(g.to_string()),
                Line::text(members.len().to_string()),
                Line::text(raw.map(thousands).unwrap_or_else(|| "—".into())),
                Line::text(thousands(members.iter().map(|t| t.compressed).sum())),
                linked(thousands(*share), q),
            ]);
        }
    }
    // LQER's factors sit inside the groups above (each corrected tensor's bytes include them).
    if let Some(bytes) = q.headline_f64("lqer_bytes") {
        let n = q.headline_f64("lqer_tensors").unwrap_or(0.0);
        rows.push(vec![
            Line::text("of which LQER corrections"),
            Line::text(thousands(n)),
            linked(thousands(bytes), q),
            Line::text(""),
            Line::text(""),
        ]);
    }
    for (name, key) in [
        ("model file", "model_bytes"),
        ("code", "code_bytes"),
        ("artifact total", "artifact_bytes"),
    ] {
        if let Some(v) = q.headline_f64(key) {
            rows.push(vec![
                Line::text(name),
                Line::text(""),
                Line::text(""),
                Line::text(""),
                linked(thousands(v), q),
            ]);
        }
    }
    if let Some(total) = q.headline_f64("artifact_bytes") {
        rows.push(vec![
            Line::text("headroom to the cap"),
            Line::text(""),
            Line::text(""),
            Line::text(""),
            Line::text(thousands(crate::compliance::CAP_BYTES - total)),
        ]);
    }
    doc.table(
        &[
            "tensor group",
            "tensors",
            "bytes before compression",
            "compressed (per tensor)",
            "bytes in the artifact",
        ],
        rows,
    );
    doc.para("\"bytes in the artifact\" splits the measured model file in proportion to the per-tensor compressed sizes (compression acts on the whole file, so these are attributions); the totals are measured from the files.");
}

pub fn compliance(doc: &mut Doc, caps: &[Check], guards: &[GuardRow]) {
    doc.heading(2, "Compliance");
    let rows = caps
        .iter()
        .map(|c| {
            vec![
                Line::text(c.name.clone()),
                Line::text(c.value.clone()),
                Line::text(c.limit.clone()),
                Line::text(c.verdict.label()),
                runs_cell(&c.sources),
            ]
        })
        .collect();
    doc.table(&["check", "value", "limit", "verdict", "from"], rows);
    doc.heading(3, "Integrity guards");
    let mut head = vec!["evaluation"];
    head.extend(GUARDS.iter().map(|(n, _)| *n));
    head.extend(["other guards", "from"]);
    let rows = guards
        .iter()
        .map(|g| {
            let mut row = vec![Line::text(g.kind.label())];
            // Several runs of one kind (seeds): the worst cell stands for them.
            let of = match g.sources.len() {
                1 => String::new(),
                n => format!(" (worst of {n} runs)"),
            };
            row.extend(
                g.cells
                    .iter()
                    .map(|c| Line::text(format!("{} — {}{of}", c.verdict.label(), c.text))),
            );
            let others: Vec<String> = g
                .others
                .iter()
                .map(|(k, c)| format!("{k}: {} — {}", c.verdict.label(), c.text))
                .collect();
            row.push(Line::text(if others.is_empty() {
                "—".into()
            } else {
                others.join("; ")
            }));
            row.push(runs_cell(&g.sources));
            row
        })
        .collect();
    doc.table(&head, rows);
    let failed = caps
        .iter()
        .map(|c| c.verdict)
        .chain(
            guards
                .iter()
                .flat_map(|g| g.cells.iter().map(|c| c.verdict)),
        )
        .any(|v| v == Verdict::Fail);
    doc.para(Line::default().push_strong(if failed { "At least one check failed." } else { "No check failed." }).push_text(
        " Guards are the evaluation stages' own results (headline guard_*), joined with what this report recomputes: scored vs expected targets, the results table's ΣNLL/(ln 2·Σbytes) against the headline BPB, and the lookup-table byte count against the raw one.",
    ));
}

fn runs_cell(runs: &[&Run]) -> Line {
    if runs.is_empty() {
        return Line::text("—");
    }
    sources_line("", runs)
}

pub fn logs(doc: &mut Doc, logs: &[(String, &Run)]) {
    doc.heading(2, "Training logs");
    if logs.is_empty() {
        doc.para("No train.log among the train runs given.");
        return;
    }
    doc.list(
        logs.iter()
            .map(|(file, run)| {
                Line::default()
                    .push_link(file.clone(), file.clone())
                    .push_text(" — copied from ")
                    .push_link(run.tag(), run.href())
            })
            .collect(),
    );
}

pub fn provenance(doc: &mut Doc, f: &Findings) {
    doc.heading(2, "Provenance");
    doc.para("Every stage run this report read (each link opens its manifest in the out/ store; this report's own manifest lists the same keys as its inputs).");
    let rows = f
        .runs
        .all
        .iter()
        .map(|r| {
            vec![
                Line::text(match &r.role {
                    Role::Other => format!("{} (not used)", r.manifest.stage),
                    role => role.label(),
                }),
                linked(r.short_key().to_string(), r),
                Line::default().push_code(r.manifest.identity.clone()),
                Line::text(r.manifest.device.summary()),
                Line::text(r.manifest.finished.clone()),
                Line::text(format!("{:.1}", r.manifest.wall_seconds)),
                Line::default().push_code(pgolf_store::canonical_json(&r.manifest.params)),
            ]
        })
        .collect();
    doc.table(
        &[
            "role", "run", "identity", "device", "finished", "wall s", "params",
        ],
        rows,
    );
}

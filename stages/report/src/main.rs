//! The report stage: one page a researcher would publish, made only from the pipeline's own outputs
//! (manifests and Parquet tables), so nothing is copied by hand.
//!
//! ```text
//! report --out DIR --in NAME=RUN... [--params FILE.json]
//! ```
//!
//! Any input name will do and any may repeat (a list: seeds, sweep points); each run's role comes
//! from its manifest. Writes report.md, report.html (self-contained), plots/*.svg,
//! submission.json (upstream schema), provenance.json and logs/. See docs/REPORT.md.

mod bytes;
mod compliance;
mod doc;
mod figures;
mod findings;
mod html;
mod markdown;
mod output;
mod params;
mod plots;
mod points;
mod runs;
mod score;
mod sections;
mod significance;
mod stats;
mod submission;
mod tables;

use anyhow::Result;
use pgolf_store::files;
use pgolf_store::Stage;

use crate::doc::Doc;
use crate::findings::Findings;
use crate::params::Params;
use crate::runs::Runs;

fn main() {
    pgolf_store::run_stage::<Params, _>("report", env!("PGOLF_STAGE_IDENTITY"), report);
}

fn report(stage: &mut Stage<Params>) -> Result<()> {
    let params = stage.params.clone();

    // What was run: every input run with its role, grouped into points (one per scored artifact),
    // scored, split into seeds and sweep points, and tested against the baseline.
    let runs = Runs::load(stage.inputs())?;
    let f = Findings::gather(&params, &runs)?;

    // Whether it plays by the rules: caps, time, device, and every integrity guard.
    let mut caps = compliance::caps(
        &f.points,
        &f.score_kind,
        params.train_cap_seconds,
        params.eval_cap_seconds,
    );
    caps.extend(compliance::entropy_floor(&f.points, &f.scores));
    let guards = compliance::guards(&f.points, &f.results);

    // The figures, and a line for each one that has nothing to draw.
    let mut figures = Vec::new();
    let mut missing = Vec::new();
    match figures::training(&f)? {
        Some(fig) => figures.push(fig),
        None => missing.push(
            "Training curves: no train run with a metrics.parquet among the inputs.".to_string(),
        ),
    }
    figures.push(figures::bpb_by_stage(&f)?);
    match figures::artifact_bytes(&f)? {
        Some(fig) => figures.push(fig),
        None => {
            missing.push("Artifact bytes: no quantize-pack output among the inputs.".to_string())
        }
    }
    figures.extend(figures::sweep(&f)?);

    // The page, in the order a reader asks: what is the score, how sure, what it looks like, is it
    // legal, and where every number came from.
    let logs = output::copy_logs(&stage.out, &f)?;
    let mut page = Doc {
        title: params.name.clone(),
        blocks: vec![],
    };
    sections::summary(&mut page, &f);
    sections::results(&mut page, &f);
    sections::statistics(&mut page, &f);
    sections::figures(&mut page, figures, missing);
    sections::artifact(&mut page, &f);
    sections::compliance(&mut page, &caps, &guards);
    sections::logs(&mut page, &logs);
    sections::provenance(&mut page, &f);
    output::page(&stage.out, &page)?;

    // submission.json for the chosen configuration, and the map of which number came from where.
    let submission = submission::build(&f, compliance::summary(&caps, &guards, &f.score_kind));
    let submission_runs: Vec<String> = submission
        .iter()
        .flat_map(|s| {
            s.seed_results
                .values()
                .flat_map(|r| r.runs.values().cloned())
        })
        .collect();
    if let Some(s) = &submission {
        output::json(&stage.out, files::SUBMISSION, s)?;
    }
    output::json(
        &stage.out,
        files::PROVENANCE,
        &output::provenance(&page, &f, &submission_runs),
    )?;

    // Headline: what another report needs to use this one as its baseline.
    if let Some(s) = &f.stats[f.chosen] {
        stage.headline("val_bpb", s.val_bpb.mean);
        stage.headline("val_loss", s.val_loss.mean);
        stage.headline("val_bpb_std", s.val_bpb.std);
        stage.headline("val_loss_std", s.val_loss.std);
        stage.headline("n_runs", s.val_loss.n);
    }
    if let Some(bytes) = submission.as_ref().and_then(|s| s.bytes_total) {
        stage.headline("artifact_bytes", bytes);
    }
    stage.headline("score_eval", f.score_kind.label());
    if let Some(claim) = &f.claims[f.chosen] {
        stage.headline("significant", claim.significant());
        stage.headline("p_value", claim.test.as_ref().ok().map(|w| w.p));
    }
    Ok(())
}

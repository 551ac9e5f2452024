//! `pipeline`: the make-style driver of the pgolf stage DAG described by `pipeline.yaml`.
//!
//! It computes the run key of every node (stage identity, params, input keys — the same key the
//! stage computes itself), reuses what is already in `out/<stage>/<key>/`, runs what is stale, and
//! ships runs between machines as verified bundles. See docs/PIPELINE.md.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

use pipeline::session::Session;
use pipeline::{export, gc, import, project, run, status};

#[derive(Parser)]
#[command(about = "Runs the pgolf stage DAG of pipeline.yaml with content-addressed caching")]
struct Cli {
    /// The pipeline file (default: ./pipeline.yaml); out/ is beside it.
    #[arg(short = 'f', long = "file", global = true)]
    file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs what is stale in TARGET's upstream closure (default: every node), reusing the rest.
    Run {
        target: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        /// NODE.PARAM=VALUE, or NODE.PARAM=V1,V2,... to sweep (repeat for a cartesian product).
        #[arg(long = "set", value_name = "NODE.PARAM=V[,V...]")]
        sets: Vec<String>,
        /// Independent stage runs at once.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Per node: fresh, stale (and why) or never run.
    Status {
        #[arg(long)]
        profile: Option<String>,
        #[arg(long = "set", value_name = "NODE.PARAM=V[,V...]")]
        sets: Vec<String>,
    },
    /// Writes a run (a key prefix, or a node's current run) as a .tar.zst bundle.
    Export {
        #[arg(value_name = "KEY|NODE")]
        what: String,
        #[arg(short = 'o', long = "output", value_name = "FILE.tar.zst")]
        output: PathBuf,
        /// Also every run it was computed from.
        #[arg(long)]
        with_deps: bool,
        #[arg(long)]
        profile: Option<String>,
    },
    /// Verifies a bundle and adds its runs to out/.
    Import {
        #[arg(value_name = "FILE.tar.zst")]
        bundle: PathBuf,
    },
    /// Removes dead temp dirs and runs no profile reaches.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = dispatch(cli) {
        eprintln!("error: pipeline: {}", format!("{err:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let file = cli.file.as_deref();
    match cli.command {
        Command::Run {
            target,
            profile,
            sets,
            jobs,
        } => {
            let session = Session::open(file, profile.as_deref())?;
            run::run(&session, &run::RunArgs { target, sets, jobs })
        }
        Command::Status { profile, sets } => {
            status::status(&Session::open(file, profile.as_deref())?, &sets)
        }
        Command::Export {
            what,
            output,
            with_deps,
            profile,
        } => export::export(
            &Session::open(file, profile.as_deref())?,
            &what,
            &output,
            with_deps,
        ),
        Command::Import { bundle } => import::import(&project::Project::locate(file)?, &bundle),
        Command::Gc { dry_run } => gc::gc(&Session::open(file, None)?, dry_run),
    }
}

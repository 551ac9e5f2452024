//! `seeds CORPUS_ROOT [PROJECT]`: writes the seed corpora (see `pgolf_fuzz::seeds`): the small
//! synthetic ones, and with PROJECT (a folder with pipeline.yaml and a finished out/) the real files
//! of its runs too (bench/fuzz.sh).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(args.first().context("usage: seeds CORPUS_ROOT [PROJECT]")?);
    pgolf_fuzz::seeds::synthetic(&root)?;
    if let Some(project) = args.get(1) {
        pgolf_fuzz::seeds::real(&root, Path::new(project))?;
    }
    Ok(())
}

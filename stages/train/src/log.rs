//! The human-readable run log (`train.log`): upstream-style lines (`step:10/200 train_loss:…`),
//! also printed to stdout when it is not a terminal (a terminal shows the progress bar instead).

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;

pub struct RunLog {
    file: File,
    echo: bool,
}

impl RunLog {
    pub fn create(path: &Path) -> Result<RunLog> {
        let file =
            File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(RunLog {
            file,
            echo: !std::io::stdout().is_terminal(),
        })
    }

    pub fn line(&mut self, text: &str) -> Result<()> {
        writeln!(self.file, "{text}")?;
        if self.echo {
            println!("{text}");
        }
        Ok(())
    }
}

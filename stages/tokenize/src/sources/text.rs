//! A plain `.txt` file is one document; its id is the file name.

use anyhow::{anyhow, Context, Result};
use std::path::Path;

use super::{Batches, RawDoc};

pub fn batches(path: &Path) -> Result<Batches> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: invalid UTF-8 at byte {}",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let id = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(Box::new(std::iter::once(Ok(vec![RawDoc {
        id,
        text,
        source_bits: None,
    }]))))
}

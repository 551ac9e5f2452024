//! Where documents come from: raw files (Parquet, JSONL, plain text) or the synthetic source. Every
//! source is a stream of document batches in corpus order; a reader thread runs it ahead of the
//! encoder so file decoding overlaps tokenization.

mod jsonl;
mod parquet;
mod synthetic;
mod text;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

pub use synthetic::synthetic_batches;

/// Documents per batch: enough to keep every core busy, small enough to bound memory.
pub const BATCH_DOCS: usize = 256;

/// One document as read, before tokenization.
pub struct RawDoc {
    pub id: String,
    pub text: String,
    /// −log2 P(doc) under the synthetic source; `None` for real text.
    pub source_bits: Option<f64>,
}

/// A stream of document batches, in corpus order.
pub type Batches = Box<dyn Iterator<Item = Result<Vec<RawDoc>>> + Send>;

/// The document files named by the `documents` input, in the order given; a directory stands for
/// its `.parquet`, `.jsonl` and `.txt` files in name order.
pub fn document_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && format_of(p).is_ok())
                .collect();
            if inside.is_empty() {
                bail!(
                    "{}: no .parquet, .jsonl or .txt files in the folder",
                    path.display()
                );
            }
            inside.sort();
            files.extend(inside);
        } else {
            format_of(path)?;
            files.push(path.clone());
        }
    }
    Ok(files)
}

#[derive(Clone, Copy)]
enum Format {
    Parquet,
    Jsonl,
    Text,
}

fn format_of(path: &Path) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => Ok(Format::Parquet),
        Some("jsonl") => Ok(Format::Jsonl),
        Some("txt") => Ok(Format::Text),
        _ => bail!(
            "{}: unsupported document file (expected .parquet, .jsonl or .txt)",
            path.display()
        ),
    }
}

/// An estimate of the number of documents in `files`, for the progress bar.
pub fn count_documents(files: &[PathBuf]) -> Result<u64> {
    let mut total = 0;
    for file in files {
        total += match format_of(file)? {
            Format::Parquet => parquet::count_rows(file)?,
            Format::Jsonl => jsonl::count_lines(file)?,
            Format::Text => 1,
        };
    }
    Ok(total)
}

/// The documents of `files`, batch by batch. Each file is opened when the stream reaches it.
pub fn document_batches(files: Vec<PathBuf>) -> Batches {
    Box::new(files.into_iter().flat_map(|file| -> Batches {
        let opened = match format_of(&file) {
            Ok(Format::Parquet) => parquet::batches(&file),
            Ok(Format::Jsonl) => jsonl::batches(&file),
            Ok(Format::Text) => text::batches(&file),
            Err(e) => Err(e),
        };
        opened.unwrap_or_else(|e| Box::new(std::iter::once(Err(e))))
    }))
}

/// Stops the stream after `max_docs` documents, without reading the batch after the last one.
pub fn limit_documents(mut batches: Batches, max_docs: Option<u64>) -> Batches {
    let Some(max) = max_docs else { return batches };
    let mut left = max as usize;
    Box::new(std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        Some(batches.next()?.map(|mut docs| {
            docs.truncate(left);
            left -= docs.len();
            docs
        }))
    }))
}

/// The first `count` documents of the stream, which must have that many (`what` names the stream
/// in the error).
pub fn first_documents(batches: Batches, count: u64, what: String) -> Batches {
    let mut seen = 0u64;
    let mut limited = limit_documents(batches, Some(count));
    let mut checked = false;
    Box::new(std::iter::from_fn(move || match limited.next() {
        Some(batch) => {
            if let Ok(docs) = &batch {
                seen += docs.len() as u64;
            }
            Some(batch)
        }
        None if !checked && seen < count => {
            checked = true;
            Some(Err(anyhow::anyhow!(
                "val_docs {count} is larger than {what} ({seen} documents)"
            )))
        }
        None => None,
    }))
}

/// Runs the stream on its own thread, `depth` batches ahead. The stream stops at its first error;
/// dropping the receiver stops the thread.
pub fn read_ahead(batches: Batches, depth: usize) -> Receiver<Result<Vec<RawDoc>>> {
    let (send, receive) = sync_channel(depth);
    std::thread::spawn(move || {
        for batch in batches {
            let failed = batch.is_err();
            if send.send(batch).is_err() || failed {
                return;
            }
        }
    });
    receive
}

//! JSON Lines documents (upstream's `docs_selected.jsonl`): one object per line with a string
//! `text` field and, optionally, a string `id`. Blank lines are skipped; anything else that is not
//! such an object is an error naming the file and line.

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{Batches, RawDoc, BATCH_DOCS};

#[derive(Deserialize)]
struct Line {
    text: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

pub fn count_lines(path: &Path) -> Result<u64> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + (last != b'\n') as u64)
}

pub fn batches(path: &Path) -> Result<Batches> {
    let mut reader = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("{}: cannot open", path.display()))?,
    );
    let path = path.to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut line_number = 0usize;
    let mut done = false;
    Ok(Box::new(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut docs = Vec::with_capacity(BATCH_DOCS);
        let mut line = Vec::new();
        while docs.len() < BATCH_DOCS {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    done = true;
                    break;
                }
                Ok(_) => line_number += 1,
                Err(e) => {
                    return Some(Err(anyhow!(
                        "{}:{}: cannot read: {e}",
                        path.display(),
                        line_number + 1
                    )))
                }
            }
            match parse(&line, &name, line_number) {
                Ok(Some(doc)) => docs.push(doc),
                Ok(None) => {}
                Err(e) => {
                    done = true;
                    return Some(Err(anyhow!("{}:{line_number}: {e}", path.display())));
                }
            }
        }
        (!docs.is_empty()).then_some(Ok(docs))
    })))
}

fn parse(line: &[u8], file_name: &str, line_number: usize) -> Result<Option<RawDoc>> {
    let line = std::str::from_utf8(line)
        .map_err(|e| anyhow!("invalid UTF-8 at byte {} of the line", e.valid_up_to()))?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let parsed: Line = serde_json::from_str(line)
        .map_err(|e| anyhow!("not a JSON object with a string `text` field: {e}"))?;
    let text = parsed.text.ok_or_else(|| anyhow!("no `text` field"))?;
    let id = match parsed.id {
        Some(serde_json::Value::String(s)) => s,
        _ => format!("{file_name}:{line_number}"),
    };
    Ok(Some(RawDoc {
        id,
        text,
        source_bits: None,
    }))
}

//! Imports a folder of official `fineweb_*.bin` shards: every shard is validated (header, size,
//! token ids), documents are found at BOS positions for the doc table (their lookup-table bytes
//! come from the tokenizer), and the shards are linked into the output.
//!
//! A val shard's byte sidecar (`fineweb_val_bytes_*.bin`, made with a text-transforming tokenizer
//! such as CaseOps) is validated against its shard, gives the documents their raw bytes (the
//! original text's) and is linked beside it; either every val shard has one or none does. Without
//! sidecars the raw bytes are unknown, and evaluation of shards whose tokenizer stands pieces for
//! no text refuses to score (pgolf-data `refuse_lookup_table_bytes`).

use anyhow::{bail, Context, Result};
use pgolf_data::sidecar::{read_sidecar, sidecar_path, val_sidecars};
use pgolf_data::{list_shards, DocRecord, RawBytesSource, Shard, Split};
use std::path::Path;

use crate::tokenizer::Tokenizer;

pub fn import_shards(dir: &Path, tokenizer: &Tokenizer, out: &Path) -> Result<Vec<DocRecord>> {
    if !dir.is_dir() {
        bail!(
            "{}: the shards input must be a folder of fineweb_*.bin shards",
            dir.display()
        );
    }
    let mut docs = Vec::new();
    for split in [Split::Val, Split::Train] {
        let paths = list_shards(dir, split)?;
        if split == Split::Val && paths.is_empty() {
            bail!("{}: no fineweb_val_*.bin shards", dir.display());
        }
        let sidecars = match split {
            Split::Val => val_sidecars(&paths)?,
            Split::Train => None,
        };
        let mut index = DocIndex::new(split, tokenizer);
        for (n, path) in paths.iter().enumerate() {
            let shard = Shard::open(path)?;
            let counts = match &sidecars {
                Some(sidecars) => {
                    let counts = read_sidecar(&sidecars[n], &shard, tokenizer.bos())?;
                    let name = out.join(split.shard_name(n));
                    link_or_copy(
                        &sidecars[n],
                        &sidecar_path(&name).expect("a val shard name"),
                    )?;
                    Some(counts)
                }
                None => None,
            };
            index.scan(&shard, counts.as_deref())?;
            link_or_copy(path, &out.join(split.shard_name(n)))?;
        }
        docs.extend(index.finish());
    }
    Ok(docs)
}

/// Finds documents in a split's token stream, one shard after another.
struct DocIndex<'a> {
    split: Split,
    tokenizer: &'a Tokenizer,
    docs: Vec<DocRecord>,
    /// Tokens of the split seen so far.
    offset: u64,
    prev: u16,
}

impl<'a> DocIndex<'a> {
    fn new(split: Split, tokenizer: &'a Tokenizer) -> DocIndex<'a> {
        DocIndex {
            split,
            tokenizer,
            docs: Vec::new(),
            offset: 0,
            prev: 0,
        }
    }

    /// Indexes one shard; `sidecar` (one count per token) gives the documents their raw bytes.
    fn scan(&mut self, shard: &Shard, sidecar: Option<&[u32]>) -> Result<()> {
        let (bos, vocab) = (self.tokenizer.bos(), self.tokenizer.info.vocab_size);
        for (i, &token) in shard.tokens().iter().enumerate() {
            if token as u32 >= vocab {
                bail!(
                    "{}: token {i} has id {token}, outside the tokenizer's vocab of {vocab}",
                    shard.path().display()
                );
            }
            if token == bos {
                self.close_doc(self.offset + i as u64);
                self.docs.push(DocRecord {
                    doc_id: format!("{}-{:08}", self.split.name(), self.docs.len()),
                    split: self.split,
                    token_offset: self.offset + i as u64,
                    token_count: 0,
                    raw_bytes: sidecar.map(|_| 0),
                    raw_bytes_source: sidecar.map(|_| RawBytesSource::Sidecar),
                    lut_bytes: 0,
                    source_bits: None,
                });
            } else if let Some(doc) = self.docs.last_mut() {
                doc.lut_bytes += self.tokenizer.lut.bytes(self.prev, token) as u64;
                if let (Some(raw), Some(counts)) = (doc.raw_bytes.as_mut(), sidecar) {
                    *raw += counts[i] as u64;
                }
            } else {
                bail!(
                    "{}: the {} stream does not start with BOS (id {bos}); found id {token}",
                    shard.path().display(),
                    self.split.name()
                );
            }
            self.prev = token;
        }
        self.offset += shard.len() as u64;
        Ok(())
    }

    /// Ends the open document just before split position `end`.
    fn close_doc(&mut self, end: u64) {
        if let Some(doc) = self.docs.last_mut() {
            doc.token_count = end - doc.token_offset;
        }
    }

    fn finish(mut self) -> Vec<DocRecord> {
        self.close_doc(self.offset);
        self.docs
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("{}: cannot copy to {}", from.display(), to.display()))?;
    }
    Ok(())
}

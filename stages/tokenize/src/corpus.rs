//! Lays tokenized documents out as upstream does (REFERENCE.md §1.2): the first `val_docs`
//! documents form the val split, the rest train; each split is one token stream cut into shards of
//! `shard_tokens` (a document may straddle two shards); val shards are complete before train starts.

use anyhow::{bail, Result};
use pgolf_data::{write_shard, DocRecord, RawBytesSource, Split};
use std::path::{Path, PathBuf};

/// A document after tokenization.
pub struct EncodedDoc {
    pub id: String,
    pub tokens: Vec<u16>,
    pub raw_bytes: Option<u64>,
    pub lut_bytes: u64,
    pub source_bits: Option<f64>,
}

pub struct CorpusWriter {
    val_docs: u64,
    val: SplitWriter,
    train: SplitWriter,
    docs: Vec<DocRecord>,
}

impl CorpusWriter {
    pub fn new(out: &Path, val_docs: u64, shard_tokens: u64) -> CorpusWriter {
        CorpusWriter {
            val_docs,
            val: SplitWriter::new(out, Split::Val, shard_tokens as usize),
            train: SplitWriter::new(out, Split::Train, shard_tokens as usize),
            docs: Vec::new(),
        }
    }

    pub fn add(&mut self, doc: EncodedDoc) -> Result<()> {
        let split = if (self.docs.len() as u64) < self.val_docs {
            Split::Val
        } else {
            Split::Train
        };
        if split == Split::Train && self.train.written == 0 {
            self.val.flush()?;
        }
        let writer = if split == Split::Val {
            &mut self.val
        } else {
            &mut self.train
        };
        let token_offset = writer.written;
        writer.append(&doc.tokens)?;
        self.docs.push(DocRecord {
            doc_id: doc.id,
            split,
            token_offset,
            token_count: doc.tokens.len() as u64,
            raw_bytes: doc.raw_bytes,
            raw_bytes_source: doc.raw_bytes.map(|_| RawBytesSource::Text),
            lut_bytes: doc.lut_bytes,
            source_bits: doc.source_bits,
        });
        Ok(())
    }

    /// Writes the last partial shards and returns the doc table.
    pub fn finish(mut self) -> Result<Vec<DocRecord>> {
        if (self.docs.len() as u64) < self.val_docs {
            bail!(
                "val_docs {} is larger than the corpus ({} documents)",
                self.val_docs,
                self.docs.len()
            );
        }
        self.val.flush()?;
        self.train.flush()?;
        Ok(self.docs)
    }
}

/// One split's token stream, written out a shard at a time.
struct SplitWriter {
    out: PathBuf,
    split: Split,
    shard_tokens: usize,
    buffer: Vec<u16>,
    shards: usize,
    /// Tokens appended so far (written or buffered).
    written: u64,
}

impl SplitWriter {
    fn new(out: &Path, split: Split, shard_tokens: usize) -> SplitWriter {
        SplitWriter {
            out: out.to_path_buf(),
            split,
            shard_tokens,
            buffer: Vec::new(),
            shards: 0,
            written: 0,
        }
    }

    fn append(&mut self, mut tokens: &[u16]) -> Result<()> {
        self.written += tokens.len() as u64;
        while !tokens.is_empty() {
            let take = (self.shard_tokens - self.buffer.len()).min(tokens.len());
            self.buffer.extend_from_slice(&tokens[..take]);
            tokens = &tokens[take..];
            if self.buffer.len() == self.shard_tokens {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        write_shard(
            &self.out.join(self.split.shard_name(self.shards)),
            &self.buffer,
        )?;
        self.shards += 1;
        self.buffer.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgolf_data::{list_shards, Shard};

    fn doc(id: &str, tokens: &[u16]) -> EncodedDoc {
        EncodedDoc {
            id: id.into(),
            tokens: tokens.to_vec(),
            raw_bytes: Some(tokens.len() as u64 - 1),
            lut_bytes: 0,
            source_bits: None,
        }
    }

    #[test]
    fn splits_val_first_and_cuts_shards_at_the_token_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = CorpusWriter::new(dir.path(), 2, 4);
        writer.add(doc("a", &[1, 10, 11])).unwrap();
        writer.add(doc("b", &[1, 12, 13])).unwrap();
        writer.add(doc("c", &[1, 20])).unwrap();
        writer.add(doc("d", &[1, 21, 22, 23, 24])).unwrap();
        let docs = writer.finish().unwrap();

        let tokens = |split| {
            list_shards(dir.path(), split)
                .unwrap()
                .iter()
                .map(|p| Shard::open(p).unwrap().tokens().to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(tokens(Split::Val), vec![vec![1, 10, 11, 1], vec![12, 13]]);
        assert_eq!(
            tokens(Split::Train),
            vec![vec![1, 20, 1, 21], vec![22, 23, 24]]
        );
        let layout: Vec<(&str, Split, u64, u64)> = docs
            .iter()
            .map(|d| (d.doc_id.as_str(), d.split, d.token_offset, d.token_count))
            .collect();
        assert_eq!(
            layout,
            vec![
                ("a", Split::Val, 0, 3),
                ("b", Split::Val, 3, 3),
                ("c", Split::Train, 0, 2),
                ("d", Split::Train, 2, 5)
            ]
        );
    }

    #[test]
    fn refuses_more_val_docs_than_the_corpus_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = CorpusWriter::new(dir.path(), 3, 100);
        writer.add(doc("a", &[1, 5])).unwrap();
        let err = writer.finish().unwrap_err().to_string();
        assert_eq!(err, "val_docs 3 is larger than the corpus (1 documents)");
    }
}

//! Lays tokenized documents out as upstream does (REFERENCE.md §1.2): the first `val_docs`
//! documents form the val split, the rest train; each split is one token stream cut into shards of
//! `shard_tokens` (a document may straddle two shards); val shards are complete before train starts.
//! With a text transform (CaseOps), each val shard gets its byte sidecar
//! (`fineweb_val_bytes_%06d.bin`, the official format), cut at the same token as the shard.

use anyhow::{bail, Result};
use pgolf_data::sidecar::{sidecar_path, write_sidecar};
use pgolf_data::{write_shard, DocRecord, RawBytesSource, Split};
use std::path::{Path, PathBuf};

/// A document after tokenization.
pub struct EncodedDoc {
    pub id: String,
    pub tokens: Vec<u16>,
    /// Per token, its bytes of the original text (with a text transform): the sidecar's counts.
    pub original_bytes: Option<Vec<u32>>,
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
        writer.append(&doc.tokens, doc.original_bytes.as_deref())?;
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
    /// The val split's byte counts, one per buffered token, when the tokenizer transforms text
    /// (every document has them or none does).
    counts: Option<Vec<u32>>,
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
            counts: None,
            shards: 0,
            written: 0,
        }
    }

    /// Appends a document's tokens and, for val, its byte counts (train has no sidecars).
    fn append(&mut self, mut tokens: &[u16], counts: Option<&[u32]>) -> Result<()> {
        let mut counts = counts.filter(|_| self.split == Split::Val);
        if counts.is_some_and(|c| c.len() != tokens.len()) {
            bail!("a document's byte counts are not one per token (internal)");
        }
        match (&self.counts, counts) {
            (None, Some(_)) if self.written > 0 => {
                bail!("a document with byte counts after documents without (internal)")
            }
            (Some(_), None) => {
                bail!("a document without byte counts after documents with (internal)")
            }
            (None, Some(_)) => self.counts = Some(Vec::new()),
            _ => {}
        }
        self.written += tokens.len() as u64;
        while !tokens.is_empty() {
            let take = (self.shard_tokens - self.buffer.len()).min(tokens.len());
            self.buffer.extend_from_slice(&tokens[..take]);
            tokens = &tokens[take..];
            if let (Some(buffer), Some(c)) = (self.counts.as_mut(), counts.as_mut()) {
                buffer.extend_from_slice(&c[..take]);
                *c = &c[take..];
            }
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
        let path = self.out.join(self.split.shard_name(self.shards));
        write_shard(&path, &self.buffer)?;
        if let Some(counts) = self.counts.as_mut() {
            let side = sidecar_path(&path).expect("a val shard has a sidecar name");
            write_sidecar(&side, counts)?;
            counts.clear();
        }
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
            original_bytes: None,
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
    fn val_byte_counts_become_sidecars_cut_like_their_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = CorpusWriter::new(dir.path(), 2, 4);
        let with_counts = |id: &str, tokens: &[u16], counts: &[u32]| EncodedDoc {
            original_bytes: Some(counts.to_vec()),
            ..doc(id, tokens)
        };
        writer
            .add(with_counts("a", &[1, 10, 11], &[0, 3, 0]))
            .unwrap();
        writer
            .add(with_counts("b", &[1, 12, 13], &[0, 1, 5]))
            .unwrap();
        writer.add(with_counts("c", &[1, 20], &[0, 9])).unwrap();
        writer.finish().unwrap();
        let counts: Vec<Vec<u32>> = list_shards(dir.path(), Split::Val)
            .unwrap()
            .iter()
            .map(|p| {
                let side = sidecar_path(p).unwrap();
                pgolf_data::sidecar::read_sidecar(&side, &Shard::open(p).unwrap(), 1).unwrap()
            })
            .collect();
        assert_eq!(counts, vec![vec![0, 3, 0, 0], vec![1, 5]]);
        // Train keeps no counts.
        assert!(!dir.path().join("fineweb_train_bytes_000000.bin").exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            5,
            "2 val shards, 2 sidecars, 1 train shard"
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

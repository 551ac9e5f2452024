//! The validation set as evaluation sees it: the concatenated val token stream, its documents (from
//! `docs.parquet`) and the byte lookup tables, cross-checked against each other on load.
//!
//! Document `i` owns the targets from just after its BOS up to and including the next document's
//! BOS (predicting the next BOS is a scored event worth 0 bytes, REFERENCE.md §1.6); the last
//! document runs to the end of the stream. So the documents' target ranges tile `1 ..= N−1`, and
//! the raw UTF-8 bytes of the documents are exactly the bytes of the scored text.
//!
//! When the val shards have byte sidecars (a text-transforming tokenizer: CaseOps), each target's
//! bytes of the original text are loaded too, checked against every document's raw byte count, so
//! a run scored on part of the stream (upstream-compatible truncation) still divides by original
//! bytes.

use anyhow::{bail, Context, Result};
use pgolf_data::sidecar::read_val_sidecars;
use pgolf_data::{list_shards, read_doc_table, ByteLut, DocRecord, Shard, Split, TokenizerInfo};
use pgolf_store::files;
use std::ops::Range;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct ValDoc {
    pub id: String,
    /// Stream position of the document's BOS.
    pub bos: usize,
    /// Exclusive end of its targets (next BOS + 1, or the stream length for the last document).
    pub end: usize,
    pub raw_bytes: Option<u64>,
    pub lut_bytes: u64,
    /// −log2 P(document incl. its end) under the synthetic source; `None` for real text.
    pub source_bits: Option<f64>,
}

impl ValDoc {
    pub fn targets(&self) -> Range<usize> {
        self.bos + 1..self.end
    }
}

pub struct ValSet {
    pub tokens: Vec<u16>,
    pub docs: Vec<ValDoc>,
    pub lut: ByteLut,
    pub bos_id: u16,
    /// Per stream position, the bytes of the original text that token stands for (the byte
    /// sidecars), when the data has them.
    pub original_bytes: Option<Vec<u32>>,
}

impl ValSet {
    /// Loads the val split of a tokenize output directory: its shards (sorted, concatenated), its
    /// doc table and its tokenizer's byte tables.
    pub fn load(dir: &Path) -> Result<ValSet> {
        let info = TokenizerInfo::read(dir)?;
        let lut = ByteLut::from_tokenize_output(dir)?;
        let paths = list_shards(dir, Split::Val)?;
        if paths.is_empty() {
            bail!("{}: no fineweb_val_*.bin shards", dir.display());
        }
        let mut tokens = Vec::new();
        for p in &paths {
            tokens.extend_from_slice(Shard::open(p)?.tokens());
        }
        let table = dir.join(files::DOC_TABLE);
        let docs: Vec<DocRecord> = read_doc_table(&table)?
            .into_iter()
            .filter(|d| d.split == Split::Val)
            .collect();
        let mut set = ValSet::new(tokens, &docs, lut, info.bos_id as u16)
            .with_context(|| format!("{}", dir.display()))?;
        if let Some(counts) = read_val_sidecars(&paths, info.bos_id as u16)? {
            set = set
                .with_original_bytes(counts)
                .with_context(|| format!("{}", dir.display()))?;
        }
        if set.raw_bytes().is_none() {
            pgolf_data::refuse_lookup_table_bytes(dir)?;
        }
        Ok(set)
    }

    /// Attaches the byte sidecars' counts (one per stream position), checked against the stream
    /// and against every document that knows its raw byte count: a sidecar that does not sum to
    /// the document's bytes is an error, never a quietly different denominator.
    pub fn with_original_bytes(mut self, counts: Vec<u32>) -> Result<ValSet> {
        if counts.len() != self.tokens.len() {
            bail!(
                "the byte sidecars hold {} counts for {} val tokens",
                counts.len(),
                self.tokens.len()
            );
        }
        for d in &self.docs {
            let sum: u64 = counts[d.targets()].iter().map(|&c| c as u64).sum();
            if let Some(raw) = d.raw_bytes.filter(|&raw| raw != sum) {
                bail!("docs.parquet: val doc {:?} says {raw} raw bytes but the byte sidecar gives its targets {sum}", d.id);
            }
        }
        self.original_bytes = Some(counts);
        Ok(self)
    }

    /// Builds and validates: documents must tile the stream, start with BOS, and carry the LUT byte
    /// count the tokens give; every token must be inside the tables.
    pub fn new(tokens: Vec<u16>, docs: &[DocRecord], lut: ByteLut, bos_id: u16) -> Result<ValSet> {
        if tokens.len() < 2 {
            bail!(
                "the val stream has {} tokens; at least 2 are needed to score anything",
                tokens.len()
            );
        }
        if let Some((pos, &t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= lut.vocab_size())
        {
            bail!(
                "val token {t} at position {pos} is outside the vocab of {}",
                lut.vocab_size()
            );
        }
        let mut sorted: Vec<&DocRecord> = docs.iter().collect();
        sorted.sort_by_key(|d| d.token_offset);
        let mut out = Vec::with_capacity(sorted.len());
        let mut next = 0usize;
        for (i, d) in sorted.iter().enumerate() {
            let bos = d.token_offset as usize;
            let count = d.token_count as usize;
            if bos != next {
                bail!("docs.parquet: val doc {:?} starts at token {bos}, expected {next} (documents must tile the val stream)", d.doc_id);
            }
            if count == 0 || bos + count > tokens.len() {
                bail!("docs.parquet: val doc {:?} (offset {bos}, {count} tokens) does not fit the {}-token val stream", d.doc_id, tokens.len());
            }
            if tokens[bos] != bos_id {
                bail!("docs.parquet: val doc {:?} does not start with BOS {bos_id} (token {} at {bos})", d.doc_id, tokens[bos]);
            }
            let lut_bytes = lut.sequence_bytes(&tokens[bos..bos + count]);
            if lut_bytes != d.lut_bytes {
                bail!("docs.parquet: val doc {:?} says {} LUT bytes but its tokens give {lut_bytes} (table and shards disagree)", d.doc_id, d.lut_bytes);
            }
            let last = i + 1 == sorted.len();
            out.push(ValDoc {
                id: d.doc_id.clone(),
                bos,
                end: if last { bos + count } else { bos + count + 1 },
                raw_bytes: d.raw_bytes,
                lut_bytes,
                source_bits: d.source_bits,
            });
            next = bos + count;
        }
        if next != tokens.len() {
            bail!(
                "docs.parquet: val docs cover {next} tokens but the val shards hold {}",
                tokens.len()
            );
        }
        Ok(ValSet {
            tokens,
            docs: out,
            lut,
            bos_id,
            original_bytes: None,
        })
    }

    /// Number of targets in the stream, `N − 1`.
    pub fn n_targets(&self) -> usize {
        self.tokens.len() - 1
    }

    /// Bytes charged to target `t` by the lookup tables (§2.2).
    #[inline]
    pub fn target_lut_bytes(&self, t: usize) -> u32 {
        self.lut.bytes(self.tokens[t - 1], self.tokens[t])
    }

    /// Index of the document that owns target `t`.
    pub fn doc_of_target(&self, t: usize) -> usize {
        self.docs.partition_point(|d| d.end <= t)
    }

    /// Σ raw UTF-8 bytes over val docs, if every document knows its raw count.
    pub fn raw_bytes(&self) -> Option<u64> {
        self.docs.iter().map(|d| d.raw_bytes).sum()
    }

    pub fn lut_bytes(&self) -> u64 {
        self.docs.iter().map(|d| d.lut_bytes).sum()
    }

    /// Σ original bytes of the targets in `targets` from the byte sidecars, if the data has them.
    pub fn original_bytes_of(&self, targets: Range<usize>) -> Option<u64> {
        let counts = self.original_bytes.as_ref()?;
        Some(counts.get(targets)?.iter().map(|&c| c as u64).sum())
    }

    /// The tokenizer stands some pieces for no text (CaseOps operators and the like): its
    /// lookup-table byte count is no denominator.
    pub fn transforms_text(&self) -> bool {
        self.lut.transforms_text
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 3-document stream over `byte260`: "ab", "c d", "e" (BOS = 1, byte b ↦ b + 4).
    pub fn tiny() -> ValSet {
        let (tokens, docs) = tiny_parts();
        ValSet::new(tokens, &docs, ByteLut::byte260(), 1).unwrap()
    }

    pub fn tiny_parts() -> (Vec<u16>, Vec<DocRecord>) {
        let texts = ["ab", "c d", "e"];
        let mut tokens = Vec::new();
        let mut docs = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let offset = tokens.len() as u64;
            tokens.push(1);
            tokens.extend(text.bytes().map(|b| b as u16 + 4));
            docs.push(DocRecord {
                doc_id: format!("d{i}"),
                split: Split::Val,
                token_offset: offset,
                token_count: text.len() as u64 + 1,
                raw_bytes: Some(text.len() as u64),
                raw_bytes_source: Some(pgolf_data::RawBytesSource::Text),
                lut_bytes: text.len() as u64,
                source_bits: None,
            });
        }
        (tokens, docs)
    }

    #[test]
    fn documents_tile_the_targets() {
        let v = tiny();
        assert_eq!(v.n_targets(), 8);
        assert_eq!(
            v.docs.iter().map(|d| d.targets()).collect::<Vec<_>>(),
            vec![1..4, 4..8, 8..9]
        );
        assert_eq!(
            (1..9).map(|t| v.doc_of_target(t)).collect::<Vec<_>>(),
            vec![0, 0, 0, 1, 1, 1, 1, 2]
        );
        // Target 3 is the next BOS: scored, 0 bytes.
        assert_eq!(
            (1..9).map(|t| v.target_lut_bytes(t)).collect::<Vec<_>>(),
            vec![1, 1, 0, 1, 1, 1, 0, 1]
        );
        assert_eq!(v.raw_bytes(), Some(6));
        assert_eq!(v.lut_bytes(), 6);
    }

    #[test]
    fn rejects_inconsistent_tables() {
        let (tokens, docs) = tiny_parts();
        let mut gap = docs.clone();
        gap[1].token_offset += 1;
        assert!(ValSet::new(tokens.clone(), &gap, ByteLut::byte260(), 1)
            .err()
            .unwrap()
            .to_string()
            .contains("tile"));
        let mut bytes = docs.clone();
        bytes[2].lut_bytes = 7;
        assert!(ValSet::new(tokens.clone(), &bytes, ByteLut::byte260(), 1)
            .err()
            .unwrap()
            .to_string()
            .contains("says 7 LUT bytes"));
        let short = &docs[..2];
        assert!(ValSet::new(tokens.clone(), short, ByteLut::byte260(), 1)
            .err()
            .unwrap()
            .to_string()
            .contains("cover 7 tokens"));
        let mut bad = tokens.clone();
        bad[2] = 300;
        assert!(ValSet::new(bad, &docs, ByteLut::byte260(), 1)
            .err()
            .unwrap()
            .to_string()
            .contains("outside the vocab"));
        assert!(ValSet::new(tokens, &docs, ByteLut::byte260(), 2)
            .err()
            .unwrap()
            .to_string()
            .contains("does not start with BOS"));
    }
}

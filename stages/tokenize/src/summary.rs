//! The headline figures of a tokenize run, computed from its doc table.

use pgolf_data::{DocRecord, Split};

#[derive(Debug, PartialEq)]
pub struct Summary {
    pub train_docs: u64,
    pub val_docs: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// UTF-8 bytes of the val text; `None` when some val document's text is unknown.
    pub val_raw_bytes: Option<u64>,
    /// Where the val raw bytes came from (`text` or `sidecar`), when every val document has them.
    pub val_raw_bytes_source: Option<&'static str>,
    pub val_lut_bytes: u64,
    /// Σ source bits / Σ raw bytes over val: the val text's code length under the true source.
    pub source_entropy_bpb: Option<f64>,
}

impl Summary {
    pub fn of(docs: &[DocRecord]) -> Summary {
        let val: Vec<&DocRecord> = docs.iter().filter(|d| d.split == Split::Val).collect();
        let train = docs.iter().filter(|d| d.split == Split::Train);
        let val_raw_bytes: Option<u64> = val.iter().map(|d| d.raw_bytes).sum();
        let val_bits: Option<f64> = val.iter().map(|d| d.source_bits).sum();
        Summary {
            train_docs: train.clone().count() as u64,
            val_docs: val.len() as u64,
            train_tokens: train.map(|d| d.token_count).sum(),
            val_tokens: val.iter().map(|d| d.token_count).sum(),
            val_raw_bytes,
            val_raw_bytes_source: val_raw_bytes
                .and(val.first().and_then(|d| d.raw_bytes_source))
                .filter(|s| val.iter().all(|d| d.raw_bytes_source == Some(*s)))
                .map(|s| s.name()),
            val_lut_bytes: val.iter().map(|d| d.lut_bytes).sum(),
            source_entropy_bpb: match (val_bits, val_raw_bytes) {
                (Some(bits), Some(bytes)) if bytes > 0 && !val.is_empty() => {
                    Some(bits / bytes as f64)
                }
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        split: Split,
        tokens: u64,
        raw: Option<u64>,
        lut: u64,
        bits: Option<f64>,
    ) -> DocRecord {
        DocRecord {
            doc_id: "d".into(),
            split,
            token_offset: 0,
            token_count: tokens,
            raw_bytes: raw,
            raw_bytes_source: raw.map(|_| pgolf_data::RawBytesSource::Text),
            lut_bytes: lut,
            source_bits: bits,
        }
    }

    #[test]
    fn sums_per_split_and_divides_bits_by_raw_bytes() {
        let docs = [
            record(Split::Val, 5, Some(10), 10, Some(20.0)),
            record(Split::Val, 3, Some(6), 7, Some(4.0)),
            record(Split::Train, 9, Some(100), 100, Some(1.0)),
        ];
        let s = Summary::of(&docs);
        assert_eq!(
            (s.val_docs, s.train_docs, s.val_tokens, s.train_tokens),
            (2, 1, 8, 9)
        );
        assert_eq!((s.val_raw_bytes, s.val_lut_bytes), (Some(16), 17));
        assert_eq!(s.source_entropy_bpb, Some(24.0 / 16.0));
    }

    #[test]
    fn unknown_bytes_or_bits_give_none() {
        let docs = [
            record(Split::Val, 5, None, 10, None),
            record(Split::Val, 3, Some(6), 7, None),
        ];
        let s = Summary::of(&docs);
        assert_eq!((s.val_raw_bytes, s.source_entropy_bpb), (None, None));
    }
}

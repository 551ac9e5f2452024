//! Data formats shared by the stages.
//!
//! - [`shard`]: the upstream `.bin` token shard (REFERENCE.md §1.1), memory-mapped.
//! - [`draws`]: R0405's shuffled windows and R0427's document-aligned spans (§1.5).
//! - [`lut`]: byte lookup tables from a SentencePiece model or `byte260` (REFERENCE.md §2.1–2.2).
//! - [`doc_table`]: `docs.parquet`, one row per document (offsets, token counts, byte counts).
//! - [`tokenizer_info`]: `tokenizer.json`, which tokenizer a tokenize output was made with.
//! - [`sidecar`]: the official byte sidecars of text-transforming tokenizers (CaseOps).
//! - [`caseops`]: the `lossless_caps_caseops_v1` transform, its inverse, and the sidecar counts.
//! - [`sp_model`]: the fields of a SentencePiece `.model` protobuf that the tables need.
//! - [`rng`]: the seeded generator of synthetic corpora and seeded initializations.

pub mod caseops;
pub mod doc_table;
pub mod draws;
pub mod lut;
pub mod rng;
pub mod shard;
pub mod sidecar;
pub mod sp_model;
pub mod tokenizer_info;

pub use doc_table::{read_doc_table, write_doc_table, DocRecord, RawBytesSource};
pub use draws::{PackedSpans, ShuffledWindows};
pub use lut::ByteLut;
pub use rng::Rng;
pub use shard::{list_shards, write_shard, Shard, Split, TokenStream};
pub use tokenizer_info::{refuse_lookup_table_bytes, TokenizerInfo, TokenizerKind};

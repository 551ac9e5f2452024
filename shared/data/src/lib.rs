//! Data formats shared by the stages.
//!
//! - [`shard`]: the upstream `.bin` token shard (REFERENCE.md §1.1), memory-mapped.

pub mod shard;

pub use shard::{list_shards, write_shard, Shard, Split, TokenStream};

//! The counted evaluator: everything needed to turn an artifact into a BPB, and nothing else (no
//! training, calibration or TTT). Its sources are exactly the code bytes an artifact is charged
//! (docs/ARTIFACT.md "Size accounting"), so it is kept self-contained and small.
//!
//! - [`config`]: the model's shape (pgolf-model re-exports it).
//! - [`artifact`], [`codec`], [`container`], [`dtype`]: reading the file format and dequantizing.
//! - [`model`]: the GPT's forward pass in f32 on the CPU.
//! - [`score`]: flat and sliding window schedules, f64 sums and bits per byte.
//! - [`data`]: val shards and per-token byte counts; the `pgolf-evaluate` binary ties it together.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use pgolf_evaluator::*;
//! let model = Model::from_artifact(&Artifact::read("artifact.pgq".as_ref())?)?;
//! let tokens = val_tokens("data".as_ref())?;
//! let bytes = ByteLut::byte260().target_bytes(&tokens)?;
//! let windows = flat(tokens.len() - 1, model.cfg.seq_len)?;
//! println!("{}", score(&model, &tokens, &bytes, &windows, |_| {})?.bpb());
//! # Ok(()) }
//! ```

pub mod artifact;
pub mod codec;
pub mod config;
pub mod container;
pub mod data;
pub mod dtype;
pub mod model;
pub mod score;

pub use artifact::{Artifact, DecodedTensor};
pub use codec::Codec;
pub use config::{
    bank_slices, Activation, AttnGate, BigramHash, FinalLane, InitScheme, ModelConfig,
    ParallelLanes, Recurrence, SmearGateV2, ValueEmbedding, CONTROL_PATTERNS,
};
pub use container::{Encoding, Scale, StoredTensor};
pub use data::{read_shard, val_target_bytes, val_tokens, ByteLut};
pub use dtype::DType;
pub use model::Model;
pub use score::{bits_per_byte, flat, score, sliding, Sums, Window};

// The names it opens in quantize-pack's and tokenize's outputs. The stage contract spells them in
// pgolf-store (`files`), which this crate, built alone from its tar, cannot depend on; a workspace
// test (tests/tests/files_agree.rs) holds the copies equal.
pub const ARTIFACT_FILE: &str = "artifact.pgq";
pub const TOKENIZER_MODEL_FILE: &str = "tokenizer.model";
pub const TOKENIZER_INFO_FILE: &str = "tokenizer.json";

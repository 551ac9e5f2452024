//! Exact, guarded evaluation of a language model in bits per byte.
//!
//! - [`valset`]: the val stream, its documents and byte tables, cross-checked on load.
//! - [`schedule`]: window schedules (flat, sliding version B, doc-isolated chunks), single-pass.
//! - [`fixed`]: the flat and sliding modes' schedule and byte denominator (every fixed-model evaluator).
//! - [`scorer`]: what a model must provide (NLL from a full distribution; probe rows).
//! - [`ledger`]: every score recorded once; the only source of tokens for adaptation.
//! - [`pass`]: one scoring pass; [`adapt`]: the score-first TTT drivers.
//! - [`guards`]: normalization, source-entropy and byte-count checks.
//! - [`ngram`]: Kneser–Ney mixing, and the hashed-cache diagnosis.
//! - [`report`]: results tables, the summary and its guards' verdicts.
//! - [`bpb`]: the f64 sums and the formula.
//! - [`torch`]: the GPT as a scorer, full-parameter TTT and per-document LoRA TTT (libtorch).

pub mod adapt;
pub mod bpb;
pub mod fixed;
pub mod guards;
pub mod ledger;
pub mod ngram;
pub mod pass;
pub mod peers;
pub mod report;
pub mod schedule;
pub mod scorer;
#[cfg(feature = "torch")]
pub mod torch;
pub mod valset;

pub use bpb::BpbSums;
pub use ledger::{Ledger, LedgerReport, ScoredSpan};
pub use schedule::Window;
pub use scorer::{Request, Scorer, Scores};
pub use valset::{ValDoc, ValSet};

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

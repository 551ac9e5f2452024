//! Causal n-gram models for evaluation: a proper interpolated Kneser–Ney model mixed with the
//! network ([`mix::mix_pass`]), and the ruled-invalid hashed cache, kept only to diagnose it
//! ([`mix::diagnose_pass`]).

pub mod fxhash;
pub mod hashed;
pub mod kn;
pub mod mix;
pub mod styx;

pub use hashed::HashedCache;
pub use kn::KneserNey;
pub use mix::{diagnose_pass, mix_pass, ClaimedCache, DiagnoseStats, MixStats, MixWeight};
pub use styx::StyxCache;

//! The network side of evaluation on libtorch: the GPT as a scorer ([`net::Net`]), legal
//! score-first full-parameter TTT ([`full_ttt::FullTtt`]) and per-document LoRA TTT
//! ([`lora::LoraTtt`]), phased TTT ([`phased::PhasedTtt`]: LoRA TTT with global SGD phases on
//! scored documents), and the stage's ranks as evaluation peers ([`ranks::RankPeers`]).

pub mod activations;
pub mod artifact;
pub mod full_ttt;
pub mod lora;
pub mod net;
pub mod phased;
pub mod ranks;

#[cfg(test)]
mod tests;

pub use activations::dump_activations;
pub use artifact::{check_numerics, load_artifact, load_artifact_for_vocab};
pub use full_ttt::{FullTtt, FullTttConfig, TensorPeers};
pub use lora::{LoraConfig, LoraTtt};
pub use net::Net;
pub use phased::{PhasedConfig, PhasedTtt};
pub use ranks::RankPeers;

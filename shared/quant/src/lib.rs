//! Quantization and the artifact: what quantize-pack writes and what evaluation reads.
//!
//! Decoding an artifact (the API evaluation uses; the reader itself is pgolf-evaluator's, re-exported):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let art = pgolf_quant::Artifact::read(std::path::Path::new("artifact.pgq"))?;
//! let config_json: String = art.config_json();              // the model config, as written by train
//! for t in art.decode_all()? { /* t.name, t.shape, t.dtype, t.data: dequantized f32 */ }
//! use pgolf_quant::ToTch;
//! let named = art.to_tch(tch::Device::Cpu)?;                 // name → Tensor in original dtypes
//! # Ok(()) }
//! ```
//!
//! Modules, one concern each:
//! - [`numeric`]: torch's quantile, rounding and fp16 arithmetic, reproduced exactly.
//! - [`int8`]: the baseline's int8 per-row/per-tensor quantizer (REFERENCE.md §4.2).
//! - [`rows`]: per-row scales (percentile clip, SDClip), round-to-nearest, GPTQ-lite search.
//! - [`gptq`]: full-Hessian GPTQ with act-order and lazy block updates.
//! - [`plan`]: which scheme each tensor gets (by size, name category and patterns).
//! - [`prune`]: magnitude pruning of a matrix before it is quantized.
//! - [`lqer`]: the low-rank correction of the largest quantization errors (its SVD needs `torch`).
//! - [`layout`]: the per-group layout of the integers (role groups, row reordering, column-major).
//! - [`quantize`]: applies a plan to a model's weights, with a per-tensor report.
//! - [`encoded`]: a tensor as stored, and its exact dequantization.
//! - [`container`], [`artifact`], [`compress`], [`chunks`]: the file format (docs/ARTIFACT.md).
//! - [`weights`], [`dtype`]: safetensors IO and float dtypes.
//!
//! Feature `torch` (libtorch): GPTQ (libtorch factors the Hessian), [`quantize_all`] and the
//! artifact's `to_tch`. Without it the crate is the pure-Rust schemes, formats (the artifact writer
//! included) and safetensors IO (what ema-finalize needs), and builds without libtorch.

pub mod artifact;
pub mod chunks;
pub mod compress;
pub mod container;
pub mod dtype;
pub mod encoded;
#[cfg(feature = "torch")]
pub mod gptq;
pub mod int8;
pub mod layout;
pub mod lqer;
pub mod numeric;
pub mod plan;
pub mod prune;
#[cfg(feature = "torch")]
pub mod quantize;
pub mod rows;
pub mod weights;

#[cfg(feature = "torch")]
pub use artifact::ToTch;
pub use artifact::{encode_artifact, encode_frame, Artifact, DecodedTensor};
pub use compress::{Codec, Compression};
pub use dtype::DType;
pub use encoded::{Encoding, Factor, Layout, LowRank, Scale, StoredTensor};
#[cfg(feature = "torch")]
pub use gptq::GptqSettings;
pub use layout::LayoutSettings;
pub use lqer::LqerSettings;
pub use plan::{Method, Override, Routing, Rule, SmallFloat};
#[cfg(feature = "torch")]
pub use quantize::{correct_lqer, quantize_all, QuantInputs, TensorReport};
pub use weights::{read_safetensors, read_safetensors_map, unbank, write_safetensors, Weight};

//! The baseline GPT on libtorch (REFERENCE.md §3.2–3.5), shared by train, calibration and
//! evaluation stages.
//!
//! # API (a contract other stages code against)
//!
//! - [`ModelConfig`] (serde, `config.json` beside weights; `Default` = the baseline, 17,059,912
//!   parameters by [`ModelConfig::num_params`]). Shape knobs: `vocab_size`, `num_layers`,
//!   `model_dim`, `num_heads`, `num_kv_heads`, `mlp_mult`, `seq_len`, `rope_base`, `logit_softcap`,
//!   `qk_gain_init`, `tie_embeddings`, `tied_embed_init_std`, `activation` (`"relu2"` or
//!   `{"leaky_relu2": slope}`). Architecture options, all off by default (the baseline is
//!   bit-identical with them off): `mlp_hidden`, `rope_dims` (partial RoPE), `rope_ntk_len`
//!   (R0322's NTK rescale), `xsa_last_n`, `ln_scale`, `norm_weights`, `smear_gate` (`smear.gate`),
//!   `bigram` (`bigram.embed/proj/scale`), `value_embed` (`ve_shared.*`, `ve_layer_scales.{k}`),
//!   `init` (`pytorch_default` | `orthogonal` | `orthogonal_banks`), `banks`; the SP8192 line's
//!   (R0405, R0427, PR #2071): `recurrence` (looped layers, no tensors), `skip_gates`
//!   (`skip_gates`), `parallel` (`parallel_post_lambdas`, `parallel_resid_lambdas`),
//!   `smear_gate_v2` (`smear_gate.weight`, `smear_lambda`), `attn_gate` (sparse or headwise,
//!   `blocks.{i}.attn.attn_gate_w`); written once in `gpt/addons.rs` for both formulations, names
//!   as the records' `state_dict` (bench/check_model_vs_reference.py loads ours into their `GPT`
//!   strictly). [`Gpt::set_fake_quant`] is late QAT's switch, [`Gpt::set_recurrence`] the depth
//!   recurrence's (on in a new model).
//! - [`Gpt::new`]`(path: &nn::Path, cfg) -> Result<Gpt>`: variables named as upstream's
//!   `state_dict` (`tok_emb.weight`, `skip_weights`, `blocks.{i}.attn.c_q.weight`, `c_k`, `c_v`,
//!   `proj`, `blocks.{i}.attn.q_gain`, `blocks.{i}.mlp.fc.weight`, `blocks.{i}.mlp.proj.weight`,
//!   `blocks.{i}.attn_scale`, `mlp_scale`, `resid_mix`; `lm_head.weight` when untied), upstream
//!   shapes. [`build`] makes a VarStore and a model in one go.
//! - [`Gpt::forward`]`(x: [B,T] i64, &mut Hooks) -> [B,T,V] f32` soft-capped logits;
//!   [`Gpt::loss`] (mean CE, training), [`Gpt::token_nll`] (`[B,T]` f32, nats),
//!   [`Gpt::token_nll_with`] (with hooks).
//! - Packed documents (R0427): [`Documents`] (`from_tokens(row, bos, max_len)`: segments cut at
//!   every BOS and every `max_len` tokens, R0427's `cu_seqlens` padded to 64 entries) and
//!   [`Gpt::packed_forward`]`(x: [1,T], &docs, hooks)`, [`Gpt::packed_loss`],
//!   [`Gpt::token_nll_in`]`(x, y, Some(&docs), hooks)`: attention stays inside each segment
//!   ([`docs::attention`]: libtorch's FlashAttention-2 varlen kernel on CUDA in bf16, the
//!   per-document reference [`docs::per_document_attention`] elsewhere; no dense mask).
//! - [`Hooks`]: `taps: Option<&mut dyn FnMut(&str /*weight name*/, &Tensor /*[N, in]*/)>`, called
//!   for every linear (c_q/c_k/c_v: one call per name with the same input) and the head
//!   (`tok_emb.weight` with the final-norm output); `adapter: Option<&dyn Adapter>` whose
//!   [`Adapter::delta`]`(site: Site, layer, input [B,T,in]) -> Option<Tensor>` is added to that
//!   projection's output ([`Site`]: Q, K, V, O, MlpIn, MlpOut, Head — Head before the soft-cap).
//! - Precision: [`Gpt::set_compute_kind`] (`Float` default; `BFloat16` on CUDA as upstream's
//!   autocast), [`Gpt::set_embedding_kind`] (upstream trains `tok_emb` in bf16).
//! - Formulation: [`Gpt::set_formulation`]`(`[`Formulation`]`, device)`: `literal` (a new
//!   model's: the transcription of REFERENCE.md §3.2 in `gpt.rs`, the oracle) or `fast`
//!   (`gpt/fast.rs`: fused GEMMs and pgolf-kernels' fused ops with their own backward, NVRTC
//!   kernels on CUDA, their reference formulas on the CPU; choosing it preloads the kernels).
//!   [`Gpt::formulation`] is the one that runs (`literal` under [`Numerics::UpstreamBf16`]). Same
//!   function (tested to rounding, and against the Python reference: bench/train.md); taps and
//!   adapters behave the same.
//! - [`load_safetensors`]`(&mut VarStore, path)` strict (missing/unexpected/shape → error naming
//!   file and tensor), [`save_safetensors`]`(&VarStore, path)`; [`read_tensors`],
//!   [`save_tensors`], [`load_into`] for tensors outside a VarStore (EMA shadows).
//! - The device glue (`device_from_str`, `cuda`, `profiler`) lives in `pgolf-runtime`; it is
//!   re-exported here only for code that reached it through the model before (kernels' GPU
//!   check). Stages use `pgolf_runtime` directly.
//! - [`param_role`]: the optimizer group of a parameter name (Muon matrices, Adam controls, ...).

pub mod checkpoint;
pub mod docs;
/// The config lives in the counted evaluator (which rebuilds the model from an artifact alone).
pub use pgolf_evaluator::config;
pub mod gpt;
pub mod hooks;
mod rope;
pub use pgolf_runtime::{cuda, device_from_str, profiler};

pub use checkpoint::{
    load_into, load_safetensors, read_tensors, save_safetensors, save_tensors, to_file_layout,
};
pub use config::{Activation, ModelConfig};
pub use docs::Documents;
pub use gpt::{build, param_role, Formulation, Gpt, Numerics, ParamRole, CONTROL_PATTERNS};
pub use hooks::{Adapter, Hooks, Site};
pub use tch;

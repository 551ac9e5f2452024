//! The names of the files stages write and read from each other's outputs, spelled once. A stage
//! writes `out_path(files::WEIGHTS)`, the next one reads `input_dir("weights")?.join(files::WEIGHTS)`;
//! the report and tests name them the same way. Files only one stage ever reads back (its own logs)
//! are here too, so that what a run directory holds is listed in one place (docs/CONTRACT.md).
//!
//! The counted evaluator (`pgolf-evaluator`) builds alone from its source tar, so it cannot depend
//! on this crate; it keeps its own copies of the names it opens, and a test of the workspace
//! (tests/tests/files_agree.rs) holds them equal to these.

/// Written last by every stage; its presence makes a directory a finished run.
pub const MANIFEST: &str = "manifest.json";

// tokenize
/// The tokenizer's description (kind, vocab size, byte lookup tables).
pub const TOKENIZER_INFO: &str = "tokenizer.json";
/// The SentencePiece model, when the tokenizer is one.
pub const TOKENIZER_MODEL: &str = "tokenizer.model";
/// The per-document table (offsets, token and byte counts).
pub const DOC_TABLE: &str = "docs.parquet";

// train, ema-finalize
/// The model's weights (train: the raw weights; ema-finalize: the chosen ones).
pub const WEIGHTS: &str = "model.safetensors";
/// The EMA of the weights (train, when updated).
pub const EMA_WEIGHTS: &str = "ema.safetensors";
/// The SWA average of the weights (train, when a snapshot was taken).
pub const SWA_WEIGHTS: &str = "swa.safetensors";
/// The model config (`pgolf_model::ModelConfig`) beside weights.
pub const MODEL_CONFIG: &str = "config.json";
/// Train's per-step metrics table.
pub const METRICS: &str = "metrics.parquet";
pub const TRAIN_LOG: &str = "train.log";
pub const FINALIZE_LOG: &str = "finalize.log";

// gptq-calibrate
pub const HESSIANS: &str = "hessians.safetensors";
pub const CALIBRATION: &str = "calibration.json";

// quantize-pack
/// The scored artifact (docs/ARTIFACT.md).
pub const ARTIFACT: &str = "artifact.pgq";
/// The per-tensor quantization table.
pub const TENSOR_TABLE: &str = "tensors.parquet";
/// The counted code, file by file.
pub const CODE_FILES: &str = "code_files.json";

// ttt-eval, ngram-eval
/// Per-document (or per-window) results.
pub const RESULTS: &str = "results.parquet";
/// Per-chunk results of the adaptive evaluations.
pub const CHUNKS: &str = "chunks.parquet";
pub const SUMMARY: &str = "summary.json";
/// ttt-eval `export_decoded`: the artifact's weights decoded, upstream names (with `MODEL_CONFIG`).
pub const DECODED_WEIGHTS: &str = "decoded.safetensors";
/// ttt-eval `dump_activations`: every linear layer's input, logits and NLL.
pub const ACTIVATIONS: &str = "activations.safetensors";

// report
pub const REPORT_MD: &str = "report.md";
pub const REPORT_HTML: &str = "report.html";
pub const SUBMISSION: &str = "submission.json";
pub const PROVENANCE: &str = "provenance.json";

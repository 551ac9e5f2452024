//! The tokenize stage's params and what they, with the inputs, ask for.

use anyhow::{bail, Result};
use pgolf_store::Stage;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Upstream's validation split: the first 50,000 documents (REFERENCE.md §1.2).
const DEFAULT_VAL_DOCS: u64 = 50_000;
/// Upstream's exporter writes 10^8 tokens per shard.
const DEFAULT_SHARD_TOKENS: u64 = 100_000_000;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Documents in the val split (default 50,000): the first `val_docs` of `val_documents` when
    /// that input is given, else of the corpus itself (upstream's rule). Not for `shards`, whose
    /// files already say which split they are.
    pub val_docs: Option<u64>,
    /// Read at most this many documents (val first), for tests and quick runs.
    pub max_docs: Option<u64>,
    /// Tokens per shard (default 10^8).
    pub shard_tokens: Option<u64>,
    /// Tokenize the built-in synthetic corpus instead of `documents` or `shards`.
    pub synthetic: Option<SyntheticParams>,
    /// Transform the text before encoding: `caseops` (the records' `lossless_caps_caseops_v1`,
    /// for a tokenizer trained on it: case operators, a byte sidecar beside each val shard) or
    /// `none`. Required when the tokenizer has the CaseOps operator pieces; not for `shards`.
    pub transform: Option<Transform>,
}

/// A text transform applied to every document before the tokenizer sees it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    None,
    Caseops,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticParams {
    /// Seeds both the chain and the documents drawn from it.
    pub seed: u64,
    /// Documents in the corpus, val included.
    pub docs: u64,
    /// Expected bytes of text per document.
    pub mean_doc_bytes: f64,
}

impl Default for SyntheticParams {
    fn default() -> SyntheticParams {
        SyntheticParams {
            seed: 1337,
            docs: 10_000,
            mean_doc_bytes: 500.0,
        }
    }
}

/// Where the corpus comes from.
pub enum Source {
    /// Raw document files. Val is the first `val_docs` documents of `val` when given (and train all
    /// of `train`), else of `train` itself, as upstream.
    Documents {
        val: Option<Vec<PathBuf>>,
        train: Vec<PathBuf>,
    },
    Shards(PathBuf),
    Synthetic(SyntheticParams),
}

/// What to do: the source, the tokenizer, and the corpus layout.
pub struct Plan {
    pub source: Source,
    /// A SentencePiece `.model`; `None` for `byte260`.
    pub tokenizer: Option<PathBuf>,
    pub val_docs: u64,
    pub max_docs: Option<u64>,
    pub shard_tokens: u64,
    /// As given; [`crate::tokenizer::Tokenizer::with_transform`] checks it against the model.
    pub transform: Option<Transform>,
}

impl Plan {
    pub fn new(stage: &Stage<Params>) -> Result<Plan> {
        for input in stage.inputs() {
            if !["documents", "val_documents", "shards", "tokenizer"].contains(&input.name.as_str())
            {
                bail!(
                    "unknown input `{}` (expected documents, val_documents, shards or tokenizer)",
                    input.name
                );
            }
        }
        let p = &stage.params;
        let documents = stage.optional_input("documents").map(|i| i.paths.clone());
        let shards = stage.optional_input("shards").map(|i| i.paths.clone());
        let val_documents = stage
            .optional_input("val_documents")
            .map(|i| i.paths.clone());
        if val_documents.is_some() && documents.is_none() {
            bail!("--in val_documents needs --in documents (the train split)");
        }
        let source = match (documents, shards, &p.synthetic) {
            (Some(train), None, None) => Source::Documents { val: val_documents, train },
            (None, Some(dirs), None) => match dirs.as_slice() {
                [dir] => Source::Shards(dir.clone()),
                _ => bail!("--in shards: give one folder of shards"),
            },
            (None, None, Some(synthetic)) => Source::Synthetic(synthetic.clone()),
            (None, None, None) => bail!("nothing to tokenize: pass --in documents=FILE, --in shards=DIR or the `synthetic` param"),
            _ => bail!("choose one source: --in documents, --in shards or the `synthetic` param"),
        };
        if let Source::Shards(_) = source {
            if p.val_docs.is_some()
                || p.max_docs.is_some()
                || p.shard_tokens.is_some()
                || p.transform.is_some()
            {
                bail!("val_docs, max_docs, shard_tokens and transform do not apply to --in shards (the shards are imported as they are)");
            }
        }
        let tokenizer = match stage.optional_input("tokenizer") {
            None => None,
            Some(input) => match input.paths.as_slice() {
                [file] if file.is_file() => Some(file.clone()),
                _ => bail!("--in tokenizer: give one SentencePiece .model file"),
            },
        };
        let val_docs = p.val_docs.unwrap_or(DEFAULT_VAL_DOCS);
        if val_docs == 0 {
            bail!("val_docs must be at least 1 (evaluation needs a val split)");
        }
        if let Some(max) = p.max_docs {
            if val_docs > max {
                bail!("val_docs {val_docs} is larger than max_docs {max}");
            }
        }
        if let Source::Synthetic(s) = &source {
            if val_docs > s.docs {
                bail!(
                    "val_docs {val_docs} is larger than the corpus (synthetic.docs {})",
                    s.docs
                );
            }
            if p.max_docs.is_some() {
                bail!("max_docs does not apply to the synthetic source (set synthetic.docs)");
            }
        }
        let shard_tokens = p.shard_tokens.unwrap_or(DEFAULT_SHARD_TOKENS);
        if shard_tokens == 0 || shard_tokens >= 1 << 31 {
            bail!("shard_tokens {shard_tokens} must be in [1, 2^31)");
        }
        Ok(Plan {
            source,
            tokenizer,
            val_docs,
            max_docs: p.max_docs,
            shard_tokens,
            transform: p.transform,
        })
    }
}

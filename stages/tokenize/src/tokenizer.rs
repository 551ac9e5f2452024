//! The tokenizer that turns text into shard tokens: a SentencePiece model (encoded by the real
//! SentencePiece library, so ids match the Python package) or the built-in `byte260`, with the
//! text transform its model was trained on (CaseOps: `lossless_caps_caseops_v1`, REFERENCE.md
//! §2.4), in which case every token also gets its byte count of the original text.

use anyhow::{anyhow, bail, Context, Result};
use pgolf_data::caseops;
use pgolf_data::sp_model::{ModelProto, PieceType};
use pgolf_data::{ByteLut, TokenizerInfo, TokenizerKind};
use pgolf_store::files;
use sentencepiece::SentencePieceProcessor;
use std::path::{Path, PathBuf};

use crate::params::Transform;

/// Shard tokens are u16, so ids must stay below 2^16 (upstream checks the same).
const MAX_VOCAB: usize = 1 << 16;
/// `byte260`: byte b is token b + 4 (ids 0–3 are pad, bos, eos, unk).
const BYTE260_OFFSET: u16 = 4;

pub struct Tokenizer {
    pub info: TokenizerInfo,
    pub lut: ByteLut,
    processor: Option<SentencePieceProcessor>,
    /// The model file's bytes, copied into the output beside the shards.
    model_bytes: Option<Vec<u8>>,
    /// The model file, for messages.
    model_path: Option<PathBuf>,
    /// The model has the four CaseOps operators as user-defined pieces (it was trained on
    /// case-transformed text): read from its piece table, never from its file name.
    caseops_pieces: bool,
    /// Applied to each document before encoding (set by [`Tokenizer::with_transform`]).
    transform: Transform,
}

/// A document's tokens, and with a text transform the bytes of the original text each stands for
/// (the val byte sidecar's counts: BOS 0, each case operator 0).
pub struct Encoded {
    pub tokens: Vec<u16>,
    pub original_bytes: Option<Vec<u32>>,
}

impl Tokenizer {
    pub fn byte260() -> Tokenizer {
        Tokenizer {
            info: TokenizerInfo::byte260(),
            lut: ByteLut::byte260(),
            processor: None,
            model_bytes: None,
            model_path: None,
            caseops_pieces: false,
            transform: Transform::None,
        }
    }

    /// Loads a SentencePiece `.model`. The vocab is checked against the u16 limit before the C++
    /// library sees the file.
    pub fn sentencepiece(path: &Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read tokenizer", path.display()))?;
        let model =
            ModelProto::decode_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
        if model.pieces.len() > MAX_VOCAB {
            bail!(
                "{}: vocab of {} pieces does not fit u16 shard tokens (at most {MAX_VOCAB})",
                path.display(),
                model.pieces.len()
            );
        }
        let lut = ByteLut::from_model(&model).with_context(|| format!("{}", path.display()))?;
        let processor = SentencePieceProcessor::from_serialized_proto(&bytes)
            .map_err(|e| anyhow!("{}: SentencePiece cannot load it: {e}", path.display()))?;
        let bos_id = processor
            .bos_id()
            .ok_or_else(|| anyhow!("{}: the model has no BOS piece", path.display()))?;
        let info = TokenizerInfo {
            kind: TokenizerKind::Sentencepiece,
            vocab_size: model.pieces.len() as u32,
            bos_id,
        };
        let caseops_pieces = caseops::OPERATORS.iter().all(|op| {
            model.pieces.iter().any(|p| {
                p.text().chars().eq([*op]) && p.piece_type().ok() == Some(PieceType::UserDefined)
            })
        });
        Ok(Tokenizer {
            info,
            lut,
            processor: Some(processor),
            model_bytes: Some(bytes),
            model_path: Some(path.to_path_buf()),
            caseops_pieces,
            transform: Transform::None,
        })
    }

    /// Sets the text transform, checked against the model: `caseops` needs the operator pieces,
    /// and a model that has them must be told which (its vocabulary was made for transformed
    /// text; encoding the text as it is would be a silent mismatch).
    pub fn with_transform(mut self, transform: Option<Transform>) -> Result<Tokenizer> {
        let model = || {
            self.model_path
                .as_deref()
                .map_or("the byte260 tokenizer".to_string(), |p| {
                    p.display().to_string()
                })
        };
        self.transform = match (transform, self.caseops_pieces) {
            (Some(Transform::Caseops), false) => bail!(
                "{}: transform caseops needs a SentencePiece tokenizer with the CaseOps operator pieces (U+E001–U+E004 as user-defined pieces), which this one has not",
                model()
            ),
            (None, true) => bail!(
                "{}: the tokenizer has the CaseOps operator pieces (it was trained on {} text): set the tokenize param `transform: caseops` (or `transform: none` to encode the text as it is)",
                model(),
                caseops::NAME
            ),
            (t, _) => t.unwrap_or(Transform::None),
        };
        Ok(self)
    }

    pub fn transform(&self) -> Transform {
        self.transform
    }

    pub fn bos(&self) -> u16 {
        self.info.bos_id as u16
    }

    /// `[BOS] + encode(transform(text))`, no EOS (REFERENCE.md §1.2, §2.4).
    pub fn encode_document(&self, text: &str) -> Result<Encoded> {
        let mut tokens = Vec::with_capacity(1 + text.len() / 2);
        tokens.push(self.bos());
        let Some(processor) = &self.processor else {
            tokens.extend(text.bytes().map(|b| b as u16 + BYTE260_OFFSET));
            return Ok(Encoded {
                tokens,
                original_bytes: None,
            });
        };
        let transformed = match self.transform {
            Transform::None => None,
            Transform::Caseops => Some(caseops::encode(text)),
        };
        let input = transformed.as_deref().unwrap_or(text);
        let pieces = processor
            .encode(input)
            .map_err(|e| anyhow!("SentencePiece failed: {e}"))?;
        for piece in &pieces {
            if piece.id >= self.info.vocab_size {
                bail!(
                    "token id {} is outside the vocab of {}",
                    piece.id,
                    self.info.vocab_size
                );
            }
            tokens.push(piece.id as u16);
        }
        let Some(transformed) = transformed else {
            return Ok(Encoded {
                tokens,
                original_bytes: None,
            });
        };
        // Each piece's surface ends where SentencePiece says, in the transformed text.
        let ends: Vec<usize> = pieces.iter().map(|p| p.span.1 as usize).collect();
        let counts = caseops::original_byte_counts(&transformed, &ends)?;
        let mut original_bytes = Vec::with_capacity(tokens.len());
        original_bytes.push(0);
        original_bytes.extend(counts);
        let sum: u64 = original_bytes.iter().map(|&c| c as u64).sum();
        if sum != text.len() as u64 {
            // Only a text of which SentencePiece makes no piece at all (whitespace only) gets here.
            bail!(
                "{} bytes of text but its tokens stand for {sum}: no token can carry them in the byte sidecar (a document of whitespace only?)",
                text.len()
            );
        }
        Ok(Encoded {
            tokens,
            original_bytes: Some(original_bytes),
        })
    }

    /// Writes `tokenizer.json` and, for SentencePiece, the `tokenizer.model` copy.
    pub fn write_into(&self, dir: &Path) -> Result<()> {
        self.info.write(dir)?;
        if let Some(bytes) = &self.model_bytes {
            let path = dir.join(files::TOKENIZER_MODEL);
            std::fs::write(&path, bytes)
                .with_context(|| format!("{}: cannot write", path.display()))?;
        }
        Ok(())
    }
}

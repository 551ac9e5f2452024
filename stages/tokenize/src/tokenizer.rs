//! The tokenizer that turns text into shard tokens: a SentencePiece model (encoded by the real
//! SentencePiece library, so ids match the Python package) or the built-in `byte260`.

use anyhow::{anyhow, bail, Context, Result};
use pgolf_data::sp_model::ModelProto;
use pgolf_data::{ByteLut, TokenizerInfo, TokenizerKind};
use pgolf_store::files;
use sentencepiece::SentencePieceProcessor;
use std::path::Path;

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
}

impl Tokenizer {
    pub fn byte260() -> Tokenizer {
        Tokenizer {
            info: TokenizerInfo::byte260(),
            lut: ByteLut::byte260(),
            processor: None,
            model_bytes: None,
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
        Ok(Tokenizer {
            info,
            lut,
            processor: Some(processor),
            model_bytes: Some(bytes),
        })
    }

    pub fn bos(&self) -> u16 {
        self.info.bos_id as u16
    }

    /// `[BOS] + encode(text)`, no EOS (REFERENCE.md §1.2).
    pub fn encode_document(&self, text: &str) -> Result<Vec<u16>> {
        let mut tokens = Vec::with_capacity(1 + text.len() / 2);
        tokens.push(self.bos());
        match &self.processor {
            None => tokens.extend(text.bytes().map(|b| b as u16 + BYTE260_OFFSET)),
            Some(processor) => {
                let pieces = processor
                    .encode(text)
                    .map_err(|e| anyhow!("SentencePiece failed: {e}"))?;
                for piece in pieces {
                    if piece.id >= self.info.vocab_size {
                        bail!(
                            "token id {} is outside the vocab of {}",
                            piece.id,
                            self.info.vocab_size
                        );
                    }
                    tokens.push(piece.id as u16);
                }
            }
        }
        Ok(tokens)
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

//! `tokenizer.json` in a tokenize output: which tokenizer made the shards, so readers can rebuild
//! the byte lookup tables and check vocab sizes without guessing.

use anyhow::{bail, Context, Result};
use pgolf_store::files;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// A SentencePiece `.model`, copied as `tokenizer.model`.
    Sentencepiece,
    /// The built-in byte tokenizer: pad 0, bos 1, eos 2, unk 3, byte b ↦ b + 4.
    Byte260,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerInfo {
    pub kind: TokenizerKind,
    pub vocab_size: u32,
    pub bos_id: u32,
}

/// Fails, naming `dir`, when the tokenizer of that tokenize output stands some of its pieces for
/// no text (user-defined pieces such as CaseOps's case operators, or control pieces other than the
/// specials; the rule is the counted evaluator's, `ByteLut::transforms_text`): for such shards the
/// lookup-table byte count is not the original text's, so a BPB over it is no score. Called
/// wherever no raw text bytes or byte sidecar are at hand.
pub fn refuse_lookup_table_bytes(dir: &Path) -> Result<()> {
    let info = TokenizerInfo::read(dir)?;
    if info.kind != TokenizerKind::Sentencepiece {
        return Ok(());
    }
    let path = dir.join(files::TOKENIZER_MODEL);
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let lut = pgolf_evaluator::ByteLut::sentencepiece(&bytes)
        .with_context(|| format!("{}", path.display()))?;
    if lut.transforms_text {
        bail!(
            "{}: refusing to score: its tokenizer has pieces that stand for no text (a text-transforming tokenizer such as CaseOps) and the val split has neither raw text bytes nor byte sidecars (fineweb_val_bytes_*.bin); lookup-table bytes would overstate the denominator (REFERENCE.md §2.5)",
            dir.display()
        );
    }
    Ok(())
}

impl TokenizerInfo {
    pub fn byte260() -> TokenizerInfo {
        TokenizerInfo {
            kind: TokenizerKind::Byte260,
            vocab_size: 260,
            bos_id: 1,
        }
    }

    /// Reads `dir/tokenizer.json`.
    pub fn read(dir: &Path) -> Result<TokenizerInfo> {
        let path = dir.join(files::TOKENIZER_INFO);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let info: TokenizerInfo = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid tokenizer info", path.display()))?;
        if info.bos_id >= info.vocab_size {
            bail!(
                "{}: bos_id {} is outside the vocab of {}",
                path.display(),
                info.bos_id,
                info.vocab_size
            );
        }
        Ok(info)
    }

    /// Writes `dir/tokenizer.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(files::TOKENIZER_INFO);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("{}: cannot write", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_kind_in_lowercase() {
        let dir = tempfile::tempdir().unwrap();
        let info = TokenizerInfo {
            kind: TokenizerKind::Sentencepiece,
            vocab_size: 1024,
            bos_id: 1,
        };
        info.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(files::TOKENIZER_INFO)).unwrap();
        assert!(text.contains("\"sentencepiece\""), "{text}");
        assert_eq!(TokenizerInfo::read(dir.path()).unwrap(), info);
    }

    #[test]
    fn rejects_unknown_kind_and_bad_bos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::TOKENIZER_INFO);
        std::fs::write(&path, r#"{"kind":"wordpiece","vocab_size":10,"bos_id":1}"#).unwrap();
        let err = format!("{:#}", TokenizerInfo::read(dir.path()).unwrap_err());
        assert!(
            err.contains(files::TOKENIZER_INFO) && err.contains("wordpiece"),
            "{err}"
        );
        std::fs::write(&path, r#"{"kind":"byte260","vocab_size":260,"bos_id":260}"#).unwrap();
        let err = format!("{:#}", TokenizerInfo::read(dir.path()).unwrap_err());
        assert!(err.contains("bos_id 260"), "{err}");
    }
}

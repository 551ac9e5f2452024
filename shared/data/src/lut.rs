//! Byte lookup tables (REFERENCE.md §2.1–2.2): how many bytes of text each scored token stands for.
//! Built from a SentencePiece `.model` or for the built-in `byte260` tokenizer.

use anyhow::{bail, Context, Result};
use pgolf_store::files;
use std::path::Path;

use crate::sp_model::ModelProto;
use crate::tokenizer_info::{TokenizerInfo, TokenizerKind};
/// Per-token byte tables, indexed by token id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteLut {
    /// Bytes of the piece's text without its leading `▁` (1 for byte pieces, 0 for control pieces).
    pub base_bytes: Vec<u16>,
    /// The piece begins with `▁`: one space byte, charged unless the previous token is a boundary.
    pub has_leading_space: Vec<bool>,
    /// Control, unknown and unused pieces (BOS among them): text starts afresh after them.
    pub is_boundary: Vec<bool>,
    /// Some piece stands for no text of the original document (a user-defined piece such as a
    /// CaseOps case operator, or a control piece other than the specials; the counted evaluator's
    /// rule): the tokenizer transforms the text, so these tables are no byte denominator.
    pub transforms_text: bool,
}

impl ByteLut {
    /// Tables for the built-in byte tokenizer: ids 0–3 are pad/bos/eos/unk, id b + 4 is byte b.
    pub fn byte260() -> ByteLut {
        ByteLut::from_counted(pgolf_evaluator::ByteLut::byte260())
    }

    /// Tables from a SentencePiece `.model` file. Refuses a model without a standalone `▁` piece:
    /// there every word boundary falls back to three byte tokens, each charged a byte (§2.5.2).
    pub fn from_model_file(path: &Path) -> Result<ByteLut> {
        let model = ModelProto::read(path)?;
        ByteLut::from_model(&model).with_context(|| format!("{}", path.display()))
    }

    /// The rule that turns pieces into byte counts is written once, in the counted evaluator
    /// (pgolf-evaluator `ByteLut::sentencepiece`): what pgolf's stages charge is what the
    /// artifact's own code charges. The model is handed to it as its protobuf.
    pub fn from_model(model: &ModelProto) -> Result<ByteLut> {
        let bytes = prost::Message::encode_to_vec(model);
        Ok(ByteLut::from_counted(
            pgolf_evaluator::ByteLut::sentencepiece(&bytes)?,
        ))
    }

    fn from_counted(lut: pgolf_evaluator::ByteLut) -> ByteLut {
        ByteLut {
            base_bytes: lut.base,
            has_leading_space: lut.space,
            is_boundary: lut.boundary,
            transforms_text: lut.transforms_text,
        }
    }

    /// Tables for the tokenizer of a tokenize output directory (`tokenizer.json`, `tokenizer.model`).
    pub fn from_tokenize_output(dir: &Path) -> Result<ByteLut> {
        let info = TokenizerInfo::read(dir)?;
        let lut = match info.kind {
            TokenizerKind::Byte260 => ByteLut::byte260(),
            TokenizerKind::Sentencepiece => {
                ByteLut::from_model_file(&dir.join(files::TOKENIZER_MODEL))?
            }
        };
        if lut.vocab_size() != info.vocab_size as usize {
            bail!(
                "{}: tokenizer.json says vocab {} but the tokenizer has {}",
                dir.display(),
                info.vocab_size,
                lut.vocab_size()
            );
        }
        Ok(lut)
    }

    pub fn vocab_size(&self) -> usize {
        self.base_bytes.len()
    }

    /// Widens the tables to `size` entries (upstream `max(sp.vocab_size, V)`, for a model whose
    /// embedding is larger than the tokenizer); extra ids are 0-byte boundaries.
    pub fn padded_to(mut self, size: usize) -> ByteLut {
        if size > self.vocab_size() {
            self.base_bytes.resize(size, 0);
            self.has_leading_space.resize(size, false);
            self.is_boundary.resize(size, true);
        }
        self
    }

    /// Bytes charged when `target` is predicted after `prev` (§2.2). Panics on ids outside the
    /// tables: callers check token ids against the vocab when data is loaded.
    #[inline]
    pub fn bytes(&self, prev: u16, target: u16) -> u32 {
        let y = target as usize;
        let space = self.has_leading_space[y] && !self.is_boundary[prev as usize];
        self.base_bytes[y] as u32 + space as u32
    }

    /// Bytes charged for predicting every token of `tokens` after the first from its predecessor:
    /// for a document `[BOS] + pieces`, the document's bytes.
    pub fn sequence_bytes(&self, tokens: &[u16]) -> u64 {
        tokens
            .windows(2)
            .map(|w| self.bytes(w[0], w[1]) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sp_model::{PieceType, SentencePiece};
    use std::path::PathBuf;

    fn sp1024_path() -> PathBuf {
        // ../shared beside the workspace root, which is two levels above this crate.
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/tokenizers/fineweb_1024_bpe.model")
    }

    fn sp1024() -> (ModelProto, ByteLut) {
        let model = ModelProto::read(&sp1024_path()).unwrap();
        let lut = ByteLut::from_model(&model).unwrap();
        (model, lut)
    }

    fn id(model: &ModelProto, piece: &str) -> u16 {
        model
            .pieces
            .iter()
            .position(|p| p.text() == piece)
            .unwrap_or_else(|| panic!("no piece {piece:?}")) as u16
    }

    #[test]
    fn sp1024_tables_follow_the_piece_types() {
        let (model, lut) = sp1024();
        assert_eq!(lut.vocab_size(), 1024);
        let space = id(&model, "▁");
        assert_eq!(space, 939, "REFERENCE.md §1.3: the standalone ▁ is id 939");
        assert_eq!(
            (
                lut.base_bytes[939],
                lut.has_leading_space[939],
                lut.is_boundary[939]
            ),
            (0, true, false)
        );
        for control in [0, 1, 2, 3] {
            assert_eq!(
                (lut.base_bytes[control], lut.is_boundary[control]),
                (0, true),
                "id {control}"
            );
        }
        let byte_c3 = id(&model, "<0xC3>");
        assert_eq!(
            (
                lut.base_bytes[byte_c3 as usize],
                lut.has_leading_space[byte_c3 as usize]
            ),
            (1, false)
        );
        let the = id(&model, "▁the") as usize;
        assert_eq!((lut.base_bytes[the], lut.has_leading_space[the]), (3, true));
    }

    #[test]
    fn hand_built_sequences_give_the_formula_counts() {
        let (model, lut) = sp1024();
        let ids = |pieces: &[&str]| pieces.iter().map(|p| id(&model, p)).collect::<Vec<u16>>();
        // "the cat": the leading-space piece after a normal piece costs its space byte.
        assert_eq!(lut.sequence_bytes(&ids(&["<s>", "t", "he", "▁c", "at"])), 7);
        // After BOS (a boundary) the leading space is not charged: "cat".
        assert_eq!(lut.sequence_bytes(&ids(&["<s>", "▁c", "at"])), 3);
        // After <unk> (also a boundary) neither.
        assert_eq!(lut.bytes(id(&model, "<unk>"), id(&model, "▁c")), 1);
        // The bare ▁ is one space byte, or none right after a boundary.
        assert_eq!(lut.sequence_bytes(&ids(&["<s>", "a", "▁", "a"])), 3);
        assert_eq!(lut.sequence_bytes(&ids(&["<s>", "▁", "a"])), 1);
        // Byte pieces are a byte each ("é" = C3 A9); predicting the next BOS costs nothing.
        assert_eq!(
            lut.sequence_bytes(&ids(&["<s>", "<0xC3>", "<0xA9>", "<s>"])),
            2
        );
    }

    #[test]
    fn the_caseops_models_operator_pieces_mark_it_as_transforming_the_text() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../../shared/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
        );
        let model = ModelProto::read(&path).unwrap();
        for (id, op) in crate::caseops::OPERATORS.iter().enumerate() {
            let piece = &model.pieces[4 + id];
            assert_eq!(piece.text(), op.to_string());
            assert_eq!(piece.piece_type().unwrap(), PieceType::UserDefined);
        }
        let lut = ByteLut::from_model(&model).unwrap();
        assert!(lut.transforms_text);
        // The lookup tables charge each operator its 3 UTF-8 bytes: no bytes of the text.
        assert_eq!(lut.base_bytes[4..8], [3, 3, 3, 3]);
        assert!(!sp1024().1.transforms_text);
        assert!(!ByteLut::byte260().transforms_text);
    }

    #[test]
    fn byte260_charges_one_byte_per_byte_token() {
        let lut = ByteLut::byte260();
        assert_eq!(lut.vocab_size(), 260);
        let tokens: Vec<u16> = std::iter::once(1)
            .chain("a b".bytes().map(|b| b as u16 + 4))
            .chain([1])
            .collect();
        assert_eq!(lut.sequence_bytes(&tokens), 3);
        assert!(
            lut.is_boundary[..4].iter().all(|&b| b) && !lut.is_boundary[4..].iter().any(|&b| b)
        );
    }

    #[test]
    fn refuses_a_model_without_a_standalone_space_piece() {
        let piece = |text: &str, kind: PieceType| SentencePiece {
            piece: Some(text.into()),
            score: Some(0.0),
            r#type: Some(kind as i32),
        };
        let model = ModelProto {
            pieces: vec![
                piece("<unk>", PieceType::Unknown),
                piece("▁a", PieceType::Normal),
                piece("b", PieceType::Normal),
            ],
        };
        let err = format!("{:#}", ByteLut::from_model(&model).unwrap_err());
        assert!(err.contains("standalone `▁`"), "{err}");
        let mut with_space = model.clone();
        with_space.pieces.push(piece("▁", PieceType::Normal));
        assert_eq!(ByteLut::from_model(&with_space).unwrap().vocab_size(), 4);
    }

    #[test]
    fn padding_adds_zero_byte_boundaries() {
        let lut = ByteLut::byte260().padded_to(512);
        assert_eq!(lut.vocab_size(), 512);
        assert_eq!((lut.base_bytes[300], lut.is_boundary[300]), (0, true));
    }

    #[test]
    fn reads_the_tables_of_a_tokenize_output() {
        let dir = tempfile::tempdir().unwrap();
        TokenizerInfo {
            kind: TokenizerKind::Sentencepiece,
            vocab_size: 1024,
            bos_id: 1,
        }
        .write(dir.path())
        .unwrap();
        std::fs::copy(sp1024_path(), dir.path().join(files::TOKENIZER_MODEL)).unwrap();
        assert_eq!(
            ByteLut::from_tokenize_output(dir.path()).unwrap(),
            sp1024().1
        );
        TokenizerInfo {
            kind: TokenizerKind::Sentencepiece,
            vocab_size: 8192,
            bos_id: 1,
        }
        .write(dir.path())
        .unwrap();
        let err = format!(
            "{:#}",
            ByteLut::from_tokenize_output(dir.path()).unwrap_err()
        );
        assert!(
            err.contains("vocab 8192 but the tokenizer has 1024"),
            "{err}"
        );
        TokenizerInfo::byte260().write(dir.path()).unwrap();
        assert_eq!(
            ByteLut::from_tokenize_output(dir.path()).unwrap(),
            ByteLut::byte260()
        );
    }

    #[test]
    fn a_file_that_is_not_a_model_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.model");
        std::fs::write(&path, b"\xff\xff\xff\xff not protobuf").unwrap();
        let err = format!("{:#}", ByteLut::from_model_file(&path).unwrap_err());
        assert!(
            err.contains("junk.model") && err.contains("not a SentencePiece model"),
            "{err}"
        );
    }
}

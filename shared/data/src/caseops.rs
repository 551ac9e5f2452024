//! The `lossless_caps_caseops_v1` text transform of the CaseOps records (REFERENCE.md §1.3, §2.4;
//! upstream `lossless_caps.py`, where the name is an alias of `encode_lossless_caps_v2`), its exact
//! inverse, and the per-token byte counts of the original text that the byte sidecars hold.
//!
//! The transform works on maximal runs of ASCII letters ("words"):
//!
//! - an all-lowercase word is written unchanged;
//! - an all-uppercase word of two letters or more becomes [`ALLCAPS`] + the word in lowercase;
//! - any other word with an uppercase letter becomes [`TITLE`] if its first letter is uppercase,
//!   then its letters in lowercase, each later uppercase letter preceded by [`CAPNEXT`] (a
//!   TitleCase word is the case with no later uppercase letter: [`TITLE`] + lowercase);
//! - a literal operator character in the text is written as [`ESC`] + that character;
//! - everything else (non-ASCII letters included) is unchanged.
//!
//! The operators are one private-use character each, three UTF-8 bytes, and stand for no byte of
//! the original text; ASCII letters are one byte in either case. So the original text's UTF-8
//! length is the transformed text's with every operator counted 0 — what [`Decoder`] counts.
//!
//! [`Decoder`] is written once and serves both [`decode`] and [`original_byte_counts`]: the bytes
//! a token stands for are the UTF-8 bytes the decoder emits while it reads that token's text.

use anyhow::{bail, Result};

/// Starts a word whose first letter is uppercase.
pub const TITLE: char = '\u{E001}';
/// Starts a word whose letters are all uppercase.
pub const ALLCAPS: char = '\u{E002}';
/// The next letter (inside a word) is uppercase.
pub const CAPNEXT: char = '\u{E003}';
/// The next character is a literal one of these four.
pub const ESC: char = '\u{E004}';
/// The four operators, in piece order of the CaseOps tokenizer (ids 4–7).
pub const OPERATORS: [char; 4] = [TITLE, ALLCAPS, CAPNEXT, ESC];

/// The transform's name in the records (`TEXT_TRANSFORM` / `prepare_caseops_data.py`).
pub const NAME: &str = "lossless_caps_caseops_v1";

/// Transforms `text` (upstream `encode_lossless_caps_v2`).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !c.is_ascii_alphabetic() {
            if OPERATORS.contains(&c) {
                out.push(ESC);
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        // ASCII letters are one byte each, so the word ends at the first byte that is not one.
        let end = rest
            .bytes()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        encode_word(&rest[..end], &mut out);
        rest = &rest[end..];
    }
    out
}

/// One maximal run of ASCII letters.
fn encode_word(word: &str, out: &mut String) {
    let bytes = word.as_bytes();
    if bytes.iter().all(u8::is_ascii_lowercase) {
        out.push_str(word);
    } else if bytes.len() >= 2 && bytes.iter().all(u8::is_ascii_uppercase) {
        out.push(ALLCAPS);
        out.push_str(&word.to_ascii_lowercase());
    } else {
        if bytes[0].is_ascii_uppercase() {
            out.push(TITLE);
        }
        out.push(bytes[0].to_ascii_lowercase() as char);
        for &b in &bytes[1..] {
            if b.is_ascii_uppercase() {
                out.push(CAPNEXT);
            }
            out.push(b.to_ascii_lowercase() as char);
        }
    }
}

/// Inverts [`encode`] (upstream `decode_lossless_caps_v2`); a malformed text (an operator where
/// the encoder never writes one, or one left dangling at the end) is an error.
pub fn decode(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut decoder = Decoder::default();
    for c in text.chars() {
        if let Some(c) = decoder.push(c)? {
            out.push(c);
        }
    }
    decoder.finish()?;
    Ok(out)
}

/// The word mode an operator set for the next letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WordMode {
    Title,
    AllCaps,
}

/// The inverse transform as a state machine over the transformed text, one character at a time,
/// with upstream's placement rules (its `LosslessCapsError` cases are errors here too).
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    pending_escape: bool,
    pending_word: Option<WordMode>,
    pending_capnext: bool,
    active_allcaps: bool,
    in_word: bool,
}

impl Decoder {
    /// Reads one transformed character; returns the original character it stands for, or `None`
    /// for an operator.
    pub fn push(&mut self, c: char) -> Result<Option<char>> {
        if self.pending_escape {
            if self.pending_word.is_some() && !c.is_ascii_alphabetic() {
                bail!("an escaped character cannot take a pending word capitalization");
            }
            self.pending_escape = false;
            self.in_word = c.is_ascii_alphabetic();
            if !self.in_word {
                self.active_allcaps = false;
            }
            return Ok(Some(c));
        }
        match c {
            ESC => {
                self.pending_escape = true;
                return Ok(None);
            }
            TITLE | ALLCAPS => {
                if self.pending_word.is_some() || self.in_word || self.pending_capnext {
                    bail!(
                        "a {} marker inside a word or after another marker",
                        if c == TITLE { "title" } else { "allcaps" }
                    );
                }
                self.pending_word = Some(if c == TITLE {
                    WordMode::Title
                } else {
                    WordMode::AllCaps
                });
                return Ok(None);
            }
            CAPNEXT => {
                if self.pending_capnext {
                    bail!("two capnext markers in a row");
                }
                self.pending_capnext = true;
                return Ok(None);
            }
            _ => {}
        }
        if c.is_ascii_alphabetic() {
            let upper = if !self.in_word {
                self.active_allcaps = self.pending_word == Some(WordMode::AllCaps);
                self.in_word = true;
                self.pending_word.is_some() || self.pending_capnext
            } else {
                if self.pending_word.is_some() {
                    bail!("a word capitalization marker inside a word");
                }
                self.active_allcaps || self.pending_capnext
            };
            self.pending_word = None;
            self.pending_capnext = false;
            return Ok(Some(if upper { c.to_ascii_uppercase() } else { c }));
        }
        if self.pending_word.is_some() || self.pending_capnext {
            bail!("a capitalization marker not followed by an ASCII letter");
        }
        self.in_word = false;
        self.active_allcaps = false;
        Ok(Some(c))
    }

    /// Fails if a marker is left waiting at the end of the text.
    pub fn finish(&self) -> Result<()> {
        if self.pending_escape {
            bail!("a dangling escape marker at the end of the text");
        }
        if self.pending_word.is_some() || self.pending_capnext {
            bail!("a dangling capitalization marker at the end of the text");
        }
        Ok(())
    }
}

/// Bytes of the original text that each token of a transformed text stands for.
///
/// `ends[i]` is the byte offset in `transformed` where token `i`'s text ends (SentencePiece's
/// `end` of the piece's surface; non-decreasing). Token `i` is charged what the decoder emits over
/// `transformed[ends[i−1]..ends[i]]`, and the last token also what follows its end. This is
/// upstream's `surface_piece_original_byte_counts` (the decoder over each piece's surface) where
/// the surfaces tile the text; the text SentencePiece drops and no surface covers (leading and
/// trailing whitespace) is charged to the next token, or the last, so the counts sum to the
/// original text's UTF-8 length exactly. A text with no tokens yields no counts.
pub fn original_byte_counts(transformed: &str, ends: &[usize]) -> Result<Vec<u32>> {
    let mut decoder = Decoder::default();
    let mut counts = Vec::with_capacity(ends.len());
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        let end = if i + 1 == ends.len() {
            transformed.len()
        } else {
            end
        };
        let Some(segment) = transformed.get(start..end) else {
            bail!("token {i} ends at byte {end}, before byte {start} or off a character boundary of the {}-byte text", transformed.len());
        };
        let mut n = 0u32;
        for c in segment.chars() {
            if let Some(c) = decoder.push(c)? {
                n += c.len_utf8() as u32;
            }
        }
        counts.push(n);
        start = end;
    }
    decoder.finish()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        let t = encode(text);
        assert_eq!(decode(&t).unwrap(), text, "{t:?}");
        t
    }

    #[test]
    fn encodes_words_by_their_case() {
        let (t, a, c, e) = (TITLE, ALLCAPS, CAPNEXT, ESC);
        assert_eq!(roundtrip("the cat"), "the cat");
        assert_eq!(
            roundtrip("The NASA Launch"),
            format!("{t}the {a}nasa {t}launch")
        );
        assert_eq!(roundtrip("McDonald"), format!("{t}mc{c}donald"));
        assert_eq!(roundtrip("iPhone"), format!("i{c}phone"));
        assert_eq!(roundtrip("A I"), format!("{t}a {t}i"));
        assert_eq!(roundtrip("ABc"), format!("{t}a{c}bc"));
        assert_eq!(roundtrip("x1Y"), format!("x1{t}y"));
        // Non-ASCII letters are left alone and end a word.
        assert_eq!(roundtrip("ÉCOLE Straße"), format!("É{a}cole {t}straße"));
        // Literal operators are escaped.
        assert_eq!(roundtrip("a\u{E001}B"), format!("a{e}{t}{t}b"));
        assert_eq!(roundtrip("\u{E004}\u{E004}"), format!("{e}{e}{e}{e}"));
        assert_eq!(roundtrip(""), "");
    }

    #[test]
    fn decoding_refuses_misplaced_markers() {
        let bad = [
            format!("a{TITLE}b"),
            format!("{TITLE}{ALLCAPS}a"),
            format!("{CAPNEXT}{CAPNEXT}a"),
            format!("{TITLE} a"),
            format!("{TITLE}"),
            format!("a{ESC}"),
            format!("{TITLE}{ESC}\u{E001}"),
        ];
        for text in bad {
            assert!(decode(&text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn byte_counts_charge_operators_nothing_and_sum_to_the_original_text() {
        let text = "  The NASA \u{E002}launch é ";
        let t = encode(text);
        // Tokens: "  ", "{TITLE}the", " {ALLCAPS}nasa", " {ESC}\u{E002}", "launch é", then a last
        // token ending before the trailing space, which is charged to it (SentencePiece drops it).
        let cut = |s: &str| t.find(s).unwrap();
        let ends = [
            2,
            cut(" \u{E002}nasa"),
            cut(" \u{E004}"),
            cut("launch"),
            cut("launch") + "launch é".len(),
            t.len() - 1,
        ];
        let counts = original_byte_counts(&t, &ends).unwrap();
        assert_eq!(counts, [2, 3, 5, 4, 9, 1]);
        let ends = [cut("launch") + "launch é".len() - 3, t.len() - 1];
        let counts = original_byte_counts(&t, &ends).unwrap();
        assert_eq!(counts.iter().sum::<u32>() as usize, text.len());
        assert_eq!(counts[1], 4, "' é' and the dropped trailing space");
        assert!(original_byte_counts(&t, &[]).unwrap().is_empty());
        assert!(original_byte_counts(&t, &[5, 2, t.len()]).is_err());
        // A marker dangling at the end of the text is an error, as upstream.
        assert!(original_byte_counts(&format!("a{TITLE}"), &[2]).is_err());
    }
}

//! What the evaluator reads besides the artifact: the upstream val token shards (REFERENCE.md §1.1)
//! and the bytes each scored token stands for (§2.1–2.2), from a SentencePiece `.model` or for
//! the built-in byte260 tokenizer.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// One shard: a 1024-byte header of 256 LE i32 (magic 20240520, version 1, token count N, zeros),
/// then N LE u16 tokens; the file size must be exactly 1024 + 2N.
pub fn read_shard(path: &Path) -> Result<Vec<u16>> {
    let b = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let h = |i: usize| {
        b.get(4 * i..4 * i + 4)
            .map(|x| i32::from_le_bytes(x.try_into().unwrap()))
    };
    let n = match (h(0), h(1), h(2)) {
        (Some(20240520), Some(1), Some(n)) if n >= 0 && b.len() == 1024 + 2 * n as usize => n,
        _ => bail!(
            "{}: not an upstream token shard (header or size)",
            path.display()
        ),
    };
    Ok(b[1024..1024 + 2 * n as usize]
        .chunks_exact(2)
        .map(|x| u16::from_le_bytes([x[0], x[1]]))
        .collect())
}

/// The val stream of `dir`: every `fineweb_val_*.bin` in sorted order (not the CaseOps
/// `fineweb_val_bytes_*` sidecars), concatenated.
pub fn val_tokens(dir: &Path) -> Result<Vec<u16>> {
    let mut tokens = Vec::new();
    for p in val_shards(dir)? {
        tokens.extend(read_shard(&p)?);
    }
    Ok(tokens)
}

/// The bytes of the original text each val token stands for, from the byte sidecars
/// (`fineweb_val_bytes_*.bin`, one count per token of each val shard, REFERENCE.md §2.4) when
/// `dir` has them, else from the tokenizer's tables — which a text-transforming tokenizer
/// (CaseOps: pieces that stand for no text) may not use, so then this refuses.
pub fn val_target_bytes(dir: &Path, tokens: &[u16], lut: &ByteLut) -> Result<Vec<u32>> {
    let shards = val_shards(dir)?;
    let sidecars: Vec<PathBuf> = shards
        .iter()
        .map(|p| {
            p.with_file_name(p.file_name().unwrap().to_string_lossy().replacen(
                "fineweb_val_",
                "fineweb_val_bytes_",
                1,
            ))
        })
        .collect();
    if !sidecars.iter().any(|p| p.exists()) {
        if lut.transforms_text {
            bail!("{}: refusing to score: the tokenizer has pieces that stand for no text (CaseOps) and there are no byte sidecars (fineweb_val_bytes_*.bin)", dir.display());
        }
        return lut.target_bytes(tokens);
    }
    let mut bytes = Vec::with_capacity(tokens.len());
    for side in &sidecars {
        bytes.extend(read_shard(side)?.into_iter().map(u32::from));
    }
    if bytes.len() != tokens.len() {
        bail!(
            "{}: the byte sidecars hold {} counts for {} val tokens (not one per token)",
            dir.display(),
            bytes.len(),
            tokens.len()
        );
    }
    if let Some(b) = bytes.first_mut() {
        *b = 0;
    }
    Ok(bytes)
}

fn val_shards(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("fineweb_val_") && name.ends_with(".bin") && !name.contains("_bytes_")
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{}: no fineweb_val_*.bin shards", dir.display());
    }
    Ok(paths)
}

/// Per-token byte tables: a target `y` after `p` is charged `base[y] + (space[y] && !boundary[p])`.
pub struct ByteLut {
    pub base: Vec<u16>,
    pub space: Vec<bool>,
    pub boundary: Vec<bool>,
    /// Some piece stands for no text (user-defined, or a control piece other than the specials):
    /// the tokenizer transforms the text, so these tables overstate its bytes.
    pub transforms_text: bool,
}

impl ByteLut {
    fn empty(n: usize) -> ByteLut {
        ByteLut {
            base: vec![0; n],
            space: vec![false; n],
            boundary: vec![true; n],
            transforms_text: false,
        }
    }

    /// ids 0–3 are pad/bos/eos/unk (0 bytes, boundaries), id b + 4 is byte b.
    pub fn byte260() -> ByteLut {
        let mut lut = ByteLut::empty(260);
        for id in 4..260 {
            (lut.base[id], lut.boundary[id]) = (1, false);
        }
        lut
    }

    /// The tables of a SentencePiece model (the protobuf `ModelProto`: field 1 holds the pieces,
    /// each with its text in field 1 and its type in field 3, default NORMAL). Control, unknown and
    /// unused pieces are 0-byte boundaries; byte pieces 1 byte; others their UTF-8 length without
    /// a leading `▁`, which becomes the space flag. Refuses a model without a standalone `▁`.
    pub fn sentencepiece(model: &[u8]) -> Result<ByteLut> {
        let mut pieces = Vec::new();
        fields(model, |f, _, b| {
            if f == 1 {
                pieces.push(b)
            }
        })?;
        let mut lut = ByteLut::empty(pieces.len());
        let mut bare_space = false;
        for (id, piece) in pieces.into_iter().enumerate() {
            let (mut text, mut kind) = (&[][..], 1);
            fields(piece, |f, v, b| match f {
                1 => text = b,
                3 => kind = v,
                _ => {}
            })?;
            let text = std::str::from_utf8(text).map_err(|_| anyhow!("piece {id} is not UTF-8"))?;
            let special = ["<pad>", "<s>", "</s>", "<unk>"].contains(&text);
            lut.transforms_text |= kind == 4 || (kind == 3 && !special);
            match kind {
                2 | 3 | 5 => continue,
                6 => lut.base[id] = 1,
                1 | 4 => {
                    let rest = text.strip_prefix('\u{2581}');
                    lut.space[id] = rest.is_some();
                    bare_space |= rest == Some("");
                    lut.base[id] = u16::try_from(rest.unwrap_or(text).len())
                        .map_err(|_| anyhow!("piece {id} is over 65535 bytes"))?;
                }
                k => bail!("piece {id} has unknown type {k}"),
            }
            lut.boundary[id] = false;
        }
        if !bare_space {
            bail!("the tokenizer has no standalone `▁` piece, so every word boundary would be charged 3 bytes (REFERENCE.md §2.5)");
        }
        Ok(lut)
    }

    /// Bytes charged to each token of `tokens` as a target (entry 0, never a target, is 0).
    pub fn target_bytes(&self, tokens: &[u16]) -> Result<Vec<u32>> {
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.base.len()) {
            bail!(
                "token {t} is outside the tokenizer's {} pieces",
                self.base.len()
            );
        }
        let charge = |p: u16, y: u16| {
            let y = y as usize;
            self.base[y] as u32 + (self.space[y] && !self.boundary[p as usize]) as u32
        };
        Ok(std::iter::once(0)
            .chain(tokens.windows(2).map(|w| charge(w[0], w[1])))
            .collect())
    }
}

/// Calls `f(field, value, bytes)` for each field of a protobuf message: varints give their value,
/// length-delimited fields their bytes; fixed-width ones are skipped.
fn fields<'a>(mut b: &'a [u8], mut f: impl FnMut(u64, u64, &'a [u8])) -> Result<()> {
    fn varint(b: &mut &[u8]) -> Result<u64> {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b
                .split_first()
                .ok_or_else(|| anyhow!("truncated protobuf"))?;
            *b = rest;
            v |= ((x & 0x7f) as u64) << shift;
            if x < 0x80 {
                return Ok(v);
            }
        }
        bail!("corrupt protobuf varint")
    }
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (value, len) = match key & 7 {
            0 => (varint(&mut b)?, 0),
            1 => (0, 8),
            2 => (0, varint(&mut b)? as usize),
            5 => (0, 4),
            w => bail!("not a SentencePiece model (protobuf wire type {w})"),
        };
        if len > b.len() {
            bail!("truncated protobuf");
        }
        let (bytes, rest) = b.split_at(len);
        f(key >> 3, value, bytes);
        b = rest;
    }
    Ok(())
}

//! The uncompressed body of an artifact (docs/ARTIFACT.md): a JSON directory (the model config and
//! one entry per tensor) followed by the payload, laid out in three sections so like bytes sit
//! together for the compressor: all integers, then all fp16/f32 scales, then all raw values.
//!
//! ```text
//! u32 LE  directory length D
//! D bytes directory, UTF-8 JSON: {"format": "pgq", "version": 1, "config": {...}, "tensors": [...]}
//! payload bytes, addressed by [offset, length] pairs in the directory
//! ```
//!
//! Integers are stored one per byte (int5..int8 alike, REFERENCE.md §5.8): the entropy coder
//! absorbs the unused high bits, and a byte-aligned layout keeps this decoder trivial. A `rows`
//! entry may add an LQER correction (`lqer`: the factors' integers follow all tensors' integers,
//! their scales all tensors' scales) and a layout (`perm`: its rows in that order, u16 LE, in a
//! fourth section after the raw values; `cols`: written column-major).

use anyhow::{anyhow, bail, Result};
use half::f16;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dtype::{floats_from_bytes, round_through, DType};

pub const FORMAT: &str = "pgq";
pub const VERSION: u32 = 1;
/// The directory version of a body that uses LQER or a layout: readers that predate them (and would
/// ignore the fields they do not know) refuse it instead of decoding other values.
pub const VERSION_EXTENDED: u32 = 2;

/// The directory as JSON (the writer in pgolf-quant fills the same structs).
#[derive(Serialize, Deserialize)]
pub struct Directory {
    pub format: String,
    pub version: u32,
    pub config: Value,
    pub tensors: Vec<Entry>,
}

/// One tensor: `[offset, length]` ranges into the payload.
#[derive(Serialize, Deserialize)]
#[serde(tag = "enc", rename_all = "lowercase")]
pub enum Entry {
    Raw {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        stored: DType,
        data: [usize; 2],
    },
    Rows {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        bits: u8,
        q: [usize; 2],
        scales: [usize; 2],
        // Absent when off, so directories written before these existed read and re-encode as is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lqer: Option<LqerEntry>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        perm: Option<[usize; 2]>,
        #[serde(default, skip_serializing_if = "is_false")]
        cols: bool,
    },
    Tensor {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        bits: u8,
        scale_dtype: DType,
        q: [usize; 2],
        scale: [usize; 2],
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An LQER correction in the directory: rank and the two factors' ranges.
#[derive(Serialize, Deserialize)]
pub struct LqerEntry {
    pub rank: usize,
    pub a: FactorEntry,
    pub b: FactorEntry,
}

#[derive(Serialize, Deserialize)]
pub struct FactorEntry {
    pub bits: u8,
    pub group: usize,
    pub q: [usize; 2],
    pub scales: [usize; 2],
}

/// LQER (REFERENCE.md §5.12): `A·B` (A `rows × rank`, B `rank × cols`) added to a `rows` matrix's
/// dequantized values.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    pub rank: usize,
    pub a: Factor,
    pub b: Factor,
}

/// Signed integers in −2^(bits−1) ..= 2^(bits−1)−1 (the asymmetric INT2 range is [−2, 1]), row-major,
/// with one fp16 scale per `group` consecutive values.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub bits: u8,
    pub group: usize,
    pub q: Vec<i8>,
    pub scales: Vec<f16>,
}

impl Factor {
    fn validate(&self, name: &str, numel: usize) -> Result<()> {
        if !(2..=8).contains(&self.bits) || self.group == 0 || self.q.len() != numel {
            bail!(
                "tensor {name}: LQER factor of {} {}-bit integers, group {}, expected {numel}",
                self.q.len(),
                self.bits,
                self.group
            );
        }
        let hi = max_level(self.bits);
        let lo = -hi - 1;
        if self.scales.len() != numel.div_ceil(self.group) {
            bail!(
                "tensor {name}: {} LQER scales for {numel} values in groups of {}",
                self.scales.len(),
                self.group
            );
        }
        if let Some(v) = self.q.iter().find(|v| !(lo..=hi).contains(&(**v as i32))) {
            bail!("tensor {name}: LQER integer {v} outside {lo}..={hi}");
        }
        Ok(())
    }

    fn values(&self) -> Vec<f32> {
        let g = self.group;
        (self.q.iter().enumerate())
            .map(|(i, v)| *v as f32 * self.scales[i / g].to_f32())
            .collect()
    }
}

/// Where a `rows` tensor's integers sit in the payload: `perm[k]` is the row written k-th (rows ≤
/// 65,536); `column_major` writes the (permuted) matrix column by column. The values are the same.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub perm: Option<Vec<u16>>,
    pub column_major: bool,
}

impl Layout {
    /// Offset of entry (row r, column c) in the written integers, given the inverse permutation.
    pub fn position(
        &self,
        inverse: &[usize],
        rows: usize,
        cols: usize,
        r: usize,
        c: usize,
    ) -> usize {
        let k = if inverse.is_empty() { r } else { inverse[r] };
        if self.column_major {
            c * rows + k
        } else {
            k * cols + c
        }
    }

    /// The inverse of `perm` (empty without one); an error unless it permutes 0..rows.
    pub fn inverse(&self, name: &str, rows: usize) -> Result<Vec<usize>> {
        let Some(perm) = &self.perm else {
            return Ok(Vec::new());
        };
        let mut inv = vec![usize::MAX; rows];
        if perm.len() != rows {
            bail!(
                "tensor {name}: row permutation of {} for {rows} rows",
                perm.len()
            );
        }
        for (k, &r) in perm.iter().enumerate() {
            match inv.get_mut(r as usize) {
                Some(slot) if *slot == usize::MAX => *slot = k,
                _ => bail!("tensor {name}: row permutation is not a permutation of 0..{rows}"),
            }
        }
        Ok(inv)
    }
}

/// How a tensor's values are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoding {
    /// Float values in `stored` dtype (f32 kept as is, or narrowed to f16/bf16).
    Raw { stored: DType, bytes: Vec<u8> },
    /// Signed `bits`-bit integers, row-major, with one fp16 scale per row (dimension 0).
    Rows {
        bits: u8,
        q: Vec<i8>,
        scales: Vec<f16>,
    },
    /// Signed `bits`-bit integers with one scale for the whole tensor (f32 in the upstream int8
    /// per-tensor routine, f16 in GPTQ-lite's).
    Tensor { bits: u8, q: Vec<i8>, scale: Scale },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    F32(f32),
    F16(f16),
}

impl Scale {
    pub fn value(self) -> f32 {
        match self {
            Scale::F32(v) => v,
            Scale::F16(v) => v.to_f32(),
        }
    }
}

/// The largest integer level of a signed `bits`-bit code: 127 for int8, 31 for int6, 15 for int5.
pub fn max_level(bits: u8) -> i32 {
    (1i32 << (bits - 1)) - 1
}

/// One named tensor of the artifact: its original shape and dtype, and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// The dtype the model holds this tensor in (what decoding casts back to).
    pub dtype: DType,
    pub encoding: Encoding,
    /// `rows` only: an LQER correction added after dequantization.
    pub lqer: Option<LowRank>,
    /// `rows` only: how its integers are written (default: row-major, rows in order).
    pub layout: Layout,
}

impl StoredTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it uses what directory version 2 added: an LQER correction or a layout.
    pub fn extended(&self) -> bool {
        self.lqer.is_some() || self.layout != Layout::default()
    }

    /// Checks that sizes agree with the shape and integers lie in their range.
    pub fn validate(&self) -> Result<()> {
        let name = &self.name;
        // Checked, with room for 4-byte elements: a product that wrapped would pass the checks below.
        let numel = (self.shape.iter())
            .try_fold(4usize, |n, &d| n.checked_mul(d))
            .map(|n| n / 4)
            .ok_or_else(|| anyhow!("tensor {name}: shape {:?} is too large", self.shape))?;
        let check_q = |bits: u8, q: &[i8]| -> Result<()> {
            if !(2..=8).contains(&bits) {
                bail!("tensor {name}: {bits}-bit integers are not supported (2..=8)");
            }
            if q.len() != numel {
                bail!("tensor {name}: {} integers for {numel} elements", q.len());
            }
            let r = max_level(bits);
            if let Some(v) = q.iter().find(|v| (**v as i32).abs() > r) {
                bail!("tensor {name}: integer {v} outside the {bits}-bit range ±{r}");
            }
            Ok(())
        };
        match &self.encoding {
            Encoding::Raw { stored, bytes } => {
                if bytes.len() != numel * stored.size() {
                    bail!(
                        "tensor {name}: {} bytes for {numel} {} elements",
                        bytes.len(),
                        stored.name()
                    );
                }
            }
            Encoding::Rows { bits, q, scales } => {
                check_q(*bits, q)?;
                if self.shape.len() < 2 || scales.len() != self.shape[0] {
                    bail!(
                        "tensor {name}: {} row scales for shape {:?}",
                        scales.len(),
                        self.shape
                    );
                }
            }
            Encoding::Tensor { bits, q, .. } => check_q(*bits, q)?,
        }
        let is_rows = matches!(self.encoding, Encoding::Rows { .. });
        if !is_rows && (self.lqer.is_some() || self.layout != Layout::default()) {
            bail!("tensor {name}: an LQER correction or a layout needs a rows encoding");
        }
        if is_rows {
            let rows = self.shape[0];
            if self.layout.perm.is_some() && rows > 1 << 16 {
                bail!("tensor {name}: {rows} rows are too many for a u16 permutation");
            }
            self.layout.inverse(name, rows)?;
            if let Some(l) = &self.lqer {
                let cols = numel / rows.max(1);
                if l.rank == 0 {
                    bail!("tensor {name}: LQER rank 0");
                }
                l.a.validate(name, rows * l.rank)?;
                l.b.validate(name, l.rank * cols)?;
            }
        }
        Ok(())
    }

    /// The values the model gets: `q·s` in f32, then cast to the original dtype (returned as f32,
    /// exactly representable in that dtype), as upstream's `dequantize_state_dict_int8`.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let values = match &self.encoding {
            Encoding::Raw { stored, bytes } => floats_from_bytes(*stored, bytes)?,
            Encoding::Rows { q, scales, .. } => {
                let cols = (self.numel() / scales.len().max(1)).max(1);
                q.chunks(cols)
                    .zip(scales)
                    .flat_map(|(row, s)| row.iter().map(move |v| *v as f32 * s.to_f32()))
                    .collect()
            }
            Encoding::Tensor { q, scale, .. } => {
                q.iter().map(|v| *v as f32 * scale.value()).collect()
            }
        };
        let mut values = values;
        if let Some(l) = &self.lqer {
            // W = Q·s + A·B in f32, each entry of A·B summed over the rank in order.
            let (r, cols) = (l.rank, self.numel() / self.shape[0].max(1));
            let (a, b) = (l.a.values(), l.b.values());
            for (i, row) in values.chunks_mut(cols.max(1)).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    let mut ab = 0f32;
                    for k in 0..r {
                        ab += a[i * r + k] * b[k * cols + j];
                    }
                    *v += ab;
                }
            }
        }
        Ok(values
            .into_iter()
            .map(|v| round_through(self.dtype, v))
            .collect())
    }
}

fn halves(name: &str, b: &[u8]) -> Result<Vec<f16>> {
    if !b.len().is_multiple_of(2) {
        bail!("tensor {name}: odd number of bytes for 16-bit values");
    }
    Ok(b.chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// The row-major integers of a `rows` tensor from the ones written in `layout`.
fn unlay(name: &str, shape: &[usize], layout: &Layout, written: Vec<i8>) -> Result<Vec<i8>> {
    if *layout == Layout::default() {
        return Ok(written);
    }
    let rows = *shape.first().unwrap_or(&0);
    let cols = written.len() / rows.max(1);
    if rows * cols != written.len() {
        bail!(
            "tensor {name}: {} integers do not fill {rows} rows",
            written.len()
        );
    }
    let inverse = layout.inverse(name, rows)?;
    let mut q = vec![0i8; written.len()];
    for r in 0..rows {
        for c in 0..cols {
            q[r * cols + c] = written[layout.position(&inverse, rows, cols, r, c)];
        }
    }
    Ok(q)
}

/// Parses a body, checking every range and size; the payload must be covered exactly once.
pub fn decode_body(body: &[u8]) -> Result<(Value, Vec<StoredTensor>)> {
    if body.len() < 4 {
        bail!("body of {} bytes has no directory", body.len());
    }
    let dir_len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    let dir_end = 4usize
        .checked_add(dir_len)
        .filter(|e| *e <= body.len())
        .ok_or_else(|| anyhow!("directory length {dir_len} runs past the body"))?;
    let dir: Directory = serde_json::from_slice(&body[4..dir_end])
        .map_err(|e| anyhow!("directory is not valid JSON: {e}"))?;
    if dir.format != FORMAT || !(VERSION..=VERSION_EXTENDED).contains(&dir.version) {
        bail!(
            "directory says format {:?} version {}, expected {FORMAT:?} version {VERSION} or {VERSION_EXTENDED}",
            dir.format,
            dir.version
        );
    }
    let extended = dir.version == VERSION_EXTENDED;
    let payload = &body[dir_end..];
    let mut used: Vec<[usize; 2]> = Vec::new();
    let mut take = |name: &str, range: [usize; 2]| -> Result<&[u8]> {
        let end = range[0]
            .checked_add(range[1])
            .filter(|e| *e <= payload.len())
            .ok_or_else(|| {
                anyhow!(
                    "tensor {name}: range {range:?} runs past the payload ({} bytes)",
                    payload.len()
                )
            })?;
        used.push(range);
        Ok(&payload[range[0]..end])
    };
    let ints = |b: &[u8]| -> Vec<i8> { b.iter().map(|v| *v as i8).collect() };
    let mut tensors = Vec::with_capacity(dir.tensors.len());
    for e in dir.tensors {
        let (name, shape, dtype, encoding, lqer, layout) = match e {
            Entry::Raw {
                name,
                shape,
                dtype,
                stored,
                data,
            } => {
                let bytes = take(&name, data)?.to_vec();
                (
                    name,
                    shape,
                    dtype,
                    Encoding::Raw { stored, bytes },
                    None,
                    Layout::default(),
                )
            }
            Entry::Rows {
                name,
                shape,
                dtype,
                bits,
                q,
                scales,
                lqer: lq,
                perm,
                cols,
            } => {
                let written = ints(take(&name, q)?);
                let scales = halves(&name, take(&name, scales)?)?;
                let mut factor = |f: FactorEntry| -> Result<Factor> {
                    Ok(Factor {
                        bits: f.bits,
                        group: f.group,
                        q: ints(take(&name, f.q)?),
                        scales: halves(&name, take(&name, f.scales)?)?,
                    })
                };
                let lqer = match lq {
                    Some(l) => Some(LowRank {
                        rank: l.rank,
                        a: factor(l.a)?,
                        b: factor(l.b)?,
                    }),
                    None => None,
                };
                let perm = match perm {
                    // u16 LE, as fp16 scales are two bytes each.
                    Some(range) => Some(
                        halves(&name, take(&name, range)?)?
                            .iter()
                            .map(|h| h.to_bits())
                            .collect(),
                    ),
                    None => None,
                };
                let layout = Layout {
                    perm,
                    column_major: cols,
                };
                let q = unlay(&name, &shape, &layout, written)?;
                (
                    name,
                    shape,
                    dtype,
                    Encoding::Rows { bits, q, scales },
                    lqer,
                    layout,
                )
            }
            Entry::Tensor {
                name,
                shape,
                dtype,
                bits,
                scale_dtype,
                q,
                scale,
            } => {
                let q = ints(take(&name, q)?);
                let sb = take(&name, scale)?;
                let scale = match (scale_dtype, sb.len()) {
                    (DType::F32, 4) => Scale::F32(f32::from_le_bytes(sb.try_into().unwrap())),
                    (DType::F16, 2) => Scale::F16(f16::from_le_bytes(sb.try_into().unwrap())),
                    (d, n) => bail!("tensor {name}: {n}-byte {} scale", d.name()),
                };
                let t = Encoding::Tensor { bits, q, scale };
                (name, shape, dtype, t, None, Layout::default())
            }
        };
        let t = StoredTensor {
            name,
            shape,
            dtype,
            encoding,
            lqer,
            layout,
        };
        t.validate()?;
        if t.extended() && !extended {
            bail!(
                "tensor {}: an LQER correction or a layout in a version {VERSION} directory",
                t.name
            );
        }
        tensors.push(t);
    }
    used.sort_unstable();
    let mut next = 0;
    for r in used {
        if r[0] != next {
            bail!("payload ranges overlap or leave a gap at byte {next}");
        }
        next = r[0] + r[1];
    }
    if next != payload.len() {
        bail!(
            "payload has {} bytes, the directory accounts for {next}",
            payload.len()
        );
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("tensor {} appears twice", w[0]);
    }
    Ok((dir.config, tensors))
}

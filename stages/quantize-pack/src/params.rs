//! quantize-pack's params: the routing of every tensor (docs/ARTIFACT.md "Schemes"), the
//! compressor, and the size cap. Every field is optional; the defaults are the baseline's int8 with
//! zstd-22.

use pgolf_quant::{
    Codec, Compression, GptqSettings, LayoutSettings, LqerSettings, Override, Routing, Rule,
    SmallFloat,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub small_numel: usize,
    pub small_float: SmallFloat,
    pub control_patterns: Vec<String>,
    pub embed: Rule,
    pub attn: Rule,
    pub mlp: Rule,
    pub other: Rule,
    pub overrides: Vec<Override>,
    /// Replaces attn's and mlp's `clip_sigmas` when set (`--set quantize-pack.clip_sigmas=12,13`).
    pub clip_sigmas: Option<f64>,
    /// Replaces the `prune` fraction of the embed, attn, mlp and other rules when set
    /// (`--set quantize-pack.prune=0.03,0.05`); overrides keep their own.
    pub prune: Option<f64>,
    pub gptq: GptqSettings,
    /// LQER, the low-rank correction of the largest quantization errors (REFERENCE.md §5.12);
    /// `{enabled: true}` is R0427's rank 4, top 3, asymmetric INT2/INT4, group 64. Default off.
    pub lqer: LqerSettings,
    /// The per-group layout of the integers (REFERENCE.md §5.8); `{per_group: true}` is R0427's
    /// groups, row sort and column-major writing. Default off.
    pub layout: LayoutSettings,
    /// `zstd` (level 22), `brotli` (byte shuffle, quality 11), `zlib` (level 9), `lzma` (.xz,
    /// preset 6), or `none`.
    pub compressor: Codec,
    /// zstd level, brotli quality, zlib level or xz preset; default 22 / 11 / 9 / 6.
    pub level: Option<i32>,
    /// Byte-shuffle stride; default 2 for brotli, 1 (none) for zstd.
    pub shuffle: Option<u8>,
    pub brotli_lgwin: u32,
    /// Independently compressed chunks of the body (docs/ARTIFACT.md, frame version 2): they
    /// compress in parallel; a fixed count, so the bytes do not depend on the machine. Default 16.
    pub chunks: u32,
    /// The decimal artifact cap.
    pub cap_bytes: u64,
    /// A non-record run may exceed the cap (recorded, not fatal).
    pub non_record: bool,
}

impl Default for Params {
    fn default() -> Self {
        let r = Routing::default();
        let c = Compression::default();
        Params {
            small_numel: r.small_numel,
            small_float: r.small_float,
            control_patterns: r.control_patterns,
            embed: r.embed,
            attn: r.attn,
            mlp: r.mlp,
            other: r.other,
            overrides: r.overrides,
            clip_sigmas: r.clip_sigmas,
            prune: r.prune,
            gptq: GptqSettings::default(),
            lqer: LqerSettings::default(),
            layout: LayoutSettings::default(),
            compressor: c.codec,
            level: c.level,
            shuffle: c.shuffle,
            brotli_lgwin: c.brotli_lgwin,
            chunks: c.chunks,
            cap_bytes: 16_000_000,
            non_record: false,
        }
    }
}

impl Params {
    pub fn routing(&self) -> Routing {
        Routing {
            small_numel: self.small_numel,
            small_float: self.small_float,
            control_patterns: self.control_patterns.clone(),
            embed: self.embed.clone(),
            attn: self.attn.clone(),
            mlp: self.mlp.clone(),
            other: self.other.clone(),
            overrides: self.overrides.clone(),
            clip_sigmas: self.clip_sigmas,
            prune: self.prune,
        }
    }

    pub fn compression(&self) -> Compression {
        Compression {
            codec: self.compressor,
            level: self.level,
            shuffle: self.shuffle,
            brotli_lgwin: self.brotli_lgwin,
            chunks: self.chunks,
        }
    }
}

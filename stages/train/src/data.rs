//! Training batches and the validation tokens, from a tokenize output (or any folder with
//! `fineweb_{train,val}_*.bin` shards and `tokenizer.json`).
//!
//! Batches follow upstream's `DistributedTokenLoader` (REFERENCE.md §1.5): each micro-batch takes
//! `W · (local + 1)` tokens from the sequential stream, rank r keeps its span, `x = span[:-1]`,
//! `y = span[1:]`, both `[local/T, T]`; or R0405's shuffled windows (`[local/T, T]` from windows
//! of `T + 1`), or R0427's packed spans (one row `[1, local]` and its documents). Validation
//! follows `load_validation_tokens` (§1.4).

use anyhow::{bail, Context, Result};
use pgolf_data::sidecar::{read_sidecar, val_sidecars};
use pgolf_data::{
    list_shards, refuse_lookup_table_bytes, ByteLut, PackedSpans, Shard, ShuffledWindows, Split,
    TokenStream, TokenizerInfo,
};
use pgolf_model::cuda::to_device_async;
use pgolf_model::Documents;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

use crate::params::{BatchPlan, Loader};

/// One micro-batch on the device: `x`, `y` as `[rows, T]`, or one packed row `[1, local]` with
/// its documents (attention stays inside each).
pub struct MicroBatch {
    pub x: Tensor,
    pub y: Tensor,
    pub docs: Option<Documents>,
}

/// Where a loader's tokens come from.
enum Draw {
    Sequential(TokenStream),
    Shuffled(ShuffledWindows),
    Packed(PackedSpans),
}

/// The train split as per-step batches for one rank, drawn as `Params::loader` says.
pub struct BatchLoader {
    dir: PathBuf,
    paths: Vec<PathBuf>,
    kind: Loader,
    draw: Draw,
    plan: BatchPlan,
    rank: usize,
    vocab: usize,
    bos: u16,
    device: Device,
    /// Tokens taken from the train split so far (all ranks).
    pub tokens_taken: u64,
}

impl BatchLoader {
    pub fn open(
        dir: &Path,
        kind: Loader,
        plan: BatchPlan,
        rank: usize,
        vocab: usize,
        device: Device,
    ) -> Result<BatchLoader> {
        let paths = list_shards(dir, Split::Train)?;
        if paths.is_empty() {
            bail!("{}: no fineweb_train_*.bin shards", dir.display());
        }
        // Only packing reads the BOS (a document starts at it); the other draws ignore documents.
        let bos = match kind {
            Loader::Packed => {
                TokenizerInfo::read(dir)
                    .with_context(|| {
                        format!(
                            "{}: the data has no tokenizer.json (not a tokenize output?)",
                            dir.display()
                        )
                    })?
                    .bos_id as u16
            }
            Loader::Sequential | Loader::Shuffled => 0,
        };
        let draw = Self::draw(&paths, kind, &plan, rank, bos)?;
        Ok(BatchLoader {
            dir: dir.to_path_buf(),
            paths,
            kind,
            draw,
            plan,
            rank,
            vocab,
            bos,
            device,
            tokens_taken: 0,
        })
    }

    fn draw(
        paths: &[PathBuf],
        kind: Loader,
        plan: &BatchPlan,
        rank: usize,
        bos: u16,
    ) -> Result<Draw> {
        Ok(match kind {
            Loader::Sequential => Draw::Sequential(TokenStream::open(paths)?),
            Loader::Shuffled => Draw::Shuffled(ShuffledWindows::open(
                paths,
                rank,
                plan.world_size,
                plan.seq_len,
            )?),
            Loader::Packed => Draw::Packed(PackedSpans::open(
                paths,
                bos,
                (plan.local_tokens + 1) * plan.world_size,
            )?),
        })
    }

    /// The data's BOS id, read for the packed draw (a packed row's documents start at it).
    pub fn bos(&self) -> u16 {
        self.bos
    }

    /// Back to the first draw (after warm-up steps).
    pub fn restart(&mut self) -> Result<()> {
        self.draw = Self::draw(&self.paths, self.kind, &self.plan, self.rank, self.bos)?;
        self.tokens_taken = 0;
        Ok(())
    }

    /// This rank's tokens of one micro-batch: a span of `local + 1` (sequential, packed) or
    /// `local / T` windows of `T + 1` (shuffled), appended to `out`.
    fn draw_micro(&mut self, out: &mut Vec<i64>) -> Result<()> {
        let BatchPlan {
            world_size,
            local_tokens,
            seq_len,
            ..
        } = self.plan;
        let span = local_tokens + 1;
        let before = out.len();
        // Sequential and packed: every rank takes all ranks' spans and keeps its own.
        let rank = self.rank;
        let keep = |chunk: &[u16], out: &mut Vec<i64>| {
            let mine = &chunk[rank * span..(rank + 1) * span];
            out.extend(mine.iter().map(|&t| t as i64));
            chunk.len() as u64
        };
        match &mut self.draw {
            Draw::Sequential(stream) => {
                self.tokens_taken += keep(&stream.take(span * world_size), out)
            }
            Draw::Packed(spans) => self.tokens_taken += keep(spans.take(span * world_size), out),
            Draw::Shuffled(windows) => {
                // Every rank draws its own windows; the count is the same on each.
                for _ in 0..local_tokens / seq_len {
                    out.extend(windows.window().iter().map(|&t| t as i64));
                }
                self.tokens_taken += (local_tokens / seq_len * (seq_len + 1) * world_size) as u64;
            }
        }
        if let Some(&bad) = out[before..].iter().find(|&&t| t as usize >= self.vocab) {
            // Name the shard (a one-time scan, on the way out).
            let culprit = self.paths.iter().find_map(|p| {
                let shard = Shard::open(p).ok()?;
                let at = shard
                    .tokens()
                    .iter()
                    .position(|&t| t as usize >= self.vocab)?;
                Some(format!("{} (position {at})", p.display()))
            });
            bail!(
                "{}: train token id {bad} is outside the model's vocab of {} (shards from another tokenizer?)",
                culprit.unwrap_or_else(|| self.dir.display().to_string()),
                self.vocab
            );
        }
        Ok(())
    }

    /// The `grad_accum` micro-batches of one step for this rank, on the device: one
    /// host-to-device copy per step. On a GPU it is an asynchronous copy from pinned memory, so the
    /// host goes on issuing this step while the device still runs the previous one (a copy from
    /// pageable memory would wait for the device to drain).
    pub fn next_step(&mut self) -> Result<Vec<MicroBatch>> {
        let BatchPlan {
            grad_accum,
            local_tokens,
            seq_len,
            ..
        } = self.plan;
        let mut mine: Vec<i64> = Vec::new();
        for _ in 0..grad_accum {
            self.draw_micro(&mut mine)?;
        }
        let per_micro = (mine.len() / grad_accum) as i64;
        let host = Tensor::from_slice(&mine).view([grad_accum as i64, per_micro]);
        let all = to_device_async(&host, self.device);
        let (local, t) = (local_tokens as i64, seq_len as i64);
        let rows = local / t;
        (0..grad_accum as i64)
            .map(|k| {
                let s = all.get(k);
                Ok(match self.kind {
                    Loader::Sequential => MicroBatch {
                        x: s.narrow(0, 0, local).view([rows, t]),
                        y: s.narrow(0, 1, local).view([rows, t]),
                        docs: None,
                    },
                    Loader::Shuffled => {
                        // (Contiguous: the loss flattens the targets with a view.)
                        let w = s.view([rows, t + 1]);
                        MicroBatch {
                            x: w.narrow(1, 0, t).contiguous(),
                            y: w.narrow(1, 1, t).contiguous(),
                            docs: None,
                        }
                    }
                    Loader::Packed => {
                        // The documents from the host copy of the inputs (a BOS starts one).
                        let at = k as usize * per_micro as usize;
                        let inputs = &mine[at..at + local_tokens];
                        let docs = Documents::from_tokens(inputs, self.bos as i64, seq_len)
                            .to_device(self.device);
                        MicroBatch {
                            x: s.narrow(0, 0, local).view([1, local]),
                            y: s.narrow(0, 1, local).view([1, local]),
                            docs: Some(docs),
                        }
                    }
                })
            })
            .collect()
    }
}

/// The validation stream on the device, cut as upstream, with its byte count.
pub struct ValTokens {
    /// `usable + 1` tokens (i64, on the device).
    pub tokens: Tensor,
    pub seq_len: usize,
    /// Number of scored targets: `usable = floor((N − 1)/T)·T`.
    pub targets: u64,
    /// Bytes of those targets: from the byte sidecars when the data has them (REFERENCE.md §2.4),
    /// else charged by the tokenizer's tables (§2.2), which a text-transforming tokenizer refuses.
    pub bytes: u64,
}

impl ValTokens {
    /// Loads the val shards of `dir`, truncated to `max_tokens` (0 = all) and then to whole
    /// sequences, checks every id against the model's vocab, and counts the bytes.
    pub fn load(
        dir: &Path,
        seq_len: usize,
        vocab: usize,
        max_tokens: u64,
        device: Device,
    ) -> Result<ValTokens> {
        let lut = byte_tables(dir, vocab)?;
        let paths = list_shards(dir, Split::Val)?;
        if paths.is_empty() {
            bail!("{}: no fineweb_val_*.bin shards", dir.display());
        }
        let mut tokens: Vec<u16> = Vec::new();
        for p in &paths {
            tokens.extend_from_slice(Shard::open(p)?.tokens());
        }
        if max_tokens > 0 && tokens.len() as u64 > max_tokens + 1 {
            tokens.truncate(max_tokens as usize + 1);
        }
        let usable = (tokens.len().saturating_sub(1) / seq_len) * seq_len;
        if usable == 0 {
            bail!(
                "{}: the val split ({} tokens) is too short for one sequence of {seq_len}",
                dir.display(),
                tokens.len()
            );
        }
        tokens.truncate(usable + 1);
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            bail!(
                "{}: val token id {bad} is outside the model's vocab of {vocab}",
                dir.display()
            );
        }
        let bytes = match val_sidecars(&paths)? {
            Some(sidecars) => {
                let bos = TokenizerInfo::read(dir)?.bos_id as u16;
                let mut counts = Vec::with_capacity(tokens.len());
                for (shard, side) in paths.iter().zip(&sidecars) {
                    let shard = Shard::open(shard)?;
                    counts.extend(read_sidecar(side, &shard, bos)?);
                }
                counts[1..=usable].iter().map(|&c| c as u64).sum()
            }
            None => {
                refuse_lookup_table_bytes(dir)?;
                lut.sequence_bytes(&tokens)
            }
        };
        let as_i64: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let tokens = Tensor::from_slice(&as_i64).to_device(device);
        Ok(ValTokens {
            tokens,
            seq_len,
            targets: usable as u64,
            bytes,
        })
    }

    pub fn sequences(&self) -> usize {
        self.targets as usize / self.seq_len
    }
}

/// The byte tables of the data's tokenizer, widened to the model's vocab; a tokenizer larger than
/// the model is an error (its ids would index past the embedding).
fn byte_tables(dir: &Path, vocab: usize) -> Result<ByteLut> {
    let info = TokenizerInfo::read(dir).with_context(|| {
        format!(
            "{}: the data has no tokenizer.json (not a tokenize output?)",
            dir.display()
        )
    })?;
    if info.vocab_size as usize > vocab {
        bail!(
            "{}: tokenizer vocab {} is larger than the model's vocab {vocab}",
            dir.display(),
            info.vocab_size
        );
    }
    Ok(ByteLut::from_tokenize_output(dir)?.padded_to(vocab))
}

//! Training batches and the validation tokens, from a tokenize output (or any folder with
//! `fineweb_{train,val}_*.bin` shards and `tokenizer.json`).
//!
//! Batches follow upstream's `DistributedTokenLoader` (REFERENCE.md §1.5): each micro-batch takes
//! `W · (local + 1)` tokens from the sequential stream, rank r keeps its span, `x = span[:-1]`,
//! `y = span[1:]`, both `[local/T, T]`. Validation follows `load_validation_tokens` (§1.4).

use anyhow::{bail, Context, Result};
use pgolf_data::sidecar::{read_sidecar, val_sidecars};
use pgolf_data::{
    list_shards, refuse_lookup_table_bytes, ByteLut, Shard, Split, TokenStream, TokenizerInfo,
};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::params::BatchPlan;

/// The train split as a stream of per-step batches for one rank.
pub struct BatchLoader {
    dir: PathBuf,
    paths: Vec<PathBuf>,
    stream: TokenStream,
    plan: BatchPlan,
    rank: usize,
    vocab: usize,
    device: Device,
    /// Tokens taken from the stream so far (all ranks).
    pub tokens_taken: u64,
}

impl BatchLoader {
    pub fn open(
        dir: &Path,
        plan: BatchPlan,
        rank: usize,
        vocab: usize,
        device: Device,
    ) -> Result<BatchLoader> {
        let paths = list_shards(dir, Split::Train)?;
        if paths.is_empty() {
            bail!("{}: no fineweb_train_*.bin shards", dir.display());
        }
        let stream = TokenStream::open(&paths)?;
        Ok(BatchLoader {
            dir: dir.to_path_buf(),
            paths,
            stream,
            plan,
            rank,
            vocab,
            device,
            tokens_taken: 0,
        })
    }

    /// Back to the first token of the first shard (after warm-up steps).
    pub fn restart(&mut self) -> Result<()> {
        self.stream = TokenStream::open(&self.paths)?;
        self.tokens_taken = 0;
        Ok(())
    }

    /// The `grad_accum` micro-batches `(x, y)` of one step for this rank, on the device: one
    /// host-to-device copy per step. On a GPU it is an asynchronous copy from pinned memory, so the
    /// host goes on issuing this step while the device still runs the previous one (a copy from
    /// pageable memory would wait for the device to drain).
    pub fn next_step(&mut self) -> Result<Vec<(Tensor, Tensor)>> {
        let BatchPlan {
            world_size,
            grad_accum,
            local_tokens,
            seq_len,
        } = self.plan;
        let span = local_tokens + 1;
        let mut mine: Vec<i64> = Vec::with_capacity(grad_accum * span);
        for _ in 0..grad_accum {
            let chunk = self.stream.take(span * world_size);
            self.tokens_taken += chunk.len() as u64;
            let rank_span = &chunk[self.rank * span..(self.rank + 1) * span];
            if let Some(&bad) = rank_span.iter().find(|&&t| t as usize >= self.vocab) {
                // Name the shard (a one-time scan, on the way out).
                let culprit = self.paths.iter().find_map(|p| {
                    let shard = pgolf_data::Shard::open(p).ok()?;
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
            mine.extend(rank_span.iter().map(|&t| t as i64));
        }
        let host = Tensor::from_slice(&mine).view([grad_accum as i64, span as i64]);
        // (Should pinning fail, the plain copy is as correct, only slower.)
        let all = match self.device {
            Device::Cuda(_) => host
                .f_pin_memory(self.device)
                .and_then(|pinned| pinned.f_to_device_(self.device, Kind::Int64, true, false))
                .unwrap_or_else(|_| host.to_device(self.device)),
            _ => host.to_device(self.device),
        };
        let rows = (local_tokens / seq_len) as i64;
        Ok((0..grad_accum as i64)
            .map(|k| {
                let s = all.get(k);
                let x = s
                    .narrow(0, 0, local_tokens as i64)
                    .view([rows, seq_len as i64]);
                let y = s
                    .narrow(0, 1, local_tokens as i64)
                    .view([rows, seq_len as i64]);
                (x, y)
            })
            .collect())
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

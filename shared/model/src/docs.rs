//! Documents packed into one row (R0427's `DocumentPackingLoader` and `eval_val`, REFERENCE.md
//! §1.5): where each document's segment starts, and causal attention that stays inside a segment.
//!
//! A row of T tokens is cut at every BOS (and at 0: a row may begin mid-document), and each piece
//! longer than `max_len` into `max_len`-token segments from its start (R0427's
//! `_build_cu_seqlens`). A position attends to the earlier positions of its own segment only, so
//! nothing crosses a BOS. On CUDA in bf16/f16 the attention is libtorch's FlashAttention-2 varlen
//! kernel over the cumulative lengths (`pgolf_runtime::attention`, no dense mask); elsewhere the
//! per-document reference ([`per_document_attention`]): one causal SDPA per segment, which is
//! also the oracle the kernel is checked against. Positions (RoPE) stay the row's, as in R0427:
//! attention depends only on their differences, which the cut does not change.

use anyhow::{ensure, Result};
use pgolf_runtime::attention::{flash_varlen_causal, flash_varlen_supported};
use tch::{Device, Kind, Tensor};

/// R0427 pads `cu_seqlens` to a multiple of this many entries (with the row length: empty
/// segments), so that a few buffer shapes serve every batch (one CUDA graph per shape here).
pub const CU_BUCKET: usize = 64;

/// The segments of one packed row.
#[derive(Debug)]
pub struct Documents {
    /// `[0, s₁, …, T]`: segment `i` is `[bounds[i], bounds[i+1])`, none empty, none longer than
    /// `max_len`.
    bounds: Vec<i64>,
    /// `bounds` as int32, padded with `T` to `cu.size(0)` entries, on the attention's device.
    cu: Tensor,
    /// The kernel's `max_seqlen`: the cap `max_len` (R0427 passes `train_seq_len`), so that the
    /// launch shape does not depend on the batch.
    max_len: i64,
}

impl Clone for Documents {
    fn clone(&self) -> Self {
        Documents {
            bounds: self.bounds.clone(),
            cu: self.cu.shallow_clone(),
            max_len: self.max_len,
        }
    }
}

impl Documents {
    /// The segments of a row of token ids: a cut at each `bos` and every `max_len` tokens after a
    /// cut; `cu_seqlens` padded to a multiple of [`CU_BUCKET`] entries, on the CPU.
    pub fn from_tokens<T: Copy + Into<i64>>(tokens: &[T], bos: i64, max_len: usize) -> Documents {
        let starts = tokens
            .iter()
            .enumerate()
            .filter(|(_, &t)| t.into() == bos)
            .map(|(i, _)| i);
        Documents::from_starts(starts, tokens.len(), max_len)
    }

    /// The segments of a row of `total` tokens whose documents start at `starts` (ascending, each
    /// below `total`; 0 is added when missing).
    pub fn from_starts(
        starts: impl IntoIterator<Item = usize>,
        total: usize,
        max_len: usize,
    ) -> Documents {
        assert!(max_len > 0, "documents: max_len must be positive");
        let mut cuts: Vec<usize> = vec![0];
        cuts.extend(starts.into_iter().filter(|&s| s > 0));
        cuts.push(total);
        let mut bounds = Vec::with_capacity(cuts.len() + 1);
        for w in cuts.windows(2) {
            let (start, end) = (w[0], w[1]);
            assert!(
                start <= end && end <= total,
                "documents: starts must ascend below the row length"
            );
            let mut pos = start;
            while pos < end {
                bounds.push(pos as i64);
                pos += max_len;
            }
        }
        bounds.push(total as i64);
        bounds.dedup();
        let entries = bounds.len().div_ceil(CU_BUCKET) * CU_BUCKET;
        let cu = Documents::padded_cu(&bounds, entries);
        Documents {
            bounds,
            cu,
            max_len: max_len as i64,
        }
    }

    fn padded_cu(bounds: &[i64], entries: usize) -> Tensor {
        let total = *bounds.last().expect("bounds end with the row length") as i32;
        let mut cu: Vec<i32> = bounds.iter().map(|&b| b as i32).collect();
        cu.resize(entries.max(bounds.len()), total);
        Tensor::from_slice(&cu)
    }

    /// The same segments with `cu_seqlens` padded to `entries` (≥ [`Documents::entries_needed`]).
    pub fn with_entries(&self, entries: usize) -> Result<Documents> {
        ensure!(
            entries >= self.bounds.len(),
            "documents: {} segments need {} cu_seqlens entries, not {entries}",
            self.segments(),
            self.bounds.len()
        );
        Ok(Documents {
            bounds: self.bounds.clone(),
            cu: Documents::padded_cu(&self.bounds, entries).to_device(self.cu.device()),
            max_len: self.max_len,
        })
    }

    /// `cu_seqlens` on `device` (the host bounds stay for the reference path), copied
    /// asynchronously so that a training step's host side does not wait for the device.
    pub fn to_device(&self, device: Device) -> Documents {
        Documents {
            bounds: self.bounds.clone(),
            cu: pgolf_runtime::cuda::to_device_async(&self.cu, device),
            max_len: self.max_len,
        }
    }

    /// Writes these segments into `target`'s `cu_seqlens` buffer in place (same row length and
    /// cap, enough entries): a CUDA graph captured with `target` then replays with these. The
    /// host bounds of `target` are not changed: only the kernel path may read a buffer a graph
    /// replays (see [`attention`]).
    pub fn copy_into(&self, target: &Documents) -> Result<()> {
        ensure!(
            target.total() == self.total() && target.max_len == self.max_len,
            "documents: a row of {} tokens (cap {}) copied into one of {} (cap {})",
            self.total(),
            self.max_len,
            target.total(),
            target.max_len
        );
        let entries = target.cu.size()[0];
        ensure!(
            self.bounds.len() as i64 <= entries,
            "documents: {} segments need {} cu_seqlens entries, the buffer has {entries}",
            self.segments(),
            self.bounds.len()
        );
        // Padded (or cut back to the buffer: past the bounds every entry is the row length) on
        // the buffer's device, so that no copy waits for the device.
        let cu = self.cu.to_device(target.cu.device());
        let have = cu.size()[0];
        let src = if have >= entries {
            cu.narrow(0, 0, entries)
        } else {
            let pad = Tensor::full(
                [entries - have],
                self.total(),
                (Kind::Int, target.cu.device()),
            );
            Tensor::cat(&[cu, pad], 0)
        };
        target.cu.shallow_clone().copy_(&src);
        Ok(())
    }

    /// Segment boundaries `[0, …, T]` (unpadded).
    pub fn bounds(&self) -> &[i64] {
        &self.bounds
    }

    pub fn segments(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The `cu_seqlens` entries these segments need (segments + 1).
    pub fn entries_needed(&self) -> usize {
        self.bounds.len()
    }

    /// The padded int32 `cu_seqlens`.
    pub fn cu_seqlens(&self) -> &Tensor {
        &self.cu
    }

    pub fn max_len(&self) -> i64 {
        self.max_len
    }

    /// The row length T.
    pub fn total(&self) -> i64 {
        *self.bounds.last().expect("bounds end with the row length")
    }
}

/// Causal attention within the segments of `docs` for `q: [1, H, T, hd]`, `k, v: [1, Hkv, T, hd]`
/// (GQA when `Hkv < H`): the FlashAttention varlen kernel on CUDA in bf16/f16, else
/// [`per_document_attention`]. Returns `[1, H, T, hd]` (as SDPA does).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, docs: &Documents) -> Tensor {
    check_shapes(q, docs);
    if flash_varlen_supported(q.device(), q.kind()) {
        // [1, H, T, hd] → [T, H, hd] (a view of the projections' [1, T, H, hd]).
        let row = |t: &Tensor| t.get(0).transpose(0, 1);
        let y = flash_varlen_causal(&row(q), &row(k), &row(v), &docs.cu, docs.max_len)
            .unwrap_or_else(|e| panic!("{e:#}"));
        y.transpose(0, 1).unsqueeze(0)
    } else {
        per_document_attention(q, k, v, docs)
    }
}

/// The reference: one causal SDPA per segment (from the host bounds), concatenated along T.
pub fn per_document_attention(q: &Tensor, k: &Tensor, v: &Tensor, docs: &Documents) -> Tensor {
    check_shapes(q, docs);
    let gqa = k.size()[1] != q.size()[1];
    let pieces: Vec<Tensor> = docs
        .bounds
        .windows(2)
        .map(|w| {
            let (start, len) = (w[0], w[1] - w[0]);
            let part = |t: &Tensor| t.narrow(2, start, len);
            Tensor::scaled_dot_product_attention(
                &part(q),
                &part(k),
                &part(v),
                None::<Tensor>,
                0.0,
                true,
                None,
                gqa,
            )
        })
        .collect();
    Tensor::cat(&pieces, 2)
}

fn check_shapes(q: &Tensor, docs: &Documents) {
    let size = q.size();
    assert!(
        size.len() == 4 && size[0] == 1 && size[2] == docs.total(),
        "packed attention: q {size:?} is not one row of the documents' {} tokens",
        docs.total()
    );
}

/// Whether [`attention`] runs the kernel (which reads only `cu_seqlens`, so a CUDA graph may
/// replay it with new documents copied in) for activations of `kind` on `device`.
pub fn kernel_path(device: Device, kind: Kind) -> bool {
    flash_varlen_supported(device, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R0427's `_build_cu_seqlens`: a cut at 0 and every BOS, long pieces split every `max_len`
    /// from their start, padded to 64 entries with the row length.
    #[test]
    fn segments_follow_r0427s_cu_seqlens() {
        let mut row = vec![5i64; 20];
        for &b in &[3usize, 4, 15] {
            row[b] = 1;
        }
        let d = Documents::from_tokens(&row, 1, 6);
        // [0,3) [3,4) [4,10) [10,15) [15,20)
        assert_eq!(d.bounds(), &[0, 3, 4, 10, 15, 20]);
        assert_eq!(d.segments(), 5);
        let cu: Vec<i32> = Vec::try_from(d.cu_seqlens()).unwrap();
        assert_eq!(cu.len(), 64);
        assert_eq!(&cu[..7], &[0, 3, 4, 10, 15, 20, 20]);
        assert!(cu[6..].iter().all(|&c| c == 20));
        // A row starting at a BOS does not get an empty first segment.
        let d = Documents::from_tokens(&[1i64, 7, 7, 1, 7], 1, 2048);
        assert_eq!(d.bounds(), &[0, 3, 5]);
        assert_eq!(d.with_entries(3).unwrap().cu_seqlens().size(), vec![3]);
        assert!(d.with_entries(2).is_err());
        // 64 boundaries need the next bucket.
        let many = Documents::from_starts(1..64, 64, 2048);
        assert_eq!(
            (many.entries_needed(), many.cu_seqlens().size()[0]),
            (65, 128)
        );
    }

    /// The reference equals a dense block-diagonal causal mask (built here only), and no output
    /// position depends on another segment's inputs.
    #[test]
    fn per_document_attention_is_block_diagonal_causal() {
        tch::manual_seed(5);
        let (h, hkv, t, hd) = (4, 2, 23, 8);
        let opts = (Kind::Double, Device::Cpu);
        let q = Tensor::randn([1, h, t, hd], opts);
        let k = Tensor::randn([1, hkv, t, hd], opts);
        let v = Tensor::randn([1, hkv, t, hd], opts);
        let docs = Documents::from_starts([5, 6, 14], t as usize, 5);
        let y = attention(&q, &k, &v, &docs);
        let seg: Vec<i64> = (0..t)
            .map(|p| {
                docs.bounds()
                    .windows(2)
                    .position(|w| w[0] <= p && p < w[1])
                    .unwrap() as i64
            })
            .collect();
        let seg = Tensor::from_slice(&seg);
        let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu));
        let allowed = seg
            .unsqueeze(1)
            .eq_tensor(&seg.unsqueeze(0))
            .logical_and(&pos.unsqueeze(1).ge_tensor(&pos.unsqueeze(0)));
        let kx = k.repeat_interleave_self_int(h / hkv, 1, None);
        let vx = v.repeat_interleave_self_int(h / hkv, 1, None);
        let dense = Tensor::scaled_dot_product_attention(
            &q,
            &kx,
            &vx,
            Some(allowed),
            0.0,
            false,
            None,
            false,
        );
        let diff = (&y - dense).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "reference vs dense mask: {diff}");
        // Change every input of segment [6, 11): only its own outputs move.
        let bump = |t: &Tensor| {
            let t = t.copy();
            let _ = t.narrow(2, 6, 5).shallow_clone().g_add_scalar_(1.0);
            t
        };
        let y2 = attention(&bump(&q), &bump(&k), &bump(&v), &docs);
        let moved = (&y2 - &y).abs().amax([0, 1, 3], false);
        for p in 0..t {
            let m = moved.double_value(&[p]);
            if (6..11).contains(&p) {
                assert!(m > 1e-3, "position {p} should move");
            } else {
                assert_eq!(m, 0.0, "position {p} moved by {m}");
            }
        }
    }

    /// On a CUDA machine: the FlashAttention varlen kernel equals the per-document reference in
    /// the forward and the backward (bf16 tolerance), and `copy_into` retargets a buffer.
    #[test]
    fn the_kernel_matches_the_reference_on_cuda() {
        if !tch::Cuda::is_available() {
            return;
        }
        tch::manual_seed(6);
        let dev = Device::Cuda(0);
        let (h, hkv, t, hd) = (8, 4, 700, 64);
        let opts = (Kind::BFloat16, dev);
        let mk = |heads| Tensor::randn([1, heads, t, hd], opts).set_requires_grad(true);
        let (q, k, v) = (mk(h), mk(hkv), mk(hkv));
        let docs = Documents::from_starts([1, 100, 101, 350], t as usize, 256).to_device(dev);
        let y = attention(&q, &k, &v, &docs);
        let g = Tensor::randn_like(&y);
        let grads = |y: &Tensor| {
            let gs =
                Tensor::run_backward(&[(y * &g).sum(Kind::Float)], &[&q, &k, &v], false, false);
            gs.iter()
                .map(|t| t.to_kind(Kind::Float))
                .collect::<Vec<_>>()
        };
        let fast = grads(&y);
        let r = per_document_attention(&q, &k, &v, &docs);
        let reference = grads(&r);
        let rel = |a: &Tensor, b: &Tensor| {
            let a = a.to_kind(Kind::Float);
            let b = b.to_kind(Kind::Float);
            ((&a - &b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-12)) as f32
        };
        assert!(rel(&y, &r) < 1e-2, "forward {}", rel(&y, &r));
        for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(fast.iter().zip(&reference)) {
            assert!(rel(a, b) < 2e-2, "{name} {}", rel(a, b));
        }
        let other = Documents::from_starts([10, 20], t as usize, 256);
        other.copy_into(&docs).unwrap();
        let cu: Vec<i32> = Vec::try_from(docs.cu_seqlens().to_device(Device::Cpu)).unwrap();
        assert_eq!(&cu[..5], &[0, 10, 20, 276, 532]);
    }
}

//! The per-group layout (REFERENCE.md §5.8; R0427's `COMPRESSOR=pergroup`): the integers of the
//! quantized matrices are written grouped by role (`tok_emb.weight`, then every layer's
//! `attn.c_k.weight`, `attn.c_q.weight`, … in layer order), the rows of the matrices of some roles
//! reordered by a greedy L1 nearest-neighbour chain (the permutation is stored), and every grouped
//! matrix written column-major, so that similar bytes sit together for the compressor. The values
//! do not change; only where their integers lie in the body ([`crate::encoded::Layout`]).
//!
//! The record compresses each group on its own with lrzip/ZPAQ; here the whole body still goes
//! through the artifact's compressor (docs/ARTIFACT.md says why there is no ZPAQ).

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::encoded::{Encoding, Layout, StoredTensor};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LayoutSettings {
    /// Off by default: tensors are written in their order, row-major.
    pub per_group: bool,
    /// The roles (a name without its `blocks.N.` prefix), in the order their groups are written;
    /// other tensors follow in their own order.
    pub groups: Vec<String>,
    /// The roles whose matrices' rows are reordered by [`similarity_order`].
    pub sort: Vec<String>,
    /// Write the grouped matrices column by column.
    pub column_major: bool,
}

impl Default for LayoutSettings {
    /// R0427's `_GROUP_ORDER` and `_SIMSORT_KEYS`, switched off.
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        LayoutSettings {
            per_group: false,
            groups: s(&[
                "tok_emb.weight",
                "attn.c_k.weight",
                "attn.c_q.weight",
                "attn.c_v.weight",
                "attn.proj.weight",
                "mlp.fc.weight",
                "mlp.proj.weight",
            ]),
            sort: s(&["tok_emb.weight", "attn.c_q.weight", "mlp.fc.weight"]),
            column_major: true,
        }
    }
}

impl LayoutSettings {
    pub fn validate(&self) -> Result<()> {
        if let Some(r) = self.sort.iter().find(|r| !self.groups.contains(r)) {
            bail!("layout: sort names {r:?}, which is not one of the groups");
        }
        Ok(())
    }
}

/// A tensor's role and layer: `blocks.3.mlp.fc.weight` → (`mlp.fc.weight`, 3); names outside the
/// blocks are their own role, layer 0.
pub fn role(name: &str) -> (&str, usize) {
    let mut parts = name.splitn(3, '.');
    if let (Some("blocks"), Some(i), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        if let Ok(layer) = i.parse() {
            return (rest, layer);
        }
    }
    (name, 0)
}

/// Sets the layout of every quantized matrix (a `rows` tensor of two dimensions) whose role is one
/// of the groups, and returns the order to write the tensors in: the groups in order, each by
/// layer, then every other tensor in its given order. Off: no change, the given order.
pub fn apply(stored: &mut [StoredTensor], s: &LayoutSettings) -> Result<Vec<usize>> {
    s.validate()?;
    if !s.per_group {
        return Ok((0..stored.len()).collect());
    }
    let group_of = |t: &StoredTensor| -> Option<(usize, usize)> {
        let grouped = matches!(t.encoding, Encoding::Rows { .. }) && t.shape.len() == 2;
        let (r, layer) = role(&t.name);
        let g = s.groups.iter().position(|x| x == r)?;
        grouped.then_some((g, layer))
    };
    stored.par_iter_mut().for_each(|t| {
        let Some((g, _)) = group_of(t) else { return };
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let sort = s.sort.contains(&s.groups[g]) && rows <= 1 << 16;
        let perm = match &t.encoding {
            Encoding::Rows { q, .. } if sort => Some(similarity_order(q, rows, cols)),
            _ => None,
        };
        t.layout = Layout {
            perm,
            column_major: s.column_major,
        };
    });
    let mut order: Vec<usize> = (0..stored.len()).collect();
    // Stable: tensors of one group and layer keep their order; ungrouped ones sort last.
    order.sort_by_key(|&i| group_of(&stored[i]).unwrap_or((usize::MAX, 0)));
    Ok(order)
}

/// The greedy L1 nearest-neighbour chain of R0427's `_similarity_sort_l1`: start at row 0, then
/// repeatedly append the unused row closest in L1 distance to the last appended one (the lowest
/// index among equally close ones, as numpy's `argmin` over the unused rows in order). Rows ≤
/// 65,536 (the permutation is u16).
pub fn similarity_order(q: &[i8], rows: usize, cols: usize) -> Vec<u16> {
    assert!(rows <= 1 << 16 && q.len() == rows * cols);
    if rows == 0 {
        return Vec::new();
    }
    // Offset binary keeps differences (x ↦ x + 128 is monotone) and lets |a − b| be u8 arithmetic.
    let u: Vec<u8> = q.iter().map(|v| (*v as u8) ^ 0x80).collect();
    let row = |i: usize| &u[i * cols..(i + 1) * cols];
    let mut remaining: Vec<u32> = (1..rows as u32).collect();
    let mut order = Vec::with_capacity(rows);
    order.push(0u16);
    let mut cur = 0usize;
    while !remaining.is_empty() {
        let c = row(cur);
        let dist = |j: &u32| -> (u32, u32) {
            let d = row(*j as usize)
                .iter()
                .zip(c)
                .map(|(a, b)| a.abs_diff(*b) as u32)
                .sum();
            (d, *j)
        };
        // Min of (distance, index): the lowest index wins a tie.
        let best = if remaining.len() * cols > 1 << 16 {
            remaining.par_iter().map(dist).min()
        } else {
            remaining.iter().map(dist).min()
        };
        let (_, j) = best.expect("rows remain");
        let at = remaining.binary_search(&j).expect("a remaining row");
        remaining.remove(at);
        order.push(j as u16);
        cur = j as usize;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use half::f16;

    #[test]
    fn roles_strip_the_block_prefix() {
        assert_eq!(role("blocks.10.mlp.fc.weight"), ("mlp.fc.weight", 10));
        assert_eq!(role("tok_emb.weight"), ("tok_emb.weight", 0));
        assert_eq!(role("blocks.x.y"), ("blocks.x.y", 0));
    }

    /// The chain by brute force, as the record writes it.
    fn reference_order(q: &[i8], rows: usize, cols: usize) -> Vec<u16> {
        let mut used = vec![false; rows];
        let mut order = vec![0u16];
        used[0] = true;
        let mut cur = 0;
        for _ in 1..rows {
            let mut best: Option<(i64, usize)> = None;
            for j in (0..rows).filter(|j| !used[*j]) {
                let d: i64 = (0..cols)
                    .map(|c| (q[j * cols + c] as i64 - q[cur * cols + c] as i64).abs())
                    .sum();
                if best.is_none_or(|b| d < b.0) {
                    best = Some((d, j));
                }
            }
            let j = best.unwrap().1;
            used[j] = true;
            order.push(j as u16);
            cur = j;
        }
        order
    }

    #[test]
    fn the_chain_takes_the_nearest_unused_row_and_the_lowest_index_on_ties() {
        // Rows 0: [0,0], 1: [5,5], 2: [1,0], 3: [0,1] (ties with 2 from row 0), 4: [−128, 127].
        let q = [0i8, 0, 5, 5, 1, 0, 0, 1, -128, 127];
        assert_eq!(similarity_order(&q, 5, 2), vec![0, 2, 3, 1, 4]);
        let mut seed = 3u64;
        for (rows, cols) in [(1, 4), (2, 1), (37, 9), (300, 300)] {
            let q: Vec<i8> = (0..rows * cols)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    // A few levels only, so ties happen.
                    ((seed >> 60) as i8) - 8
                })
                .collect();
            let order = similarity_order(&q, rows, cols);
            assert_eq!(order, reference_order(&q, rows, cols), "{rows}×{cols}");
        }
    }

    fn rows_tensor(name: &str, rows: usize, cols: usize) -> StoredTensor {
        StoredTensor {
            name: name.into(),
            shape: vec![rows, cols],
            dtype: DType::F32,
            encoding: Encoding::Rows {
                bits: 6,
                q: (0..rows * cols).map(|i| (i % 7) as i8 - 3).collect(),
                scales: vec![f16::from_f32(0.5); rows],
            },
            lqer: None,
            layout: Layout::default(),
        }
    }

    #[test]
    fn groups_come_first_by_role_then_layer_and_others_keep_their_order() {
        let mut stored = vec![
            rows_tensor("blocks.0.attn.c_q.weight", 4, 3),
            rows_tensor("blocks.0.mlp.fc.weight", 4, 3),
            rows_tensor("blocks.1.attn.c_q.weight", 4, 3),
            rows_tensor("blocks.10.attn.c_k.weight", 4, 3),
            rows_tensor("blocks.2.attn.c_k.weight", 4, 3),
            rows_tensor("other.weight", 4, 3),
            rows_tensor("tok_emb.weight", 4, 3),
        ];
        let off = apply(&mut stored.clone(), &LayoutSettings::default()).unwrap();
        assert_eq!(off, (0..7).collect::<Vec<_>>());
        let on = LayoutSettings {
            per_group: true,
            ..LayoutSettings::default()
        };
        let order = apply(&mut stored, &on).unwrap();
        assert_eq!(order, vec![6, 4, 3, 0, 2, 1, 5]);
        assert!(stored[0].layout.perm.is_some() && stored[0].layout.column_major);
        assert!(stored[3].layout.perm.is_none() && stored[3].layout.column_major); // c_k: not sorted
        assert_eq!(stored[5].layout, Layout::default());
        let bad = LayoutSettings {
            sort: vec!["x".into()],
            ..on
        };
        assert!(apply(&mut stored, &bad).is_err());
    }
}

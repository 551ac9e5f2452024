//! The decoder's LQER correction and row layouts (docs/ARTIFACT.md): a corrected `rows` tensor
//! decodes to `Q·s + A·B`, then the dtype's rounding; malformed corrections and permutations are
//! refused with the reason.

use half::f16;
use pgolf_evaluator::container::{Factor, Layout, LowRank};
use pgolf_evaluator::{DType, Encoding, Scale, StoredTensor};

fn h(v: f32) -> f16 {
    f16::from_f32(v)
}

/// 3 × 4, int6, scales 0.5 / 0.25 / 1; a rank-2 correction with INT2 A (one scale 0.125) and INT4 B
/// in groups of 4 (scales 0.5, 0.25). Every value is a short dyadic fraction, so f32 is exact.
fn corrected(dtype: DType) -> StoredTensor {
    StoredTensor {
        name: "blocks.0.mlp.fc.weight".into(),
        shape: vec![3, 4],
        dtype,
        encoding: Encoding::Rows {
            bits: 6,
            q: vec![1, -2, 3, 0, 31, -31, 5, 6, 0, 0, 1, -1],
            scales: vec![h(0.5), h(0.25), h(1.0)],
        },
        lqer: Some(LowRank {
            rank: 2,
            a: Factor {
                bits: 2,
                group: 6,
                q: vec![1, -2, 0, 1, -1, -1],
                scales: vec![h(0.125)],
            },
            b: Factor {
                bits: 4,
                group: 4,
                q: vec![7, -8, 0, 1, 2, 3, -4, 5],
                scales: vec![h(0.5), h(0.25)],
            },
        }),
        layout: Layout::default(),
    }
}

#[test]
fn a_correction_adds_a_times_b_to_the_dequantized_rows() {
    let t = corrected(DType::F32);
    let w = [
        [1.0, -2.0, 3.0, 0.0],
        [31.0, -31.0, 5.0, 6.0],
        [0.0, 0.0, 1.0, -1.0],
    ];
    let s = [0.5, 0.25, 1.0];
    let a = [[1.0, -2.0], [0.0, 1.0], [-1.0, -1.0]].map(|r| r.map(|v: f64| v * 0.125));
    let b = [
        [7.0 * 0.5, -8.0 * 0.5, 0.0, 0.5],
        [2.0 * 0.25, 3.0 * 0.25, -4.0 * 0.25, 5.0 * 0.25],
    ];
    let got = t.dequantize().unwrap();
    for i in 0..3 {
        for j in 0..4 {
            let expect = w[i][j] * s[i] + a[i][0] * b[0][j] + a[i][1] * b[1][j];
            assert_eq!(got[i * 4 + j] as f64, expect, "({i}, {j})");
        }
    }
    // Without the correction: Q·s.
    let plain = StoredTensor {
        lqer: None,
        ..t.clone()
    };
    let base = plain.dequantize().unwrap();
    assert_eq!(base[4], 31.0 * 0.25);
    assert_ne!(base, got);
    // bf16: the f32 sum is rounded once, after the correction.
    let bf = corrected(DType::Bf16).dequantize().unwrap();
    for (x, y) in bf.iter().zip(&got) {
        assert_eq!(*x, half::bf16::from_f32(*y).to_f32());
    }
}

#[test]
fn malformed_corrections_and_layouts_are_refused() {
    let err = |t: StoredTensor| t.validate().unwrap_err().to_string();
    let with_a = |f: &dyn Fn(&mut Factor)| {
        let mut t = corrected(DType::F32);
        f(&mut t.lqer.as_mut().unwrap().a);
        t
    };
    // INT2 holds −2..=1: 2 is outside.
    let e = err(with_a(&|a| a.q[0] = 2));
    assert!(e.contains("LQER integer 2 outside -2..=1"), "{e}");
    let e = err(with_a(&|a| a.q.push(0)));
    assert!(e.contains("expected 6"), "{e}");
    let e = err(with_a(&|a| a.group = 0));
    assert!(e.contains("group 0"), "{e}");
    let e = err(with_a(&|a| a.scales.push(h(1.0))));
    assert!(
        e.contains("2 LQER scales for 6 values in groups of 6"),
        "{e}"
    );
    let mut t = corrected(DType::F32);
    t.lqer.as_mut().unwrap().rank = 0;
    assert!(err(t).contains("LQER rank 0"));
    // Only rows tensors carry corrections or layouts.
    let mut t = corrected(DType::F32);
    t.encoding = Encoding::Tensor {
        bits: 6,
        q: vec![0; 12],
        scale: Scale::F16(h(1.0)),
    };
    assert!(err(t).contains("needs a rows encoding"));
    for (perm, what) in [
        (vec![0u16, 1, 1], "not a permutation of 0..3"),
        (vec![0, 1, 3], "not a permutation of 0..3"),
        (vec![2, 0], "row permutation of 2 for 3 rows"),
    ] {
        let mut t = corrected(DType::F32);
        t.layout.perm = Some(perm);
        let e = err(t);
        assert!(e.contains(what), "{e}");
    }
    let mut t = corrected(DType::F32);
    t.layout = Layout {
        perm: Some(vec![2, 0, 1]),
        column_major: true,
    };
    t.validate().unwrap();
}

#[test]
fn layout_positions_follow_the_permutation_then_the_column_order() {
    let l = Layout {
        perm: Some(vec![2, 0, 1]),
        column_major: true,
    };
    let inv = l.inverse("t", 3).unwrap();
    assert_eq!(inv, vec![1, 2, 0]);
    // Row 2 is written first; column-major over 3 rows: (r, c) at c·3 + k.
    assert_eq!(l.position(&inv, 3, 4, 2, 0), 0);
    assert_eq!(l.position(&inv, 3, 4, 0, 0), 1);
    assert_eq!(l.position(&inv, 3, 4, 0, 1), 4);
    let rows_only = Layout {
        column_major: false,
        ..l.clone()
    };
    assert_eq!(rows_only.position(&inv, 3, 4, 0, 1), 5);
    let none = Layout::default();
    assert_eq!(none.position(&[], 3, 4, 2, 3), 11);
}

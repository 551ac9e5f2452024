//! Comparisons the ops' CPU tests share.

use tch::Tensor;

/// The largest |a − b|.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Each `(got, want)` pair has one shape and differs by less than `tol` everywhere.
pub(crate) fn assert_all_close<'a>(
    pairs: impl IntoIterator<Item = (&'a Tensor, &'a Tensor)>,
    tol: f64,
) {
    for (got, want) in pairs {
        assert_eq!(got.size(), want.size());
        let e = max_abs_diff(got, want);
        assert!(e < tol, "differs by {e:e}");
    }
}

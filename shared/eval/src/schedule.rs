//! Window schedules: which token spans the model sees and which of their targets each one scores.
//!
//! Positions index the validation stream `x_0 … x_N−1`. Target `t` (1 ≤ t ≤ N−1) is token `x_t`,
//! predicted from `x_0 … x_t−1`. A [`Window`] feeds `x[start .. start+len]` and predicts the
//! targets `start+1 ..= start+len`; it scores only those from `score_from` on. Every schedule here
//! scores each target of its range exactly once (C4); [`check_single_pass`] proves it for a list.

use anyhow::{bail, Result};
use std::ops::Range;

/// The window type and the flat and sliding schedules are the counted evaluator's (one definition
/// for every evaluator); the TTT schedules and the single-pass proof are here.
pub use pgolf_evaluator::score::{flat, sliding, Window};

/// Doc-isolated chunks for per-document TTT (§5.2): the document's BOS is at `bos`, its targets are
/// `bos+1 .. end` (the last one the next document's BOS, or the stream's last token). Chunk `c`
/// scores targets `bos+1+c·chunk ..` and sees at most `context` input tokens, never before `bos`.
pub fn doc_chunks(bos: usize, end: usize, chunk: usize, context: usize) -> Result<Vec<Window>> {
    if chunk == 0 || context < chunk {
        bail!("document chunks need 0 < chunk ({chunk}) ≤ context ({context})");
    }
    let mut windows = Vec::new();
    let mut first = bos + 1;
    while first < end {
        let last = (first + chunk).min(end); // exclusive
                                             // Inputs x[start .. last−1] predict targets start+1 ..= last−1.
        let start = (last - 1).saturating_sub(context).max(bos);
        windows.push(Window {
            start,
            len: last - 1 - start,
            score_from: first - 1 - start,
        });
        first = last;
    }
    Ok(windows)
}

/// Checks that `windows` score every target of `targets` exactly once and nothing else, in
/// increasing order. A cheap proof of C4 for a schedule before any model runs.
pub fn check_single_pass(windows: &[Window], targets: Range<usize>) -> Result<()> {
    let mut next = targets.start;
    for (i, w) in windows.iter().enumerate() {
        if w.score_from > w.len {
            bail!(
                "window {i} scores from offset {} beyond its length {}",
                w.score_from,
                w.len
            );
        }
        let scored = w.scored();
        if scored.is_empty() {
            continue;
        }
        if scored.start != next {
            let what = if scored.start < next {
                "re-scores"
            } else {
                "skips"
            };
            bail!("window {i} {what} targets: it scores from {} but the next unscored target is {next}", scored.start);
        }
        next = scored.end;
    }
    if next != targets.end {
        bail!(
            "the windows stop at target {next} but the range runs to {}",
            targets.end
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_scores_everything_with_a_short_last_window() {
        let w = flat(10, 4).unwrap();
        assert_eq!(
            w,
            vec![
                Window {
                    start: 0,
                    len: 4,
                    score_from: 0
                },
                Window {
                    start: 4,
                    len: 4,
                    score_from: 0
                },
                Window {
                    start: 8,
                    len: 2,
                    score_from: 0
                }
            ]
        );
        check_single_pass(&w, 1..11).unwrap();
        assert!(flat(0, 4).unwrap().is_empty());
        assert!(flat(3, 0).is_err());
    }

    #[test]
    fn sliding_with_stride_equal_to_window_is_flat() {
        for n in [1, 7, 64, 65, 100, 1000] {
            for s in [1, 3, 16, 64] {
                assert_eq!(
                    sliding(n, s, s).unwrap(),
                    flat(n, s).unwrap(),
                    "n={n} s={s}"
                );
            }
        }
    }

    #[test]
    fn sliding_scores_each_target_once_at_every_length_and_stride() {
        for n in 1..=130 {
            for len in 1..=20 {
                for stride in 1..=len {
                    let w = sliding(n, len, stride).unwrap();
                    check_single_pass(&w, 1..n + 1)
                        .unwrap_or_else(|e| panic!("n={n} len={len} stride={stride}: {e}"));
                    assert!(w.iter().all(|w| w.len <= len && w.start + w.len <= n));
                    // Every target after the first window has at least len − stride tokens of context.
                    for win in &w[1..] {
                        assert_eq!(win.score_from, len - stride);
                    }
                }
            }
        }
    }

    #[test]
    fn sliding_matches_the_reference_counts() {
        // §5.1 version B on a stream of 2048·3 + 100 targets, S = 2048, s = 64.
        let n = 2048 * 3 + 100;
        let w = sliding(n, 2048, 64).unwrap();
        assert_eq!(
            w[0],
            Window {
                start: 0,
                len: 2048,
                score_from: 0
            }
        );
        assert_eq!(w[1].scored(), 2049..2113);
        let last = *w.last().unwrap();
        assert_eq!(last.scored().end, n + 1);
        assert!(last.start + 2048 - 64 < n && last.start + 64 + 2048 - 64 >= n);
        assert!(sliding(10, 4, 5).is_err());
    }

    #[test]
    fn doc_chunks_stay_inside_the_document() {
        // BOS at 100, targets 101..=110 (end exclusive 111), chunks of 3, context 4.
        let w = doc_chunks(100, 111, 3, 4).unwrap();
        check_single_pass(&w, 101..111).unwrap();
        assert_eq!(
            w[0],
            Window {
                start: 100,
                len: 3,
                score_from: 0
            }
        );
        for win in &w {
            assert!(win.start >= 100 && win.len <= 4);
        }
        assert_eq!(w.last().unwrap().scored(), 110..111);
        assert!(doc_chunks(0, 1, 3, 4).unwrap().is_empty());
        for end in 1..40 {
            for chunk in 1..6 {
                for ctx in chunk..9 {
                    check_single_pass(&doc_chunks(0, end, chunk, ctx).unwrap(), 1..end).unwrap();
                }
            }
        }
    }

    #[test]
    fn check_single_pass_names_the_fault() {
        let w = vec![
            Window {
                start: 0,
                len: 4,
                score_from: 0,
            },
            Window {
                start: 2,
                len: 4,
                score_from: 1,
            },
        ];
        assert!(check_single_pass(&w, 1..7)
            .unwrap_err()
            .to_string()
            .contains("re-scores"));
        let w = vec![
            Window {
                start: 0,
                len: 2,
                score_from: 0,
            },
            Window {
                start: 4,
                len: 2,
                score_from: 0,
            },
        ];
        assert!(check_single_pass(&w, 1..7)
            .unwrap_err()
            .to_string()
            .contains("skips"));
        let w = vec![Window {
            start: 0,
            len: 2,
            score_from: 0,
        }];
        assert!(check_single_pass(&w, 1..7)
            .unwrap_err()
            .to_string()
            .contains("stop at target 3"));
    }
}

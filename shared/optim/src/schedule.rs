//! The baseline's schedules (REFERENCE.md §3.8): no LR warm-up, a linear warm-down to 0 over the
//! last `warmdown_iters` steps — counted in iterations, or, under a wall-clock cap, in time
//! extrapolated from the mean step time so far — and a linear Muon momentum warm-up.

/// Muon momentum at `step`: `(1 − f)·start + f·end`, `f = min(step / warmup_steps, 1)`.
pub fn muon_momentum(step: u64, start: f64, end: f64, warmup_steps: u64) -> f64 {
    let f = if warmup_steps > 0 {
        (step as f64 / warmup_steps as f64).min(1.0)
    } else {
        1.0
    };
    (1.0 - f) * start + f * end
}

/// How the run ends and when the LR decays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warmdown {
    pub iterations: u64,
    pub warmdown_iters: u64,
    /// Training-time cap in ms (validation excluded); `None` = no cap.
    pub max_wallclock_ms: Option<f64>,
}

impl Warmdown {
    /// The LR multiplier before step `step` after `elapsed_ms` of training time:
    /// - no cap: `(iterations − step) / warmdown_iters` inside the last `warmdown_iters` steps, else 1;
    /// - cap: with `step_ms = elapsed / max(step, 1)` and `remaining = max(cap − elapsed, 0)`,
    ///   `remaining / (warmdown_iters · step_ms)` once that is ≤ 1, else 1.
    pub fn lr_mul(&self, step: u64, elapsed_ms: f64) -> f64 {
        if self.warmdown_iters == 0 {
            return 1.0;
        }
        let wd = self.warmdown_iters as f64;
        match self.max_wallclock_ms {
            None => {
                let start = self.iterations.saturating_sub(self.warmdown_iters);
                if start <= step && step < self.iterations {
                    ((self.iterations - step) as f64 / wd).max(0.0)
                } else {
                    1.0
                }
            }
            Some(cap) => {
                let step_ms = elapsed_ms / (step.max(1) as f64);
                let warmdown_ms = wd * step_ms;
                let remaining = (cap - elapsed_ms).max(0.0);
                if remaining <= warmdown_ms {
                    remaining / warmdown_ms.max(1e-9)
                } else {
                    1.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_ramps_linearly_then_holds() {
        assert_eq!(muon_momentum(0, 0.85, 0.95, 500), 0.85);
        assert!((muon_momentum(250, 0.85, 0.95, 500) - 0.90).abs() < 1e-12);
        assert!((muon_momentum(100, 0.85, 0.95, 500) - (0.8 * 0.85 + 0.2 * 0.95)).abs() < 1e-12);
        assert_eq!(muon_momentum(500, 0.85, 0.95, 500), 0.95);
        assert_eq!(muon_momentum(9000, 0.85, 0.95, 500), 0.95);
        assert_eq!(muon_momentum(0, 0.85, 0.95, 0), 0.95);
    }

    #[test]
    fn iteration_warmdown_matches_the_formula() {
        let w = Warmdown {
            iterations: 20000,
            warmdown_iters: 1200,
            max_wallclock_ms: None,
        };
        assert_eq!(w.lr_mul(0, 0.0), 1.0);
        assert_eq!(w.lr_mul(18799, 0.0), 1.0);
        assert_eq!(w.lr_mul(18800, 0.0), 1.0); // (20000 − 18800) / 1200
        assert!((w.lr_mul(19400, 0.0) - 0.5).abs() < 1e-12);
        assert!((w.lr_mul(19999, 0.0) - 1.0 / 1200.0).abs() < 1e-12);
        assert_eq!(w.lr_mul(20000, 0.0), 1.0); // past the end: upstream's else branch
                                               // Warm-down longer than the run: decays from the first step.
        let short = Warmdown {
            iterations: 200,
            warmdown_iters: 400,
            max_wallclock_ms: None,
        };
        assert!((short.lr_mul(0, 0.0) - 0.5).abs() < 1e-12);
        assert_eq!(
            Warmdown {
                warmdown_iters: 0,
                ..w
            }
            .lr_mul(19999, 0.0),
            1.0
        );
    }

    #[test]
    fn wallclock_warmdown_extrapolates_the_step_time() {
        let w = Warmdown {
            iterations: 20000,
            warmdown_iters: 1200,
            max_wallclock_ms: Some(600_000.0),
        };
        // 43.54 ms/step: the warm-down window is 52,248 ms, so at 500 s it has not begun...
        assert_eq!(w.lr_mul(11484, 11484.0 * 43.54), 1.0);
        // ... and at 580 s (13,321 steps) the multiplier is remaining / window.
        let (step, elapsed) = (13321u64, 580_000.0);
        let expected = 20_000.0 / (1200.0 * elapsed / step as f64);
        assert!((w.lr_mul(step, elapsed) - expected).abs() < 1e-12);
        assert_eq!(w.lr_mul(13800, 600_500.0), 0.0);
    }
}

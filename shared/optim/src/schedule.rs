//! The baseline's schedules (REFERENCE.md §3.8): no LR warm-up, a linear warm-down to 0 over the
//! last `warmdown_iters` steps — counted in iterations, or, under a wall-clock cap, in time
//! extrapolated from the mean step time so far — and a linear Muon momentum warm-up; and the
//! SP8192 line's fraction-of-budget warm-down with a floor ([`FracWarmdown`], REFERENCE.md §5.14).

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

/// R0405/R0427's schedule: the training fraction `frac` is the elapsed training time over the
/// budget (the wall-clock cap less any reserve), or `step / iterations` without a cap; the LR
/// multiplier is 1 until `1 − warmdown_frac`, then `max((1 − frac)/warmdown_frac, min_lr)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FracWarmdown {
    pub iterations: u64,
    /// The budget in ms (`None`: no cap, the fraction counts steps).
    pub budget_ms: Option<f64>,
    /// The warm-down's share of the run (0 = none: the multiplier stays 1).
    pub warmdown_frac: f64,
    /// The multiplier's floor during the warm-down (R0427: 0.1).
    pub min_lr: f64,
}

impl FracWarmdown {
    /// The training fraction before step `step` after `elapsed_ms` of training time.
    pub fn frac(&self, step: u64, elapsed_ms: f64) -> f64 {
        match self.budget_ms {
            Some(budget) => elapsed_ms / budget.max(1e-9),
            None => step as f64 / self.iterations.max(1) as f64,
        }
    }

    /// The LR multiplier at training fraction `frac`.
    pub fn lr_mul_at(&self, frac: f64) -> f64 {
        if self.warmdown_frac <= 0.0 || frac < 1.0 - self.warmdown_frac {
            return 1.0;
        }
        ((1.0 - frac) / self.warmdown_frac).max(self.min_lr)
    }

    pub fn lr_mul(&self, step: u64, elapsed_ms: f64) -> f64 {
        self.lr_mul_at(self.frac(step, elapsed_ms))
    }
}

/// Either warm-down, as the run's params pick it; the loop asks it for the LR multiplier, the
/// training fraction (when the depth recurrence switches on) and the budget (when to stop).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    Steps(Warmdown),
    Fraction(FracWarmdown),
}

impl LrSchedule {
    pub fn lr_mul(&self, step: u64, elapsed_ms: f64) -> f64 {
        match self {
            LrSchedule::Steps(w) => w.lr_mul(step, elapsed_ms),
            LrSchedule::Fraction(f) => f.lr_mul(step, elapsed_ms),
        }
    }

    /// The training budget in ms (`None`: the run ends at its iterations).
    pub fn budget_ms(&self) -> Option<f64> {
        match self {
            LrSchedule::Steps(w) => w.max_wallclock_ms,
            LrSchedule::Fraction(f) => f.budget_ms,
        }
    }

    /// R0405/R0427's training fraction: elapsed time over the budget, else steps over the
    /// iterations (the same measure under either warm-down).
    pub fn frac(&self, step: u64, elapsed_ms: f64) -> f64 {
        let iterations = match self {
            LrSchedule::Steps(w) => w.iterations,
            LrSchedule::Fraction(f) => f.iterations,
        };
        match self.budget_ms() {
            Some(budget) => elapsed_ms / budget.max(1e-9),
            None => step as f64 / iterations.max(1) as f64,
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

    /// R0427's run (600 s less 0.5 s reserved, warm-down 0.85, floor 0.1) and R0405's (12 s
    /// reserved, 0.667, no floor), against the formula; without a cap the fraction counts steps.
    #[test]
    fn the_fraction_schedule_decays_linearly_to_its_floor() {
        let r0427 = FracWarmdown {
            iterations: 20_000,
            budget_ms: Some(599_500.0),
            warmdown_frac: 0.85,
            min_lr: 0.1,
        };
        assert_eq!(r0427.lr_mul(10, 0.0), 1.0);
        assert_eq!(r0427.lr_mul(10, 0.149 * 599_500.0), 1.0);
        let f: f64 = 0.5;
        assert!((r0427.lr_mul(10, f * 599_500.0) - (1.0 - f) / 0.85).abs() < 1e-12);
        assert_eq!(r0427.lr_mul(10, 0.95 * 599_500.0), 0.1); // (1 − 0.95)/0.85 < 0.1
        assert_eq!(r0427.lr_mul(10, 700_000.0), 0.1);
        let r0405 = FracWarmdown {
            budget_ms: Some(588_000.0),
            warmdown_frac: 0.667,
            min_lr: 0.0,
            ..r0427
        };
        assert!((r0405.frac(0, 294_000.0) - 0.5).abs() < 1e-12);
        assert!((r0405.lr_mul(0, 294_000.0) - 0.5 / 0.667).abs() < 1e-12);
        assert_eq!(r0405.lr_mul(0, 600_000.0), 0.0);
        let steps = FracWarmdown {
            budget_ms: None,
            iterations: 100,
            ..r0405
        };
        assert!((steps.frac(50, 1e9) - 0.5).abs() < 1e-12);
        assert!((steps.lr_mul(90, 0.0) - 0.1 / 0.667).abs() < 1e-12);
        let off = FracWarmdown {
            warmdown_frac: 0.0,
            ..r0427
        };
        assert_eq!(off.lr_mul(0, 599_000.0), 1.0);
    }

    /// The loop's three questions, under each warm-down: the multiplier is the chosen one's, the
    /// fraction and the budget the same measure for both.
    #[test]
    fn either_schedule_answers_the_loop() {
        let steps = LrSchedule::Steps(Warmdown {
            iterations: 1000,
            warmdown_iters: 100,
            max_wallclock_ms: Some(10_000.0),
        });
        let frac = LrSchedule::Fraction(FracWarmdown {
            iterations: 1000,
            budget_ms: Some(10_000.0),
            warmdown_frac: 0.5,
            min_lr: 0.1,
        });
        for s in [steps, frac] {
            assert_eq!(s.budget_ms(), Some(10_000.0));
            assert!((s.frac(7, 2_500.0) - 0.25).abs() < 1e-12);
        }
        assert!((frac.lr_mul(0, 7_500.0) - 0.5).abs() < 1e-12);
        assert!((frac.lr_mul(0, 9_900.0) - 0.1).abs() < 1e-12);
        // 100 steps of 10 ms each make a 1 s warm-down window: 0.5 s left is half of it.
        assert!((steps.lr_mul(950, 9_500.0) - 0.5).abs() < 1e-12);
        let uncapped = LrSchedule::Fraction(FracWarmdown {
            iterations: 1000,
            budget_ms: None,
            warmdown_frac: 0.5,
            min_lr: 0.0,
        });
        assert!((uncapped.frac(250, 123.0) - 0.25).abs() < 1e-12);
    }
}

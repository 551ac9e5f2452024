//! An exponential moving average of the weights (REFERENCE.md §5.6): an fp32 shadow initialised
//! to the weights, `ema ← d·ema + (1−d)·θ` after every optimizer step, no bias correction. It
//! counts its updates so that a shadow that was never updated is never used.
//!
//! With a cadence `every` = k > 1 (PROTEUS EMA's `EMA_EVERY`), it updates only after the steps
//! whose 0-based index is a positive multiple of k, as a lerp of weight `1 − d^k` (the decay of k
//! steps at once): `ema ← ema + (1 − d^k)·(θ − ema)`.

use tch::{Kind, Tensor};

pub struct Ema {
    pub decay: f64,
    /// Update cadence in steps (1 = every step).
    pub every: u64,
    shadow: Vec<(String, Tensor)>,
    updates: u64,
}

impl Ema {
    pub fn new(named: &[(String, Tensor)], decay: f64) -> Ema {
        let shadow = tch::no_grad(|| {
            named
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().to_kind(Kind::Float).copy()))
                .collect()
        });
        Ema {
            decay,
            every: 1,
            shadow,
            updates: 0,
        }
    }

    /// After the optimizer step of 0-based index `step`: an update if the cadence asks for one.
    pub fn after_step(&mut self, step: u64, named: &[(String, Tensor)]) {
        match self.every {
            0 | 1 => self.update(named),
            k if step > 0 && step.is_multiple_of(k) => {
                let weight = 1.0 - self.decay.powi(k as i32);
                tch::no_grad(|| {
                    for ((_, s), (_, t)) in self.shadow.iter_mut().zip(named) {
                        let _ = s.lerp_(&t.to_kind(Kind::Float), weight);
                    }
                });
                self.updates += 1;
            }
            _ => {}
        }
    }

    /// One update from the current weights (same names, same order as at construction).
    pub fn update(&mut self, named: &[(String, Tensor)]) {
        let d = self.decay;
        tch::no_grad(|| {
            for ((_, s), (_, t)) in self.shadow.iter_mut().zip(named) {
                let _ = s
                    .g_mul_scalar_(d)
                    .g_add_(&(t.to_kind(Kind::Float) * (1.0 - d)));
            }
        });
        self.updates += 1;
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The shadow weights (fp32), by name.
    pub fn shadow(&self) -> &[(String, Tensor)] {
        &self.shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_recurrence_and_counts_updates() {
        let w = Tensor::from_slice(&[1.0f32, 2.0]);
        let named = vec![("w".to_string(), w.shallow_clone())];
        let mut ema = Ema::new(&named, 0.9);
        assert_eq!(ema.updates(), 0);
        let _ = w.shallow_clone().fill_(3.0);
        ema.update(&named);
        ema.update(&named);
        // 0.81·x0 + 0.19·3
        let s = &ema.shadow()[0].1;
        assert!((s.double_value(&[0]) - (0.81 * 1.0 + 0.19 * 3.0)).abs() < 1e-6);
        assert!((s.double_value(&[1]) - (0.81 * 2.0 + 0.19 * 3.0)).abs() < 1e-6);
        assert_eq!(ema.updates(), 2);
    }

    /// Cadence 10 (PROTEUS EMA): updates after step indices 10 and 20 only, each a lerp of
    /// weight 1 − d¹⁰.
    #[test]
    fn a_cadence_updates_every_k_steps_with_the_decay_of_k() {
        let w = Tensor::from_slice(&[0.0f64]).to_kind(Kind::Float);
        let named = vec![("w".to_string(), w.shallow_clone())];
        let mut ema = Ema::new(&named, 0.9);
        ema.every = 10;
        let _ = w.shallow_clone().fill_(1.0);
        for step in 0..25 {
            ema.after_step(step, &named);
        }
        assert_eq!(ema.updates(), 2);
        let a = 1.0 - 0.9f64.powi(10);
        let want = a + (1.0 - a) * a; // 0 → a → a + (1 − a)·a
        let got = ema.shadow()[0].1.double_value(&[0]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}

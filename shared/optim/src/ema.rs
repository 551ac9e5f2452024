//! An exponential moving average of the weights (REFERENCE.md §5.6): an fp32 shadow initialised
//! to the weights, `ema ← d·ema + (1−d)·θ` after every optimizer step, no bias correction. It
//! counts its updates so that a shadow that was never updated is never used.

use tch::{Kind, Tensor};

pub struct Ema {
    pub decay: f64,
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
            shadow,
            updates: 0,
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
}

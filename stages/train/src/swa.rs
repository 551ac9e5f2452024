//! Stochastic weight averaging as record 2026-03-20_10L_Int5MLP does it (REFERENCE.md §5.6): after
//! every step `s` with `s % swa_every == 0` whose lr_mul was below `swa_lr_threshold`, the weights
//! join a uniform average. The running sum stays on the device in fp32 (upstream sums on the CPU in
//! each tensor's dtype), so one `swa.safetensors` (the fp32 average) and the count in the manifest
//! are all ema-finalize needs.

use anyhow::Result;
use tch::{Kind, Tensor};

pub struct Swa {
    every: u64,
    lr_threshold: f64,
    sum: Vec<(String, Tensor)>,
    count: u64,
    first_step: Option<u64>,
}

impl Swa {
    /// `None` when `every` is 0 (SWA off).
    pub fn new(every: u64, lr_threshold: f64) -> Option<Swa> {
        (every > 0).then_some(Swa {
            every,
            lr_threshold,
            sum: Vec::new(),
            count: 0,
            first_step: None,
        })
    }

    /// After `step` steps (the last one run at `lr_mul`): adds the weights if a snapshot is due,
    /// and says so.
    pub fn after_step(&mut self, step: u64, lr_mul: f64, named: &[(String, Tensor)]) -> bool {
        if lr_mul >= self.lr_threshold || !step.is_multiple_of(self.every) {
            return false;
        }
        tch::no_grad(|| {
            if self.sum.is_empty() {
                self.sum = named
                    .iter()
                    .map(|(n, t)| (n.clone(), t.detach().to_kind(Kind::Float).copy()))
                    .collect();
            } else {
                for ((_, s), (_, t)) in self.sum.iter_mut().zip(named) {
                    let _ = s.g_add_(&t.to_kind(Kind::Float));
                }
            }
        });
        self.count += 1;
        self.first_step.get_or_insert(step);
        true
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn first_step(&self) -> Option<u64> {
        self.first_step
    }

    /// The uniform average (fp32, on the device); `None` before the first snapshot.
    pub fn average(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        if self.count == 0 {
            return Ok(None);
        }
        let n = self.count as f64;
        let avg = tch::no_grad(|| {
            self.sum
                .iter()
                .map(|(name, s)| Ok((name.clone(), s.f_div_scalar(n)?)))
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Some(avg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_weights_of_due_steps_below_the_threshold() {
        let w = Tensor::from_slice(&[0.0f32, 0.0]);
        let named = vec![("w".to_string(), w.shallow_clone())];
        let mut swa = Swa::new(2, 0.5).unwrap();
        // (step, lr_mul, value the weights hold after it)
        let steps = [
            (1, 0.4, 1.0),
            (2, 0.6, 2.0),
            (3, 0.3, 3.0),
            (4, 0.3, 4.0),
            (5, 0.1, 5.0),
            (6, 0.0, 6.0),
        ];
        let mut taken = vec![];
        for (step, lr_mul, value) in steps {
            let _ = w.shallow_clone().fill_(value);
            if swa.after_step(step, lr_mul, &named) {
                taken.push(step);
            }
        }
        // Step 1 and 3, 5: not multiples of 2; step 2: lr_mul 0.6 ≥ 0.5.
        assert_eq!(taken, vec![4, 6]);
        assert_eq!((swa.count(), swa.first_step()), (2, Some(4)));
        let avg = swa.average().unwrap().unwrap();
        assert_eq!(Vec::<f32>::try_from(&avg[0].1).unwrap(), vec![5.0, 5.0]);
        assert_eq!(avg[0].1.kind(), Kind::Float);
        assert!(Swa::new(0, 0.5).is_none());
        assert!(Swa::new(3, 0.5).unwrap().average().unwrap().is_none());
    }
}

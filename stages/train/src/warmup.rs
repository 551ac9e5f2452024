//! The optional warm-up before the timed loop: CUDA's one-time costs paid, then undone.

use anyhow::Result;
use pgolf_model::Gpt;
use pgolf_optim::Collective;
use tch::Tensor;

use crate::data::BatchLoader;
use crate::graphed::GraphedMicroStep;
use crate::optimizers::Optimizers;
use crate::params::Params;
use crate::step::{train_step, StepSettings};

/// Runs `warmup_steps` real steps with a throwaway optimizer, then restores the initial weights
/// and rewinds the loader: CUDA's one-time costs are paid, the result is unchanged.
pub fn warm_up(
    gpt: &Gpt,
    loader: &mut BatchLoader,
    mut graphed: Option<&mut GraphedMicroStep>,
    p: &Params,
    comm: &dyn Collective,
) -> Result<()> {
    let initial: Vec<Tensor> = gpt
        .named_parameters()
        .iter()
        .map(|(_, t)| t.detach().copy())
        .collect();
    let mut opt = Optimizers::new(gpt, p, comm)?;
    for _ in 0..p.warmup_steps {
        let settings = StepSettings {
            lr_mul: 1.0,
            muon_momentum: p.muon_momentum,
            phase_timing: false,
        };
        train_step(
            gpt,
            loader,
            &mut opt,
            graphed.as_deref_mut(),
            settings,
            comm,
        )?;
    }
    tch::no_grad(|| {
        for ((_, t), init) in gpt.named_parameters().iter().zip(&initial) {
            let mut t = t.shallow_clone();
            t.copy_(init);
            t.zero_grad();
        }
    });
    loader.restart()
}

//! One optimizer step (REFERENCE.md §3.9): zero grads, `A` micro-batches of forward and
//! `(loss / A).backward()` — eagerly, or as replays of a captured CUDA graph — then every
//! optimizer. The logged loss is the micro-batch mean. Nothing here waits for the device.

use anyhow::Result;
use pgolf_model::Gpt;
use pgolf_optim::Collective;
use std::time::Instant;
use tch::{Kind, Tensor};

use crate::data::BatchLoader;
use crate::graphed::GraphedMicroStep;
use crate::optimizers::Optimizers;

pub struct StepOutcome {
    /// Mean train loss of the step's micro-batches, left on the device: reading it waits for the
    /// step, so the loop reads it only after issuing the next one.
    pub loss: Tensor,
    /// Host time spent issuing the step's work before waiting for it; close to the step time
    /// with eager micro-batches means the host (kernel launches), not the GPU, is the bottleneck.
    pub host_ms: f64,
    /// With phase timing: ms of (data to the device, forward + backward of all micro-batches,
    /// optimizers), each measured to a device sync.
    pub phases_ms: Option<[f64; 3]>,
    /// The micro-batches' losses, left on the device: read only when the step's loss is bad, to
    /// say which micro-batch went first.
    pub micro: MicroLosses,
}

/// Each micro-batch's loss (eager), or the running sum after each replay (a CUDA graph adds its
/// loss into one fixed scalar).
pub enum MicroLosses {
    Each(Vec<Tensor>),
    RunningSums(Vec<Tensor>),
}

impl StepOutcome {
    /// The step's loss as a number: waits for the device to finish the step.
    pub fn loss_value(&self) -> f64 {
        self.loss.to_kind(Kind::Double).double_value(&[])
    }
}

impl MicroLosses {
    /// The losses as numbers (a device read).
    pub fn values(&self) -> Vec<f64> {
        let read = |t: &Tensor| t.to_kind(Kind::Double).double_value(&[]);
        match self {
            MicroLosses::Each(all) => all.iter().map(read).collect(),
            MicroLosses::RunningSums(sums) => {
                let mut before = 0.0;
                sums.iter()
                    .map(|t| {
                        let sum = read(t);
                        let loss = sum - before;
                        before = sum;
                        // Once the sum is not finite, the difference says nothing more.
                        if sum.is_finite() {
                            loss
                        } else {
                            sum
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Waits for the device and returns the ms since `since`, when phase timing is on.
fn phase(on: bool, device: tch::Device, since: &mut Instant) -> f64 {
    if !on {
        return 0.0;
    }
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let ms = since.elapsed().as_secs_f64() * 1e3;
    *since = Instant::now();
    ms
}

/// What changes from step to step: the schedules' values, and whether to time the phases.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    pub lr_mul: f64,
    pub muon_momentum: f64,
    pub phase_timing: bool,
}

pub fn train_step(
    gpt: &Gpt,
    loader: &mut BatchLoader,
    opt: &mut Optimizers,
    mut graphed: Option<&mut GraphedMicroStep>,
    settings: StepSettings,
    comm: &dyn Collective,
) -> Result<StepOutcome> {
    let StepSettings {
        lr_mul,
        muon_momentum,
        phase_timing,
    } = settings;
    let start = Instant::now();
    let mut mark = start;
    let batches = loader.next_step()?;
    let device = batches[0].x.device();
    let data_ms = phase(phase_timing, device, &mut mark);
    let scale = 1.0 / batches.len() as f64;
    if let Some(graph) = graphed.as_deref_mut() {
        // Before the gradients start accumulating: a recapture runs (and zeroes) warm-up steps.
        graph.make_room(gpt, opt, &batches)?;
    }
    opt.zero_grad();
    let (loss_sum, micro) = match graphed {
        Some(graph) => {
            let (sum, sums) = graph.run(&batches)?;
            (sum, MicroLosses::RunningSums(sums))
        }
        None => {
            let mut total: Option<Tensor> = None;
            let mut each = Vec::with_capacity(batches.len());
            for b in &batches {
                let loss = gpt.loss_in(&b.x, &b.y, b.docs.as_ref());
                (&loss * scale).backward();
                let loss = loss.detach();
                each.push(loss.shallow_clone());
                total = Some(match total {
                    Some(t) => t + loss,
                    None => loss,
                });
            }
            (
                total.expect("at least one micro-batch"),
                MicroLosses::Each(each),
            )
        }
    };
    let micro_ms = phase(phase_timing, device, &mut mark);
    opt.step(lr_mul, muon_momentum, comm)?;
    let opt_ms = phase(phase_timing, device, &mut mark);
    let host_ms = start.elapsed().as_secs_f64() * 1e3;
    let phases_ms = phase_timing.then_some([data_ms, micro_ms, opt_ms]);
    Ok(StepOutcome {
        loss: loss_sum * scale,
        host_ms,
        phases_ms,
        micro,
    })
}

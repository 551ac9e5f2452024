//! The training loop (REFERENCE.md §3.9–3.10): validate at step 0, every `val_loss_every` and at
//! the end; stop at `iterations` or just past the wall-clock cap, which excludes validation. After
//! each step the EMA and SWA averages take the new weights. The host reads a step's loss only
//! after issuing the next step, so the device always has queued work.

use anyhow::{bail, Result};
use pgolf_model::Gpt;
use pgolf_optim::{muon_momentum, Collective, Ema};
use pgolf_store::progress;
use std::time::Instant;

use crate::data::{BatchLoader, ValTokens};
use crate::graphed::GraphedMicroStep;
use crate::log::RunLog;
use crate::metrics::{Metrics, Row};
use crate::optimizers::Optimizers;
use crate::params::{Loader, Params};
use crate::profile::ProfileWindow;
use crate::step::{train_step, StepOutcome, StepSettings};
use crate::swa::Swa;
use crate::validate::{validate, ValResult};

/// What the loop trains with, borrowed from the stage's setup.
pub struct Training<'a> {
    pub p: &'a Params,
    pub gpt: &'a Gpt,
    pub loader: &'a mut BatchLoader,
    pub opt: &'a mut Optimizers,
    pub graphed: Option<&'a mut GraphedMicroStep>,
    pub val_set: &'a ValTokens,
    pub val_batch_seqs: usize,
    pub comm: &'a dyn Collective,
    pub log: &'a mut RunLog,
}

/// What the loop leaves: the step count and train time, the metrics, the last validation, and
/// the weight averages.
pub struct Finished {
    pub steps: u64,
    pub train_ms: f64,
    pub metrics: Metrics,
    pub val: ValResult,
    pub ema: Option<Ema>,
    pub swa: Option<Swa>,
    /// The step at which late QAT turned on, if it did.
    pub qat_step: Option<u64>,
    /// The step at which the depth recurrence turned on, if the model has one and it did (0 when
    /// it ran from the start).
    pub recurrence_step: Option<u64>,
}

pub fn run(t: Training) -> Result<Finished> {
    let Training {
        p,
        gpt,
        loader,
        opt,
        mut graphed,
        val_set,
        val_batch_seqs,
        comm,
        log,
    } = t;
    let device = val_set.tokens.device();
    let mut ema = (p.ema_decay > 0.0).then(|| Ema::new(gpt.named_parameters(), p.ema_decay));
    if let Some(ema) = ema.as_mut() {
        ema.every = p.ema_every;
    }
    let mut swa = Swa::new(p.swa_every, p.swa_lr_threshold);
    let schedule = p.lr_schedule();
    // A model trained on packed documents is validated on packed documents (as R0427).
    let packed_bos = (p.loader == Loader::Packed).then(|| loader.bos() as i64);
    let bar = progress::bar(p.iterations, "train");
    let mut done = Done {
        metrics: Metrics::default(),
        last_loss: None,
    };
    // Training time is wall time, validation excluded (as the record scripts count it): the
    // clock runs from the end of the last validation, and each step's share is the host's time
    // around it, which equals the device's once the host waits on the previous step's loss.
    let mut train_ms = 0.0;
    let mut clock = Instant::now();
    let mut step: u64 = 0;
    let mut stop_after: Option<u64> = None;
    let mut last_val = None;
    // The step issued last, whose loss is read after the next one is issued.
    let mut pending: Option<Issued> = None;
    let mut profile = ProfileWindow::from_env()?;
    let mut qat_step = None;
    let mut recurrence_step = gpt.recurrence().then_some(0);
    loop {
        let last = step == p.iterations || stop_after.is_some_and(|s| step >= s);
        if last || (p.val_loss_every > 0 && step.is_multiple_of(p.val_loss_every)) {
            // The pending step's loss is read (the device drains) and that wait is training time.
            if let Some(issued) = pending.take() {
                done.finish(issued, None, comm, device, p, log)?;
            }
            let [wait_ms] = crate::ranks::agree_mean(comm, device, [elapsed_ms(&clock)])?;
            train_ms += wait_ms;
            if let Some(row) = done.metrics.rows.last_mut().filter(|r| r.step == step) {
                row.step_ms += wait_ms;
                row.elapsed_ms = train_ms;
            }
            let r = validate(gpt, val_set, val_batch_seqs, packed_bos, comm)?;
            done.metrics
                .record_val(step, r.loss, r.bpb, schedule.lr_mul(step, train_ms));
            log.line(&format!(
                "step:{step}/{} val_loss:{:.4} val_bpb:{:.4} train_time:{train_ms:.0}ms step_avg:{:.2}ms",
                p.iterations,
                r.loss,
                r.bpb,
                train_ms / step.max(1) as f64
            ))?;
            last_val = Some(r);
            clock = Instant::now();
        }
        if last {
            if stop_after.is_some() && step < p.iterations {
                log.line(&format!(
                    "stopping_early: wallclock_cap train_time:{train_ms:.0}ms step:{step}/{}",
                    p.iterations
                ))?;
            }
            break;
        }

        let lr_mul = schedule.lr_mul(step, train_ms);
        if qat_step.is_none() && p.late_qat_threshold > 0.0 && lr_mul < p.late_qat_threshold {
            gpt.set_fake_quant(true);
            if let Some(g) = graphed.as_deref_mut() {
                g.recapture(gpt, opt)?;
            }
            log.line(&format!("late_qat:enabled step:{step} lr_mul:{lr_mul:.4}"))?;
            qat_step = Some(step);
        }
        // R0405/R0427's training fraction: of the budget, else of the iterations.
        let frac = schedule.frac(step, train_ms);
        if p.model.recurrence.is_some()
            && recurrence_step.is_none()
            && frac >= p.recurrence_enable_at
        {
            gpt.set_recurrence(true);
            if let Some(g) = graphed.as_deref_mut() {
                g.recapture(gpt, opt)?;
            }
            let (enc, dec) = p.model.layer_order(true);
            log.line(&format!(
                "layer_loop:enabled step:{step} frac:{frac:.3} encoder:{enc:?} decoder:{dec:?}"
            ))?;
            recurrence_step = Some(step);
        }
        let settings = StepSettings {
            lr_mul,
            muon_momentum: muon_momentum(
                step,
                p.muon_momentum_warmup_start,
                p.muon_momentum,
                p.muon_momentum_warmup_steps,
            ),
            phase_timing: p.phase_timing,
        };
        profile.at_step(step)?;
        let out = train_step(gpt, loader, opt, graphed.as_deref_mut(), settings, comm)?;
        if let Some(ema) = ema.as_mut() {
            ema.after_step(step, gpt.named_parameters());
        }
        if let Some(swa) = swa.as_mut() {
            if swa.after_step(step + 1, lr_mul, gpt.named_parameters()) && swa.count() == 1 {
                log.line(&format!("swa:start step:{}", step + 1))?;
            }
        }
        step += 1;
        let issued = Issued {
            step,
            out,
            lr_mul,
            tokens_seen: loader.tokens_taken,
            step_ms: 0.0,
            elapsed_ms: 0.0,
        };
        // The previous step's loss, read now that this one is queued behind it; the wait is
        // this step's time. Agreed over ranks, so the wall-clock warm-down and stop are the same
        // on every rank.
        let previous = pending.replace(issued);
        let mut step_ms = elapsed_ms(&clock);
        if let Some(previous) = previous {
            step_ms = done.finish(previous, Some(step_ms), comm, device, p, log)?;
        } else {
            [step_ms] = crate::ranks::agree_mean(comm, device, [step_ms])?;
        }
        clock = Instant::now();
        train_ms += step_ms;
        if let Some(issued) = pending.as_mut() {
            issued.step_ms = step_ms;
            issued.elapsed_ms = train_ms;
        }
        bar.set_position(step);
        if let Some(loss) = done.last_loss {
            let tokens_per_s = p.train_batch_tokens as f64 * step as f64 / (train_ms / 1e3);
            bar.set_message(format!(
                "loss {:.4} · {:.0}k tok/s",
                loss.1,
                tokens_per_s / 1e3
            ));
        }
        if stop_after.is_none() && schedule.budget_ms().is_some_and(|cap| train_ms >= cap) {
            stop_after = Some(step);
        }
    }
    bar.finish_and_clear();
    Ok(Finished {
        steps: step,
        train_ms,
        metrics: done.metrics,
        val: last_val.expect("the loop validates before it ends"),
        ema,
        swa,
        qat_step,
        recurrence_step,
    })
}

fn elapsed_ms(since: &Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// A step issued to the device, its loss not read yet. Reading a loss waits for the device, so
/// the loop reads each one only after issuing the next step: the host never waits with the device
/// idle (the record scripts read theirs only to log it).
struct Issued {
    /// The step's number, counted from 1.
    step: u64,
    out: StepOutcome,
    lr_mul: f64,
    tokens_seen: u64,
    /// The step's time and the training time at its end, once known (the host time of the loop
    /// iteration that issued it).
    step_ms: f64,
    elapsed_ms: f64,
}

/// What the read losses have made: the metrics table and the last finite loss.
struct Done {
    metrics: Metrics,
    last_loss: Option<(u64, f64)>,
}

impl Done {
    /// Reads an issued step's loss (over all ranks, with `step_ms` of the current iteration if
    /// given, in one agreement), stops on divergence, and records and logs the step. Returns the
    /// agreed `step_ms`.
    fn finish(
        &mut self,
        issued: Issued,
        step_ms: Option<f64>,
        comm: &dyn Collective,
        device: tch::Device,
        p: &Params,
        log: &mut RunLog,
    ) -> Result<f64> {
        let Issued {
            step,
            out,
            lr_mul,
            tokens_seen,
            step_ms: own_ms,
            elapsed_ms,
        } = issued;
        // The loss over all ranks' tokens (every rank then stops on divergence together).
        let [loss, step_ms] =
            crate::ranks::agree_mean(comm, device, [out.loss_value(), step_ms.unwrap_or(0.0)])?;
        check_loss(step, loss, &out, p.max_loss, self.last_loss)?;
        self.last_loss = Some((step, loss));
        self.metrics.rows.push(Row {
            step,
            train_loss: Some(loss),
            lr_mul,
            tokens_seen,
            step_ms: own_ms,
            elapsed_ms,
            val_loss: None,
            val_bpb: None,
        });
        if p.train_log_every > 0 && (step <= 10 || step.is_multiple_of(p.train_log_every)) {
            let phases = out.phases_ms.map_or(String::new(), |[d, m, o]| {
                format!(" data_ms:{d:.1} micro_ms:{m:.1} optim_ms:{o:.1}")
            });
            log.line(&format!(
                "step:{step}/{} train_loss:{loss:.4} train_time:{elapsed_ms:.0}ms step_avg:{:.2}ms host_ms:{:.1} lr_mul:{lr_mul:.4}{phases}",
                p.iterations,
                elapsed_ms / step as f64,
                out.host_ms
            ))?;
        }
        Ok(step_ms)
    }
}

/// Stops the run at a step whose loss is not finite, or above `max_loss` (a diverging run), naming
/// the step, the first bad micro-batch (this rank's; the loss is the mean over ranks) and the last
/// finite loss before it.
fn check_loss(
    step: u64,
    loss: f64,
    out: &StepOutcome,
    max_loss: Option<f64>,
    last: Option<(u64, f64)>,
) -> Result<()> {
    let too_high = |l: f64| max_loss.is_some_and(|max| l > max);
    if loss.is_finite() && !too_high(loss) {
        return Ok(());
    }
    let micro = out.micro.values();
    let bad = |l: &f64| !l.is_finite() || too_high(*l);
    let which = match micro.iter().position(bad) {
        Some(i) => format!(
            "micro-batch {} of {} (loss {:.4})",
            i + 1,
            micro.len(),
            micro[i]
        ),
        None => format!(
            "no micro-batch of this rank's {} (another rank's)",
            micro.len()
        ),
    };
    let before = match last {
        Some((s, l)) => format!("last finite loss {l:.4} at step {s}"),
        None => "no earlier step".to_string(),
    };
    let what = match max_loss {
        Some(max) if loss.is_finite() => {
            format!("the train loss {loss:.4} is above max_loss {max} (diverging)")
        }
        _ => format!("the train loss is {loss} (diverged)"),
    };
    bail!("step {step}, {which}: {what}; {before}; stopping")
}

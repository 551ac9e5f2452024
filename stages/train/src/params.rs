//! The train stage's params: the model's shape and upstream's training hyperparameters
//! (REFERENCE.md §3.1), with the same defaults. Unknown fields are an error.

use anyhow::{bail, Result};
use pgolf_model::{Formulation, ModelConfig};
use pgolf_optim::{FracWarmdown, LrSchedule, NsCoefficients, Warmdown};
use pgolf_store::Precision;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub model: ModelConfig,
    pub seed: u64,

    // Length and batch.
    pub iterations: u64,
    /// Linear LR warm-down to 0 over the last this-many steps (or their time, under the cap).
    /// Not used when `warmdown_frac` is set.
    pub warmdown_iters: u64,
    /// R0405/R0427's schedule instead (REFERENCE.md §5.14): the warm-down is this share of the
    /// training budget (of the wall-clock cap less `gptq_reserve_seconds`, else of the
    /// iterations), the multiplier floored at `min_lr`.
    pub warmdown_frac: Option<f64>,
    /// The LR multiplier's floor during a `warmdown_frac` warm-down (R0427's run: 0.1).
    pub min_lr: f64,
    /// Training-time cap (validation excluded); 0 = none.
    pub max_wallclock_seconds: f64,
    /// Seconds of the cap left to GPTQ, as the SP8192 records reserve them: training stops and
    /// its schedules count against `max_wallclock_seconds − gptq_reserve_seconds`.
    pub gptq_reserve_seconds: f64,
    /// Global tokens per optimizer step, over all ranks and micro-batches.
    pub train_batch_tokens: u64,
    /// Micro-batches per step per rank; default `8 / world_size` as upstream.
    pub grad_accum_steps: Option<u64>,
    /// Full training steps run first and then undone (weights, optimizer state and data order are
    /// restored), so one-time CUDA set-up stays out of the timed run, like upstream's compile
    /// warm-up. No effect on the result.
    pub warmup_steps: u64,
    /// How the sequences of a step are drawn (REFERENCE.md §1.5).
    pub loader: Loader,

    // Validation.
    /// Validate every this-many steps (and at step 0 and at the end); 0 = only at the end.
    pub val_loss_every: u64,
    /// Val tokens per forward batch, over all ranks and micro-batches (as upstream).
    pub val_batch_tokens: u64,
    /// Score only the first this-many val tokens (0 = the whole val split, as upstream). For quick
    /// runs; the headline then says how many were scored.
    pub val_max_tokens: u64,
    pub train_log_every: u64,

    // Optimizers.
    pub tied_embed_lr: f64,
    pub embed_lr: f64,
    pub head_lr: f64,
    pub matrix_lr: f64,
    pub scalar_lr: f64,
    pub muon_momentum: f64,
    pub muon_backend_steps: usize,
    pub muon_momentum_warmup_start: f64,
    pub muon_momentum_warmup_steps: u64,
    pub muon_weight_decay: f64,
    /// MuonEq-R (R0427): the rows of each update normalised before the Newton–Schulz iterations.
    pub muon_row_normalize: bool,
    /// The iterations' coefficients: `quintic` (the baseline's) or `polar_express` (R0427).
    pub muon_coefficients: NsCoefficients,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub adam_weight_decay: f64,
    /// The token embedding's own AdamW decay (R0427's `EMBED_WD`); unset = `adam_weight_decay`.
    pub embed_weight_decay: Option<f64>,
    /// Global gradient-norm clip; 0 = off.
    pub grad_clip_norm: f64,
    /// Stop (fail) at the first step whose train loss is above this: a diverging run. Off by
    /// default; a NaN or infinite loss always stops the run.
    pub max_loss: Option<f64>,
    /// EMA decay of the weight average saved beside the raw weights; 0 = no EMA.
    pub ema_decay: f64,
    /// EMA cadence: update after every this-many steps with the decay of that many (PROTEUS EMA:
    /// 10); 1 = every step.
    pub ema_every: u64,
    /// SWA (REFERENCE.md §5.6): average the weights after every this-many steps while the step's
    /// lr_mul is below `swa_lr_threshold`, saved as `swa.safetensors`; 0 = off.
    pub swa_every: u64,
    pub swa_lr_threshold: f64,
    /// Late QAT (REFERENCE.md §5.9): from the first step whose lr_mul is below this, the block
    /// matrices train through per-row int6 fake quantization (straight-through); 0 = off.
    pub late_qat_threshold: f64,
    /// Depth recurrence (the model's `recurrence`, REFERENCE.md §5.13): the plain U-Net trains
    /// until this fraction of the budget (`train_ms / max_wallclock`, or `step / iterations`
    /// without a cap, as R0405/R0427 measure it), then the loop; 0 = from the first step (R0405:
    /// 0.5, R0427: 0.35). Evaluation always loops.
    pub recurrence_enable_at: f64,
    /// PROTEUS+STYX's routing: BigramHash's and VE's projections trained by the scalar AdamW group
    /// instead of Muon (R0322's routing, the default).
    pub projections_to_adam: bool,

    // Execution.
    /// `auto` (bf16 on CUDA, f32 on the CPU), `f32` or `bf16`.
    pub precision: Precision,
    /// CPU threads for libtorch; 0 = its default.
    pub threads: usize,
    /// How the model is written (pgolf-model `Formulation`): `fast` (fused GEMMs and
    /// pgolf-kernels' fused ops) or `literal` (the readable oracle); same function.
    pub formulation: Formulation,
    /// On CUDA, replay each micro-batch's forward and backward as a captured CUDA graph.
    pub cuda_graphs: bool,
    /// Diagnostics: synchronize after each phase of a step and log data / micro-batches /
    /// optimizer times (costs a little speed).
    pub phase_timing: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: ModelConfig::default(),
            seed: 1337,
            iterations: 20_000,
            warmdown_iters: 1_200,
            warmdown_frac: None,
            min_lr: 0.0,
            max_wallclock_seconds: 600.0,
            gptq_reserve_seconds: 0.0,
            train_batch_tokens: 524_288,
            grad_accum_steps: None,
            warmup_steps: 0,
            loader: Loader::Sequential,
            val_loss_every: 1_000,
            val_batch_tokens: 524_288,
            val_max_tokens: 0,
            train_log_every: 200,
            tied_embed_lr: 0.05,
            embed_lr: 0.6,
            head_lr: 0.008,
            matrix_lr: 0.04,
            scalar_lr: 0.04,
            muon_momentum: 0.95,
            muon_backend_steps: 5,
            muon_momentum_warmup_start: 0.85,
            muon_momentum_warmup_steps: 500,
            muon_weight_decay: 0.0,
            muon_row_normalize: false,
            muon_coefficients: NsCoefficients::Quintic,
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
            adam_weight_decay: 0.0,
            embed_weight_decay: None,
            grad_clip_norm: 0.0,
            max_loss: None,
            ema_decay: 0.997,
            ema_every: 1,
            swa_every: 0,
            swa_lr_threshold: 0.4,
            late_qat_threshold: 0.0,
            recurrence_enable_at: 0.0,
            projections_to_adam: false,
            precision: Precision::Auto,
            threads: 0,
            formulation: Formulation::Fast,
            cuda_graphs: true,
            phase_timing: false,
        }
    }
}

/// How training draws a step's sequences (REFERENCE.md §1.5).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Loader {
    /// Upstream's `DistributedTokenLoader`: the train stream in order, windows across documents.
    #[default]
    Sequential,
    /// R0405's `ShuffledSequenceLoader`: aligned windows of this rank's shards in random order.
    Shuffled,
    /// R0427's `DocumentPackingLoader`: each micro-batch one row of whole spans from a shard's
    /// first BOS on, attention kept inside each document (varlen).
    Packed,
}

/// How one rank cuts the global batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    pub world_size: usize,
    pub grad_accum: usize,
    /// Tokens per micro-batch on one rank (a multiple of the sequence length).
    pub local_tokens: usize,
    pub seq_len: usize,
}

impl Params {
    pub fn check(&self) -> Result<()> {
        self.model.validate()?;
        if self.iterations == 0 {
            bail!("params: iterations must be positive");
        }
        if self.max_wallclock_seconds.is_nan() || self.max_wallclock_seconds < 0.0 {
            bail!("params: max_wallclock_seconds must be ≥ 0");
        }
        if let Some(max) = self.max_loss {
            if !(max.is_finite() && max > 0.0) {
                bail!(
                    "params: max_loss must be a positive number (leave it out for none), got {max}"
                );
            }
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!(
                "params: ema_decay must be in [0, 1), got {}",
                self.ema_decay
            );
        }
        if self.ema_every == 0 {
            bail!("params: ema_every must be ≥ 1 (1 = every step)");
        }
        if self.late_qat_threshold.is_nan() || self.late_qat_threshold < 0.0 {
            bail!("params: late_qat_threshold must be ≥ 0 (0 = off)");
        }
        if let Some(f) = self.warmdown_frac {
            if !(f > 0.0 && f <= 1.0) {
                bail!("params: warmdown_frac must be in (0, 1] (leave it out for warmdown_iters), got {f}");
            }
        }
        if !(0.0..1.0).contains(&self.min_lr) {
            bail!("params: min_lr must be in [0, 1), got {}", self.min_lr);
        }
        if self.min_lr > 0.0 && self.warmdown_frac.is_none() {
            bail!("params: min_lr floors the warmdown_frac schedule; set warmdown_frac too");
        }
        if self.gptq_reserve_seconds.is_nan()
            || self.gptq_reserve_seconds < 0.0
            || (self.max_wallclock_seconds > 0.0
                && self.gptq_reserve_seconds >= self.max_wallclock_seconds)
        {
            bail!(
                "params: gptq_reserve_seconds must be ≥ 0 and below max_wallclock_seconds, got {}",
                self.gptq_reserve_seconds
            );
        }
        if !(0.0..=1.0).contains(&self.recurrence_enable_at) {
            bail!(
                "params: recurrence_enable_at must be in [0, 1], got {}",
                self.recurrence_enable_at
            );
        }
        if !(self.swa_lr_threshold > 0.0 && self.swa_lr_threshold <= 1.0) {
            bail!(
                "params: swa_lr_threshold must be in (0, 1], got {}",
                self.swa_lr_threshold
            );
        }
        Ok(())
    }

    /// Upstream's split: `grad_accum = 8 / W` unless given, `local = G / (W · A)` tokens.
    pub fn batch_plan(&self, world_size: usize) -> Result<BatchPlan> {
        let grad_accum = match self.grad_accum_steps {
            Some(a) if a > 0 => a as usize,
            Some(_) => bail!("params: grad_accum_steps must be positive"),
            None if 8 % world_size == 0 => 8 / world_size,
            None => {
                bail!("params: world size {world_size} does not divide 8; set grad_accum_steps")
            }
        };
        let seq_len = self.model.seq_len;
        let per_micro = world_size * grad_accum * seq_len;
        if !(self.train_batch_tokens as usize).is_multiple_of(per_micro)
            || self.train_batch_tokens == 0
        {
            bail!(
                "params: train_batch_tokens {} is not a positive multiple of world {world_size} × grad_accum {grad_accum} × seq_len {seq_len}",
                self.train_batch_tokens
            );
        }
        let local_tokens = self.train_batch_tokens as usize / (world_size * grad_accum);
        Ok(BatchPlan {
            world_size,
            grad_accum,
            local_tokens,
            seq_len,
        })
    }

    /// The training budget in ms: the wall-clock cap less the GPTQ reserve (`None`: no cap).
    pub fn budget_ms(&self) -> Option<f64> {
        (self.max_wallclock_seconds > 0.0)
            .then_some((self.max_wallclock_seconds - self.gptq_reserve_seconds) * 1e3)
    }

    /// The LR schedule these params select.
    pub fn lr_schedule(&self) -> LrSchedule {
        match self.warmdown_frac {
            None => LrSchedule::Steps(Warmdown {
                iterations: self.iterations,
                warmdown_iters: self.warmdown_iters,
                max_wallclock_ms: self.budget_ms(),
            }),
            Some(warmdown_frac) => LrSchedule::Fraction(FracWarmdown {
                iterations: self.iterations,
                budget_ms: self.budget_ms(),
                warmdown_frac,
                min_lr: self.min_lr,
            }),
        }
    }

    /// Sequences per validation forward on one rank (at least one, as upstream requires).
    pub fn val_batch_seqs(&self, plan: &BatchPlan) -> Result<usize> {
        let local = self.val_batch_tokens as usize / (plan.world_size * plan.grad_accum);
        if local < plan.seq_len {
            bail!(
                "params: val_batch_tokens {} gives less than one sequence per rank and micro-batch",
                self.val_batch_tokens
            );
        }
        Ok(local / plan.seq_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_split_on_one_and_eight_ranks() {
        let p = Params::default();
        assert_eq!(
            p.batch_plan(1).unwrap(),
            BatchPlan {
                world_size: 1,
                grad_accum: 8,
                local_tokens: 65_536,
                seq_len: 1024
            }
        );
        assert_eq!(
            p.batch_plan(8).unwrap(),
            BatchPlan {
                world_size: 8,
                grad_accum: 1,
                local_tokens: 65_536,
                seq_len: 1024
            }
        );
        assert_eq!(p.val_batch_seqs(&p.batch_plan(1).unwrap()).unwrap(), 64);
        assert!(p.batch_plan(3).is_err());
        let odd = Params {
            train_batch_tokens: 1000,
            ..Params::default()
        };
        assert!(format!("{:#}", odd.batch_plan(1).unwrap_err()).contains("not a positive multiple"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<Params>(r#"{"iterations": 5, "lr": 1}"#).is_err());
        let p: Params =
            serde_json::from_str(r#"{"iterations": 5, "model": {"num_layers": 2}}"#).unwrap();
        assert_eq!(
            (p.iterations, p.model.num_layers, p.model.model_dim),
            (5, 2, 512)
        );
    }
}

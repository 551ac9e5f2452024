//! Optimizers and schedules of the baseline (REFERENCE.md §3.6–3.8, §5.6).
//!
//! - [`Muon`] for 2-D block matrices (Nesterov, NS5 in bf16, `√max(1, rows/cols)`, batched by
//!   shape, rank-sharded with an all-reduce of the updates), [`newton_schulz5`]; the SP8192
//!   line's MuonEq-R ([`row_normalize`]), Polar Express ([`NsCoefficients`]) and bf16 momentum.
//! - [`Adam`] with named groups ([`AdamGroup`]: tied embedding, scalars/controls, untied head),
//!   each with its own β and decoupled weight decay.
//! - [`schedule`]: the warm-down LR multiplier (iterations or wall clock; [`FracWarmdown`]: the
//!   fraction of the budget with a floor, R0405+) and the momentum ramp.
//! - [`Ema`]: the weight average, with its update count.
//! - [`clip_grad_norm`]; [`Collective`] (rank, world size, the collectives) with [`Single`]
//!   (one process; `pgolf_dist::ProcessGroup` is the c10d one).

pub mod adam;
pub mod clip;
pub mod collective;
pub mod ema;
pub mod muon;
pub mod schedule;

pub use adam::{Adam, AdamGroup};
pub use clip::clip_grad_norm;
pub use collective::{Collective, Single};
pub use ema::Ema;
pub use muon::{
    newton_schulz, newton_schulz5, newton_schulz5_in, row_normalize, Muon, NsCoefficients,
    NS5_COEFFS, POLAR_EXPRESS_COEFFS,
};
pub use schedule::{muon_momentum, FracWarmdown, LrSchedule, Warmdown};

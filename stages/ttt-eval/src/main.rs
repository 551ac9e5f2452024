//! The ttt-eval stage (not implemented yet): accepts the stage contract, then fails.

use anyhow::bail;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Params {}

fn main() {
    pgolf_store::run_stage::<Params, _>("ttt-eval", env!("PGOLF_STAGE_IDENTITY"), |_stage| bail!("not implemented yet"));
}

//! Test-only hold points, so the crash-safety harness (tests/tests/reliability_kill.rs) can SIGKILL
//! a stage or the driver at exactly the moments a random delay almost never hits: between the
//! last output file and the manifest, between the manifest's temporary file and its rename, and
//! around the driver's publishing rename. Unset (always, outside that harness) it costs one
//! environment lookup per point and changes nothing.
//!
//! `PGOLF_TEST_HOLD=<point>[@<stage>]` and `PGOLF_TEST_HOLD_FILE=<path>`: on reaching `<point>`
//! (for a run of `<stage>` only, when given) the process writes its pid to `<path>` and sleeps (at
//! most [`HOLD_LIMIT`], then goes on), waiting to be killed.

use std::time::{Duration, Instant};

pub const HOLD_ENV: &str = "PGOLF_TEST_HOLD";
pub const HOLD_FILE_ENV: &str = "PGOLF_TEST_HOLD_FILE";
/// A harness that forgot to kill does not hang forever.
pub const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// The points, in the order a run reaches them.
pub const STAGE_OUTPUTS_WRITTEN: &str = "stage-outputs-written";
pub const STAGE_MANIFEST_TEMP: &str = "stage-manifest-temp";
pub const DRIVER_VERIFIED: &str = "driver-verified";
pub const DRIVER_PUBLISHED: &str = "driver-published";

/// Holds here when the harness asked for this point (in a run of `stage`).
pub fn hold(point: &str, stage: &str) {
    let Ok(wanted) = std::env::var(HOLD_ENV) else {
        return;
    };
    let (wanted_point, wanted_stage) = match wanted.split_once('@') {
        Some((p, s)) => (p, Some(s)),
        None => (wanted.as_str(), None),
    };
    if wanted_point != point || wanted_stage.is_some_and(|s| s != stage) {
        return;
    }
    if let Some(file) = std::env::var_os(HOLD_FILE_ENV) {
        let tmp = std::path::PathBuf::from(&file).with_extension("tmp");
        let _ = std::fs::write(&tmp, format!("{}\n", std::process::id()));
        let _ = std::fs::rename(&tmp, &file);
    }
    let start = Instant::now();
    while start.elapsed() < HOLD_LIMIT {
        std::thread::sleep(Duration::from_millis(10));
    }
}

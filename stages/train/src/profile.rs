//! The optional libtorch profiler window of a run (a diagnostic, not a param).

use anyhow::Result;

/// A diagnostic, off unless `PGOLF_PROFILE_TRACE` names a file: records steps
/// `[PGOLF_PROFILE_FROM, PGOLF_PROFILE_FROM + PGOLF_PROFILE_STEPS)` (default 3 and 2) with
/// libtorch's profiler and writes their Chrome trace there (`bench/trace_summary.py` reads it).
/// Results are unchanged, timings of the recorded steps are not (so it is no param).
pub struct ProfileWindow {
    path: Option<std::path::PathBuf>,
    from: u64,
    to: u64,
    recording: Option<pgolf_runtime::profiler::Recording>,
}

impl ProfileWindow {
    pub fn from_env() -> Result<ProfileWindow> {
        let number = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v}: not a step count")),
                Err(_) => Ok(default),
            }
        };
        let from = number("PGOLF_PROFILE_FROM", 3)?;
        Ok(ProfileWindow {
            path: std::env::var_os("PGOLF_PROFILE_TRACE").map(Into::into),
            from,
            to: from + number("PGOLF_PROFILE_STEPS", 2)?,
            recording: None,
        })
    }

    /// Called before each step: starts recording at `from`, saves at `to`.
    pub fn at_step(&mut self, step: u64) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if step == self.from {
            self.recording = Some(pgolf_runtime::profiler::start()?);
        } else if step == self.to {
            if let Some(recording) = self.recording.take() {
                recording.save(path)?;
            }
        }
        Ok(())
    }
}

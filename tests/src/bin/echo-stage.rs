//! A tiny stage that honours the contract, for testing the `pipeline` driver without the slow ML
//! stages. Its output `out.txt` is derived from its params and the content of its inputs, so a
//! test can see exactly what flowed where; params make it sleep, hold or fail on demand.

use anyhow::{bail, Context, Result};
use pgolf_store::{canonical_json, Input, Stage};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Params {
    /// Copied into the output (and so into every downstream output).
    text: String,
    /// Reported as headline figures `value` and `double` (for sweep tables).
    value: f64,
    /// Free-form nested params (for dotted `--set` paths).
    settings: serde_json::Value,
    /// Sleeps this long after writing `partial.txt`.
    sleep_ms: u64,
    /// Keeps running while this file exists (a test kills the run meanwhile).
    hold_while_exists: Option<PathBuf>,
    /// Fails with this message.
    fail: Option<String>,
}

/// Raw text inputs up to this size are copied into the output; larger ones are summarised.
const SHOWN_TEXT_BYTES: u64 = 4096;

/// Lets a test stand in a rebuilt stage: the salt is appended to the identity.
const SALT_ENV: &str = "ECHO_STAGE_SALT";

fn main() {
    let base = env!("PGOLF_STAGE_IDENTITY")
        .split_once('@')
        .map(|(_, h)| h)
        .unwrap_or("0");
    let salt = std::env::var(SALT_ENV).unwrap_or_default();
    let identity: &'static str = Box::leak(format!("echo-stage@{base}{salt}").into_boxed_str());
    pgolf_store::run_stage::<Params, _>("echo-stage", identity, body);
}

fn body(stage: &mut Stage<Params>) -> Result<()> {
    // Written first, so a run killed while holding leaves a half-written output behind.
    std::fs::write(
        stage.out_path("partial.txt"),
        format!("pid: {}\n", std::process::id()),
    )?;
    if let Some(message) = &stage.params.fail {
        bail!("{message}");
    }
    std::thread::sleep(Duration::from_millis(stage.params.sleep_ms));
    if let Some(gate) = &stage.params.hold_while_exists {
        while gate.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut text = format!(
        "text: {}\nparams: {}\n",
        stage.params.text,
        canonical_json(&stage.params_json)
    );
    let inputs: Vec<Input> = stage.inputs().cloned().collect();
    for input in &inputs {
        for path in &input.paths {
            text.push_str(&format!(
                "input {}: {}\n",
                input.name,
                describe(input, path)?
            ));
        }
    }
    std::fs::write(stage.out_path("out.txt"), &text)?;
    std::fs::remove_file(stage.out_path("partial.txt"))?;
    let value = stage.params.value;
    stage.headline("value", value);
    stage.headline("double", value * 2.0);
    stage.headline("inputs", inputs.len());
    stage.headline("bytes", text.len());
    Ok(())
}

/// An upstream echo output's text (on one line), a small text file's content, or else its size.
fn describe(input: &Input, path: &std::path::Path) -> Result<String> {
    if input.is_stage_output() {
        let upstream = std::fs::read_to_string(path.join("out.txt"))
            .with_context(|| format!("{}: no out.txt", path.display()))?;
        return Ok(format!("[{}]", upstream.trim_end().replace('\n', " | ")));
    }
    if path.is_dir() {
        return Ok(format!("folder {}", input.key));
    }
    let bytes = std::fs::metadata(path)?.len();
    if bytes > SHOWN_TEXT_BYTES {
        return Ok(format!("{bytes} bytes"));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim_end().to_string()),
        Err(_) => Ok(format!("{bytes} bytes")),
    }
}

//! The storage contract every pgolf stage and the `pipeline` driver share.
//!
//! - [`manifest`]: what a finished stage run says about itself (`manifest.json`, written last).
//! - [`key`]: canonical JSON and the BLAKE3 run key (stage identity, params, input keys).
//! - [`hashing`]: content hashes of files, memoised by path + size + mtime.
//! - [`stage`]: the command-line contract (`--out`, `--in`, `--params`, `--device`) and the
//!   wrapper that turns a stage body into a well-behaved executable.
//! - [`inputs`]: the key of one input (stage outputs or raw files), for stages and the driver.
//! - [`files`]: the names of the files stages exchange.
//! - [`device`]: the device record every manifest carries.
//! - [`vocab`]: the parameter words all stages share (`precision`, `compute`).
//! - [`lock`]: one run of a key at a time.
//! - [`testing`]: hold points for the crash-safety harness (inert unless it sets them).

pub mod device;
pub mod files;
pub mod hashing;
pub mod inputs;
pub mod key;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod stage;
pub mod testing;
pub mod vocab;

pub use device::{Backend, DeviceRecord};
pub use inputs::input_key;
pub use key::{canonical_json, run_key};
pub use manifest::{InputRef, Manifest, OutputFile, MANIFEST_SCHEMA};
pub use stage::{run_stage, run_stage_as, Input, RunAs, Stage};
pub use vocab::{Compute, Precision};

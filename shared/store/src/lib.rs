//! The storage contract every pgolf stage and the `pipeline` driver share.
//!
//! - [`manifest`]: what a finished stage run says about itself (`manifest.json`, written last).
//! - [`key`]: canonical JSON and the BLAKE3 run key (stage identity, params, input keys).
//! - [`hashing`]: content hashes of files, memoised by path + size + mtime.
//! - [`stage`]: the command-line contract (`--out`, `--in`, `--params`, `--device`) and the
//!   wrapper that turns a stage body into a well-behaved executable.
//! - [`lock`]: one run of a key at a time.

pub mod hashing;
pub mod key;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod stage;

pub use key::{canonical_json, run_key};
pub use manifest::{InputRef, Manifest, OutputFile, MANIFEST_FILE, MANIFEST_SCHEMA};
pub use stage::{run_stage, run_stage_as, Input, RunAs, Stage};

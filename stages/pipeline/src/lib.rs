//! The driver's code as a library, so the fuzz targets (fuzz/) call the very functions `pipeline`
//! runs on file content: the pipeline.yaml loader ([`config::parse`], [`graph::Graph::build`]) and
//! bundle import ([`import::import`]). The binary (main.rs) is the command line over it.

pub mod bundle;
pub mod config;
pub mod display;
pub mod export;
pub mod freshness;
pub mod gc;
pub mod graph;
pub mod identity;
pub mod import;
pub mod inputs;
pub mod last_runs;
pub mod params;
pub mod plan;
pub mod project;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod session;
pub mod settings;
pub mod status;
pub mod why;

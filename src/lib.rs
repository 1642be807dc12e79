//! dagml: compile and run declarative machine-learning pipelines.
//!
//! Phases, each a module that only uses the ones before it (docs/ARCHITECTURE.md):
//! `frontend` (text → model) → `compile` (model → checked DAG) → ... → `serve` → `cli`.

// Diagnostics travel in `Err` only on the error path, where size does not matter.
#![allow(clippy::result_large_err)]

pub mod cluster;
pub mod compile;
pub mod dashboard;
pub mod data;
pub mod frontend;
pub mod ml;
pub mod optimize;
pub mod plan;
pub mod predict;
pub mod report;
pub mod run;
pub mod runtime;
pub mod serve;
pub mod workspace;

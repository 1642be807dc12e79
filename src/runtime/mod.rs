//! The runtime: executes physical plans.
//!
//! In: a [`crate::plan::PhysicalPlan`]. Out: models, metrics, predictions and
//! files. Must not: parse pipeline text (the runtime never sees TOML).

pub mod executor;
pub mod failure;
pub mod graph;
pub mod kernels;
pub mod outputs;
pub mod progress;
pub mod report;
pub mod value;

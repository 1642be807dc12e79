//! dagml: compile and run declarative machine-learning pipelines.
//!
//! Phases, each a module that only uses the ones before it (docs/ARCHITECTURE.md):
//! `spec` (text → model) → `compile` (model → checked DAG) → ... → `cli`.

pub mod compile;
pub mod spec;

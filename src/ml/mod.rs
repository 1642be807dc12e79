//! Estimators and metrics.

pub mod glm;

//! Estimators and metrics.

pub mod glm;
pub mod model_file;

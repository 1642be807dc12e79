//! Estimators and metrics.

pub mod bins;
pub mod glm;
pub mod model_file;

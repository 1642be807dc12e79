//! Estimators and metrics.

pub mod bins;
pub mod curves;
pub mod evaluation;
pub mod glm;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod tree;

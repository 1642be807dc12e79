//! The data layer: sources to Arrow record batches, transforms, splits, feature matrices
//! and writers.
//!
//! In: the pipeline model's sources, ops and splits, plus the input partitions.
//! Out: Arrow [`RecordBatch`]es (one per partition), feature matrices for the
//! estimators, and files. Must not: know about tasks, threads or workers: every
//! function here is a pure function of its arguments (and the files it reads), so
//! the same partition gives the same bytes on any worker.

pub mod error;
pub mod expr_eval;
pub mod idx;
pub mod matrix;
pub mod ops;
pub mod rng;
pub mod source;
pub mod split;
pub mod synthetic;
pub mod write;

pub use error::DataError;

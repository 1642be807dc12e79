//! `dagml serve`: models answering over HTTP with the Open Inference Protocol
//! (the KServe v2 / Triton REST API).
//!
//! In: model files (or, through a [`Backend`], models held elsewhere) and HTTP
//! requests. Out: health, metadata and predictions equal to `dagml predict`'s
//! to the bit; a 4xx with a message that says what is wrong for a bad request.
//! Must not: panic or hang on any request; let a request see two versions of a
//! model; serve a request past the body and concurrency limits.
//!
//! Rooms: [`protocol`] (messages and tensors), [`models`] (what is served, and
//! how a request's columns are made to fit a model's features), [`batch`]
//! (concurrent requests to one model predicted together, and their
//! statistics), [`http`] (the axum server: routes, limits, the token,
//! graceful shutdown), [`cluster`] (shard models on a cluster's workers),
//! [`tls`].

pub mod batch;
pub mod cluster;
pub mod http;
pub mod models;
pub mod protocol;
pub mod tls;

pub use models::{Answer, Backend, LocalModels, ModelInfo};

/// What goes wrong serving a request; each kind has its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ServeError {
    /// The same error again (for each request of a batch that got it).
    pub fn same(&self) -> ServeError {
        let m = self.to_string();
        match self {
            ServeError::BadRequest(_) => ServeError::BadRequest(m),
            ServeError::NotFound(_) => ServeError::NotFound(m),
            ServeError::Unauthorized(_) => ServeError::Unauthorized(m),
            ServeError::TooLarge(_) => ServeError::TooLarge(m),
            ServeError::Unavailable(_) => ServeError::Unavailable(m),
            ServeError::Internal(_) => ServeError::Internal(m),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ServeError::BadRequest(_) => 400,
            ServeError::Unauthorized(_) => 401,
            ServeError::NotFound(_) => 404,
            ServeError::TooLarge(_) => 413,
            ServeError::Unavailable(_) => 503,
            ServeError::Internal(_) => 500,
        }
    }
}

/// Why a model server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the model file `{0}`: {1}")]
    Read(String, std::io::Error),
    #[error("`{0}` is not a model dagml can serve: {1}")]
    Model(String, String),
    #[error(
        "two model files are both named `{0}` (`{1}` and `{2}`): serve one of them under another name with NAME=PATH"
    )]
    Duplicate(String, String, String),
    #[error("cannot listen on `{0}`: {1}")]
    Listen(String, std::io::Error),
    #[error("{0}")]
    Other(String),
}

//! The live dashboard of a cluster: a web page (workers, the current run's plan
//! coloured by task state, the task stream, progress, failures, results, the
//! served shard models with their versions, requests/s, latency, errors), its
//! JSON API under `/api/`, server-sent events, and `/metrics` in the Prometheus
//! text format.
//!
//! In: the scheduler's [`Observer`] (`cluster::observe`, read only) and a
//! [`DashboardConfig`] (address, optional token). Out: a running HTTP server
//! and its address. The page's files are part of the binary (`assets/`,
//! hand-written HTML, CSS and JavaScript: no CDN, no build step).
//! Must not: change what the cluster does (it only reads the observation),
//! answer `/api/` or `/metrics` without the token when one is set, fetch
//! anything from the network, or log the token.

mod http;
pub mod metrics;
pub mod plan_svg;

pub use http::{Running, start};

use std::sync::Arc;

pub use crate::cluster::observe::Observer;

/// The default address: loopback only (a dashboard shows file paths and
/// metrics; exposing it is a choice, made with `--dashboard 0.0.0.0:8787`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The cookie the page keeps the token in.
pub const TOKEN_COOKIE: &str = "dagml_token";

#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// `host:port`; port 0 picks a free one.
    pub listen: String,
    /// When set, `/api/` and `/metrics` need it (bearer header or cookie).
    pub token: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: DEFAULT_LISTEN.into(),
            token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "the dashboard cannot listen on {0}: {1}; pick another address with --dashboard HOST:PORT"
    )]
    Listen(String, std::io::Error),
}

/// Keeps the observer alive for the server's handlers.
pub(crate) type Obs = Arc<Observer>;

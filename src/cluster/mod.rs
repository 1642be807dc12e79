//! Running a pipeline on a cluster: a scheduler (gRPC control plane) and workers
//! (each an Arrow Flight data plane plus a gRPC control service).
//!
//! In: a pipeline's text, sent by `dagml run --scheduler ADDR` (or the embedded
//! cluster) to the scheduler, which plans it and hands tasks to workers. Out: the
//! run's task events and its final values (models, metrics, receipts), the same
//! bytes an in-process run gives for the same file and seed.
//! Must not: ship code (workers get the pipeline text and plan it themselves),
//! move a data set through the scheduler (partitions go worker to worker), or
//! wait on a peer without bound: every call and Flight transfer has a deadline
//! or a keepalive (the constants below), so a silent peer is found in bounded
//! time.
//!
//! Files: `proto` (generated gRPC types), `addr` (ADDR parsing), `auth`
//! (DAGML_TOKEN, message limits), `store` (partitions in memory or spilled),
//! `flight` (the Flight service and client), `serve` (binding, TLS, stopping),
//! `worker`, `scheduler`, `client`
//! (submit a run), `embedded` (scheduler and workers in this process),
//! `observe` (what the scheduler and drivers see, for the dashboard).

pub mod addr;
pub mod auth;
pub mod client;
pub mod driver;
pub mod embedded;
pub mod fault;
pub mod flight;
pub mod health;
pub mod observe;
pub mod proto;
pub mod resident;
pub mod scheduler;
pub mod serve;
pub mod serving_stats;
pub mod store;
pub mod watch;
pub mod worker;

use std::time::Duration;

/// Attempts per task before a run fails (a task running on a worker that is
/// lost, or whose input could not be fetched from a lost peer, counts one).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// How often workers heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A worker silent this long is declared lost.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// An HTTP/2 ping goes to a peer after this long without hearing from it, on
/// every channel (client side, idle or not) and every accepted connection
/// (server side).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// A ping unanswered this long closes the connection: every call on it fails
/// (a `RunTask` with `Unavailable`, as from a killed process).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// A silent peer is noticed within this: every RPC and Flight transfer to a
/// peer that stops answering fails within it.
pub const SILENT_PEER_BOUND: Duration =
    Duration::from_secs(KEEPALIVE_INTERVAL.as_secs() + KEEPALIVE_TIMEOUT.as_secs());
/// A TCP connection not established in this long fails (a host whose packets
/// are dropped never answers the SYN).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of the short control calls: register, heartbeat, drop, cancel,
/// status.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of `StartRun` (the worker plans the pipeline).
pub const START_RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// No message of a Flight transfer may take longer than this to arrive (a big
/// partition may take long in all; each of its messages may not).
pub const FLIGHT_STALL: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows of every channel and server: with the default
/// 64 KiB a partition of megabytes crawls through window updates (a Flight
/// transfer over loopback ran at ~300 MB/s); a few MiB let it stream.
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// Input partitions a worker fetches from its peers at once for one task (and
/// result values the scheduler fetches at once at the end of a run).
pub const PARALLEL_FETCHES: usize = 8;
/// How long a worker that got SIGTERM waits for its running tasks before it
/// hands them back and leaves (`dagml worker --drain-timeout`): below
/// Kubernetes' default `terminationGracePeriodSeconds` of 30 s, with room to
/// leave and close its connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// With no worker left, a run waits this long for one before failing.
pub const NO_WORKER_GRACE: Duration = Duration::from_secs(10);
/// How long fetching a run's result values (metrics, receipts) may take.
pub const RESULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest gRPC / Flight message accepted or sent (a partition is split into
/// messages far smaller than this; a model is one message).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;
/// Spill partitions to Arrow IPC files past this fraction of the memory limit.
pub const SPILL_FRACTION: f64 = 0.7;
/// Take no new tasks past this fraction of the memory limit.
pub const PAUSE_FRACTION: f64 = 0.85;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("bad address `{0}`: {1}")]
    Address(String, String),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the run failed: {0}")]
    RunFailed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The scheduler refused this worker's registration for a reason no retry
    /// fixes (a wrong or missing token).
    #[error("the scheduler at {scheduler} refused this worker: {cause}")]
    Refused { scheduler: String, cause: String },
    #[error("{0}")]
    Other(String),
}

/// A fingerprint of a physical plan (SHA-256 of its tasks as JSON, hex): the
/// client, the scheduler and every worker plan a run's text themselves, and
/// compare this to make sure they compute the same thing.
pub fn plan_hash(plan: &crate::plan::PhysicalPlan) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(&plan.tasks).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The plan of a retraining, `--only MODEL.SHARD...`: those per-shard fits
/// and the tasks whose outputs they read (the shard's reads, transforms and
/// split), nothing else. Every process of the run prunes its own plan the
/// same way, so the plan hashes still agree.
pub fn only_plan(
    plan: &crate::plan::PhysicalPlan,
    only: &[String],
) -> Result<crate::plan::PhysicalPlan, ClusterError> {
    use crate::plan::TaskKind;
    let shards_of = |node: &str| -> Vec<String> {
        plan.tasks
            .iter()
            .filter(|t| t.node == node)
            .filter_map(|t| match &t.kind {
                TaskKind::FitShard { shard } => Some(shard.clone()),
                _ => None,
            })
            .collect()
    };
    let mut wanted: Vec<(String, String)> = Vec::new();
    for o in only {
        let Some((model, shard)) = o.split_once('.') else {
            return Err(ClusterError::Other(format!(
                "`--only {o}`: name a shard model as MODEL.SHARD, for example `ensemble.A`"
            )));
        };
        let node = format!("fit:{model}");
        let shards = shards_of(&node);
        if shards.is_empty() {
            let per_shard: Vec<String> = plan
                .tasks
                .iter()
                .filter(|t| matches!(t.kind, TaskKind::FitShard { .. }))
                .filter_map(|t| t.node.strip_prefix("fit:").map(str::to_string))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(ClusterError::Other(format!(
                "`--only {o}`: the pipeline has no per-shard model `{model}`{}",
                if per_shard.is_empty() {
                    String::new()
                } else {
                    format!(" (its per-shard models: {})", per_shard.join(", "))
                }
            )));
        }
        if !shards.iter().any(|s| s == shard) {
            return Err(ClusterError::Other(format!(
                "`--only {o}`: model `{model}` has no shard `{shard}`; its shards are {}",
                shards.join(", ")
            )));
        }
        wanted.push((node, shard.to_string()));
    }
    Ok(plan.only(|t| match &t.kind {
        TaskKind::FitShard { shard } => wanted.iter().any(|(n, s)| *n == t.node && s == shard),
        _ => false,
    }))
}

/// A failed call's message followed by the chain of errors under it (a
/// transport failure's message alone is only "http2 error"; under it is,
/// e.g., "keep-alive timed out").
pub fn status_cause(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    let mut next = std::error::Error::source(s);
    while let Some(e) = next {
        let m = e.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        next = e.source();
    }
    out
}

/// Parse a memory size: `6GB`, `512MB`, `1.5GiB`, `1000000` (bytes); the same
/// sizes a pipeline's `memory_limit` takes.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    crate::frontend::pipeline::parse_bytes(s).ok_or_else(|| {
        format!("`{s}` is not a memory size like 6GB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    })
}

/// Where a run's tasks execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The in-process executor over a thread pool (`--in-process`, `--threads N`).
    InProcess { threads: Option<usize> },
    /// A scheduler and workers started in this process, over loopback.
    Embedded {
        workers: usize,
        threads: usize,
        memory_limit: u64,
    },
    /// A running `dagml scheduler`; the token is read from `token_env`.
    Remote {
        scheduler: String,
        token_env: String,
    },
}

/// What the command line asked for; `None` everywhere defers to the file.
#[derive(Clone, Debug, Default)]
pub struct PlacementFlags {
    pub in_process: bool,
    pub threads: Option<usize>,
    pub scheduler: Option<String>,
    pub workers: Option<usize>,
    pub threads_per_worker: Option<usize>,
    /// Bytes per embedded worker.
    pub memory_limit: Option<u64>,
}

/// The command line first, then the file's `[cluster]`, then an embedded cluster
/// of one single-threaded worker per core.
pub fn placement(
    file: Option<&crate::frontend::pipeline::Cluster>,
    flags: &PlacementFlags,
    cores: usize,
) -> Placement {
    use crate::frontend::pipeline::Cluster;
    if flags.in_process || flags.threads.is_some() {
        return Placement::InProcess {
            threads: flags.threads,
        };
    }
    if let Some(s) = &flags.scheduler {
        let token_env = match file {
            Some(Cluster::Remote {
                token_env: Some(t), ..
            }) => t.value.clone(),
            _ => auth::TOKEN_ENV.to_string(),
        };
        return Placement::Remote {
            scheduler: s.clone(),
            token_env,
        };
    }
    let (mut workers, mut threads, mut memory_limit) = match file {
        Some(Cluster::Remote {
            scheduler,
            token_env,
            ..
        }) if flags.workers.is_none() => {
            return Placement::Remote {
                scheduler: scheduler.value.clone(),
                token_env: token_env
                    .as_ref()
                    .map(|t| t.value.clone())
                    .unwrap_or_else(|| auth::TOKEN_ENV.to_string()),
            };
        }
        Some(Cluster::Local {
            workers,
            threads,
            memory_limit,
            ..
        }) => (
            workers.as_ref().map(|w| w.value as usize),
            threads.value as usize,
            memory_limit.as_ref().map(|m| m.value).unwrap_or(0),
        ),
        _ => (None, 1, 0),
    };
    if let Some(w) = flags.workers {
        workers = Some(w);
    }
    if let Some(t) = flags.threads_per_worker {
        threads = t;
    }
    if let Some(m) = flags.memory_limit {
        memory_limit = m;
    }
    Placement::Embedded {
        workers: workers.unwrap_or(cores).max(1),
        threads: threads.max(1),
        memory_limit,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_sizes() {
        assert_eq!(super::parse_memory("6GB"), Ok(6_000_000_000));
        assert_eq!(super::parse_memory("1GiB"), Ok(1 << 30));
        assert_eq!(super::parse_memory("512"), Ok(512));
        assert!(super::parse_memory("6XB").is_err());
        assert!(super::parse_memory("lots").is_err());
    }

    use super::{Placement, PlacementFlags, placement};
    use crate::frontend::pipeline::Cluster;
    use crate::frontend::span::{Span, Spanned};

    fn sp<T>(value: T) -> Spanned<T> {
        Spanned {
            value,
            span: Span::default(),
        }
    }

    #[test]
    fn the_command_line_then_the_file_then_one_worker_per_core() {
        let none = PlacementFlags::default();
        let embedded = |workers, threads, memory_limit| Placement::Embedded {
            workers,
            threads,
            memory_limit,
        };
        assert_eq!(placement(None, &none, 4), embedded(4, 1, 0));
        let local = Cluster::Local {
            span: Span::default(),
            workers: Some(sp(2)),
            threads: sp(3),
            memory_limit: Some(sp(6_000_000_000)),
        };
        assert_eq!(
            placement(Some(&local), &none, 4),
            embedded(2, 3, 6_000_000_000)
        );
        let flags = PlacementFlags {
            workers: Some(5),
            threads_per_worker: Some(1),
            ..Default::default()
        };
        assert_eq!(
            placement(Some(&local), &flags, 4),
            embedded(5, 1, 6_000_000_000)
        );
        let limited = PlacementFlags {
            memory_limit: Some(300_000),
            ..Default::default()
        };
        assert_eq!(
            placement(Some(&local), &limited, 4),
            embedded(2, 3, 300_000)
        );
        assert_eq!(placement(None, &limited, 4), embedded(4, 1, 300_000));
        let threads = PlacementFlags {
            threads: Some(2),
            ..Default::default()
        };
        assert_eq!(
            placement(Some(&local), &threads, 4),
            Placement::InProcess { threads: Some(2) }
        );
        let remote = Cluster::Remote {
            span: Span::default(),
            scheduler: sp("10.0.0.5:7077".to_string()),
            token_env: Some(sp("MY_TOKEN".to_string())),
        };
        assert_eq!(
            placement(Some(&remote), &none, 4),
            Placement::Remote {
                scheduler: "10.0.0.5:7077".into(),
                token_env: "MY_TOKEN".into()
            }
        );
        let sched = PlacementFlags {
            scheduler: Some("127.0.0.1:9".into()),
            ..Default::default()
        };
        assert_eq!(
            placement(None, &sched, 4),
            Placement::Remote {
                scheduler: "127.0.0.1:9".into(),
                token_env: "DAGML_TOKEN".into()
            }
        );
    }
}

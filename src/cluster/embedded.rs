//! The embedded cluster: a scheduler and workers in this process, talking over
//! loopback gRPC and Flight exactly as separate processes do.
//!
//! In: a worker count, threads and memory limit per worker, TLS files, and two
//! testing hooks from the environment (`DAGML_EMBEDDED_FAULT`: kill or silence
//! one worker; `DAGML_EMBEDDED_HOLD`). Out: a running cluster whose scheduler address and
//! token a client submits with. Must not: take any shortcut the multi-process
//! cluster does not but one: a partition one embedded worker fetches from
//! another is taken from that worker's store in this process, not encoded
//! through Flight (`flight::share_in_process`; never with a fault hook, whose
//! tests kill or silence a worker's data plane). Every call still carries the
//! token; it never reuses `DAGML_TOKEN` (its token is its own, fresh each run).

use super::ClusterError;
pub use super::fault::{Action, FAULT_ENV, Fault};
use super::scheduler::{self, SchedulerConfig, SchedulerHandle};
use super::worker::{self, WorkerConfig, WorkerFault, WorkerHandle};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Testing hook: once the embedded servers are up (and, with `--events`, their
/// addresses printed), wait until this path exists before submitting the run.
pub const HOLD_ENV: &str = "DAGML_EMBEDDED_HOLD";
/// How long [`HOLD_ENV`] waits before the run fails.
pub const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// Wait (at most [`HOLD_LIMIT`]) for the path in `DAGML_EMBEDDED_HOLD`, if set.
pub async fn hold_from_env() -> Result<(), ClusterError> {
    let Some(path) = std::env::var_os(HOLD_ENV).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = std::path::PathBuf::from(path);
    let deadline = Instant::now() + HOLD_LIMIT;
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(ClusterError::Other(format!(
                "{HOLD_ENV}: `{}` did not appear within {}s",
                path.display(),
                HOLD_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A worker's memory limit when neither the command line nor the file sets
/// one: half of what this machine has available, shared by the workers (the
/// other half is for the process around them: the client, the scheduler, the
/// partitions in flight); 0 (no limit) where the machine cannot tell.
pub fn default_memory_limit(workers: usize) -> u64 {
    crate::workspace::available_memory_bytes()
        .map(|m| (m / 2 / workers.max(1) as u64).max(256 << 20))
        .unwrap_or(0)
}

/// The embedded cluster's shape.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub workers: usize,
    pub threads: usize,
    /// Bytes per worker; 0: [`default_memory_limit`].
    pub memory_limit: u64,
    pub tls: super::auth::Tls,
    pub fault: Option<Arc<Fault>>,
    /// Workers print their spills on stderr.
    pub log_spills: bool,
}

pub struct Embedded {
    pub scheduler: SchedulerHandle,
    pub workers: Vec<WorkerHandle>,
    /// The token every call to these servers must carry: random, made for this
    /// cluster, never printed.
    pub token: String,
}

impl Embedded {
    /// Start a scheduler and `workers` workers on 127.0.0.1, all requiring a
    /// fresh random token, and wait until every worker has registered.
    pub async fn start(o: Options) -> Result<Embedded, ClusterError> {
        let token = super::auth::random_token();
        let tls = o.tls.clone();
        let scheduler = scheduler::start(SchedulerConfig {
            token: Some(token.clone()),
            tls: tls.clone(),
            log: false,
            ..SchedulerConfig::default()
        })
        .await?;
        // One pool for all the workers, of as many threads as they have in
        // all: each worker still takes at most its `threads` tasks at once, but
        // a task running alone (an evaluation at the end of a run) can use the
        // threads an idle worker leaves free, as it would in-process. Data
        // still moves between the workers by Flight.
        let workers = o.workers.max(1);
        let threads = o.threads.max(1);
        let memory_limit = match o.memory_limit {
            0 => default_memory_limit(workers),
            m => m,
        };
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(workers * threads)
                .build()
                .map_err(|e| ClusterError::Other(e.to_string()))?,
        );
        let mut handles = Vec::new();
        for i in 0..workers {
            let fault = o
                .fault
                .as_ref()
                .filter(|f| f.targets(i))
                .map(|f| WorkerFault {
                    index: i,
                    fault: f.clone(),
                });
            handles.push(
                worker::start(WorkerConfig {
                    scheduler: scheduler.address.clone(),
                    listen: super::addr::DEFAULT_LISTEN.into(),
                    advertise: None,
                    name: Some(format!("embedded-{i}")),
                    threads,
                    memory_limit,
                    data_root: None,
                    token: Some(token.clone()),
                    tls: tls.clone(),
                    pool: Some(pool.clone()),
                    fault,
                    log_spills: o.log_spills,
                    health_listen: None,
                    watch: false,
                })
                .await?,
            );
        }
        if o.fault.is_none() {
            for h in &handles {
                super::flight::share_in_process(&h.address, &h.store());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = super::client::status(&scheduler.address, Some(&token), &tls).await?;
            if s.workers.len() >= handles.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Other(
                    "the embedded workers did not register".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Embedded {
            scheduler,
            workers: handles,
            token,
        })
    }

    pub async fn stop(self) {
        for w in self.workers {
            super::flight::unshare_in_process(&w.address);
            w.stop().await;
        }
        self.scheduler.stop().await;
    }
}

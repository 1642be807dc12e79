//! The embedded cluster: a scheduler and workers in this process, talking over
//! loopback gRPC and Flight exactly as separate processes do.
//!
//! In: a worker count and threads per worker. Out: a running cluster whose
//! scheduler address a client submits to. Must not: take any shortcut the
//! multi-process cluster does not (every partition still moves by Flight).

use super::ClusterError;
use super::scheduler::{self, SchedulerConfig, SchedulerHandle};
use super::worker::{self, WorkerConfig, WorkerHandle};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Embedded {
    pub scheduler: SchedulerHandle,
    pub workers: Vec<WorkerHandle>,
}

impl Embedded {
    /// Start a scheduler and `workers` workers (each with `threads` threads and
    /// `memory_limit` bytes, 0 for none) on 127.0.0.1, and wait until every
    /// worker has registered.
    pub async fn start(
        workers: usize,
        threads: usize,
        memory_limit: u64,
        token: Option<String>,
        tls: super::auth::Tls,
    ) -> Result<Embedded, ClusterError> {
        let scheduler = scheduler::start(SchedulerConfig {
            token: token.clone(),
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
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(workers.max(1) * threads.max(1))
                .build()
                .map_err(|e| ClusterError::Other(e.to_string()))?,
        );
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            handles.push(
                worker::start(WorkerConfig {
                    scheduler: scheduler.address.clone(),
                    listen: super::addr::DEFAULT_LISTEN.into(),
                    name: Some(format!("embedded-{i}")),
                    threads: threads.max(1),
                    memory_limit,
                    data_root: None,
                    token: token.clone(),
                    tls: tls.clone(),
                    pool: Some(pool.clone()),
                })
                .await?,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = super::client::status(&scheduler.address, token.as_deref(), &tls).await?;
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
        })
    }

    pub async fn stop(self) {
        for w in self.workers {
            w.stop().await;
        }
        self.scheduler.stop().await;
    }
}

//! The scheduler: registers workers, watches their heartbeats, and drives runs:
//! hands ready tasks to workers with free threads (preferring the one holding
//! most of the task's input bytes), retries failed tasks up to a bound, and on a
//! lost worker re-runs its tasks and recomputes its partitions from the DAG.
//! A worker whose heartbeat says it is draining gets no new tasks; when it
//! leaves (`LeaveCluster`) it is forgotten as a lost worker.
//!
//! In: `RegisterWorker`/`Heartbeat`/`LeaveCluster` from workers, `SubmitRun` (a pipeline's text)
//! from clients. Out: a stream of task events ending with the run's result (the
//! evaluation and write-receipt values, fetched from workers by Flight) or a
//! failure naming the task, the worker, the attempts and the cause.
//! Must not: run tasks itself, or pull data partitions through itself (only the
//! small final values are fetched).

use super::auth::{Attach, Check};
use super::driver::{Driver, to_wire};
use super::flight::Peers;
use super::proto::scheduler_server::{Scheduler, SchedulerServer};
use super::proto::worker_client::WorkerClient;
use super::proto::*;
use super::{ClusterError, HEARTBEAT, HEARTBEAT_TIMEOUT, MAX_MESSAGE_BYTES, NO_WORKER_GRACE};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub(super) type Client = WorkerClient<InterceptedService<Channel, Attach>>;

#[derive(Clone)]
pub(super) struct WorkerEntry {
    pub name: String,
    pub address: String,
    pub threads: u32,
    pub memory_limit: u64,
    pub last_seen: Instant,
    pub paused: bool,
    /// It got SIGTERM: no new tasks; it leaves once its running ones are done.
    pub draining: bool,
    pub running: u32,
    pub memory_used: u64,
    pub client: Client,
}

pub(super) struct Shared {
    workers: Mutex<BTreeMap<u64, WorkerEntry>>,
    /// Why each lost worker was declared lost (name, cause).
    lost: Mutex<HashMap<u64, (String, String)>>,
    next_worker: AtomicU64,
    next_run: AtomicU64,
    /// Each run's cancel signal.
    runs: Mutex<HashMap<String, Arc<Notify>>>,
    attach: Attach,
    pub peers: Peers,
    pub grace: Duration,
    /// Bumped on every change of membership (a worker registered, lost,
    /// paused or resumed): the run drivers wait on it instead of polling.
    pub members: watch::Sender<u64>,
    /// Print registrations, losses and runs on stderr (a `dagml scheduler`
    /// does; the embedded one leaves the client's output alone).
    log: bool,
    /// What watchers (the dashboard) see; written to, never read, here.
    pub observe: Arc<super::observe::Observer>,
}

impl Shared {
    fn changed(&self) {
        self.members.send_modify(|n| *n += 1);
    }

    pub fn live(&self) -> BTreeMap<u64, WorkerEntry> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn declare_lost(&self, id: u64, cause: &str) {
        let gone = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(w) = gone {
            if self.log {
                eprintln!("scheduler: worker {} ({}) lost: {cause}", w.name, w.address);
            }
            self.lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, (w.name, cause.to_string()));
            self.observe.worker_lost(id, cause);
            self.changed();
        }
    }

    pub fn lost_cause(&self, id: u64) -> (String, String) {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_else(|| (format!("#{id}"), "lost".into()))
    }
}

#[derive(Clone)]
struct Service(Arc<Shared>);

fn worker_client(addr: &str, attach: Attach) -> Result<Client, Status> {
    let channel = attach
        .channel(addr)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(WorkerClient::with_interceptor(channel, attach)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

#[tonic::async_trait]
impl Scheduler for Service {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerReply>, Status> {
        let r = request.into_inner();
        let address = super::addr::host_port(&r.address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let client = worker_client(&address, self.0.attach.clone())?;
        // A worker registering again at an address already known (it was
        // silent, or restarted) replaces the old entry: what the old id held
        // is gone.
        let stale: Vec<u64> = self
            .0
            .live()
            .into_iter()
            .filter(|(_, w)| w.address == address)
            .map(|(id, _)| id)
            .collect();
        for old in stale {
            self.0.declare_lost(old, "registered again");
        }
        let id = self.0.next_worker.fetch_add(1, Ordering::SeqCst) + 1;
        self.0
            .observe
            .worker_joined(id, &r.name, &address, r.threads.max(1), r.memory_limit);
        if self.0.log {
            eprintln!(
                "scheduler: worker {} registered at {address} ({} threads)",
                r.name, r.threads
            );
        }
        self.0
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                WorkerEntry {
                    name: r.name,
                    address,
                    threads: r.threads.max(1),
                    memory_limit: r.memory_limit,
                    last_seen: Instant::now(),
                    paused: false,
                    draining: false,
                    running: 0,
                    memory_used: 0,
                    client,
                },
            );
        self.0.changed();
        Ok(Response::new(RegisterWorkerReply {
            worker_id: id,
            heartbeat_ms: HEARTBEAT.as_millis() as u32,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let r = request.into_inner();
        let (known, flipped, began_draining, registered) = {
            let mut g = self.0.workers.lock().unwrap_or_else(|p| p.into_inner());
            match g.get_mut(&r.worker_id) {
                Some(w) => {
                    let began = r.draining && !w.draining;
                    let flipped = w.paused != r.paused || began;
                    w.last_seen = Instant::now();
                    w.paused = r.paused;
                    // Draining is one way: a worker does not take it back.
                    w.draining |= r.draining;
                    w.running = r.running;
                    w.memory_used = r.memory_used;
                    (
                        true,
                        flipped,
                        began.then(|| (w.name.clone(), w.address.clone())),
                        (w.threads, w.memory_limit),
                    )
                }
                None => (false, false, None, (0, 0)),
            }
        };
        if known {
            // A worker of an older dagml sends none of the watchers' fields:
            // what it registered with stands.
            let (threads, memory_limit) = registered;
            self.0.observe.heartbeat(
                r.worker_id,
                super::observe::WorkerStats {
                    threads: if r.threads == 0 { threads } else { r.threads },
                    busy_threads: r.busy_threads.max(r.running.min(threads)),
                    memory_used: r.memory_used,
                    memory_limit: r.memory_limit.max(memory_limit),
                    spill_threshold: r.spill_threshold,
                    pause_threshold: r.pause_threshold,
                    spilled_bytes: r.spilled_bytes,
                    partitions: r.partitions,
                    paused: r.paused,
                    draining: r.draining,
                },
                r.serving
                    .into_iter()
                    .map(|s| super::observe::ServedShard {
                        model: s.model,
                        shard: s.shard,
                        version: s.version,
                        versions: s.versions,
                        requests: s.requests,
                        errors: s.errors,
                        latency_sum_us: s.latency_sum_us,
                        latency_buckets: s.latency_buckets,
                        p50_us: s.p50_us,
                        p99_us: s.p99_us,
                    })
                    .collect(),
            );
        }
        if let (Some((name, address)), true) = (began_draining, self.0.log) {
            eprintln!(
                "scheduler: worker {name} ({address}) draining: no new tasks; {} running",
                r.running
            );
        }
        if flipped {
            self.0.changed();
        }
        Ok(Response::new(HeartbeatReply { known }))
    }

    type SubmitRunStream = tokio_stream::wrappers::ReceiverStream<Result<RunEvent, Status>>;

    async fn submit_run(
        &self,
        request: Request<SubmitRunRequest>,
    ) -> Result<Response<Self::SubmitRunStream>, Status> {
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let shared = self.0.clone();
        tokio::spawn(async move {
            let run_id = format!("run{}", shared.next_run.fetch_add(1, Ordering::SeqCst) + 1);
            let cancel = Arc::new(Notify::new());
            shared
                .runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(run_id.clone(), cancel.clone());
            if shared.log {
                eprintln!("scheduler: {run_id} started ({})", req.file_name);
            }
            let file_name = req.file_name.clone();
            let driver = Driver {
                shared: &shared,
                run_id: &run_id,
                tx: &tx,
                cancel,
            };
            let out = driver.drive(req).await;
            shared
                .runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&run_id);
            let (event, holders) = match out {
                Ok((r, holders)) => {
                    if shared.log {
                        eprintln!("scheduler: {run_id} done");
                    }
                    (run_event::Event::Result(r), holders)
                }
                Err((e, _)) => {
                    if shared.log {
                        eprintln!("scheduler: {run_id} failed: {e}");
                    }
                    shared.observe.run_failed(&run_id, &file_name, &e);
                    (run_event::Event::Failed(to_wire(&e)), BTreeSet::new())
                }
            };
            let _ = tx.send(Ok(RunEvent { event: Some(event) })).await;
            // The client has its result; now the workers forget the run (a
            // failed run was cancelled on them already).
            driver.cancel_everywhere(&holders).await;
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn cancel_run(
        &self,
        request: Request<CancelRunRequest>,
    ) -> Result<Response<CancelRunReply>, Status> {
        let id = request.into_inner().run_id;
        let flag = self
            .0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        match flag {
            Some(f) => {
                f.notify_one();
                Ok(Response::new(CancelRunReply {}))
            }
            None => Err(Status::not_found(format!("no run `{id}`"))),
        }
    }

    async fn leave_cluster(
        &self,
        request: Request<LeaveClusterRequest>,
    ) -> Result<Response<LeaveClusterReply>, Status> {
        let r = request.into_inner();
        let reason = if r.reason.is_empty() {
            "left the cluster".to_string()
        } else {
            r.reason
        };
        // As for a lost worker: what it ran runs again elsewhere and what it
        // held is recomputed where a run still needs it.
        self.0
            .declare_lost(r.worker_id, &format!("drained: {reason}"));
        Ok(Response::new(LeaveClusterReply {}))
    }

    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        let workers = self
            .0
            .live()
            .into_iter()
            .map(|(id, w)| WorkerStatus {
                worker_id: id,
                name: w.name,
                address: w.address,
                threads: w.threads,
                memory_limit: w.memory_limit,
                running: w.running,
                memory_used: w.memory_used,
                paused: w.paused,
                draining: w.draining,
            })
            .collect();
        Ok(Response::new(ClusterStatusReply { workers }))
    }
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub listen: String,
    pub token: Option<String>,
    pub tls: super::auth::Tls,
    /// How long a run waits with no worker before failing.
    pub grace: Duration,
    /// Log registrations, lost workers and runs on stderr.
    pub log: bool,
    /// Also serve the health service alone here, plain and without a token
    /// (for probes that can send neither).
    pub health_listen: Option<String>,
    /// Where the scheduler reports what it sees (the dashboard reads it); a
    /// fresh one when not given.
    pub observe: Option<Arc<super::observe::Observer>>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            listen: super::addr::DEFAULT_LISTEN.into(),
            token: None,
            tls: Default::default(),
            grace: NO_WORKER_GRACE,
            log: true,
            health_listen: None,
            observe: None,
        }
    }
}

pub struct SchedulerHandle {
    pub address: String,
    /// Where the plain health service listens (`health_listen`).
    pub health_address: Option<String>,
    /// What the scheduler sees, for watchers.
    pub observe: Arc<super::observe::Observer>,
    served: super::serve::Served,
}

impl SchedulerHandle {
    pub async fn stop(self) {
        self.served.stop().await
    }

    pub async fn wait(self) -> Result<(), ClusterError> {
        self.served.wait().await
    }
}

/// Bind and serve; a watchdog declares workers lost after missed heartbeats.
pub async fn start(cfg: SchedulerConfig) -> Result<SchedulerHandle, ClusterError> {
    let (listener, address) = super::serve::bind(&cfg.listen).await?;
    let attach = Attach::new(cfg.token.as_deref(), &cfg.tls)?;
    let shared = Arc::new(Shared {
        workers: Mutex::default(),
        lost: Mutex::default(),
        next_worker: AtomicU64::new(0),
        next_run: AtomicU64::new(0),
        runs: Mutex::default(),
        peers: Peers::new(attach.clone()),
        attach,
        grace: cfg.grace,
        members: watch::channel(0).0,
        log: cfg.log,
        observe: cfg.observe.clone().unwrap_or_default(),
    });
    let check = Check::new(cfg.token.as_deref());
    let svc = SchedulerServer::new(Service(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SchedulerServer<Service>>()
        .await;
    let (health_address, health_plain) = match &cfg.health_listen {
        Some(l) => {
            let (a, t) = super::health::serve_plain(l, health_reporter.clone()).await?;
            (Some(a), Some(t))
        }
        None => (None, None),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let incoming = futures::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        super::serve::no_delay,
    );
    let server = tokio::spawn(
        super::serve::builder(&cfg.tls)?
            .add_service(InterceptedService::new(svc, check.clone()))
            .add_service(InterceptedService::new(health, check))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            }),
    );
    let watch = shared.clone();
    let watchdog = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let silent: Vec<u64> = watch
                .live()
                .into_iter()
                .filter(|(_, w)| w.last_seen.elapsed() > HEARTBEAT_TIMEOUT)
                .map(|(id, _)| id)
                .collect();
            for id in silent {
                watch.declare_lost(id, "missed heartbeats");
            }
        }
    });
    Ok(SchedulerHandle {
        address,
        health_address,
        observe: shared.observe.clone(),
        served: super::serve::Served {
            shutdown: Some(tx),
            server,
            companion: watchdog,
            health: health_plain,
        },
    })
}

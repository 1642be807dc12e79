//! The scheduler: registers workers, watches their heartbeats, and drives runs:
//! hands ready tasks to workers with free threads (preferring the one holding
//! most of the task's input bytes), retries failed tasks up to a bound, and on a
//! lost worker re-runs its tasks and recomputes its partitions from the DAG.
//!
//! In: `RegisterWorker`/`Heartbeat` from workers, `SubmitRun` (a pipeline's text)
//! from clients. Out: a stream of task events ending with the run's result (the
//! evaluation and write-receipt values, fetched from workers by Flight) or a
//! failure naming the task, the worker, the attempts and the cause.
//! Must not: run tasks itself, or pull data partitions through itself (only the
//! small final values are fetched).

use super::auth::{Attach, Check};
use super::flight::Peers;
use super::proto::scheduler_server::{Scheduler, SchedulerServer};
use super::proto::worker_client::WorkerClient;
use super::proto::*;
use super::worker::LOST_PEER;
use super::{
    ClusterError, DEFAULT_MAX_ATTEMPTS, HEARTBEAT, HEARTBEAT_TIMEOUT, MAX_MESSAGE_BYTES,
    NO_WORKER_GRACE, RPC_TIMEOUT, START_RUN_TIMEOUT,
};
use crate::plan::{Task, TaskKind};
use crate::runtime::value::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

type Client = WorkerClient<InterceptedService<Channel, Attach>>;

#[derive(Clone)]
struct WorkerEntry {
    name: String,
    address: String,
    threads: u32,
    memory_limit: u64,
    last_seen: Instant,
    paused: bool,
    running: u32,
    memory_used: u64,
    client: Client,
}

struct Shared {
    workers: Mutex<BTreeMap<u64, WorkerEntry>>,
    /// Why each lost worker was declared lost (name, cause).
    lost: Mutex<HashMap<u64, (String, String)>>,
    next_worker: AtomicU64,
    next_run: AtomicU64,
    runs: Mutex<HashMap<String, Arc<AtomicBool>>>,
    attach: Attach,
    peers: Peers,
    grace: Duration,
    /// Print registrations, losses and runs on stderr (a `dagml scheduler`
    /// does; the embedded one leaves the client's output alone).
    log: bool,
}

impl Shared {
    fn live(&self) -> BTreeMap<u64, WorkerEntry> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn declare_lost(&self, id: u64, cause: &str) {
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
        }
    }

    fn lost_cause(&self, id: u64) -> (String, String) {
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
                    running: 0,
                    memory_used: 0,
                    client,
                },
            );
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
        let mut g = self.0.workers.lock().unwrap_or_else(|p| p.into_inner());
        let known = match g.get_mut(&r.worker_id) {
            Some(w) => {
                w.last_seen = Instant::now();
                w.paused = r.paused;
                w.running = r.running;
                w.memory_used = r.memory_used;
                true
            }
            None => false,
        };
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
            let cancel = Arc::new(AtomicBool::new(false));
            shared
                .runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(run_id.clone(), cancel.clone());
            if shared.log {
                eprintln!("scheduler: {run_id} started ({})", req.file_name);
            }
            let driver = Driver::new(&shared, &run_id, &tx, cancel);
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
                Err(message) => {
                    if shared.log {
                        eprintln!("scheduler: {run_id} failed: {message}");
                    }
                    (
                        run_event::Event::Failed(RunFailed { message }),
                        BTreeSet::new(),
                    )
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
                f.store(true, Ordering::SeqCst);
                Ok(Response::new(CancelRunReply {}))
            }
            None => Err(Status::not_found(format!("no run `{id}`"))),
        }
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
            })
            .collect();
        Ok(Response::new(ClusterStatusReply { workers }))
    }
}

type Done = (usize, u64, Result<RunTaskReply, Status>);
/// A worker's answer to `StartRun`, or its deadline passing.
type Started = (u64, Result<Result<(), Status>, tokio::time::error::Elapsed>);

/// One run's state machine.
struct Driver<'a> {
    shared: &'a Arc<Shared>,
    run_id: &'a str,
    tx: &'a mpsc::Sender<Result<RunEvent, Status>>,
    cancel: Arc<AtomicBool>,
}

fn event(e: run_event::Event) -> Result<RunEvent, Status> {
    Ok(RunEvent { event: Some(e) })
}

/// A failed `RunTask` that says the worker (not the task) is gone.
fn is_transport_failure(s: &Status) -> bool {
    !matches!(
        s.code(),
        Code::Internal | Code::InvalidArgument | Code::FailedPrecondition | Code::Aborted
    )
}

impl<'a> Driver<'a> {
    fn new(
        shared: &'a Arc<Shared>,
        run_id: &'a str,
        tx: &'a mpsc::Sender<Result<RunEvent, Status>>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        Driver {
            shared,
            run_id,
            tx,
            cancel,
        }
    }

    async fn send(&self, e: run_event::Event) {
        let _ = self.tx.send(event(e)).await;
    }

    /// Cancel the run on these workers, all at once, each call bounded by
    /// [`RPC_TIMEOUT`].
    async fn cancel_everywhere(&self, started: &BTreeSet<u64>) {
        let live = self.shared.live();
        let calls = started.iter().filter_map(|id| live.get(id)).map(|w| {
            let mut c = w.client.clone();
            let req = CancelRunRequest {
                run_id: self.run_id.to_string(),
            };
            async move {
                let _ = tokio::time::timeout(RPC_TIMEOUT, c.cancel_run(req)).await;
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Run to the end: the result and the workers that still hold the run, or
    /// why it failed (the run is then cancelled on every worker already).
    async fn drive(&self, req: SubmitRunRequest) -> Result<(RunResult, BTreeSet<u64>), String> {
        let t0 = Instant::now();
        let name = req.file_name.clone();
        let text = req.pipeline_text.clone();
        let planned = tokio::task::spawn_blocking(move || {
            crate::workspace::plan_bytes(&name, text.as_bytes(), &Default::default())
        })
        .await
        .map_err(|e| e.to_string())?;
        let plan = match planned {
            Ok((_, p)) => p.physical,
            Err(report) => {
                let msgs: Vec<String> = report
                    .parsed
                    .diagnostics
                    .iter()
                    .map(|d| d.render(&report.parsed.file))
                    .collect();
                return Err(format!("the pipeline is not valid:\n{}", msgs.join("\n")));
            }
        };
        let max = if req.max_attempts == 0 {
            DEFAULT_MAX_ATTEMPTS
        } else {
            req.max_attempts
        };
        let tasks = &plan.tasks;
        let n = tasks.len();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, t) in tasks.iter().enumerate() {
            for p in &t.inputs {
                readers.entry(p.as_str()).or_default().push(i);
            }
        }
        // Kept to the end: what nothing reads, the evaluations (the metrics
        // writer reads them, and the client reports them too) and the write
        // receipts (a written dataset may be read back).
        let sinks: BTreeSet<&str> = tasks
            .iter()
            .flat_map(|t| {
                t.outputs.iter().map(move |s| {
                    (
                        s.as_str(),
                        matches!(t.kind, TaskKind::Evaluate | TaskKind::Write),
                    )
                })
            })
            .filter(|(p, eval)| *eval || !readers.contains_key(p))
            .map(|(p, _)| p)
            .collect();
        let task_json: Vec<String> = tasks
            .iter()
            .map(|t| serde_json::to_string(t).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;

        let mut done = vec![false; n];
        let mut attempts = vec![0u32; n];
        let mut last: Vec<Option<(String, String)>> = vec![None; n];
        let mut running: HashMap<usize, u64> = HashMap::new();
        let mut location: HashMap<String, (u64, u64)> = HashMap::new();
        let mut started: BTreeSet<u64> = BTreeSet::new();
        let mut assigned: HashMap<u64, u32> = HashMap::new();
        let mut no_worker_since: Option<Instant> = None;
        let mut paused_since: Option<Instant> = None;
        let (dtx, mut drx) = mpsc::unbounded_channel::<Done>();
        let mut starting: BTreeSet<u64> = BTreeSet::new();
        let (stx, mut srx) = mpsc::unbounded_channel::<Started>();

        loop {
            if self.tx.is_closed() || self.cancel.load(Ordering::SeqCst) {
                self.cancel_everywhere(&started).await;
                return Err("the run was cancelled".into());
            }
            let live = self.shared.live();
            // Workers gone since the last look: their running tasks run again
            // elsewhere, their partitions are recomputed as needed.
            let gone: Vec<u64> = started
                .iter()
                .copied()
                .filter(|id| !live.contains_key(id))
                .collect();
            for id in gone {
                started.remove(&id);
                assigned.remove(&id);
                let (wname, cause) = self.shared.lost_cause(id);
                location.retain(|_, (w, _)| *w != id);
                let on_it: Vec<usize> = running
                    .iter()
                    .filter(|(_, w)| **w == id)
                    .map(|(t, _)| *t)
                    .collect();
                for t in on_it {
                    running.remove(&t);
                    attempts[t] += 1;
                    last[t] = Some((wname.clone(), format!("worker lost: {cause}")));
                    if attempts[t] >= max {
                        self.cancel_everywhere(&started).await;
                        return Err(format!(
                            "task `{}` failed on worker `{wname}` after {} attempts (of {max}): worker lost: {cause}",
                            tasks[t].id, attempts[t]
                        ));
                    }
                }
                self.send(run_event::Event::WorkerLost(WorkerLost {
                    worker: wname,
                    cause,
                }))
                .await;
            }
            // New workers get the pipeline, each in a call of its own (one
            // that does not answer holds up nothing); a worker takes tasks
            // once it has answered.
            while let Ok((id, r)) = srx.try_recv() {
                starting.remove(&id);
                let Some(w) = live.get(&id) else { continue };
                match r {
                    Ok(Ok(())) => {
                        started.insert(id);
                    }
                    Ok(Err(s))
                        if matches!(s.code(), Code::InvalidArgument | Code::PermissionDenied) =>
                    {
                        self.cancel_everywhere(&started).await;
                        return Err(format!(
                            "worker `{}` refused the run: {}",
                            w.name,
                            s.message()
                        ));
                    }
                    Ok(Err(s)) => self.shared.declare_lost(id, s.message()),
                    Err(_) => self.shared.declare_lost(id, "no answer to StartRun"),
                }
            }
            starting.retain(|id| live.contains_key(id));
            for (id, w) in &live {
                if started.contains(id) || !starting.insert(*id) {
                    continue;
                }
                let mut c = w.client.clone();
                let req = StartRunRequest {
                    run_id: self.run_id.to_string(),
                    file_name: req.file_name.clone(),
                    pipeline_text: req.pipeline_text.clone(),
                    base_dir: req.base_dir.clone(),
                };
                let (id, stx) = (*id, stx.clone());
                tokio::spawn(async move {
                    let r = tokio::time::timeout(START_RUN_TIMEOUT, c.start_run(req))
                        .await
                        .map(|r| r.map(|_| ()));
                    let _ = stx.send((id, r));
                });
            }
            // Partitions that are gone but still needed: their tasks run again.
            loop {
                let mut changed = false;
                for t in 0..n {
                    if !done[t] {
                        continue;
                    }
                    let missing_needed = tasks[t].outputs.iter().any(|p| {
                        !location.contains_key(p)
                            && (sinks.contains(p.as_str())
                                || readers
                                    .get(p.as_str())
                                    .is_some_and(|rs| rs.iter().any(|r| !done[*r])))
                    });
                    if missing_needed {
                        done[t] = false;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
            if done.iter().all(|d| *d) {
                match self.collect(tasks, &location, &live).await {
                    Ok(values) => {
                        let threads = started
                            .iter()
                            .filter_map(|id| live.get(id).map(|w| w.threads))
                            .sum();
                        let result = RunResult {
                            values,
                            wall_us: t0.elapsed().as_micros() as u64,
                            threads,
                        };
                        return Ok((result, started));
                    }
                    Err((id, cause)) => {
                        self.shared.declare_lost(id, &cause);
                        continue;
                    }
                }
            }
            // Hand out ready tasks.
            for t in 0..n {
                if done[t] || running.contains_key(&t) {
                    continue;
                }
                if !tasks[t].inputs.iter().all(|p| location.contains_key(p)) {
                    continue;
                }
                let pick = started
                    .iter()
                    .filter_map(|id| live.get(id).map(|w| (*id, w)))
                    .filter(|(id, w)| {
                        !w.paused && assigned.get(id).copied().unwrap_or(0) < w.threads
                    })
                    .map(|(id, _)| {
                        let local: u64 = tasks[t]
                            .inputs
                            .iter()
                            .filter_map(|p| location.get(p))
                            .filter(|(w, _)| *w == id)
                            .map(|(_, b)| *b + 1)
                            .sum();
                        let busy = assigned.get(&id).copied().unwrap_or(0);
                        (local, std::cmp::Reverse(busy), std::cmp::Reverse(id))
                    })
                    .max();
                let Some((_, _, std::cmp::Reverse(wid))) = pick else {
                    break;
                };
                let Some(w) = live.get(&wid) else { break };
                running.insert(t, wid);
                *assigned.entry(wid).or_default() += 1;
                self.send(run_event::Event::Started(TaskStarted {
                    task: tasks[t].id.clone(),
                    worker: w.name.clone(),
                    attempt: attempts[t] + 1,
                }))
                .await;
                let inputs = tasks[t]
                    .inputs
                    .iter()
                    .filter_map(|p| {
                        let (holder, _) = location.get(p)?;
                        Some(InputLocation {
                            partition: p.clone(),
                            address: live.get(holder)?.address.clone(),
                        })
                    })
                    .collect();
                let req = RunTaskRequest {
                    run_id: self.run_id.to_string(),
                    task_json: task_json[t].clone(),
                    inputs,
                };
                let mut c = w.client.clone();
                let dtx = dtx.clone();
                tokio::spawn(async move {
                    let r = c.run_task(req).await.map(|r| r.into_inner());
                    let _ = dtx.send((t, wid, r));
                });
            }
            if running.is_empty() {
                if started.is_empty() {
                    let since = *no_worker_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.shared.grace {
                        self.cancel_everywhere(&started).await;
                        return Err(self.no_worker_message(tasks, &done, &attempts, &last, max));
                    }
                } else if !live.values().any(|w| w.paused) {
                    let stuck = (0..n).find(|t| !done[*t]).map(|t| tasks[t].id.clone());
                    self.cancel_everywhere(&started).await;
                    return Err(format!(
                        "no task can run (at `{}`)",
                        stuck.unwrap_or_default()
                    ));
                } else {
                    // Paused workers wait for memory that only a running task
                    // frees: with none running, waiting longer cannot help.
                    let since = *paused_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.shared.grace {
                        let paused: Vec<String> = live
                            .values()
                            .filter(|w| w.paused)
                            .map(|w| w.name.clone())
                            .collect();
                        self.cancel_everywhere(&started).await;
                        return Err(format!(
                            "workers {} are paused past their memory pause threshold and no task is running to free memory; give them a larger --memory-limit or room on disk to spill",
                            paused.join(", ")
                        ));
                    }
                }
            } else {
                no_worker_since = None;
                paused_since = None;
            }
            let got = tokio::select! {
                d = drx.recv() => d,
                _ = tokio::time::sleep(Duration::from_millis(200)) => None,
                _ = self.tx.closed() => None,
            };
            let Some((t, wid, result)) = got else {
                continue;
            };
            if running.get(&t) != Some(&wid) {
                continue; // a stale answer from a worker declared lost
            }
            running.remove(&t);
            if let Some(a) = assigned.get_mut(&wid) {
                *a = a.saturating_sub(1);
            }
            let wname = live.get(&wid).map(|w| w.name.clone()).unwrap_or_default();
            match result {
                Ok(reply) => {
                    done[t] = true;
                    for o in reply.outputs {
                        location.insert(o.partition, (wid, o.bytes));
                    }
                    self.send(run_event::Event::Finished(TaskFinished {
                        task: tasks[t].id.clone(),
                        worker: wname,
                        elapsed_us: reply.elapsed_us,
                    }))
                    .await;
                    self.free_inputs(&tasks[t], &readers, &sinks, &done, &mut location, &live);
                }
                Err(s) if s.metadata().get(LOST_PEER).is_some() => {
                    let peer = s
                        .metadata()
                        .get(LOST_PEER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    if let Some((pid, _)) = live.iter().find(|(_, w)| w.address == peer) {
                        self.shared.declare_lost(*pid, s.message());
                    }
                    // It counts: a peer that this worker cannot reach but
                    // that keeps coming back must not retry the task forever.
                    attempts[t] += 1;
                    last[t] = Some((wname.clone(), s.message().to_string()));
                    if attempts[t] >= max {
                        self.cancel_everywhere(&started).await;
                        return Err(format!(
                            "task `{}` failed on worker `{wname}` after {} attempts (of {max}): {}",
                            tasks[t].id,
                            attempts[t],
                            s.message()
                        ));
                    }
                    self.send(run_event::Event::Retried(TaskRetried {
                        task: tasks[t].id.clone(),
                        worker: wname,
                        attempt: attempts[t],
                        cause: s.message().to_string(),
                    }))
                    .await;
                }
                Err(s) if is_transport_failure(&s) => {
                    let cause = super::status_cause(&s);
                    attempts[t] += 1;
                    last[t] = Some((wname.clone(), cause.clone()));
                    self.shared.declare_lost(wid, &cause);
                    if attempts[t] >= max {
                        self.cancel_everywhere(&started).await;
                        return Err(format!(
                            "task `{}` failed on worker `{wname}` after {} attempts (of {max}): worker lost: {cause}",
                            tasks[t].id, attempts[t],
                        ));
                    }
                }
                Err(s) => {
                    attempts[t] += 1;
                    last[t] = Some((wname.clone(), s.message().to_string()));
                    if attempts[t] >= max {
                        self.cancel_everywhere(&started).await;
                        return Err(format!(
                            "task `{}` failed on worker `{wname}` after {} attempts (of {max}): {}",
                            tasks[t].id,
                            attempts[t],
                            s.message()
                        ));
                    }
                    self.send(run_event::Event::Retried(TaskRetried {
                        task: tasks[t].id.clone(),
                        worker: wname,
                        attempt: attempts[t],
                        cause: s.message().to_string(),
                    }))
                    .await;
                }
            }
        }
    }

    fn no_worker_message(
        &self,
        tasks: &[Task],
        done: &[bool],
        attempts: &[u32],
        last: &[Option<(String, String)>],
        max: u32,
    ) -> String {
        let grace = self.shared.grace.as_secs();
        let pending = (0..tasks.len()).filter(|t| !done[*t]);
        let with_history = pending.clone().find(|t| last[*t].is_some());
        match with_history.or_else(|| pending.clone().next()) {
            Some(t) => match &last[t] {
                Some((w, cause)) => format!(
                    "no worker left after waiting {grace}s: task `{}` last ran on worker `{w}` (attempt {} of {max}): {cause}",
                    tasks[t].id, attempts[t]
                ),
                None => format!(
                    "no worker left after waiting {grace}s: task `{}` never ran",
                    tasks[t].id
                ),
            },
            None => format!("no worker left after waiting {grace}s"),
        }
    }

    /// Drop partitions every reader of which is done.
    fn free_inputs(
        &self,
        task: &Task,
        readers: &HashMap<&str, Vec<usize>>,
        sinks: &BTreeSet<&str>,
        done: &[bool],
        location: &mut HashMap<String, (u64, u64)>,
        live: &BTreeMap<u64, WorkerEntry>,
    ) {
        let mut drops: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for p in &task.inputs {
            if sinks.contains(p.as_str()) {
                continue;
            }
            let all_done = readers
                .get(p.as_str())
                .is_some_and(|rs| rs.iter().all(|r| done[*r]));
            if all_done && let Some((holder, _)) = location.remove(p) {
                drops.entry(holder).or_default().push(p.clone());
            }
        }
        for (holder, partitions) in drops {
            if let Some(w) = live.get(&holder) {
                let mut c = w.client.clone();
                let run_id = self.run_id.to_string();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        RPC_TIMEOUT,
                        c.drop_partitions(DropPartitionsRequest { run_id, partitions }),
                    )
                    .await;
                });
            }
        }
    }

    /// The final values the client reports: evaluations and write receipts.
    async fn collect(
        &self,
        tasks: &[Task],
        location: &HashMap<String, (u64, u64)>,
        live: &BTreeMap<u64, WorkerEntry>,
    ) -> Result<Vec<ResultValue>, (u64, String)> {
        let mut out = Vec::new();
        for t in tasks {
            if !matches!(t.kind, TaskKind::Evaluate | TaskKind::Write) {
                continue;
            }
            for p in &t.outputs {
                let Some((holder, _)) = location.get(p) else {
                    continue;
                };
                let Some(w) = live.get(holder) else {
                    return Err((*holder, "gone before its results were fetched".into()));
                };
                let v = self
                    .shared
                    .peers
                    .fetch(&w.address, &format!("{}/{p}", self.run_id))
                    .await
                    .map_err(|e| (*holder, e))?;
                if let Value::Bytes(data) = v {
                    out.push(ResultValue {
                        partition: p.clone(),
                        data,
                    });
                }
            }
        }
        Ok(out)
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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            listen: super::addr::DEFAULT_LISTEN.into(),
            token: None,
            tls: Default::default(),
            grace: NO_WORKER_GRACE,
            log: true,
        }
    }
}

pub struct SchedulerHandle {
    pub address: String,
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
        log: cfg.log,
    });
    let check = Check::new(cfg.token.as_deref());
    let svc = SchedulerServer::new(Service(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SchedulerServer<Service>>()
        .await;
    let (tx, rx) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
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
        served: super::serve::Served {
            shutdown: Some(tx),
            server,
            companion: watchdog,
        },
    })
}

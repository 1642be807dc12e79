//! The cluster's driver of the run graph: one run, from its plan to its result,
//! on the scheduler's workers. Event-driven: it wakes on a task's answer, a
//! worker's answer to `StartRun`, a change of membership (registered, lost,
//! paused), a cancel, or a grace deadline, and never polls.
//!
//! In: a `SubmitRun` request (the pipeline's text, its base folder, the
//! client's plan hash) and the scheduler's worker table. Out: the run's events
//! on the client's stream, and its result values (fetched from the workers by
//! Flight) with the workers holding the run, or a structured [`RunError`]; and
//! what happens, told to the scheduler's `observe::Observer` as it happens
//! (a mirror for watchers: nothing here reads it back).
//! Must not: keep run state outside [`RunGraph`] (placement bookkeeping aside),
//! run tasks itself, move data partitions through itself, or wait on one
//! worker's call in its loop (every call is spawned, its answer is an event).

use super::proto::*;
use super::scheduler::{Client, Shared, WorkerEntry};
use super::worker::{FAILURE_KIND, LOST_PEER};
use super::{DEFAULT_MAX_ATTEMPTS, RPC_TIMEOUT, START_RUN_TIMEOUT, plan_hash, status_cause};
use crate::plan::TaskKind;
use crate::runtime::executor::graph_of;
use crate::runtime::failure::{FailureKind, RunError};
use crate::runtime::graph::{Finished, RunGraph, TaskIx, Verdict, Worker};
use crate::runtime::value::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Notify, mpsc};
use tonic::{Code, Status};

/// A worker as the run graph knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRef {
    pub id: u64,
    pub name: String,
}

impl Worker for WorkerRef {
    fn name(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

/// Something that happened, reported to the loop.
enum Event {
    Task {
        t: TaskIx,
        worker: WorkerRef,
        attempt: u32,
        result: Result<RunTaskReply, Status>,
    },
    Started {
        id: u64,
        result: Result<(), Status>,
    },
}

pub(super) struct Driver<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) run_id: &'a str,
    pub(super) tx: &'a mpsc::Sender<Result<RunEvent, Status>>,
    pub(super) cancel: Arc<Notify>,
}

/// How the run ended, for the scheduler to report.
pub(super) type Ended = Result<(RunResult, BTreeSet<u64>), (RunError, BTreeSet<u64>)>;

/// Input bytes a task may fetch from peers and still count as local work in
/// the first placement pass (a model, partial sums, a receipt).
const LOCAL_ENOUGH: u64 = 1 << 20;

/// Whether a task of chain height `height` waits in the first placement
/// pass because the `free` threads are all wanted by tasks deferred before
/// it with a longer chain after them (`deferred`: how many were deferred at
/// each height). `free` is asked only when some such task was deferred.
fn leaves_threads_to(
    deferred: &BTreeMap<u32, usize>,
    height: u32,
    free: impl FnOnce() -> usize,
) -> bool {
    let longer: usize = deferred
        .range(height.saturating_add(1)..)
        .map(|(_, n)| n)
        .sum();
    longer > 0 && free() <= longer
}

/// A failed `RunTask` that says the worker (not the task) is gone: the call did
/// not reach it or got no answer.
fn is_transport_failure(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

/// The failure a worker's answer carries.
fn kind_of(s: &Status) -> Option<FailureKind> {
    s.metadata()
        .get(FAILURE_KIND)
        .and_then(|v| v.to_str().ok())
        .and_then(FailureKind::parse)
}

impl Driver<'_> {
    async fn send(&self, e: run_event::Event) {
        let _ = self.tx.send(Ok(RunEvent { event: Some(e) })).await;
    }

    /// Tell every worker in `ids` to forget the run, all at once, bounded.
    pub(super) async fn cancel_everywhere(&self, ids: &BTreeSet<u64>) {
        let live = self.shared.live();
        let calls = ids.iter().filter_map(|id| live.get(id)).map(|w| {
            let mut c = w.client.clone();
            let run_id = self.run_id.to_string();
            async move {
                let _ =
                    tokio::time::timeout(RPC_TIMEOUT, c.cancel_run(CancelRunRequest { run_id }))
                        .await;
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Plan the run once, then drive its graph to the end.
    pub(super) async fn drive(&self, req: SubmitRunRequest) -> Ended {
        let none = BTreeSet::new;
        let name = req.file_name.clone();
        let text = req.pipeline_text.clone();
        let base = std::path::PathBuf::from(&req.base_dir);
        let planned = tokio::task::spawn_blocking(move || {
            let opts = crate::workspace::CheckOptions {
                base,
                ..Default::default()
            };
            crate::workspace::plan_bytes(&name, text.as_bytes(), &opts)
        })
        .await
        .map_err(|e| {
            (
                RunError::of_run(FailureKind::Internal, e.to_string()),
                none(),
            )
        })?;
        let plan = match planned {
            Ok((_, p)) if req.only.is_empty() => p.physical,
            Ok((_, p)) => match super::only_plan(&p.physical, &req.only) {
                Ok(plan) => plan,
                Err(e) => {
                    return Err((
                        RunError::of_run(FailureKind::BadData, e.to_string()),
                        none(),
                    ));
                }
            },
            Err(report) => {
                let msgs: Vec<String> = report
                    .parsed
                    .diagnostics
                    .iter()
                    .map(|d| d.render(&report.parsed.file))
                    .collect();
                let cause = format!("the pipeline is not valid:\n{}", msgs.join("\n"));
                return Err((RunError::of_run(FailureKind::BadData, cause), none()));
            }
        };
        let hash = plan_hash(&plan);
        if !req.plan_hash.is_empty() && req.plan_hash != hash {
            let cause = format!(
                "the scheduler plans `{}` differently from the client (plan {} here, {} there): \
                 a folder listing or a dagml version differs between them",
                req.file_name,
                &hash[..12],
                req.plan_hash.get(..12).unwrap_or(&req.plan_hash)
            );
            return Err((RunError::of_run(FailureKind::PlanMismatch, cause), none()));
        }
        let max = if req.max_attempts == 0 {
            DEFAULT_MAX_ATTEMPTS
        } else {
            req.max_attempts
        };
        // Kept to the end: what nothing reads, the evaluations (the metrics
        // writer reads them, and the client reports them too) and the write
        // receipts (a written dataset may be read back).
        let graph = graph_of::<WorkerRef>(
            &plan,
            &|t, _| matches!(t.kind, TaskKind::Evaluate | TaskKind::Write),
            max,
        )
        .map_err(|e| (e, none()))?;
        let plan = Arc::new(plan);
        self.shared
            .observe
            .run_started(self.run_id, &req.file_name, &req.base_dir, plan.clone());
        let mut run = Run {
            d: self,
            req: &req,
            hash,
            plan: &plan,
            task_json: plan
                .tasks
                .iter()
                .map(|t| serde_json::to_string(t).unwrap_or_default())
                .collect(),
            g: graph,
            started: BTreeMap::new(),
            starting: BTreeSet::new(),
            assigned: HashMap::new(),
            no_worker_since: None,
            paused_since: None,
            pins: plan
                .pins()
                .into_iter()
                .map(|(t, w)| (t.to_string(), w))
                .collect(),
            pinned_since: None,
            t0: Instant::now(),
        };
        let out = run.drive().await;
        let holders: BTreeSet<u64> = run.started.keys().copied().collect();
        match out {
            Ok(r) => {
                let values: HashMap<String, Value> = r
                    .values
                    .iter()
                    .map(|v| (v.partition.clone(), Value::Bytes(v.data.clone())))
                    .collect();
                self.shared.observe.run_done(self.run_id, &values);
                Ok((r, holders))
            }
            Err(e) => {
                // Every worker that has the run forgets it now.
                self.cancel_everywhere(&holders).await;
                Err((e, holders))
            }
        }
    }
}

struct Run<'a, 'b> {
    d: &'a Driver<'b>,
    req: &'a SubmitRunRequest,
    hash: String,
    plan: &'a crate::plan::PhysicalPlan,
    task_json: Vec<String>,
    g: RunGraph<WorkerRef>,
    /// Workers that have the run (answered `StartRun`).
    started: BTreeMap<u64, WorkerRef>,
    /// Workers asked to start it, not answered yet.
    starting: BTreeSet<u64>,
    /// Tasks in flight per worker (its threads bound them).
    assigned: HashMap<u64, u32>,
    no_worker_since: Option<Instant>,
    paused_since: Option<Instant>,
    /// Tasks that must run on one worker (by name): they read rows that stay
    /// there (`PhysicalPlan::pins`).
    pins: HashMap<String, String>,
    /// Since when a pinned task has been ready with its worker absent.
    pinned_since: Option<Instant>,
    t0: Instant,
}

impl Run<'_, '_> {
    fn cancelled(&self) -> RunError {
        RunError::of_run(FailureKind::Cancelled, "the run was cancelled")
    }

    async fn drive(&mut self) -> Result<RunResult, RunError> {
        let (etx, mut erx) = mpsc::unbounded_channel::<Event>();
        let mut members = self.d.shared.members.subscribe();
        loop {
            let live = self.d.shared.live();
            self.forget_lost(&live).await?;
            self.start_new(&live, &etx);
            if self.g.is_complete() {
                match self.collect(&live).await {
                    Ok(values) => {
                        let threads = self
                            .started
                            .keys()
                            .filter_map(|id| live.get(id).map(|w| w.threads))
                            .sum();
                        return Ok(RunResult {
                            values,
                            wall_us: self.t0.elapsed().as_micros() as u64,
                            threads,
                        });
                    }
                    Err((id, cause)) => {
                        // Its results are computed again elsewhere.
                        self.d.shared.declare_lost(id, &cause);
                        continue;
                    }
                }
            }
            self.assign(&live, &etx).await;
            if let Some(f) = self.g.failure() {
                return Err(f.clone());
            }
            let deadline = self.check_stalled(&live)?;
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = erx.recv() => {
                    if let Some(ev) = ev {
                        self.handle(ev, &live).await?;
                    }
                }
                _ = members.changed() => {}
                _ = sleep => {}
                _ = self.d.tx.closed() => return Err(self.cancelled()),
                _ = self.d.cancel.notified() => return Err(self.cancelled()),
            }
        }
    }

    /// Workers gone since the last look: their running tasks run again
    /// elsewhere, their partitions are recomputed where still needed.
    async fn forget_lost(&mut self, live: &BTreeMap<u64, WorkerEntry>) -> Result<(), RunError> {
        let gone: Vec<u64> = self
            .started
            .keys()
            .copied()
            .filter(|id| !live.contains_key(id))
            .collect();
        self.starting.retain(|id| live.contains_key(id));
        for id in gone {
            let Some(w) = self.started.remove(&id) else {
                continue;
            };
            self.assigned.remove(&id);
            let (_, cause) = self.d.shared.lost_cause(id);
            self.d
                .send(run_event::Event::WorkerLost(WorkerLost {
                    worker: w.name.clone(),
                    cause: cause.clone(),
                }))
                .await;
            let on_it: BTreeSet<usize> = self
                .g
                .running()
                .filter(|(_, r, _)| r.id == w.id)
                .map(|(t, _, _)| t.0)
                .collect();
            let back = self.g.worker_lost(&w, &cause)?;
            let obs = &self.d.shared.observe;
            for t in back {
                if on_it.contains(&t.0) {
                    obs.task_failed(self.d.run_id, t.0, FailureKind::WorkerLost, &cause, true);
                } else {
                    // Done, but its outputs were lost with the worker (or
                    // released): computed again, not a failure.
                    obs.task_recomputed(self.d.run_id, t.0);
                }
            }
        }
        Ok(())
    }

    /// New workers get the pipeline; their answers come back as events.
    fn start_new(&mut self, live: &BTreeMap<u64, WorkerEntry>, etx: &mpsc::UnboundedSender<Event>) {
        for (id, w) in live {
            if self.started.contains_key(id) || self.starting.contains(id) || w.draining {
                continue;
            }
            self.starting.insert(*id);
            let mut c: Client = w.client.clone();
            let req = StartRunRequest {
                run_id: self.d.run_id.to_string(),
                file_name: self.req.file_name.clone(),
                pipeline_text: self.req.pipeline_text.clone(),
                base_dir: self.req.base_dir.clone(),
                plan_hash: self.hash.clone(),
                serve: self.req.serve,
                only: self.req.only.clone(),
                serve_version: self.req.serve_version,
            };
            let etx = etx.clone();
            let id = *id;
            tokio::spawn(async move {
                let result = match tokio::time::timeout(START_RUN_TIMEOUT, c.start_run(req)).await {
                    Ok(r) => r.map(|_| ()),
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "no answer to StartRun in {} s",
                        START_RUN_TIMEOUT.as_secs()
                    ))),
                };
                let _ = etx.send(Event::Started { id, result });
            });
        }
    }

    /// Hand ready tasks to workers with free threads, preferring the one that
    /// holds most of the task's input bytes.
    async fn assign(
        &mut self,
        live: &BTreeMap<u64, WorkerEntry>,
        etx: &mpsc::UnboundedSender<Event>,
    ) {
        // Two passes: first every task that a free worker can run with its
        // inputs (nearly) all at hand, then the rest anywhere free. A worker
        // that frees up thus takes the work whose data it holds, and a
        // partition moves only when there is nothing local left to do.
        // A local task does not take the last free threads from ready tasks
        // deferred before it with a longer chain of work after them: after a
        // forest's fit, writing the model (local to the worker holding it)
        // waited for the training rows' prediction, which the evaluation
        // and its report wait on. Tasks of one height (a map over
        // partitions) keep their locality.
        // Deferred tasks are counted by height as they are deferred, so a
        // long ready list (a map over thousands of partitions) is not
        // scanned again for each task.
        let ready: Vec<TaskIx> = self.g.ready().collect();
        let mut later: Vec<TaskIx> = Vec::new();
        let mut deferred: BTreeMap<u32, usize> = BTreeMap::new();
        for t in ready {
            let height = self.g.height(t);
            let wait = leaves_threads_to(&deferred, height, || self.free_threads(live));
            let pick = if wait {
                None
            } else {
                self.best_worker(t, live)
            };
            // Launched at once, so the next pick sees this worker's new load.
            match (wait, pick) {
                (false, Some((wid, remote))) if remote <= LOCAL_ENOUGH => {
                    self.launch(t, wid, live, etx).await
                }
                (true, _) | (false, Some(_)) => {
                    later.push(t);
                    *deferred.entry(height).or_default() += 1;
                }
                // No free worker for it (a pinned task's may be busy): the
                // others may still have one.
                (false, None) => continue,
            }
        }
        for t in later {
            let Some((wid, _)) = self.best_worker(t, live) else {
                continue;
            };
            self.launch(t, wid, live, etx).await;
        }
    }

    /// Threads free on worker `id` for this run's tasks (none while it is
    /// paused or draining).
    fn free_on(&self, id: u64, w: &WorkerEntry) -> u32 {
        if w.paused || w.draining {
            return 0;
        }
        let busy = self.assigned.get(&id).copied().unwrap_or(0);
        w.threads.saturating_sub(busy)
    }

    /// Threads free on all the workers that have the run.
    fn free_threads(&self, live: &BTreeMap<u64, WorkerEntry>) -> usize {
        self.started
            .keys()
            .filter_map(|id| live.get(id).map(|w| self.free_on(*id, w) as usize))
            .sum()
    }

    /// The free worker to run `t` on (the one holding most of its input
    /// bytes, then the least busy), and the input bytes it would fetch.
    fn best_worker(&self, t: TaskIx, live: &BTreeMap<u64, WorkerEntry>) -> Option<(u64, u64)> {
        let pin = self.pins.get(self.g.name(t));
        let total: u64 = self
            .g
            .inputs(t)
            .iter()
            .filter_map(|p| self.g.location(*p))
            .map(|(_, b)| b)
            .sum();
        self.started
            .keys()
            .filter_map(|id| live.get(id).map(|w| (*id, w)))
            .filter(|(id, w)| self.free_on(*id, w) > 0 && pin.is_none_or(|p| *p == w.name))
            .map(|(id, _)| {
                let held: Vec<u64> = self
                    .g
                    .inputs(t)
                    .iter()
                    .filter_map(|p| self.g.location(*p))
                    .filter(|(w, _)| w.id == id)
                    .map(|(_, b)| b)
                    .collect();
                let local: u64 = held.iter().map(|b| b + 1).sum();
                let remote = total - held.iter().sum::<u64>();
                let busy = self.assigned.get(&id).copied().unwrap_or(0);
                (
                    (local, std::cmp::Reverse(busy), std::cmp::Reverse(id)),
                    remote,
                )
            })
            .max_by_key(|(k, _)| *k)
            .map(|((_, _, std::cmp::Reverse(id)), remote)| (id, remote))
    }

    /// Start `t` on worker `wid`: the graph, the client's event, the call.
    async fn launch(
        &mut self,
        t: TaskIx,
        wid: u64,
        live: &BTreeMap<u64, WorkerEntry>,
        etx: &mpsc::UnboundedSender<Event>,
    ) {
        let (Some(w), Some(wref)) = (live.get(&wid), self.started.get(&wid).cloned()) else {
            return;
        };
        let inputs = self
            .g
            .inputs(t)
            .iter()
            .filter_map(|p| {
                let (holder, _) = self.g.location(*p)?;
                Some(InputLocation {
                    partition: self.g.part_name(*p).to_string(),
                    address: live.get(&holder.id)?.address.clone(),
                })
            })
            .collect();
        let moved: u64 = self
            .g
            .inputs(t)
            .iter()
            .filter_map(|p| self.g.location(*p))
            .filter(|(holder, _)| holder.id != wid)
            .map(|(_, b)| b)
            .sum();
        let Ok(attempt) = self.g.start(t, wref.clone()) else {
            return;
        };
        self.d
            .shared
            .observe
            .task_started(self.d.run_id, t.0, (wid, &w.name), moved);
        *self.assigned.entry(wid).or_default() += 1;
        self.d
            .send(run_event::Event::Started(TaskStarted {
                task: self.g.name(t).to_string(),
                worker: w.name.clone(),
                attempt: self.g.attempts(t),
                fetched_bytes: moved,
            }))
            .await;
        let req = RunTaskRequest {
            run_id: self.d.run_id.to_string(),
            task_json: self.task_json[t.0].clone(),
            inputs,
        };
        let mut c = w.client.clone();
        let etx = etx.clone();
        tokio::spawn(async move {
            let result = c.run_task(req).await.map(|r| r.into_inner());
            let _ = etx.send(Event::Task {
                t,
                worker: wref,
                attempt,
                result,
            });
        });
    }

    /// With nothing running: how long to wait for a worker (or for paused
    /// workers to resume) before failing, or the failure itself.
    fn check_stalled(
        &mut self,
        live: &BTreeMap<u64, WorkerEntry>,
    ) -> Result<Option<Instant>, RunError> {
        let grace = self.d.shared.grace;
        if self.g.running_count() > 0 {
            self.no_worker_since = None;
            self.paused_since = None;
            return Ok(None);
        }
        if self.started.is_empty() {
            let since = *self.no_worker_since.get_or_insert_with(Instant::now);
            if since.elapsed() > grace {
                return Err(self.no_worker_error());
            }
            return Ok(Some(since + grace));
        }
        self.no_worker_since = None;
        // A draining worker leaves within its drain timeout (a membership
        // change that wakes this loop): wait for it, and for the others.
        let all_draining = self
            .started
            .keys()
            .all(|id| live.get(id).is_none_or(|w| w.draining));
        if all_draining {
            return Ok(Some(Instant::now() + grace));
        }
        let paused: Vec<String> = self
            .started
            .keys()
            .filter_map(|id| live.get(id))
            .filter(|w| w.paused)
            .map(|w| w.name.clone())
            .collect();
        if paused.is_empty() {
            if !self.starting.is_empty() {
                return Ok(None);
            }
            // Ready tasks whose rows stay on a worker that is not here: wait
            // for it (it may be starting, or coming back), then say which.
            let names: BTreeSet<&str> = self
                .started
                .keys()
                .filter_map(|id| live.get(id))
                .map(|w| w.name.as_str())
                .collect();
            let missing: BTreeSet<&str> = self
                .g
                .ready()
                .filter_map(|t| self.pins.get(self.g.name(t)))
                .map(String::as_str)
                .filter(|w| !names.contains(w))
                .collect();
            if !missing.is_empty() {
                let since = *self.pinned_since.get_or_insert_with(Instant::now);
                if since.elapsed() > grace {
                    let missing: Vec<&str> = missing.into_iter().collect();
                    return Err(RunError::of_run(
                        FailureKind::WorkerLost,
                        format!(
                            "shards by worker need the workers named {} (each reads its own shard under its --data-root); after {}s the cluster has no worker of that name (workers: {}): start it with `dagml worker SCHEDULER --name NAME --data-root DIR`",
                            missing.join(", "),
                            grace.as_secs(),
                            names.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                return Ok(Some(since + grace));
            }
            self.pinned_since = None;
            let at = self
                .g
                .stuck_at()
                .map(|t| self.g.name(t).to_string())
                .unwrap_or_default();
            return Err(RunError::of_run(
                FailureKind::Internal,
                format!("no task can run (at `{at}`)"),
            ));
        }
        // Paused workers wait for memory that only a running task frees: with
        // none running, waiting longer cannot help.
        let since = *self.paused_since.get_or_insert_with(Instant::now);
        if since.elapsed() > grace {
            return Err(RunError::of_run(
                FailureKind::Io,
                format!(
                    "workers {} are paused past their memory pause threshold and no task is running to free memory; give them a larger --memory-limit or room on disk to spill",
                    paused.join(", ")
                ),
            ));
        }
        Ok(Some(since + grace))
    }

    fn no_worker_error(&self) -> RunError {
        let grace = self.d.shared.grace.as_secs();
        match self.g.last_failure() {
            Some((t, Some(w), kind, cause)) => RunError {
                task: self.g.name(t).to_string(),
                worker: Some(w.name.clone()),
                attempts: self.g.attempts(t),
                max_attempts: self.g.max_attempts(),
                kind,
                cause: format!("no worker left after waiting {grace}s; the last one: {cause}"),
            },
            Some((t, None, _, _)) => RunError {
                task: self.g.name(t).to_string(),
                worker: None,
                attempts: 0,
                max_attempts: self.g.max_attempts(),
                kind: FailureKind::WorkerLost,
                cause: format!("no worker left after waiting {grace}s: the task never ran"),
            },
            None => RunError::of_run(
                FailureKind::WorkerLost,
                format!("no worker left after waiting {grace}s"),
            ),
        }
    }

    async fn handle(
        &mut self,
        ev: Event,
        live: &BTreeMap<u64, WorkerEntry>,
    ) -> Result<(), RunError> {
        match ev {
            Event::Started { id, result } => {
                self.starting.remove(&id);
                match result {
                    Ok(()) => {
                        if let Some(w) = live.get(&id) {
                            self.started.insert(
                                id,
                                WorkerRef {
                                    id,
                                    name: w.name.clone(),
                                },
                            );
                        }
                    }
                    Err(s)
                        if matches!(
                            s.code(),
                            Code::InvalidArgument
                                | Code::PermissionDenied
                                | Code::FailedPrecondition
                        ) =>
                    {
                        let name = live.get(&id).map(|w| w.name.clone()).unwrap_or_default();
                        let kind = kind_of(&s).unwrap_or(FailureKind::BadData);
                        return Err(RunError::of_run(
                            kind,
                            format!("worker `{name}` refused the run: {}", s.message()),
                        ));
                    }
                    Err(s) => self.d.shared.declare_lost(id, &status_cause(&s)),
                }
            }
            Event::Task {
                t,
                worker,
                attempt,
                result,
            } => {
                if let Some(a) = self.assigned.get_mut(&worker.id) {
                    *a = a.saturating_sub(1);
                }
                match result {
                    Ok(reply) => self.finished(t, &worker, attempt, reply, live).await?,
                    Err(s) => self.failed(t, &worker, attempt, s, live).await?,
                }
            }
        }
        Ok(())
    }

    async fn finished(
        &mut self,
        t: TaskIx,
        worker: &WorkerRef,
        attempt: u32,
        reply: RunTaskReply,
        live: &BTreeMap<u64, WorkerEntry>,
    ) -> Result<(), RunError> {
        let by_name: HashMap<&str, u64> = reply
            .outputs
            .iter()
            .map(|o| (o.partition.as_str(), o.bytes))
            .collect();
        let sizes: Vec<u64> = self
            .g
            .outputs(t)
            .iter()
            .map_while(|p| by_name.get(self.g.part_name(*p)).copied())
            .collect();
        let obs = &self.d.shared.observe;
        match self.g.finished(t, worker, attempt, &sizes) {
            Finished::Stale => Ok(()),
            Finished::Failed(Verdict::RunFailed(f)) => {
                obs.task_failed(self.d.run_id, t.0, f.kind, &f.cause, false);
                Err(f)
            }
            Finished::Failed(Verdict::Retry) => {
                let cause = "the worker answered with the wrong outputs";
                obs.task_failed(self.d.run_id, t.0, FailureKind::Internal, cause, true);
                Ok(())
            }
            Finished::Done(release) => {
                obs.task_finished(self.d.run_id, t.0, reply.elapsed_us);
                self.d
                    .send(run_event::Event::Finished(TaskFinished {
                        task: self.g.name(t).to_string(),
                        worker: worker.name.clone(),
                        elapsed_us: reply.elapsed_us,
                    }))
                    .await;
                let mut drops: BTreeMap<u64, Vec<String>> = BTreeMap::new();
                for (p, holder) in release {
                    drops
                        .entry(holder.id)
                        .or_default()
                        .push(self.g.part_name(p).to_string());
                }
                for (holder, partitions) in drops {
                    if let Some(w) = live.get(&holder) {
                        let mut c = w.client.clone();
                        let run_id = self.d.run_id.to_string();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                RPC_TIMEOUT,
                                c.drop_partitions(DropPartitionsRequest { run_id, partitions }),
                            )
                            .await;
                        });
                    }
                }
                Ok(())
            }
        }
    }

    async fn failed(
        &mut self,
        t: TaskIx,
        worker: &WorkerRef,
        attempt: u32,
        s: Status,
        live: &BTreeMap<u64, WorkerEntry>,
    ) -> Result<(), RunError> {
        let peer = s
            .metadata()
            .get(LOST_PEER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let kind = if let Some(peer) = &peer {
            // The input's holder is gone, not this worker: its partitions are
            // computed again, and this task's attempt counts.
            if let Some((pid, _)) = live.iter().find(|(_, w)| &w.address == peer) {
                self.d.shared.declare_lost(*pid, s.message());
            }
            FailureKind::LostPeer
        } else if let Some(k) = kind_of(&s) {
            k
        } else if is_transport_failure(&s) {
            self.d.shared.declare_lost(worker.id, &status_cause(&s));
            FailureKind::WorkerLost
        } else {
            FailureKind::Internal
        };
        let cause = status_cause(&s);
        let obs = &self.d.shared.observe;
        match self.g.failed(t, worker, attempt, kind, cause.clone()) {
            Err(_) => Ok(()),
            Ok(Verdict::RunFailed(f)) => {
                obs.task_failed(self.d.run_id, t.0, kind, &cause, false);
                Err(f)
            }
            Ok(Verdict::Retry) => {
                obs.task_failed(self.d.run_id, t.0, kind, &cause, true);
                self.d
                    .send(run_event::Event::Retried(TaskRetried {
                        task: self.g.name(t).to_string(),
                        worker: worker.name.clone(),
                        attempt: self.g.attempts(t),
                        cause: format!("{kind}: {cause}"),
                    }))
                    .await;
                Ok(())
            }
        }
    }

    /// The final values the client reports: evaluations and write receipts,
    /// fetched several at a time (a run may have a receipt per partition).
    async fn collect(
        &self,
        live: &BTreeMap<u64, WorkerEntry>,
    ) -> Result<Vec<ResultValue>, (u64, String)> {
        use futures::{StreamExt, TryStreamExt};
        let results: BTreeSet<String> = self
            .plan
            .tasks
            .iter()
            .filter(|t| matches!(t.kind, TaskKind::Evaluate | TaskKind::Write))
            .flat_map(|t| t.outputs.iter().map(|o| o.to_string()))
            .collect();
        let mut wanted = Vec::new();
        for (p, holder) in self.g.kept() {
            let name = self.g.part_name(p);
            if !results.contains(name) {
                continue;
            }
            let Some(w) = live.get(&holder.id) else {
                return Err((holder.id, "gone before its results were fetched".into()));
            };
            wanted.push((holder.id, w.address.clone(), name.to_string()));
        }
        let peers = &self.d.shared.peers;
        let run_id = self.d.run_id;
        let fetched: Vec<Option<ResultValue>> =
            futures::stream::iter(wanted.into_iter().map(|(id, address, name)| async move {
                let key = format!("{run_id}/{name}");
                match tokio::time::timeout(super::RESULT_FETCH_TIMEOUT, peers.fetch(&address, &key))
                    .await
                {
                    Ok(Ok(Value::Bytes(data))) => Ok(Some(ResultValue {
                        partition: name,
                        data,
                    })),
                    Ok(Ok(Value::Batch(_))) => Ok(None),
                    Ok(Err(e)) => Err((id, e)),
                    Err(_) => Err((
                        id,
                        format!(
                            "no answer fetching the results in {} s",
                            super::RESULT_FETCH_TIMEOUT.as_secs()
                        ),
                    )),
                }
            }))
            .buffered(super::PARALLEL_FETCHES)
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
    }
}

/// The wire form of a failure.
pub fn to_wire(e: &RunError) -> RunFailed {
    RunFailed {
        message: e.to_string(),
        task: e.task.clone(),
        worker: e.worker.clone().unwrap_or_default(),
        attempts: e.attempts,
        max_attempts: e.max_attempts,
        kind: e.kind.as_str().to_string(),
        cause: e.cause.clone(),
    }
}

/// A failure from the wire (an older scheduler sends only the message).
pub fn from_wire(f: RunFailed) -> RunError {
    match FailureKind::parse(&f.kind) {
        Some(kind) => RunError {
            task: f.task,
            worker: (!f.worker.is_empty()).then_some(f.worker),
            attempts: f.attempts,
            max_attempts: f.max_attempts,
            kind,
            cause: f.cause,
        },
        None => RunError::of_run(FailureKind::Internal, f.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_task_leaves_the_last_threads_to_longer_chains_deferred_before_it() {
        // mnist_rf after the fit: both predictions (heights 2 and 1) fetch a
        // 29 MB model and wait for the second pass; writing the model (height
        // 0) is local but must not take one of the two free threads.
        let heights = |hs: &[u32]| {
            let mut m = BTreeMap::new();
            for h in hs {
                *m.entry(*h).or_insert(0usize) += 1;
            }
            m
        };
        assert!(leaves_threads_to(&heights(&[2, 1]), 0, || 2));
        // A third free thread is its to take.
        assert!(!leaves_threads_to(&heights(&[2, 1]), 0, || 3));
        // Tasks of one height (a map over partitions) keep their locality.
        assert!(!leaves_threads_to(&heights(&[1, 1]), 1, || 1));
        assert!(!leaves_threads_to(&heights(&[]), 0, || 0));
        // Only the longer chains count: one of two deferred is longer.
        assert!(leaves_threads_to(&heights(&[3, 1]), 1, || 1));
        assert!(!leaves_threads_to(&heights(&[3, 1]), 1, || 2));
    }

    #[test]
    fn a_failure_crosses_the_wire_field_by_field() {
        let e = RunError {
            task: "fit:forest/g3".into(),
            worker: Some("w1".into()),
            attempts: 2,
            max_attempts: 3,
            kind: FailureKind::WorkerLost,
            cause: "missed heartbeats".into(),
        };
        assert_eq!(from_wire(to_wire(&e)), e);
        let run_level = RunError::of_run(FailureKind::Cancelled, "the run was cancelled");
        assert_eq!(from_wire(to_wire(&run_level)), run_level);
    }
}

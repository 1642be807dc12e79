//! What the cluster knows, for whoever watches it (the dashboard): workers with
//! their latest heartbeat, runs with their plan, every task's state, worker and
//! thread slot, the attempts over time, failures with their kind, results;
//! the shard models served on the workers, with their versions, requests/s,
//! latency and errors.
//!
//! In: calls from the scheduler (registrations, heartbeats with the workers'
//! serving figures, losses) and from
//! each run's driver (run started, task started/finished/failed, tasks given
//! back by a lost worker, run ended). Out: a [`Snapshot`] behind a lock and a
//! `tokio::sync::broadcast` of typed [`Event`]s, both read-only for watchers.
//! Must not: decide anything (placement, retries and the run's state stay in
//! the driver and its `RunGraph`), block its callers (one short lock per call,
//! a broadcast that drops what a slow watcher does not read), or know HTTP.

use crate::compile::logical::LOp;
use crate::ml::evaluation::EvalResult;
use crate::plan::{PhysicalPlan, TaskId, TaskKind};
use crate::runtime::failure::{FailureKind, RunError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Finished runs kept for watchers (older ones are forgotten).
pub const KEPT_RUNS: usize = 20;
/// Upper bounds (seconds) of the task-duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// A task's state as watchers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Waiting,
    Running,
    Done,
    Failed,
}

impl TaskState {
    pub const ALL: [TaskState; 4] = [
        TaskState::Waiting,
        TaskState::Running,
        TaskState::Done,
        TaskState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Done,
    Failed,
}

/// The kind of step a task belongs to (its logical node's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Source,
    Transform,
    Split,
    Fit,
    /// Predictions shared by several consumers (`optimize::shared_predictions`).
    Predict,
    Evaluate,
    Sink,
}

impl StepKind {
    fn of(op: &LOp) -> StepKind {
        match op {
            LOp::Source { .. } => StepKind::Source,
            LOp::Transform { .. } => StepKind::Transform,
            LOp::Split { .. } => StepKind::Split,
            LOp::Fit { .. } => StepKind::Fit,
            LOp::Predict { .. } => StepKind::Predict,
            LOp::Evaluate { .. } => StepKind::Evaluate,
            LOp::Sink { .. } => StepKind::Sink,
        }
    }
}

/// What a worker's heartbeat says about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerStats {
    pub threads: u32,
    /// Threads running a task now.
    pub busy_threads: u32,
    /// Bytes of partitions held in memory.
    pub memory_used: u64,
    /// `--memory-limit` in bytes; 0: none.
    pub memory_limit: u64,
    /// Past this many bytes in memory the worker spills (0: never).
    pub spill_threshold: u64,
    /// Past this many bytes the worker takes no new task (0: never).
    pub pause_threshold: u64,
    /// Bytes written to spill files since the worker started.
    pub spilled_bytes: u64,
    /// Partitions held (in memory or spilled).
    pub partitions: u32,
    pub paused: bool,
    pub draining: bool,
}

/// One shard model resident on a worker, as its heartbeat says (counters
/// since the worker started; see `cluster::serving_stats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServedShard {
    pub model: String,
    pub shard: String,
    pub version: u64,
    /// Versions in its history, this one included.
    pub versions: u32,
    /// `ServeInfer` calls it answered.
    pub requests: u64,
    pub errors: u64,
    pub latency_sum_us: u64,
    /// Answered calls per bucket of `serving_stats::LATENCY_BUCKETS` (not
    /// cumulative), then above the last.
    pub latency_buckets: Vec<u64>,
    /// Of the worker's last 256 calls.
    pub p50_us: u64,
    pub p99_us: u64,
}

/// A shard model of a served model on one worker.
#[derive(Clone, Debug, Serialize)]
pub struct ShardHolderView {
    pub shard: String,
    pub worker: String,
    pub worker_id: u64,
    /// Whether the worker is alive (a lost worker's last figures stay shown).
    pub alive: bool,
    pub version: u64,
    pub versions: u32,
    /// The newest version of this shard among live workers: the one a front
    /// door asks first.
    pub current: bool,
    pub requests: u64,
    pub errors: u64,
    /// Calls answered per second over the last heartbeats (up to
    /// [`RATE_WINDOW`]).
    pub requests_per_s: f64,
    /// Mean of all answered calls; None before the first.
    pub mean_ms: Option<f64>,
    /// Of the worker's last 256 calls; None before the first.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub latency_buckets: Vec<u64>,
    pub latency_sum_us: u64,
}

/// A model served on the cluster: its shard models, by shard then worker.
#[derive(Clone, Debug, Serialize)]
pub struct ServedModelView {
    pub model: String,
    pub shards: Vec<ShardHolderView>,
}

/// The span the serving request rates are taken over.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Serialize)]
pub struct WorkerView {
    pub id: u64,
    pub name: String,
    pub address: String,
    pub stats: WorkerStats,
    pub alive: bool,
    /// Why it was declared lost.
    pub lost_cause: Option<String>,
    /// Milliseconds since its last heartbeat (or registration), when the
    /// snapshot was taken.
    pub last_heartbeat_ms_ago: u64,
}

/// One task of a run.
#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    pub id: TaskId,
    /// `id` as text (its `Display`), for people.
    pub name: String,
    /// The logical step (`fit:forest`).
    pub step: String,
    pub step_kind: StepKind,
    pub state: TaskState,
    pub worker: Option<String>,
    pub slot: Option<u32>,
    pub attempts: u32,
    /// Trees this task fits (a forest's tree group).
    pub trees: u32,
}

/// One attempt of a task on a worker thread: a bar of the task stream.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// Index of the task in the run's `tasks`.
    pub task: usize,
    pub worker_id: u64,
    pub worker: String,
    pub slot: u32,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub state: TaskState,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailureView {
    /// The task's name; empty for a failure of the run as a whole.
    pub task: String,
    pub worker: Option<String>,
    pub attempt: u32,
    pub kind: &'static str,
    pub cause: String,
    /// Whether the task runs again.
    pub retried: bool,
    pub at_ms: u64,
}

/// Progress of one step (a logical node): its tasks by state.
#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    pub step: String,
    pub kind: StepKind,
    pub tasks: usize,
    pub waiting: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
    /// For a forest's fit: trees in all and trees fitted.
    pub trees: u32,
    pub trees_done: u32,
}

/// A file a finished run wrote.
#[derive(Clone, Debug, Serialize)]
pub struct OutputView {
    pub output: String,
    pub paths: Vec<String>,
    pub rows: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub id: String,
    pub file: String,
    /// The folder the run's relative paths (its outputs) are under.
    pub base_dir: String,
    pub state: RunState,
    /// Unix milliseconds.
    pub started_unix_ms: u64,
    pub elapsed_ms: u64,
    pub tasks: Vec<TaskView>,
    pub steps: Vec<StepView>,
    pub attempts: Vec<Attempt>,
    pub failures: Vec<FailureView>,
    pub evaluations: Vec<EvalResult>,
    pub outputs: Vec<OutputView>,
    /// The run's failure, when it failed.
    pub error: Option<FailureView>,
}

/// Counters since the scheduler started (Prometheus counters).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub runs_started: u64,
    pub runs_done: u64,
    pub runs_failed: u64,
    pub tasks_started: u64,
    pub tasks_done: u64,
    /// Attempts that failed (retried or not).
    pub task_failures: u64,
    pub retries: u64,
    /// Done tasks run again because their outputs were lost with a worker.
    pub recomputed: u64,
    pub workers_lost: u64,
    /// Input bytes tasks fetched from another worker than the one running them.
    pub bytes_moved: u64,
    /// Task durations (seconds, as the worker measured them): count per
    /// bucket of [`DURATION_BUCKETS`] (not cumulative), then above the last.
    pub duration_buckets: Vec<u64>,
    pub duration_sum: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub workers: Vec<WorkerView>,
    /// Newest first.
    pub runs: Vec<RunView>,
    pub counters: Counters,
    /// By model name.
    pub serving: Vec<ServedModelView>,
}

/// Something that changed; watchers read the snapshot for the details.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    WorkerJoined {
        worker: u64,
    },
    Heartbeat {
        worker: u64,
    },
    WorkerLost {
        worker: u64,
        cause: String,
    },
    RunStarted {
        run: String,
    },
    TaskStarted {
        run: String,
        task: TaskId,
        worker: String,
        slot: u32,
    },
    TaskFinished {
        run: String,
        task: TaskId,
    },
    TaskFailed {
        run: String,
        task: TaskId,
        kind: &'static str,
        retried: bool,
    },
    TaskRecomputed {
        run: String,
        task: TaskId,
    },
    RunEnded {
        run: String,
        state: RunState,
    },
}

/// Requests per `(model, shard)`.
type Counts = HashMap<(String, String), u64>;

struct WorkerRec {
    view: WorkerView,
    last: Instant,
    /// The resident shard models of its last heartbeat.
    serving: Vec<ServedShard>,
    /// Requests per `(model, shard)` of the heartbeats within [`RATE_WINDOW`].
    samples: VecDeque<(Instant, Counts)>,
    /// Requests/s per `(model, shard)`, from `samples`.
    rates: HashMap<(String, String), f64>,
}

struct RunRec {
    view: RunView,
    t0: Instant,
    /// None for a run that failed before it was planned.
    plan: Option<Arc<PhysicalPlan>>,
    /// The running attempt of each task (index into `view.attempts`).
    open: HashMap<usize, usize>,
    dot: String,
}

#[derive(Default)]
struct Inner {
    workers: BTreeMap<u64, WorkerRec>,
    runs: Vec<RunRec>,
    counters: Counters,
    /// Busy thread slots per worker, over all runs.
    slots: HashMap<u64, BTreeSet<u32>>,
}

/// The observation: cheap to call, never blocks for long.
pub struct Observer {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            inner: Mutex::new(Inner {
                counters: Counters {
                    duration_buckets: vec![0; DURATION_BUCKETS.len() + 1],
                    ..Default::default()
                },
                ..Default::default()
            }),
            tx: broadcast::channel(1024).0,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

impl Observer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, e: Event) {
        // No watcher is fine.
        let _ = self.tx.send(e);
    }

    /// Events from now on (a watcher that falls behind misses some and is
    /// told so by the receiver: it reads the snapshot again).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        let workers = g
            .workers
            .values()
            .map(|w| WorkerView {
                last_heartbeat_ms_ago: ms(w.last),
                ..w.view.clone()
            })
            .collect();
        let runs = g
            .runs
            .iter()
            .rev()
            .map(|r| {
                let mut v = r.view.clone();
                if v.state == RunState::Running {
                    v.elapsed_ms = ms(r.t0);
                }
                if let Some(p) = &r.plan {
                    v.steps = steps(p, &v.tasks);
                }
                v
            })
            .collect();
        Snapshot {
            workers,
            runs,
            counters: g.counters.clone(),
            serving: serving(&g.workers),
        }
    }

    /// The DOT text of a run's plan (as `dagml plan` draws it).
    pub fn plan_dot(&self, run: &str) -> Option<String> {
        let g = self.lock();
        g.runs
            .iter()
            .find(|r| r.view.id == run)
            .map(|r| r.dot.clone())
    }

    pub fn worker_joined(&self, id: u64, name: &str, address: &str, threads: u32, limit: u64) {
        let stats = WorkerStats {
            threads,
            memory_limit: limit,
            ..Default::default()
        };
        self.lock().workers.insert(
            id,
            WorkerRec {
                view: WorkerView {
                    id,
                    name: name.into(),
                    address: address.into(),
                    stats,
                    alive: true,
                    lost_cause: None,
                    last_heartbeat_ms_ago: 0,
                },
                last: Instant::now(),
                serving: Vec::new(),
                samples: VecDeque::new(),
                rates: HashMap::new(),
            },
        );
        self.emit(Event::WorkerJoined { worker: id });
    }

    /// A heartbeat: the worker's stats and its resident shard models.
    pub fn heartbeat(&self, id: u64, stats: WorkerStats, serving: Vec<ServedShard>) {
        {
            let mut g = self.lock();
            let Some(w) = g.workers.get_mut(&id) else {
                return;
            };
            let now = Instant::now();
            w.view.stats = stats;
            w.last = now;
            let counts: Counts = serving
                .iter()
                .map(|s| ((s.model.clone(), s.shard.clone()), s.requests))
                .collect();
            while w
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                w.samples.pop_front();
            }
            w.rates = counts
                .iter()
                .map(|(k, n)| {
                    let rate = w
                        .samples
                        .front()
                        .and_then(|(t, old)| {
                            let dt = now.duration_since(*t).as_secs_f64();
                            let before = old.get(k).copied().unwrap_or(0);
                            // A restarted worker counts from 0 again.
                            (dt > 0.0 && *n >= before).then(|| (n - before) as f64 / dt)
                        })
                        .unwrap_or(0.0);
                    (k.clone(), rate)
                })
                .collect();
            w.samples.push_back((now, counts));
            w.serving = serving;
        }
        self.emit(Event::Heartbeat { worker: id });
    }

    pub fn worker_lost(&self, id: u64, cause: &str) {
        {
            let mut g = self.lock();
            let Some(w) = g.workers.get_mut(&id) else {
                return;
            };
            if !w.view.alive {
                return;
            }
            w.view.alive = false;
            w.view.lost_cause = Some(cause.into());
            w.view.stats.busy_threads = 0;
            w.rates.clear();
            w.samples.clear();
            g.counters.workers_lost += 1;
            g.slots.remove(&id);
            // Forget the oldest lost workers past a bound (a long-lived
            // scheduler sees workers come and go).
            let lost: Vec<u64> = g
                .workers
                .iter()
                .filter(|(_, w)| !w.view.alive)
                .map(|(i, _)| *i)
                .collect();
            for old in lost.iter().take(lost.len().saturating_sub(KEPT_RUNS)) {
                g.workers.remove(old);
            }
        }
        self.emit(Event::WorkerLost {
            worker: id,
            cause: cause.into(),
        });
    }

    pub fn run_started(&self, run: &str, file: &str, base_dir: &str, plan: Arc<PhysicalPlan>) {
        let (dot, _) =
            crate::plan::dot::to_dot_for_picture(&plan, crate::plan::dot::Level::Physical);
        let lp = &plan.logical;
        let kinds: HashMap<String, StepKind> = lp
            .sorted_nodes()
            .into_iter()
            .map(|n| (lp.graph[n].id(), StepKind::of(&lp.graph[n].op)))
            .collect();
        let tasks = plan
            .tasks
            .iter()
            .map(|t| TaskView {
                id: t.id.clone(),
                name: t.id.to_string(),
                step: t.node.clone(),
                step_kind: kinds.get(&t.node).copied().unwrap_or(StepKind::Transform),
                state: TaskState::Waiting,
                worker: None,
                slot: None,
                attempts: 0,
                trees: match t.kind {
                    TaskKind::FitTrees { count, .. } => count,
                    _ => 0,
                },
            })
            .collect();
        {
            let mut g = self.lock();
            g.counters.runs_started += 1;
            g.runs.push(RunRec {
                view: RunView {
                    id: run.into(),
                    file: file.into(),
                    base_dir: base_dir.into(),
                    state: RunState::Running,
                    started_unix_ms: unix_ms(),
                    elapsed_ms: 0,
                    tasks,
                    steps: Vec::new(),
                    attempts: Vec::new(),
                    failures: Vec::new(),
                    evaluations: Vec::new(),
                    outputs: Vec::new(),
                    error: None,
                },
                t0: Instant::now(),
                plan: Some(plan),
                open: HashMap::new(),
                dot,
            });
            let finished = g
                .runs
                .iter()
                .filter(|r| r.view.state != RunState::Running)
                .count();
            let mut drop = finished.saturating_sub(KEPT_RUNS);
            g.runs.retain(|r| {
                let old = drop > 0 && r.view.state != RunState::Running;
                if old {
                    drop -= 1;
                }
                !old
            });
        }
        self.emit(Event::RunStarted { run: run.into() });
    }

    /// Task `t` (its index in the plan) started on a worker, fetching
    /// `moved` input bytes from other workers. Returns its thread slot.
    pub fn task_started(&self, run: &str, t: usize, worker: (u64, &str), moved: u64) -> u32 {
        let (wid, wname) = worker;
        let (slot, task) = {
            let mut g = self.lock();
            let busy = g.slots.entry(wid).or_default();
            let slot = (0..).find(|s| !busy.contains(s)).unwrap_or(0);
            busy.insert(slot);
            g.counters.tasks_started += 1;
            g.counters.bytes_moved += moved;
            let Some(r) = g.runs.iter_mut().find(|r| r.view.id == run) else {
                return slot;
            };
            let start_ms = ms(r.t0);
            let Some(tv) = r.view.tasks.get_mut(t) else {
                return slot;
            };
            tv.state = TaskState::Running;
            tv.worker = Some(wname.into());
            tv.slot = Some(slot);
            tv.attempts += 1;
            let task = tv.id.clone();
            r.view.attempts.push(Attempt {
                task: t,
                worker_id: wid,
                worker: wname.into(),
                slot,
                start_ms,
                end_ms: None,
                state: TaskState::Running,
            });
            let ix = r.view.attempts.len() - 1;
            r.open.insert(t, ix);
            (slot, task)
        };
        self.emit(Event::TaskStarted {
            run: run.into(),
            task,
            worker: wname.into(),
            slot,
        });
        slot
    }

    /// Close task `t`'s running attempt as `state`; its id.
    fn close(g: &mut Inner, run: &str, t: usize, state: TaskState) -> Option<TaskId> {
        let r = g.runs.iter_mut().find(|r| r.view.id == run)?;
        let now = ms(r.t0);
        let mut freed = None;
        if let Some(ix) = r.open.remove(&t)
            && let Some(a) = r.view.attempts.get_mut(ix)
        {
            a.end_ms = Some(now);
            a.state = state;
            freed = Some((a.worker_id, a.slot));
        }
        let tv = r.view.tasks.get_mut(t)?;
        tv.state = state;
        let id = tv.id.clone();
        if let Some((w, s)) = freed
            && let Some(busy) = g.slots.get_mut(&w)
        {
            busy.remove(&s);
        }
        Some(id)
    }

    pub fn task_finished(&self, run: &str, t: usize, elapsed_us: u64) {
        let id = {
            let mut g = self.lock();
            let secs = elapsed_us as f64 / 1e6;
            let b = DURATION_BUCKETS
                .iter()
                .position(|ub| secs <= *ub)
                .unwrap_or(DURATION_BUCKETS.len());
            if let Some(n) = g.counters.duration_buckets.get_mut(b) {
                *n += 1;
            }
            g.counters.duration_sum += secs;
            g.counters.tasks_done += 1;
            Self::close(&mut g, run, t, TaskState::Done)
        };
        if let Some(task) = id {
            self.emit(Event::TaskFinished {
                run: run.into(),
                task,
            });
        }
    }

    /// An attempt of task `t` failed; `retried`: it runs again (it waits).
    pub fn task_failed(&self, run: &str, t: usize, kind: FailureKind, cause: &str, retried: bool) {
        let id = {
            let mut g = self.lock();
            g.counters.task_failures += 1;
            if retried {
                g.counters.retries += 1;
            }
            let id = Self::close(&mut g, run, t, TaskState::Failed);
            if let Some(r) = g.runs.iter_mut().find(|r| r.view.id == run) {
                let at_ms = ms(r.t0);
                if let Some(tv) = r.view.tasks.get_mut(t) {
                    if retried {
                        tv.state = TaskState::Waiting;
                    }
                    r.view.failures.push(FailureView {
                        task: tv.name.clone(),
                        worker: tv.worker.clone(),
                        attempt: tv.attempts,
                        kind: kind.as_str(),
                        cause: cause.into(),
                        retried,
                        at_ms,
                    });
                }
            }
            id
        };
        if let Some(task) = id {
            self.emit(Event::TaskFailed {
                run: run.into(),
                task,
                kind: kind.as_str(),
                retried,
            });
        }
    }

    /// Task `t` was done, and runs again: its outputs were lost with a worker.
    pub fn task_recomputed(&self, run: &str, t: usize) {
        let id = {
            let mut g = self.lock();
            g.counters.recomputed += 1;
            g.runs
                .iter_mut()
                .find(|r| r.view.id == run)
                .and_then(|r| r.view.tasks.get_mut(t))
                .map(|tv| {
                    tv.state = TaskState::Waiting;
                    tv.id.clone()
                })
        };
        if let Some(task) = id {
            self.emit(Event::TaskRecomputed {
                run: run.into(),
                task,
            });
        }
    }

    /// The run ended with these final values (partition name → bytes).
    pub fn run_done(&self, run: &str, values: &HashMap<String, crate::runtime::value::Value>) {
        {
            let mut g = self.lock();
            g.counters.runs_done += 1;
            if let Some(r) = g.runs.iter_mut().find(|r| r.view.id == run) {
                let (evaluations, receipts) = match &r.plan {
                    Some(p) => crate::runtime::report::results_of(p, |n| values.get(n)),
                    None => Default::default(),
                };
                r.view.evaluations = evaluations;
                r.view.outputs = receipts
                    .into_iter()
                    .map(|x| OutputView {
                        output: x.output,
                        paths: x.paths,
                        rows: x.rows,
                    })
                    .collect();
                r.view.state = RunState::Done;
                r.view.elapsed_ms = ms(r.t0);
            }
        }
        self.emit(Event::RunEnded {
            run: run.into(),
            state: RunState::Done,
        });
    }

    pub fn run_failed(&self, run: &str, file: &str, e: &RunError) {
        {
            let mut g = self.lock();
            g.counters.runs_failed += 1;
            let failure = |at_ms| FailureView {
                task: e.task.clone(),
                worker: e.worker.clone(),
                attempt: e.attempts,
                kind: e.kind.as_str(),
                cause: e.cause.clone(),
                retried: false,
                at_ms,
            };
            let open = match g.runs.iter_mut().find(|r| r.view.id == run) {
                Some(r) => {
                    let at = ms(r.t0);
                    r.view.state = RunState::Failed;
                    r.view.elapsed_ms = at;
                    r.view.error = Some(failure(at));
                    r.open.keys().copied().collect::<Vec<usize>>()
                }
                // It failed before it was planned (an invalid pipeline).
                None => {
                    g.runs.push(RunRec {
                        view: RunView {
                            id: run.into(),
                            file: file.into(),
                            base_dir: String::new(),
                            state: RunState::Failed,
                            started_unix_ms: unix_ms(),
                            elapsed_ms: 0,
                            tasks: Vec::new(),
                            steps: Vec::new(),
                            attempts: Vec::new(),
                            failures: Vec::new(),
                            evaluations: Vec::new(),
                            outputs: Vec::new(),
                            error: Some(failure(0)),
                        },
                        t0: Instant::now(),
                        plan: None,
                        open: HashMap::new(),
                        dot: String::new(),
                    });
                    Vec::new()
                }
            };
            // What was running was cancelled with the run.
            for t in open {
                Self::close(&mut g, run, t, TaskState::Failed);
            }
        }
        self.emit(Event::RunEnded {
            run: run.into(),
            state: RunState::Failed,
        });
    }
}

/// The served models: every worker's resident shard models, grouped by model,
/// ordered by shard then worker name.
fn serving(workers: &BTreeMap<u64, WorkerRec>) -> Vec<ServedModelView> {
    let mut newest: HashMap<(&str, &str), u64> = HashMap::new();
    for w in workers.values().filter(|w| w.view.alive) {
        for s in &w.serving {
            let v = newest.entry((&s.model, &s.shard)).or_default();
            *v = (*v).max(s.version);
        }
    }
    let mut models: BTreeMap<String, Vec<ShardHolderView>> = BTreeMap::new();
    for w in workers.values() {
        for s in &w.serving {
            let answered = s.latency_buckets.iter().sum::<u64>() > 0;
            let ms = |us: u64| answered.then_some(us as f64 / 1000.0);
            models
                .entry(s.model.clone())
                .or_default()
                .push(ShardHolderView {
                    shard: s.shard.clone(),
                    worker: w.view.name.clone(),
                    worker_id: w.view.id,
                    alive: w.view.alive,
                    version: s.version,
                    versions: s.versions,
                    current: w.view.alive
                        && newest.get(&(s.model.as_str(), s.shard.as_str())) == Some(&s.version),
                    requests: s.requests,
                    errors: s.errors,
                    requests_per_s: w
                        .rates
                        .get(&(s.model.clone(), s.shard.clone()))
                        .copied()
                        .unwrap_or(0.0),
                    mean_ms: (s.requests > 0)
                        .then(|| s.latency_sum_us as f64 / 1000.0 / s.requests as f64),
                    p50_ms: ms(s.p50_us),
                    p99_ms: ms(s.p99_us),
                    latency_buckets: s.latency_buckets.clone(),
                    latency_sum_us: s.latency_sum_us,
                });
        }
    }
    models
        .into_iter()
        .map(|(model, mut shards)| {
            shards.sort_by(|a, b| a.shard.cmp(&b.shard).then_with(|| a.worker.cmp(&b.worker)));
            ServedModelView { model, shards }
        })
        .collect()
}

/// Tasks by state per step, in the plan's step order.
fn steps(plan: &PhysicalPlan, tasks: &[TaskView]) -> Vec<StepView> {
    let mut out: Vec<StepView> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let order = petgraph::algo::toposort(&plan.logical.graph, None)
        .unwrap_or_else(|_| plan.logical.sorted_nodes());
    for n in order {
        let node = &plan.logical.graph[n];
        at.insert(node.id(), out.len());
        out.push(StepView {
            step: node.id(),
            kind: StepKind::of(&node.op),
            tasks: 0,
            waiting: 0,
            running: 0,
            done: 0,
            failed: 0,
            trees: 0,
            trees_done: 0,
        });
    }
    for t in tasks {
        let Some(s) = at.get(&t.step).and_then(|i| out.get_mut(*i)) else {
            continue;
        };
        s.tasks += 1;
        s.trees += t.trees;
        match t.state {
            TaskState::Waiting => s.waiting += 1,
            TaskState::Running => s.running += 1,
            TaskState::Done => {
                s.done += 1;
                s.trees_done += t.trees;
            }
            TaskState::Failed => s.failed += 1,
        }
    }
    out.retain(|s| s.tasks > 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Arc<PhysicalPlan> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cluster_forest.toml"
        ))
        .expect("fixture");
        let (_, p) = crate::workspace::plan_bytes("p.toml", text.as_bytes(), &Default::default())
            .unwrap_or_else(|_| panic!("the fixture plans"));
        Arc::new(p.physical)
    }

    #[test]
    fn tasks_take_the_lowest_free_slot_and_failures_are_counted_by_kind() {
        let o = Observer::default();
        let mut events = o.subscribe();
        o.worker_joined(1, "w1", "127.0.0.1:1", 2, 0);
        let p = plan();
        let n = p.tasks.len();
        o.run_started("run1", "p.toml", ".", p);
        assert_eq!(o.task_started("run1", 0, (1, "w1"), 10), 0);
        assert_eq!(o.task_started("run1", 1, (1, "w1"), 0), 1);
        o.task_finished("run1", 0, 2_000);
        // Slot 0 is free again.
        assert_eq!(o.task_started("run1", 2, (1, "w1"), 5), 0);
        o.task_failed(
            "run1",
            1,
            FailureKind::WorkerLost,
            "missed heartbeats",
            true,
        );
        o.task_recomputed("run1", 0);
        o.worker_lost(1, "missed heartbeats");
        let s = o.snapshot();
        let r = &s.runs[0];
        assert_eq!(r.tasks[0].state, TaskState::Waiting, "recomputed");
        assert_eq!(r.failures.len(), 1, "a recomputation is not a failure");
        assert_eq!(r.tasks[1].state, TaskState::Waiting, "retried: waits again");
        assert_eq!(r.attempts.len(), 3);
        assert_eq!(r.attempts[1].state, TaskState::Failed);
        assert_eq!(r.failures[0].kind, "worker-lost");
        assert!(r.failures[0].retried);
        assert_eq!(r.steps.iter().map(|s| s.tasks).sum::<usize>(), n);
        assert!(!s.workers[0].alive);
        let c = &s.counters;
        assert_eq!(
            (
                c.tasks_started,
                c.tasks_done,
                c.retries,
                c.recomputed,
                c.workers_lost
            ),
            (3, 1, 1, 1, 1)
        );
        assert_eq!(c.bytes_moved, 15);
        // 2 ms lands in the 0.005 s bucket.
        assert_eq!(c.duration_buckets[1], 1);
        let first = events.try_recv().expect("an event");
        assert!(
            matches!(first, Event::WorkerJoined { worker: 1 }),
            "{first:?}"
        );
    }

    fn served(shard: &str, version: u64, requests: u64) -> ServedShard {
        ServedShard {
            model: "m".into(),
            shard: shard.into(),
            version,
            versions: version as u32,
            requests,
            latency_sum_us: requests * 2_000,
            latency_buckets: vec![requests],
            p50_us: 2_000,
            p99_us: 3_000,
            ..Default::default()
        }
    }

    #[test]
    fn served_shards_are_grouped_by_model_with_their_rates_and_the_newest_version_current() {
        let o = Observer::default();
        o.worker_joined(1, "w1", "a:1", 1, 0);
        o.worker_joined(2, "w2", "a:2", 1, 0);
        o.heartbeat(1, WorkerStats::default(), vec![served("A", 1, 0)]);
        o.heartbeat(2, WorkerStats::default(), vec![served("A", 2, 0)]);
        std::thread::sleep(Duration::from_millis(200));
        o.heartbeat(1, WorkerStats::default(), vec![served("A", 1, 0)]);
        o.heartbeat(2, WorkerStats::default(), vec![served("A", 2, 40)]);
        let s = o.snapshot();
        assert_eq!(s.serving.len(), 1);
        let m = &s.serving[0];
        assert_eq!(m.model, "m");
        let (h1, h2) = (&m.shards[0], &m.shards[1]);
        assert_eq!((h1.worker.as_str(), h1.current), ("w1", false));
        assert_eq!(
            (h2.worker.as_str(), h2.current, h2.requests),
            ("w2", true, 40)
        );
        assert_eq!(h1.requests_per_s, 0.0);
        // 40 requests in a bit over 0.2 s.
        assert!(
            h2.requests_per_s > 20.0 && h2.requests_per_s <= 200.0,
            "{}",
            h2.requests_per_s
        );
        assert_eq!((h2.mean_ms, h2.p99_ms), (Some(2.0), Some(3.0)));
        assert_eq!(h1.mean_ms, None, "no call answered yet");
        // Once w2 is lost, w1's older version is the current one.
        o.worker_lost(2, "missed heartbeats");
        let s = o.snapshot();
        let m = &s.serving[0];
        assert!(m.shards[0].current && !m.shards[1].current && !m.shards[1].alive);
        assert_eq!(m.shards[1].requests_per_s, 0.0);
    }

    #[test]
    fn a_run_that_fails_before_it_is_planned_is_listed_with_its_cause() {
        let o = Observer::default();
        let e = RunError::of_run(FailureKind::BadData, "the pipeline is not valid");
        o.run_failed("run7", "bad.toml", &e);
        let s = o.snapshot();
        assert_eq!(s.runs[0].state, RunState::Failed);
        let err = s.runs[0].error.as_ref().expect("its error");
        assert_eq!(
            (err.kind, err.cause.as_str()),
            ("bad-data", "the pipeline is not valid")
        );
        assert_eq!(s.counters.runs_failed, 1);
    }
}

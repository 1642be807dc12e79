//! The in-process driver of the run graph: runs a physical plan's tasks on a
//! pool of `threads` threads, holding each output partition until the graph
//! says its last reader is done.
//!
//! In: the tasks of a [`PhysicalPlan`] and a [`Kernels`] implementation that runs
//! one task as a function of its input partitions. Out: every kept output
//! (results nothing reads, plus [`Options::keep`]), or the structured
//! [`RunError`] that names the task, the attempts and the cause.
//! Must not: keep run state of its own (that is [`super::graph::RunGraph`]'s),
//! know what a task computes (that is the kernels'), or start a thread outside
//! its pool: every task, and every parallel loop inside one, runs on the
//! `threads` threads of the pool, so `--threads N` bounds the run.

use super::failure::{FailureKind, RunError, TaskError};
use super::graph::{Finished, PartIx, RunGraph, TaskIx, TaskSpec};
use crate::plan::{PartitionId, PhysicalPlan, Task};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs single tasks. Implementations must be pure functions of (task, inputs).
pub trait Kernels: Sync {
    type Value: Send + Sync + 'static;
    /// Run one task. `inputs` are in `task.inputs` order; the result must have
    /// one value per `task.outputs` entry, in that order.
    fn run(
        &self,
        task: &Task,
        inputs: Vec<Arc<Self::Value>>,
    ) -> Result<Vec<Self::Value>, TaskError>;
}

/// What the executor reports as it goes (progress bars, log lines, tests).
pub trait Observer: Sync {
    fn started(&self, _task: &Task) {}
    fn finished(&self, _task: &Task, _elapsed: Duration) {}
}

pub struct Quiet;
impl Observer for Quiet {}

/// Timing of one task.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    pub id: String,
    pub node: String,
    /// When the task started, from the start of the run.
    pub start: Duration,
    pub elapsed: Duration,
}

pub struct Outcome<V> {
    /// Outputs that nothing in the plan reads (results: models, metrics, writes),
    /// plus everything asked for in `keep`.
    pub values: BTreeMap<String, Arc<V>>,
    pub records: Vec<TaskRecord>,
    pub wall: Duration,
}

pub struct Options {
    /// Threads for the whole run: tasks and the parallel loops inside them.
    pub threads: usize,
    /// Attempts per task for failures a retry can help with (see
    /// [`FailureKind::retryable`]); other failures end the run at once.
    pub max_attempts: u32,
    /// Partition ids to keep in the outcome even if some task reads them.
    pub keep: BTreeSet<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 1,
            max_attempts: 1,
            keep: BTreeSet::new(),
        }
    }
}

/// The run graph of a plan: `keep` and every output nothing reads survive to
/// the end. `W` is the driver's worker type.
pub fn graph_of<W: super::graph::Worker>(
    plan: &PhysicalPlan,
    keep: &dyn Fn(&Task, &str) -> bool,
    max_attempts: u32,
) -> Result<RunGraph<W>, RunError> {
    let read: std::collections::HashSet<&PartitionId> =
        plan.tasks.iter().flat_map(|t| &t.inputs).collect();
    let read = &read;
    let kept: BTreeSet<String> = plan
        .tasks
        .iter()
        .flat_map(|t| {
            t.outputs
                .iter()
                .filter(move |o| !read.contains(o) || keep(t, &o.to_string()))
                .map(ToString::to_string)
        })
        .collect();
    let specs = plan
        .tasks
        .iter()
        .map(|t| TaskSpec {
            name: t.id.to_string(),
            inputs: t.inputs.iter().map(|p| p.to_string()).collect(),
            outputs: t.outputs.iter().map(|p| p.to_string()).collect(),
        })
        .collect();
    RunGraph::new(specs, |k: &String| kept.contains(k), max_attempts)
        .map_err(|e| RunError::of_run(FailureKind::Internal, e.to_string()))
}

type Answer<V> = (TaskIx, u32, Result<Vec<V>, TaskError>, Duration, Duration);

/// Run every task of the plan.
pub fn run<K: Kernels>(
    plan: &PhysicalPlan,
    kernels: &K,
    observer: &dyn Observer,
    opts: &Options,
) -> Result<Outcome<K::Value>, RunError> {
    let start = Instant::now();
    let mut g: RunGraph<()> = graph_of(plan, &|_, o| opts.keep.contains(o), opts.max_attempts)?;
    let threads = opts.threads.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("dagml-task-{i}"))
        .build()
        .map_err(|e| RunError::of_run(FailureKind::Internal, format!("no thread pool: {e}")))?;
    // The values of held partitions.
    let mut store: HashMap<PartIx, Arc<K::Value>> = HashMap::new();
    let mut records = Vec::new();
    let (tx, rx) = mpsc::channel::<Answer<K::Value>>();
    pool.in_place_scope(|scope| {
        let mut running = 0usize;
        loop {
            while running < threads {
                let Some(t) = g.ready().next() else { break };
                let Ok(attempt) = g.start(t, ()) else { break };
                running += 1;
                let task = &plan.tasks[t.0];
                let inputs: Vec<Arc<K::Value>> = g
                    .inputs(t)
                    .iter()
                    .filter_map(|p| store.get(p).cloned())
                    .collect();
                observer.started(task);
                let tx = tx.clone();
                scope.spawn(move |_| {
                    let t0 = Instant::now();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        kernels.run(task, inputs)
                    }))
                    .unwrap_or_else(|p| Err(TaskError::internal(panic_message(&*p))));
                    let _ = tx.send((t, attempt, result, t0 - start, t0.elapsed()));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((t, attempt, result, started_at, elapsed)) = rx.recv() else {
                break;
            };
            running -= 1;
            let task = &plan.tasks[t.0];
            match result {
                Ok(values) => {
                    let sizes = vec![0; values.len()];
                    match g.finished(t, &(), attempt, &sizes) {
                        Finished::Done(release) => {
                            observer.finished(task, elapsed);
                            records.push(TaskRecord {
                                id: task.id.to_string(),
                                node: task.node.clone(),
                                start: started_at,
                                elapsed,
                            });
                            for (p, v) in g.outputs(t).iter().zip(values) {
                                store.insert(*p, Arc::new(v));
                            }
                            for (p, ()) in release {
                                store.remove(&p);
                            }
                        }
                        Finished::Stale | Finished::Failed(_) => {}
                    }
                }
                Err(e) => {
                    let _ = g.failed(t, &(), attempt, e.kind, e.message);
                }
            }
        }
    });
    if let Some(f) = g.failure() {
        return Err(f.clone());
    }
    if !g.is_complete() {
        let at = g
            .stuck_at()
            .map(|t| g.name(t).to_string())
            .unwrap_or_default();
        return Err(RunError::of_run(
            FailureKind::Internal,
            format!("no task can run (at `{at}`)"),
        ));
    }
    let values = g
        .kept()
        .filter_map(|(p, ())| {
            store
                .get(&p)
                .map(|v| (g.part_name(p).to_string(), v.clone()))
        })
        .collect();
    Ok(Outcome {
        values,
        records,
        wall: start.elapsed(),
    })
}

/// What a panicking task said, for its failure.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("the task panicked: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::logical::LogicalPlan;
    use crate::plan::{TaskId, TaskKind, TaskPart};

    /// Task `<id>/out` of node `id`, reading the outputs of the tasks `inputs`.
    fn task(id: &str, inputs: &[&str]) -> Task {
        let out = |n: &str| PartitionId::from(TaskId::new(n, TaskPart::Out));
        Task {
            id: TaskId::new(id, TaskPart::Out),
            node: id.into(),
            kind: TaskKind::Fit,
            inputs: inputs.iter().map(|s| out(s)).collect(),
            outputs: vec![out(id)],
            est_rows: None,
            est_bytes: None,
            worker: None,
        }
    }

    fn plan(tasks: Vec<Task>) -> PhysicalPlan {
        PhysicalPlan {
            logical: LogicalPlan {
                name: "t".into(),
                seed: 0,
                graph: Default::default(),
                cluster: None,
            },
            tasks,
            workers: None,
        }
    }

    /// Each task outputs the sum of its inputs plus the number in its id.
    struct Sum;
    impl Kernels for Sum {
        type Value = u64;
        fn run(&self, task: &Task, inputs: Vec<Arc<u64>>) -> Result<Vec<u64>, TaskError> {
            let own: u64 = task
                .node
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .map_err(|_| TaskError::bad_data(format!("no number in {}", task.node)))?;
            Ok(vec![own + inputs.iter().map(|v| **v).sum::<u64>()])
        }
    }

    #[test]
    fn runs_a_diamond_in_order_with_any_thread_count() {
        let p = plan(vec![
            task("a1", &[]),
            task("b2", &["a1"]),
            task("c3", &["a1"]),
            task("d4", &["b2", "c3"]),
        ]);
        for threads in [1, 2, 4] {
            let out = run(
                &p,
                &Sum,
                &Quiet,
                &Options {
                    threads,
                    ..Default::default()
                },
            )
            .unwrap();
            // d = 4 + (2 + 1) + (3 + 1); intermediate partitions were freed.
            assert_eq!(out.values.keys().collect::<Vec<_>>(), vec!["d4/out"]);
            assert_eq!(*out.values["d4/out"], 11);
        }
    }

    #[test]
    fn bad_data_is_not_retried_and_the_failure_names_the_task_and_attempts() {
        let p = plan(vec![task("a1", &[]), task("bad", &["a1"])]);
        let err = run(
            &p,
            &Sum,
            &Quiet,
            &Options {
                threads: 2,
                max_attempts: 3,
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert_eq!(
            (err.task.as_str(), err.attempts, err.max_attempts, err.kind),
            ("bad/out", 1, 3, FailureKind::BadData)
        );
        assert!(
            err.to_string().starts_with(
                "task `bad/out` failed (attempt 1 of 3; bad data is not retried): bad data: no number in bad"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_missing_input_is_reported_before_running() {
        let p = plan(vec![task("a1", &["nowhere"])]);
        let err = run(&p, &Sum, &Quiet, &Options::default()).err().unwrap();
        assert_eq!(err.kind, FailureKind::Internal);
        assert!(
            err.cause
                .contains("reads `nowhere/out`, which no task produces"),
            "{err}"
        );
    }

    /// Records the thread of every task and of every parallel step inside it.
    struct Threads(std::sync::Mutex<BTreeSet<String>>);
    impl Kernels for Threads {
        type Value = u64;
        fn run(&self, _: &Task, _: Vec<Arc<u64>>) -> Result<Vec<u64>, TaskError> {
            use rayon::prelude::*;
            let names: Vec<String> = (0..64)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(1));
                    std::thread::current()
                        .name()
                        .unwrap_or("unnamed")
                        .to_string()
                })
                .collect();
            let mut seen = self.0.lock().unwrap();
            seen.extend(names);
            seen.insert(
                std::thread::current()
                    .name()
                    .unwrap_or("unnamed")
                    .to_string(),
            );
            Ok(vec![1])
        }
    }

    #[test]
    fn threads_bound_every_task_and_every_parallel_loop_inside_one() {
        let p = plan((0..8).map(|i| task(&format!("t{i}"), &[])).collect());
        for threads in [1, 2, 3] {
            let k = Threads(Default::default());
            run(
                &p,
                &k,
                &Quiet,
                &Options {
                    threads,
                    ..Default::default()
                },
            )
            .unwrap();
            let seen = k.0.into_inner().unwrap();
            assert!(
                seen.len() <= threads,
                "{threads} threads asked, ran on {seen:?}"
            );
            assert!(
                seen.iter().all(|n| n.starts_with("dagml-task-")),
                "{seen:?}"
            );
        }
    }

    /// Counts the values alive of tasks whose node starts with `row` (rows
    /// of data), and the most ever alive at once.
    struct Rows {
        alive: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }
    struct Counted<'a>(Option<&'a Rows>);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            if let Some(r) = self.0 {
                r.alive.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    struct CountRows(&'static Rows);
    impl Kernels for CountRows {
        type Value = Counted<'static>;
        fn run(
            &self,
            task: &Task,
            _: Vec<Arc<Self::Value>>,
        ) -> Result<Vec<Self::Value>, TaskError> {
            use std::sync::atomic::Ordering::SeqCst;
            if !task.node.starts_with("row") {
                return Ok(vec![Counted(None)]);
            }
            let now = self.0.alive.fetch_add(1, SeqCst) + 1;
            self.0.most.fetch_max(now, SeqCst);
            Ok(vec![Counted(Some(self.0))])
        }
    }

    #[test]
    fn a_read_partitions_readers_run_before_more_partitions_pile_up() {
        // gauss_linreg's shape over n partitions: generate, transform, write,
        // read back, partial sums; one reduce; each partition scored after the
        // model (read again by the score task). Named so that the plan order
        // alone would generate every partition before transforming any.
        let n = 40;
        let mut tasks = Vec::new();
        for i in 0..n {
            tasks.push(task(&format!("row-a-gen{i}"), &[]));
            tasks.push(task(&format!("row-b-line{i}"), &[&format!("row-a-gen{i}")]));
            tasks.push(task(&format!("write{i}"), &[&format!("row-b-line{i}")]));
            tasks.push(task(&format!("row-c-read{i}"), &[&format!("write{i}")]));
            tasks.push(task(&format!("partial{i}"), &[&format!("row-c-read{i}")]));
            tasks.push(task(&format!("score{i}"), &["reduce"]));
        }
        let partials: Vec<String> = (0..n).map(|i| format!("partial{i}")).collect();
        let partials: Vec<&str> = partials.iter().map(String::as_str).collect();
        tasks.push(task("reduce", &partials));
        let scores: Vec<String> = (0..n).map(|i| format!("score{i}")).collect();
        let scores: Vec<&str> = scores.iter().map(String::as_str).collect();
        tasks.push(task("evaluate", &scores));
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        let p = plan(tasks);
        for threads in [1, 2] {
            let rows: &'static Rows = Box::leak(Box::new(Rows {
                alive: 0.into(),
                most: 0.into(),
            }));
            run(
                &p,
                &CountRows(rows),
                &Quiet,
                &Options {
                    threads,
                    ..Default::default()
                },
            )
            .unwrap();
            let most = rows.most.load(std::sync::atomic::Ordering::SeqCst);
            // Each running task holds its input and its output; a finished
            // chain's rows are released at once.
            assert!(
                most <= 2 * threads + 1,
                "{most} partitions of rows held at once with {threads} threads"
            );
            assert_eq!(rows.alive.load(std::sync::atomic::Ordering::SeqCst), 0);
        }
    }

    /// Panics on the task named `boom`.
    struct Boom;
    impl Kernels for Boom {
        type Value = u64;
        fn run(&self, task: &Task, _: Vec<Arc<u64>>) -> Result<Vec<u64>, TaskError> {
            if task.node == "boom" {
                panic!("kaboom");
            }
            Ok(vec![1])
        }
    }

    #[test]
    fn a_panicking_task_fails_the_run_with_an_internal_error() {
        let p = plan(vec![task("a1", &[]), task("boom", &["a1"])]);
        let err = run(
            &p,
            &Boom,
            &Quiet,
            &Options {
                threads: 2,
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert_eq!(
            (err.task.as_str(), err.kind),
            ("boom/out", FailureKind::Internal)
        );
        assert!(err.cause.contains("kaboom"), "{err}");
    }
}

//! The task state machine: runs a physical plan's tasks in dependency order on a
//! pool of threads, keeping each output partition until its last reader is done.
//!
//! In: the tasks of a [`PhysicalPlan`] and a [`Kernels`] implementation that runs
//! one task as a function of its input partitions. Out: every task's outputs, or a
//! [`RunError`] that names the task, the attempt and the cause.
//! Must not: know what a task computes (that is the kernels'), or keep hidden
//! state between tasks: a task's result depends only on the task and its inputs,
//! so any worker can run it and a rerun gives the same bytes.

use crate::plan::{PhysicalPlan, Task};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs single tasks. Implementations must be pure functions of (task, inputs).
pub trait Kernels: Sync {
    type Value: Send + Sync + 'static;
    /// Run one task. `inputs` are in `task.inputs` order; the result must have
    /// one value per `task.outputs` entry, in that order.
    fn run(&self, task: &Task, inputs: Vec<Arc<Self::Value>>) -> Result<Vec<Self::Value>, String>;
}

/// What the executor reports as it goes (progress bars, log lines, tests).
pub trait Observer: Sync {
    fn started(&self, _task: &Task) {}
    fn finished(&self, _task: &Task, _elapsed: Duration) {}
}

pub struct Quiet;
impl Observer for Quiet {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Waiting,
    Ready,
    Running,
    Done,
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("task `{task}` failed (attempt {attempt} of {max}): {cause}")]
    TaskFailed {
        task: String,
        attempt: u32,
        max: u32,
        cause: String,
    },
    #[error("task `{task}` reads `{input}`, which no task produces")]
    MissingInput { task: String, input: String },
    #[error("task `{task}` returned {got} outputs but declares {want}")]
    WrongOutputs {
        task: String,
        got: usize,
        want: usize,
    },
    #[error("the plan's tasks depend on each other in a cycle (at `{0}`)")]
    Stuck(String),
}

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
    pub threads: usize,
    /// Attempts per task before the run fails (in-process errors are deterministic,
    /// so 1 is right here; the cluster retries lost workers' tasks).
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

/// Run every task of the plan.
pub fn run<K: Kernels>(
    plan: &PhysicalPlan,
    kernels: &K,
    observer: &dyn Observer,
    opts: &Options,
) -> Result<Outcome<K::Value>, RunError> {
    let start = Instant::now();
    let tasks = &plan.tasks;
    let mut producer: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate() {
        for o in &t.outputs {
            producer.insert(o.as_str(), i);
        }
    }
    // Readers left per partition, to free memory as soon as the last one is done.
    let mut readers: BTreeMap<String, usize> = BTreeMap::new();
    let mut waiting_on: Vec<usize> = vec![0; tasks.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        let mut deps = BTreeSet::new();
        for input in &t.inputs {
            let Some(&p) = producer.get(input.as_str()) else {
                return Err(RunError::MissingInput {
                    task: t.id.clone(),
                    input: input.clone(),
                });
            };
            *readers.entry(input.clone()).or_default() += 1;
            deps.insert(p);
        }
        waiting_on[i] = deps.len();
        for d in deps {
            dependents[d].push(i);
        }
    }
    let mut state: Vec<TaskState> = waiting_on
        .iter()
        .map(|w| {
            if *w == 0 {
                TaskState::Ready
            } else {
                TaskState::Waiting
            }
        })
        .collect();
    let mut ready: VecDeque<usize> = (0..tasks.len())
        .filter(|i| state[*i] == TaskState::Ready)
        .collect();
    let store: Mutex<BTreeMap<String, Arc<K::Value>>> = Mutex::new(BTreeMap::new());
    let mut records = Vec::new();
    let threads = opts.threads.max(1);
    let (tx, rx) = mpsc::channel::<(
        usize,
        Result<Vec<K::Value>, String>,
        Duration,
        Duration,
        u32,
    )>();
    let mut running = 0usize;
    let mut done = 0usize;
    let mut failure: Option<RunError> = None;
    std::thread::scope(|scope| {
        loop {
            while failure.is_none() && running < threads {
                let Some(i) = ready.pop_front() else { break };
                state[i] = TaskState::Running;
                running += 1;
                let task = &tasks[i];
                let inputs: Vec<Arc<K::Value>> = {
                    let s = store.lock().unwrap_or_else(|p| p.into_inner());
                    task.inputs
                        .iter()
                        .filter_map(|id| s.get(id).cloned())
                        .collect()
                };
                let tx = tx.clone();
                let max = opts.max_attempts.max(1);
                observer.started(task);
                scope.spawn(move || {
                    let t0 = Instant::now();
                    let mut attempt = 1;
                    let result = loop {
                        let r = kernels.run(task, inputs.clone());
                        if r.is_ok() || attempt >= max {
                            break r;
                        }
                        attempt += 1;
                    };
                    let _ = tx.send((i, result, t0 - start, t0.elapsed(), attempt));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((i, result, started_at, elapsed, attempt)) = rx.recv() else {
                break;
            };
            running -= 1;
            let task = &tasks[i];
            match result {
                Ok(values) if values.len() == task.outputs.len() => {
                    state[i] = TaskState::Done;
                    done += 1;
                    observer.finished(task, elapsed);
                    records.push(TaskRecord {
                        id: task.id.clone(),
                        node: task.node.clone(),
                        start: started_at,
                        elapsed,
                    });
                    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
                    for (id, v) in task.outputs.iter().zip(values) {
                        s.insert(id.clone(), Arc::new(v));
                    }
                    for input in &task.inputs {
                        if let Some(n) = readers.get_mut(input) {
                            *n -= 1;
                            if *n == 0 && !opts.keep.contains(input) {
                                s.remove(input);
                            }
                        }
                    }
                    for &d in &dependents[i] {
                        waiting_on[d] -= 1;
                        if waiting_on[d] == 0 {
                            state[d] = TaskState::Ready;
                            ready.push_back(d);
                        }
                    }
                }
                Ok(values) => {
                    state[i] = TaskState::Failed;
                    failure.get_or_insert(RunError::WrongOutputs {
                        task: task.id.clone(),
                        got: values.len(),
                        want: task.outputs.len(),
                    });
                }
                Err(cause) => {
                    state[i] = TaskState::Failed;
                    failure.get_or_insert(RunError::TaskFailed {
                        task: task.id.clone(),
                        attempt,
                        max: opts.max_attempts.max(1),
                        cause,
                    });
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if done < tasks.len() {
        let stuck = state
            .iter()
            .position(|s| *s != TaskState::Done)
            .map(|i| tasks[i].id.clone())
            .unwrap_or_default();
        return Err(RunError::Stuck(stuck));
    }
    let values = store.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(Outcome {
        values,
        records,
        wall: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::logical::LogicalPlan;
    use crate::plan::TaskKind;

    fn task(id: &str, inputs: &[&str]) -> Task {
        Task {
            id: id.into(),
            node: id.split('/').next().unwrap_or(id).into(),
            kind: TaskKind::Fit,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![id.into()],
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
        fn run(&self, task: &Task, inputs: Vec<Arc<u64>>) -> Result<Vec<u64>, String> {
            let own: u64 = task
                .id
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .map_err(|_| format!("no number in {}", task.id))?;
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
            assert_eq!(out.values.keys().collect::<Vec<_>>(), vec!["d4"]);
            assert_eq!(*out.values["d4"], 11);
        }
    }

    #[test]
    fn a_failure_names_the_task_and_attempts() {
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
            err.to_string(),
            "task `bad` failed (attempt 3 of 3): no number in bad"
        );
    }

    #[test]
    fn a_missing_input_is_reported_before_running() {
        let p = plan(vec![task("a1", &["nowhere"])]);
        assert!(matches!(
            run(&p, &Sum, &Quiet, &Options::default()),
            Err(RunError::MissingInput { .. })
        ));
    }
}

//! The run graph: the state of one run, pure and without I/O. Every way dagml
//! runs (the in-process executor, the embedded cluster, remote workers) drives
//! this one state machine; the drivers only do the I/O it asks for.
//!
//! In: the plan's tasks (what each reads and writes, as partition keys), the
//! partitions to keep to the end, and the attempt bound; then events: a task
//! started on a worker, finished (with the size of each output), failed (with a
//! [`FailureKind`]), a worker lost. Out: which tasks are ready (deepest
//! first, so what was read is consumed before more is read; then the one
//! with the longest chain after it, so the critical path starts first), where each
//! partition is held, which partitions to release (their last reader is done),
//! which tasks must run again after a loss, and the run's end: complete, or a
//! structured [`RunError`].
//! Must not: do I/O, read a clock, or know what a task computes. Stale events
//! (from an attempt that was given up) change nothing.

use super::failure::{FailureKind, RunError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// A task of the run, by its place in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskIx(pub usize);

/// A partition of the run (a data partition or a task's model / metrics /
/// receipt), by its place in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartIx(pub usize);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState<W> {
    /// Some input is not held anywhere yet.
    Waiting,
    /// Every input is held: it can start.
    Ready,
    /// Started on `worker`. `attempt` names this start of the task, unique
    /// over the run (1, 2, ...), so an answer from an earlier start is told
    /// apart; the attempts counted against the bound are [`RunGraph::attempts`].
    Running { worker: W, attempt: u32 },
    /// Its outputs were computed (each is held, or was released after its last
    /// reader, see [`PartState`]).
    Done,
    /// It failed for good; the run has failed.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartState<W> {
    /// Not computed yet, or lost with its worker.
    Pending,
    Held {
        worker: W,
        bytes: u64,
    },
    /// Freed after its last reader was done.
    Released,
}

/// A task as the graph sees it: a name for messages, what it reads and writes.
pub struct TaskSpec<K> {
    pub name: String,
    pub inputs: Vec<K>,
    pub outputs: Vec<K>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("task `{task}` reads `{input}`, which no task produces")]
    MissingInput { task: String, input: String },
    #[error("`{output}` is written by both `{first}` and `{second}`")]
    TwoProducers {
        output: String,
        first: String,
        second: String,
    },
    #[error("the plan's tasks depend on each other in a cycle (at `{0}`)")]
    Cycle(String),
}

/// An event about a task that the graph does not expect: an answer from an
/// attempt that was already given up (its worker was declared lost), or about a
/// task that is not running. The driver drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale;

/// What a task's failure leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The task will run again (it counted one attempt).
    Retry,
    /// The run has failed.
    RunFailed(RunError),
}

struct TaskNode<W> {
    name: String,
    inputs: Vec<PartIx>,
    outputs: Vec<PartIx>,
    state: TaskState<W>,
    /// Starts since the task last succeeded: counted against the bound.
    attempts: u32,
    /// Starts over the whole run: the token of the running one.
    starts: u32,
    /// The last failure: (worker, kind, message).
    last: Option<(Option<W>, FailureKind, String)>,
    /// Tasks on the longest path to it from a task that reads nothing: the
    /// ready order prefers deeper tasks (see [`RunGraph::ready`]).
    depth: u32,
    /// Tasks on the longest path from it to a task nothing reads: among
    /// tasks of one depth, the one with more work after it goes first.
    height: u32,
}

struct PartNode<W> {
    name: String,
    producer: TaskIx,
    readers: Vec<TaskIx>,
    keep: bool,
    state: PartState<W>,
}

/// What names a worker: the scheduler's worker (id and name); `()` for the
/// in-process executor, whose one "worker" is never lost and has no name.
pub trait Worker: Clone + PartialEq + Debug {
    /// The name a failure message gives, if any.
    fn name(&self) -> Option<String>;
}

impl Worker for () {
    fn name(&self) -> Option<String> {
        None
    }
}

impl Worker for u32 {
    fn name(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// What a task's answer leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished<W> {
    /// Its outputs are held; these partitions are to be released (their last
    /// reader is done), with their holders.
    Done(Vec<(PartIx, W)>),
    /// An answer from an attempt already given up: drop it (and its outputs).
    Stale,
    /// The task broke its contract (wrong number of outputs).
    Failed(Verdict),
}

/// One run's state. `W` names a worker.
pub struct RunGraph<W> {
    tasks: Vec<TaskNode<W>>,
    parts: Vec<PartNode<W>>,
    /// Ready tasks, deepest first, then the longest chain after them, then
    /// in plan order.
    ready: BTreeSet<(Reverse<u32>, Reverse<u32>, TaskIx)>,
    done: usize,
    max_attempts: u32,
    failure: Option<RunError>,
}

impl<W: Worker> RunGraph<W> {
    /// Build the graph. `keep` says which partitions must survive to the end
    /// (results the driver reports); everything else is released after its last
    /// reader.
    pub fn new<K: Ord + Clone + std::fmt::Display>(
        specs: Vec<TaskSpec<K>>,
        keep: impl Fn(&K) -> bool,
        max_attempts: u32,
    ) -> Result<Self, GraphError> {
        let mut index: BTreeMap<K, PartIx> = BTreeMap::new();
        let mut parts: Vec<PartNode<W>> = Vec::new();
        for (t, s) in specs.iter().enumerate() {
            for o in &s.outputs {
                if let Some(p) = index.get(o) {
                    return Err(GraphError::TwoProducers {
                        output: o.to_string(),
                        first: specs[parts[p.0].producer.0].name.clone(),
                        second: s.name.clone(),
                    });
                }
                index.insert(o.clone(), PartIx(parts.len()));
                parts.push(PartNode {
                    name: o.to_string(),
                    producer: TaskIx(t),
                    readers: Vec::new(),
                    keep: keep(o),
                    state: PartState::Pending,
                });
            }
        }
        let mut tasks = Vec::with_capacity(specs.len());
        for (t, s) in specs.into_iter().enumerate() {
            let mut inputs = Vec::with_capacity(s.inputs.len());
            for i in &s.inputs {
                let Some(&p) = index.get(i) else {
                    return Err(GraphError::MissingInput {
                        task: s.name,
                        input: i.to_string(),
                    });
                };
                if !parts[p.0].readers.contains(&TaskIx(t)) {
                    parts[p.0].readers.push(TaskIx(t));
                }
                inputs.push(p);
            }
            let outputs = s.outputs.iter().map(|o| index[o]).collect();
            tasks.push(TaskNode {
                name: s.name,
                inputs,
                outputs,
                state: TaskState::Waiting,
                attempts: 0,
                starts: 0,
                last: None,
                depth: 0,
                height: 0,
            });
        }
        let mut g = RunGraph {
            tasks,
            parts,
            ready: BTreeSet::new(),
            done: 0,
            max_attempts: max_attempts.max(1),
            failure: None,
        };
        let (depths, heights) = g.check_acyclic()?;
        for ((t, d), h) in g.tasks.iter_mut().zip(depths).zip(heights) {
            t.depth = d;
            t.height = h;
        }
        for t in 0..g.tasks.len() {
            g.refresh(TaskIx(t));
        }
        Ok(g)
    }

    /// Kahn's algorithm over task dependencies; each task's depth (the
    /// longest chain of producers before it) and height (the longest chain
    /// of readers after it).
    fn check_acyclic(&self) -> Result<(Vec<u32>, Vec<u32>), GraphError> {
        let n = self.tasks.len();
        let mut missing: Vec<usize> = self
            .tasks
            .iter()
            .map(|t| {
                t.inputs
                    .iter()
                    .map(|p| self.parts[p.0].producer)
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .collect();
        let mut queue: Vec<usize> = (0..n).filter(|t| missing[*t] == 0).collect();
        let mut seen = 0;
        let mut depth = vec![0u32; n];
        let mut order = Vec::with_capacity(n);
        let readers: Vec<BTreeSet<TaskIx>> = (0..n)
            .map(|t| {
                self.tasks[t]
                    .outputs
                    .iter()
                    .flat_map(|p| self.parts[p.0].readers.iter().copied())
                    .collect()
            })
            .collect();
        while let Some(t) = queue.pop() {
            seen += 1;
            order.push(t);
            for &r in &readers[t] {
                depth[r.0] = depth[r.0].max(depth[t] + 1);
                missing[r.0] -= 1;
                if missing[r.0] == 0 {
                    queue.push(r.0);
                }
            }
        }
        if seen < n {
            let at = (0..n).find(|t| missing[*t] > 0).unwrap_or(0);
            return Err(GraphError::Cycle(self.tasks[at].name.clone()));
        }
        // Readers come after their producers in `order`: heights from the end.
        let mut height = vec![0u32; n];
        for &t in order.iter().rev() {
            height[t] = readers[t]
                .iter()
                .map(|r| height[r.0] + 1)
                .max()
                .unwrap_or(0);
        }
        Ok((depth, height))
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest chain of tasks that read `t`'s outputs, directly or not
    /// (0 for a task nothing waits on).
    pub fn height(&self, t: TaskIx) -> u32 {
        self.tasks[t.0].height
    }

    pub fn name(&self, t: TaskIx) -> &str {
        &self.tasks[t.0].name
    }

    pub fn part_name(&self, p: PartIx) -> &str {
        &self.parts[p.0].name
    }

    pub fn state(&self, t: TaskIx) -> &TaskState<W> {
        &self.tasks[t.0].state
    }

    pub fn part_state(&self, p: PartIx) -> &PartState<W> {
        &self.parts[p.0].state
    }

    pub fn inputs(&self, t: TaskIx) -> &[PartIx] {
        &self.tasks[t.0].inputs
    }

    pub fn outputs(&self, t: TaskIx) -> &[PartIx] {
        &self.tasks[t.0].outputs
    }

    pub fn attempts(&self, t: TaskIx) -> u32 {
        self.tasks[t.0].attempts
    }

    /// Where a partition is held, and its size.
    pub fn location(&self, p: PartIx) -> Option<(&W, u64)> {
        match &self.parts[p.0].state {
            PartState::Held { worker, bytes } => Some((worker, *bytes)),
            _ => None,
        }
    }

    /// Tasks that can start now: the deepest first (a task reading what is
    /// held before one that starts a new chain, so a read partition's readers
    /// run, and it is released, before more partitions are read), then the
    /// one with the longest chain of work after it (so the critical path
    /// starts first: a forest's training-rows prediction, which an
    /// evaluation and its report wait on, before writing the model), then in
    /// plan order.
    pub fn ready(&self) -> impl Iterator<Item = TaskIx> + '_ {
        self.ready
            .iter()
            .map(|(_, _, t)| *t)
            .filter(|_| self.failure.is_none())
    }

    pub fn running(&self) -> impl Iterator<Item = (TaskIx, &W, u32)> + '_ {
        self.tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.state {
                TaskState::Running { worker, attempt } => Some((TaskIx(i), worker, *attempt)),
                _ => None,
            })
    }

    pub fn running_count(&self) -> usize {
        self.running().count()
    }

    pub fn is_complete(&self) -> bool {
        self.failure.is_none() && self.done == self.tasks.len()
    }

    pub fn failure(&self) -> Option<&RunError> {
        self.failure.as_ref()
    }

    /// The partitions kept to the end (the results), with their holders.
    pub fn kept(&self) -> impl Iterator<Item = (PartIx, &W)> + '_ {
        self.parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.state {
                PartState::Held { worker, .. } if p.keep => Some((PartIx(i), worker)),
                _ => None,
            })
    }

    /// The first task not done, when nothing is ready or running: the run can
    /// make no progress by itself (no worker to run on, or a bug).
    pub fn stuck_at(&self) -> Option<TaskIx> {
        if self.failure.is_some() || self.is_complete() {
            return None;
        }
        if self.ready().next().is_some() || self.running().next().is_some() {
            return None;
        }
        self.tasks
            .iter()
            .position(|t| t.state != TaskState::Done)
            .map(TaskIx)
    }

    /// The task with the most telling history, for a message when no worker is
    /// left: one that failed last, else the first not done.
    pub fn last_failure(&self) -> Option<(TaskIx, Option<&W>, FailureKind, &str)> {
        let pending = || {
            self.tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.state != TaskState::Done)
        };
        pending()
            .find_map(|(i, t)| {
                t.last
                    .as_ref()
                    .map(|(w, k, m)| (TaskIx(i), w.as_ref(), *k, m.as_str()))
            })
            .or_else(|| {
                pending()
                    .next()
                    .map(|(i, _)| (TaskIx(i), None, FailureKind::WorkerLost, ""))
            })
    }

    fn needed(&self, p: PartIx) -> bool {
        let part = &self.parts[p.0];
        part.keep
            || part
                .readers
                .iter()
                .any(|r| self.tasks[r.0].state != TaskState::Done)
    }

    /// Ready iff waiting or ready with every input held.
    fn refresh(&mut self, t: TaskIx) {
        let node = &self.tasks[t.0];
        if !matches!(node.state, TaskState::Waiting | TaskState::Ready) {
            return;
        }
        let held = node
            .inputs
            .iter()
            .all(|p| matches!(self.parts[p.0].state, PartState::Held { .. }));
        if held {
            self.tasks[t.0].state = TaskState::Ready;
            self.ready.insert(self.ready_key(t));
        } else {
            self.tasks[t.0].state = TaskState::Waiting;
            self.ready.remove(&self.ready_key(t));
        }
    }

    fn ready_key(&self, t: TaskIx) -> (Reverse<u32>, Reverse<u32>, TaskIx) {
        let node = &self.tasks[t.0];
        (Reverse(node.depth), Reverse(node.height), t)
    }

    /// Start a ready task on `worker`; returns the token naming this start
    /// (answers carry it back). [`RunGraph::attempts`] says which attempt
    /// against the bound it is.
    pub fn start(&mut self, t: TaskIx, worker: W) -> Result<u32, Stale> {
        if self.failure.is_some() || self.tasks[t.0].state != TaskState::Ready {
            return Err(Stale);
        }
        self.ready.remove(&self.ready_key(t));
        let node = &mut self.tasks[t.0];
        node.attempts += 1;
        node.starts += 1;
        node.state = TaskState::Running {
            worker,
            attempt: node.starts,
        };
        Ok(node.starts)
    }

    fn is_current(&self, t: TaskIx, worker: &W, attempt: u32) -> bool {
        self.failure.is_none()
            && matches!(&self.tasks[t.0].state,
                TaskState::Running { worker: w, attempt: a } if w == worker && *a == attempt)
    }

    /// A task finished with one size per output.
    pub fn finished(&mut self, t: TaskIx, worker: &W, attempt: u32, bytes: &[u64]) -> Finished<W> {
        if !self.is_current(t, worker, attempt) {
            return Finished::Stale;
        }
        let want = self.tasks[t.0].outputs.len();
        if bytes.len() != want {
            let cause = format!(
                "the task returned {} outputs but declares {want}",
                bytes.len()
            );
            return match self.failed(t, worker, attempt, FailureKind::Internal, cause) {
                Ok(v) => Finished::Failed(v),
                Err(Stale) => Finished::Stale,
            };
        }
        self.tasks[t.0].state = TaskState::Done;
        self.done += 1;
        let mut release = Vec::new();
        let outputs = self.tasks[t.0].outputs.clone();
        for (p, b) in outputs.iter().zip(bytes) {
            self.parts[p.0].state = PartState::Held {
                worker: worker.clone(),
                bytes: *b,
            };
        }
        for p in &outputs {
            if !self.needed(*p) {
                self.parts[p.0].state = PartState::Released;
                release.push((*p, worker.clone()));
            }
            for r in self.parts[p.0].readers.clone() {
                self.refresh(r);
            }
        }
        let inputs = self.tasks[t.0].inputs.clone();
        for p in inputs {
            if let PartState::Held { worker, .. } = &self.parts[p.0].state
                && !self.needed(p)
            {
                release.push((p, worker.clone()));
                self.parts[p.0].state = PartState::Released;
            }
        }
        Finished::Done(release)
    }

    /// A task failed. A retryable kind runs it again while attempts remain;
    /// anything else fails the run. `Err(Stale)`: an answer from an attempt
    /// already given up.
    pub fn failed(
        &mut self,
        t: TaskIx,
        worker: &W,
        attempt: u32,
        kind: FailureKind,
        message: String,
    ) -> Result<Verdict, Stale> {
        if !self.is_current(t, worker, attempt) {
            return Err(Stale);
        }
        self.tasks[t.0].last = Some((Some(worker.clone()), kind, message));
        Ok(self.settle(t))
    }

    /// After a failure recorded in `last`: retry, or fail the run.
    fn settle(&mut self, t: TaskIx) -> Verdict {
        let node = &self.tasks[t.0];
        let (kind, retry) = match &node.last {
            Some((_, k, _)) => (*k, k.retryable() && node.attempts < self.max_attempts),
            None => (FailureKind::Internal, false),
        };
        if retry {
            self.tasks[t.0].state = TaskState::Waiting;
            self.resurrect();
            return Verdict::Retry;
        }
        let node = &mut self.tasks[t.0];
        node.state = TaskState::Failed;
        let (worker, _, cause) = node.last.clone().unwrap_or((None, kind, String::new()));
        let f = RunError {
            task: node.name.clone(),
            worker: worker.and_then(|w| w.name()),
            attempts: node.attempts,
            max_attempts: self.max_attempts,
            kind,
            cause,
        };
        self.failure = Some(f.clone());
        Verdict::RunFailed(f)
    }

    /// A worker is gone: the tasks running on it run again (each counted as an
    /// attempt), the partitions only it held are computed again where some task
    /// still needs them. Returns the tasks that must run again, or the run's
    /// failure when one of them has used up its attempts.
    pub fn worker_lost(&mut self, worker: &W, cause: &str) -> Result<Vec<TaskIx>, RunError> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        let on_it: Vec<TaskIx> = self
            .running()
            .filter(|(_, w, _)| *w == worker)
            .map(|(t, _, _)| t)
            .collect();
        for p in &mut self.parts {
            if matches!(&p.state, PartState::Held { worker: w, .. } if w == worker) {
                p.state = PartState::Pending;
            }
        }
        let before: Vec<bool> = self
            .tasks
            .iter()
            .map(|t| t.state == TaskState::Done)
            .collect();
        for &t in &on_it {
            self.tasks[t.0].last = Some((
                Some(worker.clone()),
                FailureKind::WorkerLost,
                cause.to_string(),
            ));
            if let Verdict::RunFailed(f) = self.settle(t) {
                return Err(f);
            }
        }
        self.resurrect();
        let mut again = on_it;
        again.extend(
            (0..self.tasks.len())
                .filter(|t| before[*t] && self.tasks[*t].state != TaskState::Done)
                .map(TaskIx),
        );
        Ok(again)
    }

    /// Make every task that something still needs, and whose outputs are gone,
    /// run again: the inputs of tasks not done and the kept results.
    fn resurrect(&mut self) {
        let mut stack: Vec<PartIx> = Vec::new();
        for t in &self.tasks {
            if matches!(t.state, TaskState::Waiting | TaskState::Ready) {
                stack.extend(t.inputs.iter().copied());
            }
        }
        for (i, p) in self.parts.iter().enumerate() {
            if p.keep {
                stack.push(PartIx(i));
            }
        }
        while let Some(p) = stack.pop() {
            if matches!(self.parts[p.0].state, PartState::Held { .. }) {
                continue;
            }
            let producer = self.parts[p.0].producer;
            if self.tasks[producer.0].state == TaskState::Done {
                // Computing a lost result again is not a retry of a failure:
                // its attempts count afresh.
                self.tasks[producer.0].state = TaskState::Waiting;
                self.tasks[producer.0].attempts = 0;
                self.done -= 1;
                // Its other outputs are computed again too: forget where the
                // old copies are only if they were lost or released.
                for o in self.tasks[producer.0].outputs.clone() {
                    if self.parts[o.0].state == PartState::Released {
                        self.parts[o.0].state = PartState::Pending;
                    }
                }
                stack.extend(self.tasks[producer.0].inputs.iter().copied());
            }
            if self.parts[p.0].state == PartState::Released {
                self.parts[p.0].state = PartState::Pending;
            }
        }
        for t in 0..self.tasks.len() {
            self.refresh(TaskIx(t));
        }
    }

    /// End the run as failed for a reason outside any task (cancel, no worker).
    pub fn fail_run(&mut self, failure: RunError) {
        self.failure.get_or_insert(failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(name: &str, inputs: &[&str], outputs: &[&str]) -> TaskSpec<String> {
        TaskSpec {
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// a → b, a → c, (b, c) → d; d is kept.
    fn diamond(max: u32) -> RunGraph<u32> {
        RunGraph::new(
            vec![
                spec("a", &[], &["A"]),
                spec("b", &["A"], &["B"]),
                spec("c", &["A"], &["C"]),
                spec("d", &["B", "C"], &["D"]),
            ],
            |k| k == "D",
            max,
        )
        .unwrap()
    }

    fn run_one(g: &mut RunGraph<u32>, t: usize, w: u32) -> Vec<(PartIx, u32)> {
        let a = g.start(TaskIx(t), w).unwrap();
        match g.finished(TaskIx(t), &w, a, &[10]) {
            Finished::Done(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn among_tasks_of_one_depth_the_one_with_more_work_after_it_is_ready_first() {
        // fit → {sink (nothing after it), predict → evaluate → report}: the
        // sink comes first in plan order, the predict first when ready.
        let mut g = RunGraph::new(
            vec![
                spec("fit", &[], &["M"]),
                spec("sink", &["M"], &["S"]),
                spec("predict", &["M"], &["P"]),
                spec("evaluate", &["P"], &["E"]),
                spec("report", &["E"], &["R"]),
            ],
            |k| k == "S" || k == "R",
            1,
        )
        .unwrap();
        run_one(&mut g, 0, 1);
        assert_eq!(g.ready().collect::<Vec<_>>(), vec![TaskIx(2), TaskIx(1)]);
    }

    #[test]
    fn a_diamond_runs_in_order_and_frees_each_partition_after_its_last_reader() {
        let mut g = diamond(3);
        assert_eq!(g.ready().collect::<Vec<_>>(), vec![TaskIx(0)]);
        assert!(run_one(&mut g, 0, 1).is_empty());
        assert_eq!(g.ready().collect::<Vec<_>>(), vec![TaskIx(1), TaskIx(2)]);
        assert!(run_one(&mut g, 1, 1).is_empty(), "A is still read by c");
        assert_eq!(run_one(&mut g, 2, 2), vec![(PartIx(0), 1)]);
        let freed = run_one(&mut g, 3, 2);
        assert_eq!(freed, vec![(PartIx(1), 1), (PartIx(2), 2)]);
        assert!(g.is_complete());
        assert_eq!(g.kept().collect::<Vec<_>>(), vec![(PartIx(3), &2)]);
    }

    #[test]
    fn bad_data_is_not_retried_and_names_task_worker_and_attempts() {
        let mut g = diamond(3);
        let a = g.start(TaskIx(0), 7).unwrap();
        let v = g
            .failed(TaskIx(0), &7, a, FailureKind::BadData, "row 3".into())
            .unwrap();
        let Verdict::RunFailed(f) = v else {
            panic!("bad data was retried")
        };
        assert_eq!((f.task.as_str(), f.attempts, f.max_attempts), ("a", 1, 3));
        assert_eq!(f.worker.as_deref(), Some("7"));
        assert_eq!(f.kind, FailureKind::BadData);
    }

    #[test]
    fn a_lost_worker_counts_attempts_until_the_bound() {
        let mut g = diamond(2);
        let a = g.start(TaskIx(0), 1).unwrap();
        assert_eq!(g.worker_lost(&1, "cut off"), Ok(vec![TaskIx(0)]));
        // The stale answer of the lost attempt changes nothing.
        assert_eq!(g.finished(TaskIx(0), &1, a, &[1]), Finished::Stale);
        assert_eq!(g.state(TaskIx(0)), &TaskState::Ready);
        g.start(TaskIx(0), 2).unwrap();
        let f = g.worker_lost(&2, "silent").unwrap_err();
        assert_eq!((f.attempts, f.max_attempts), (2, 2));
        assert_eq!(f.kind, FailureKind::WorkerLost);
        assert_eq!(f.cause, "silent");
    }

    #[test]
    fn partitions_only_a_lost_worker_held_are_computed_again_from_the_dag() {
        let mut g = diamond(3);
        run_one(&mut g, 0, 1); // A on 1
        run_one(&mut g, 1, 1); // B on 1
        // c has not run: A is still needed; losing 1 loses A and B.
        let again = g.worker_lost(&1, "gone").unwrap();
        assert_eq!(again, vec![TaskIx(0), TaskIx(1)]);
        assert_eq!(g.ready().collect::<Vec<_>>(), vec![TaskIx(0)]);
        run_one(&mut g, 0, 2);
        run_one(&mut g, 1, 2);
        run_one(&mut g, 2, 2);
        run_one(&mut g, 3, 2);
        assert!(g.is_complete());
    }

    #[test]
    fn a_lost_result_is_computed_again_even_with_no_reader_left() {
        let mut g = diamond(3);
        for (t, w) in [(0, 1), (1, 1), (2, 1), (3, 2)] {
            run_one(&mut g, t, w);
        }
        assert!(g.is_complete());
        // D lived on 2: its task and, since A, B, C were released, theirs too.
        let again = g.worker_lost(&2, "gone").unwrap();
        assert_eq!(again.len(), 4);
        assert!(!g.is_complete());
        for (t, w) in [(0, 3), (1, 3), (2, 3), (3, 3)] {
            run_one(&mut g, t, w);
        }
        assert!(g.is_complete());
    }

    #[test]
    fn missing_inputs_double_producers_and_cycles_are_refused() {
        let e = RunGraph::<u32>::new(vec![spec("a", &["X"], &["A"])], |_| false, 1);
        assert!(matches!(e, Err(GraphError::MissingInput { .. })));
        let e = RunGraph::<u32>::new(
            vec![spec("a", &[], &["A"]), spec("b", &[], &["A"])],
            |_| false,
            1,
        );
        assert!(matches!(e, Err(GraphError::TwoProducers { .. })));
        let e = RunGraph::<u32>::new(
            vec![spec("a", &["B"], &["A"]), spec("b", &["A"], &["B"])],
            |_| false,
            1,
        );
        assert!(matches!(e, Err(GraphError::Cycle(_))));
    }

    /// A random DAG: task i reads outputs of earlier tasks; some outputs kept.
    fn dag() -> impl Strategy<Value = Vec<(Vec<usize>, usize, bool)>> {
        prop::collection::vec(
            (
                prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                1..3usize,
                any::<bool>(),
            ),
            1..14,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (ins, outs, keep))| {
                    let ins: BTreeSet<usize> = if i == 0 {
                        BTreeSet::new()
                    } else {
                        ins.iter().map(|x| x.index(i)).collect()
                    };
                    (ins.into_iter().collect(), outs, keep)
                })
                .collect()
        })
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Start(prop::sample::Index, prop::sample::Index),
        Finish(prop::sample::Index),
        Fail(prop::sample::Index, u8),
        Lose(prop::sample::Index),
        StaleFinish(prop::sample::Index),
    }

    fn events() -> impl Strategy<Value = Vec<Ev>> {
        prop::collection::vec(
            prop_oneof![
                4 => (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| Ev::Start(a, b)),
                4 => any::<prop::sample::Index>().prop_map(Ev::Finish),
                1 => (any::<prop::sample::Index>(), 0u8..8).prop_map(|(a, k)| Ev::Fail(a, k)),
                1 => any::<prop::sample::Index>().prop_map(Ev::Lose),
                1 => any::<prop::sample::Index>().prop_map(Ev::StaleFinish),
            ],
            0..120,
        )
    }

    /// Invariants that hold after every event.
    fn check(g: &RunGraph<u32>, live: &BTreeSet<u32>) {
        if g.failure.is_some() {
            return;
        }
        for (i, t) in g.tasks.iter().enumerate() {
            match &t.state {
                TaskState::Ready => {
                    assert!(g.ready.contains(&g.ready_key(TaskIx(i))));
                    for p in &t.inputs {
                        assert!(g.location(*p).is_some(), "ready without input");
                    }
                }
                TaskState::Running { worker, .. } => {
                    assert!(live.contains(worker), "running on a lost worker");
                    assert!(t.attempts <= g.max_attempts);
                }
                _ => assert!(!g.ready.contains(&g.ready_key(TaskIx(i)))),
            }
        }
        for p in &g.parts {
            match &p.state {
                PartState::Held { worker, .. } => assert!(live.contains(worker)),
                PartState::Released => {
                    assert!(!p.keep, "a result was released");
                    for r in &p.readers {
                        // Nothing still to run reads a freed partition.
                        assert_eq!(
                            g.tasks[r.0].state,
                            TaskState::Done,
                            "freed while a reader needs it"
                        );
                    }
                }
                PartState::Pending => {}
            }
        }
        let done = g
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Done)
            .count();
        assert_eq!(done, g.done);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn random_orders_and_losses_end_done_once_or_failed_with_a_cause(
            shape in dag(), evs in events(), max in 1u32..4
        ) {
            let mut specs = Vec::new();
            let mut names: Vec<Vec<String>> = Vec::new();
            let mut kept = BTreeSet::new();
            for (i, (ins, outs, keep)) in shape.iter().enumerate() {
                let o: Vec<String> = (0..*outs).map(|k| format!("t{i}.{k}")).collect();
                if *keep { kept.insert(o[0].clone()); }
                let inputs = ins.iter().map(|j| names[*j][0].clone()).collect();
                specs.push(TaskSpec { name: format!("t{i}"), inputs, outputs: o.clone() });
                names.push(o);
            }
            let mut g: RunGraph<u32> = RunGraph::new(specs, |k| kept.contains(k), max).unwrap();
            let mut live: BTreeSet<u32> = [0, 1, 2].into();
            let mut next_worker = 3;
            let mut finishes = vec![0u32; shape.len()];
            let mut reruns = vec![0u32; shape.len()];
            let mut old: Vec<(TaskIx, u32, u32)> = Vec::new();
            let mut apply = |g: &mut RunGraph<u32>, live: &mut BTreeSet<u32>, ev: Ev| -> Result<(), TestCaseError> {
                let running: Vec<(TaskIx, u32, u32)> = g.running().map(|(t, w, a)| (t, *w, a)).collect();
                match ev {
                    Ev::Start(t, w) => {
                        let ready: Vec<TaskIx> = g.ready().collect();
                        if ready.is_empty() { return Ok(()); }
                        let ws: Vec<u32> = live.iter().copied().collect();
                        let t = ready[t.index(ready.len())];
                        g.start(t, ws[w.index(ws.len())]).unwrap();
                    }
                    Ev::Finish(i) => {
                        if running.is_empty() { return Ok(()); }
                        let (t, w, a) = running[i.index(running.len())];
                        let n = g.outputs(t).len();
                        prop_assert!(matches!(g.finished(t, &w, a, &vec![1; n]), Finished::Done(_)));
                        finishes[t.0] += 1;
                        old.push((t, w, a));
                    }
                    Ev::Fail(i, k) => {
                        if running.is_empty() { return Ok(()); }
                        let (t, w, a) = running[i.index(running.len())];
                        let kind = crate::runtime::failure::ALL_KINDS[k as usize];
                        let v = g.failed(t, &w, a, kind, "x".into()).unwrap();
                        if let Verdict::RunFailed(f) = v {
                            prop_assert!(!kind.retryable() || f.attempts == max);
                        }
                        old.push((t, w, a));
                    }
                    Ev::Lose(w) => {
                        let ws: Vec<u32> = live.iter().copied().collect();
                        let w = ws[w.index(ws.len())];
                        live.remove(&w);
                        live.insert(next_worker);
                        next_worker += 1;
                        let _ = g.worker_lost(&w, "lost");
                    }
                    Ev::StaleFinish(i) => {
                        if old.is_empty() { return Ok(()); }
                        let (t, w, a) = old[i.index(old.len())];
                        let n = g.outputs(t).len();
                        // A second answer from an attempt already settled is dropped.
                        prop_assert_eq!(g.finished(t, &w, a, &vec![1; n]), Finished::Stale);
                    }
                }
                Ok(())
            };
            for ev in evs {
                if g.failure().is_some() || g.is_complete() { break; }
                // A task done before an event and not after it was undone (its
                // outputs lost, or released and needed again by a retry).
                let before: Vec<bool> = (0..g.len()).map(|t| g.state(TaskIx(t)) == &TaskState::Done).collect();
                apply(&mut g, &mut live, ev)?;
                for (t, was) in before.iter().enumerate() {
                    if *was && g.state(TaskIx(t)) != &TaskState::Done {
                        reruns[t] += 1;
                    }
                }
                check(&g, &live);
            }
            // Then no more faults: the drivers' loop runs everything to the end.
            let mut steps = 0;
            while g.failure().is_none() && !g.is_complete() {
                steps += 1;
                prop_assert!(steps < 10_000, "no progress");
                let running: Vec<(TaskIx, u32, u32)> = g.running().map(|(t, w, a)| (t, *w, a)).collect();
                if let Some((t, w, a)) = running.first().copied() {
                    let n = g.outputs(t).len();
                    prop_assert!(matches!(g.finished(t, &w, a, &vec![1; n]), Finished::Done(_)));
                    finishes[t.0] += 1;
                } else {
                    let t = g.ready().next();
                    prop_assert!(t.is_some(), "stuck with nothing ready or running");
                    if let Some(t) = t {
                        let w = *live.iter().next().unwrap_or(&0);
                        g.start(t, w).unwrap();
                    }
                }
                check(&g, &live);
            }
            match g.failure() {
                None => {
                    for t in 0..g.len() {
                        prop_assert_eq!(g.state(TaskIx(t)), &TaskState::Done);
                        // Done exactly once, plus once per time a loss undid it.
                        prop_assert_eq!(finishes[t], 1 + reruns[t]);
                    }
                    let held: BTreeSet<String> = g.kept().map(|(p, _)| g.part_name(p).to_string()).collect();
                    prop_assert_eq!(held, kept);
                }
                Some(f) => {
                    prop_assert!(!f.task.is_empty());
                    prop_assert!(f.attempts >= 1 && f.attempts <= max);
                    prop_assert!(!f.kind.retryable() || f.attempts == max);
                }
            }
        }
    }
}

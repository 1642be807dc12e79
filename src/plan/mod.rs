//! The physical plan: the optimized logical plan cut into tasks over partitions,
//! with estimated sizes and, when the cluster is known, placement.
//!
//! In: an optimized [`LogicalPlan`]. Out: [`PhysicalPlan`], the list of tasks the
//! runtime executes, with sorted, stable ids; and its pictures (`dot`, `render`).
//! Memory stays bounded by the plan's shape: a task that scores a partition
//! with a model fitted on every partition of the same source does not take the
//! partition as read for the fit (all of them would be held until the model is
//! ready); it reads the partition again itself ([`TaskKind::RereadScore`]).
//! Must not: depend on the machine (core count, clock, randomness): the same file
//! gives the same plan.

pub mod dot;
pub mod ids;
pub mod render;

pub use ids::{DatasetId, PartitionId, TaskId, TaskPart};

use crate::compile::logical::{EdgeKind, Fanout, LOp, LogicalPlan};
use crate::data::split::Part;
use crate::frontend::pipeline::{Cluster, OutputKind, ShardBy, SourceKind, SplitKind};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::BTreeMap;

/// What one task does.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskKind {
    Read,
    Transform,
    Split,
    /// Fit trees `first..first+count` of a forest (tree index = seed identity).
    FitTrees {
        first: u32,
        count: u32,
    },
    /// Gather fitted parts into one model.
    Combine,
    FitShard {
        shard: String,
    },
    PartialStats,
    Reduce,
    Fit,
    /// Fit the model on every fold of a k-fold split but `fold`, for the
    /// cross-validation of an evaluation over the whole split.
    FitFold {
        split: String,
        fold: u32,
    },
    /// Score one partition of a dataset an evaluation reads whole, where the
    /// partition is: the tally goes to the evaluation, the rows stay put.
    ScorePartition,
    /// Score one partition of the source `source` (its node id), read again
    /// here from the source (its files, or its generator) once the model is
    /// ready: the model's fit read the same partitions, and holding all of them
    /// until the model could score them would bound memory by the data. The
    /// partition is the task's `Score { index }`; the tally is a
    /// [`TaskKind::ScorePartition`]'s.
    RereadScore {
        source: String,
    },
    /// Predict once with a model on a dataset, for every evaluation and
    /// output that needs those predictions.
    Predict,
    Evaluate,
    Write,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// Stable id: `<logical id>/<part>`.
    pub id: TaskId,
    /// The logical node this task belongs to (`id.node`).
    pub node: String,
    pub kind: TaskKind,
    /// Partitions read: `<dataset>/<partition>`, or a task's output for models
    /// and metrics.
    pub inputs: Vec<PartitionId>,
    /// Partitions written.
    pub outputs: Vec<PartitionId>,
    pub est_rows: Option<u64>,
    pub est_bytes: Option<u64>,
    /// Worker index, when the cluster is known in the file.
    pub worker: Option<u32>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PhysicalPlan {
    pub logical: LogicalPlan,
    /// Sorted by id (as text: see [`ids`]).
    pub tasks: Vec<Task>,
    /// Workers the placement assumed, if any.
    pub workers: Option<u32>,
}

impl Task {
    /// The partition a per-partition task (`…/pN`) reads or writes.
    pub fn partition(&self) -> Option<u32> {
        self.id.partition()
    }
}

impl PhysicalPlan {
    pub fn tasks_of(&self, node: &str) -> Vec<&Task> {
        self.tasks.iter().filter(|t| t.node == node).collect()
    }

    /// One line per task, for `plan --level physical --format text` and tests.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for t in &self.tasks {
            out.push_str(&format!(
                "{} {:?} in=[{}] out=[{}]{}{}\n",
                t.id,
                t.kind,
                join(&t.inputs),
                join(&t.outputs),
                t.est_rows.map(|r| format!(" rows~{r}")).unwrap_or_default(),
                t.worker.map(|w| format!(" @w{w}")).unwrap_or_default(),
            ));
        }
        out
    }

    /// The worker (by `--name`) each task must run on because it reads rows
    /// that stay there: the reads of a source sharded by worker, and every
    /// task that reads rows those reads produced (transforms, the split, the
    /// shard's fit, the scoring of its validation part). Models and metrics
    /// travel; data partitions of a pinned shard never do. By task id.
    pub fn pins(&self) -> std::collections::BTreeMap<TaskId, String> {
        let g = &self.logical.graph;
        let ops: std::collections::HashMap<String, &LOp> =
            g.node_indices().map(|n| (g[n].id(), &g[n].op)).collect();
        let mut pins: std::collections::BTreeMap<TaskId, String> = Default::default();
        for t in &self.tasks {
            if let (
                TaskKind::Read,
                Some(LOp::Source {
                    on_workers: Some(w),
                    ..
                }),
            ) = (&t.kind, ops.get(&t.node))
                && let Some(name) = w.get(t.partition().unwrap_or(0) as usize)
            {
                pins.insert(t.id.clone(), name.clone());
            }
        }
        if pins.is_empty() {
            return pins;
        }
        let producer: std::collections::HashMap<&PartitionId, &TaskId> = self
            .tasks
            .iter()
            .flat_map(|t| t.outputs.iter().map(move |p| (p, &t.id)))
            .collect();
        // Tasks are sorted by id, not by dependency: repeat until nothing
        // changes (at most one round per step of the longest chain).
        loop {
            let mut changed = false;
            for t in &self.tasks {
                if pins.contains_key(&t.id) {
                    continue;
                }
                let pin = t
                    .inputs
                    .iter()
                    .filter(|p| matches!(p, PartitionId::Data { .. }))
                    .filter_map(|p| producer.get(p))
                    .find_map(|id| pins.get(*id).cloned());
                if let Some(w) = pin {
                    pins.insert(t.id.clone(), w);
                    changed = true;
                }
            }
            if !changed {
                return pins;
            }
        }
    }

    /// The plan of only the tasks `keep` picks and every task whose output
    /// they read, directly or not (retraining one shard model runs its
    /// shard's reads, transforms and split, nothing else). The logical plan is
    /// unchanged; the tasks keep their order.
    pub fn only(&self, keep: impl Fn(&Task) -> bool) -> PhysicalPlan {
        let producer: std::collections::HashMap<&PartitionId, usize> = self
            .tasks
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.outputs.iter().map(move |p| (p, i)))
            .collect();
        let mut wanted = vec![false; self.tasks.len()];
        let mut stack: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| keep(&self.tasks[i]))
            .collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut wanted[i], true) {
                continue;
            }
            stack.extend(
                self.tasks[i]
                    .inputs
                    .iter()
                    .filter_map(|p| producer.get(p).copied())
                    .filter(|&j| !wanted[j]),
            );
        }
        PhysicalPlan {
            logical: self.logical.clone(),
            tasks: self
                .tasks
                .iter()
                .zip(&wanted)
                .filter(|(_, w)| **w)
                .map(|(t, _)| t.clone())
                .collect(),
            workers: self.workers,
        }
    }
}

fn join(ids: &[PartitionId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn partitions_of_source(kind: &SourceKind) -> u32 {
    crate::data::source::num_partitions(kind)
}

type DataIn = (NodeIndex, Option<Part>, Option<u64>, Option<u64>);

/// Cut the plan into tasks.
pub fn physical(plan: LogicalPlan) -> PhysicalPlan {
    let workers = match &plan.cluster {
        Some(Cluster::Local {
            workers: Some(w), ..
        }) => Some(w.value),
        _ => None,
    };
    let order = petgraph::algo::toposort(&plan.graph, None).unwrap_or_default();
    // Partition ids each (node, part) produces.
    let mut produced: BTreeMap<(NodeIndex, Option<Part>), Vec<PartitionId>> = BTreeMap::new();
    let mut tasks: Vec<Task> = Vec::new();
    let g = &plan.graph;
    let place = |i: u32| workers.map(|w| i % w.max(1));
    // The tasks that finish a node, when they are not its one `/out` task (a
    // dataset written one file per partition).
    let mut finished: BTreeMap<NodeIndex, Vec<PartitionId>> = BTreeMap::new();
    // Files a read-back source will find, one partition each: what a dataset
    // output of this pipeline writes.
    let mut listed: BTreeMap<NodeIndex, Vec<String>> = BTreeMap::new();
    for n in order {
        let node = &g[n];
        let id = node.id();
        let name = node.op.name();
        // (producer, part, rows, bytes) of each data input.
        let data_in: Vec<DataIn> = g
            .edges_directed(n, Direction::Incoming)
            .filter_map(|e| match e.weight() {
                EdgeKind::Data { part, schema } => {
                    Some((e.source(), part.clone(), schema.rows, schema.est_bytes()))
                }
                _ => None,
            })
            .collect();
        let other_in: Vec<PartitionId> = g
            .edges_directed(n, Direction::Incoming)
            .filter(|e| {
                matches!(
                    e.weight(),
                    EdgeKind::Model | EdgeKind::Metrics | EdgeKind::Order | EdgeKind::Predictions
                )
            })
            .flat_map(|e| {
                finished
                    .get(&e.source())
                    .cloned()
                    .unwrap_or_else(|| vec![TaskId::new(g[e.source()].id(), TaskPart::Out).into()])
            })
            .collect();
        let in_parts =
            |want: &(NodeIndex, Option<Part>)| produced.get(want).cloned().unwrap_or_default();
        let all_inputs: Vec<PartitionId> = data_in
            .iter()
            .flat_map(|(s, p, _, _)| in_parts(&(*s, p.clone())))
            .chain(other_in.iter().cloned())
            .collect();
        let rows_in: Option<u64> = if data_in.is_empty() {
            None
        } else {
            data_in.iter().map(|d| d.2).sum()
        };
        let bytes_in: Option<u64> = if data_in.is_empty() {
            None
        } else {
            data_in.iter().map(|d| d.3).sum()
        };
        let out_schema = g
            .edges_directed(n, Direction::Outgoing)
            .find_map(|e| match e.weight() {
                EdgeKind::Data { schema, part: None } => Some(schema.clone()),
                _ => None,
            });
        let mut new_tasks = Vec::new();
        match &node.op {
            LOp::Source { source, files, .. } => {
                let written = files
                    .is_none()
                    .then(|| read_back(g, n, source, &finished))
                    .flatten();
                let parts = match (files, &written) {
                    (Some(f), _) | (None, Some((f, _))) => f.len() as u32,
                    (None, None) => partitions_of_source(&source.kind),
                };
                // Reading file p back waits for the task writing it, not for all.
                let writers = written.as_ref().map(|(_, w)| w.clone());
                if let Some((f, _)) = written {
                    listed.insert(n, f);
                }
                let rows = out_schema.as_ref().and_then(|s| s.rows);
                let bytes = out_schema.as_ref().and_then(|s| s.est_bytes());
                let mut outs = Vec::new();
                for p in 0..parts {
                    let out = PartitionId::data(&name, p);
                    outs.push(out.clone());
                    new_tasks.push(Task {
                        id: TaskId::new(&id, TaskPart::Partition(p)),
                        node: id.clone(),
                        kind: TaskKind::Read,
                        inputs: match &writers {
                            Some(w) => w.get(p as usize).cloned().into_iter().collect(),
                            None => other_in.clone(),
                        },
                        outputs: vec![out],
                        est_rows: rows.map(|r| r / parts as u64),
                        est_bytes: bytes.map(|b| b / parts as u64),
                        worker: place(p),
                    });
                }
                produced.insert((n, None), outs);
            }
            LOp::Transform { .. } => {
                let ins = data_in
                    .first()
                    .map(|(s, p, _, _)| in_parts(&(*s, p.clone())))
                    .unwrap_or_default();
                let mut outs = Vec::new();
                let k = ins.len().max(1) as u64;
                for (p, input) in (0u32..).zip(&ins) {
                    let out = PartitionId::data(&name, p);
                    outs.push(out.clone());
                    new_tasks.push(Task {
                        id: TaskId::new(&id, TaskPart::Partition(p)),
                        node: id.clone(),
                        kind: TaskKind::Transform,
                        inputs: vec![input.clone()],
                        outputs: vec![out],
                        est_rows: rows_in.map(|r| r / k),
                        est_bytes: bytes_in.map(|b| b / k),
                        worker: place(p),
                    });
                }
                produced.insert((n, None), outs);
            }
            LOp::Split { split } => {
                let parts: Vec<Part> = match &split.kind {
                    SplitKind::Holdout { .. } | SplitKind::Predefined { .. } => {
                        vec![Part::Train, Part::Test]
                    }
                    SplitKind::KFold { k, .. } => (1..=k.value).map(Part::Fold).collect(),
                    SplitKind::Shards {
                        by:
                            ShardBy::Rows { names }
                            | ShardBy::Column { names, .. }
                            | ShardBy::File { names }
                            | ShardBy::Worker { names },
                        ..
                    } => names
                        .iter()
                        .flat_map(|s| {
                            [
                                Part::Shard(s.value.clone()),
                                Part::ShardTrain(s.value.clone()),
                                Part::ShardValidation(s.value.clone()),
                            ]
                        })
                        .collect(),
                };
                // Shards known only from the data travel together (see
                // `data::split::ANY_SHARD`).
                let parts = if parts.is_empty() && matches!(split.kind, SplitKind::Shards { .. }) {
                    let any = crate::data::split::ANY_SHARD.to_string();
                    vec![
                        Part::Shard(any.clone()),
                        Part::ShardTrain(any.clone()),
                        Part::ShardValidation(any),
                    ]
                } else {
                    parts
                };
                // One task over every input partition: splits rank rows by a hash of
                // (seed, row identity), which needs the whole input, and shards by
                // rows need the global row order.
                let input: Vec<PartitionId> = data_in
                    .iter()
                    .flat_map(|(s, p, _, _)| in_parts(&(*s, p.clone())))
                    .collect();
                let these: Vec<PartitionId> = parts
                    .iter()
                    .map(|pt| PartitionId::split_part(&name, pt.clone(), 0))
                    .collect();
                let mut outs: BTreeMap<Part, Vec<PartitionId>> = BTreeMap::new();
                for (pt, o) in parts.iter().zip(&these) {
                    outs.entry(pt.clone()).or_default().push(o.clone());
                }
                if let SplitKind::Shards {
                    by: ShardBy::Worker { names },
                    ..
                } = &split.kind
                {
                    // Shards by worker: partition i is shard i's rows, split
                    // where they are read (the rows never gather).
                    let k = names.len().max(1) as u64;
                    for (i, (input, s)) in (0u32..).zip(input.iter().zip(names)) {
                        let mine: Vec<PartitionId> = these
                            .iter()
                            .zip(&parts)
                            .filter(|(_, pt)| {
                                matches!(pt, Part::Shard(x) | Part::ShardTrain(x) | Part::ShardValidation(x) if *x == s.value)
                            })
                            .map(|(o, _)| o.clone())
                            .collect();
                        new_tasks.push(Task {
                            id: TaskId::new(&id, TaskPart::Partition(i)),
                            node: id.clone(),
                            kind: TaskKind::Split,
                            inputs: vec![input.clone()],
                            outputs: mine,
                            est_rows: rows_in.map(|r| r / k),
                            est_bytes: bytes_in.map(|b| b / k),
                            worker: place(i),
                        });
                    }
                } else {
                    new_tasks.push(Task {
                        id: TaskId::new(&id, TaskPart::Partition(0)),
                        node: id.clone(),
                        kind: TaskKind::Split,
                        inputs: input,
                        outputs: these,
                        est_rows: rows_in,
                        est_bytes: bytes_in,
                        worker: place(0),
                    });
                }
                let whole: Vec<PartitionId> = outs.values().flatten().cloned().collect();
                for (pt, o) in outs {
                    produced.insert((n, Some(pt)), o);
                }
                produced.insert((n, None), whole);
            }
            LOp::Fit { model, fanout } => {
                let mk = |part: TaskPart,
                          kind: TaskKind,
                          inputs: Vec<PartitionId>,
                          worker: Option<u32>,
                          rows: Option<u64>| {
                    let tid = TaskId::new(&id, part);
                    Task {
                        id: tid.clone(),
                        node: id.clone(),
                        kind,
                        inputs,
                        outputs: vec![tid.into()],
                        est_rows: rows,
                        est_bytes: None,
                        worker,
                    }
                };
                match fanout {
                    Fanout::TreeGroups { groups, trees } => {
                        let per = trees.div_ceil(*groups);
                        let mut parts = Vec::new();
                        for gi in 0..*groups {
                            let first = gi * per;
                            let count = per.min(trees - first);
                            let t = mk(
                                TaskPart::Group(gi),
                                TaskKind::FitTrees { first, count },
                                all_inputs.clone(),
                                place(gi),
                                rows_in,
                            );
                            parts.push(t.id.clone().into());
                            new_tasks.push(t);
                        }
                        new_tasks.push(mk(TaskPart::Out, TaskKind::Combine, parts, place(0), None));
                    }
                    Fanout::PerShard => {
                        let mut parts = Vec::new();
                        let shards: Vec<String> = data_in
                            .first()
                            .and_then(|(s, _, _, _)| match &g[*s].op {
                                LOp::Split {
                                    split:
                                        crate::frontend::pipeline::Split {
                                            kind:
                                                SplitKind::Shards {
                                                    by:
                                                        ShardBy::Rows { names }
                                                        | ShardBy::Column { names, .. }
                                                        | ShardBy::File { names }
                                                        | ShardBy::Worker { names },
                                                    ..
                                                },
                                            ..
                                        },
                                } => Some(names.iter().map(|n| n.value.clone()).collect()),
                                _ => None,
                            })
                            .filter(|v: &Vec<String>| !v.is_empty())
                            .unwrap_or_else(|| vec![crate::data::split::ANY_SHARD.into()]);
                        let src = data_in.first().map(|(s, _, _, _)| *s);
                        for (i, s) in shards.iter().enumerate() {
                            let inputs = src
                                .map(|x| in_parts(&(x, Some(Part::ShardTrain(s.clone())))))
                                .unwrap_or_default();
                            let t = mk(
                                TaskPart::Shard(s.clone()),
                                TaskKind::FitShard { shard: s.clone() },
                                inputs,
                                place(i as u32),
                                None,
                            );
                            parts.push(t.id.clone().into());
                            new_tasks.push(t);
                        }
                        new_tasks.push(mk(TaskPart::Out, TaskKind::Combine, parts, place(0), None));
                    }
                    Fanout::PartialStats => {
                        let mut parts = Vec::new();
                        for (i, input) in (0u32..).zip(&all_inputs) {
                            let t = mk(
                                TaskPart::Partition(i),
                                TaskKind::PartialStats,
                                vec![input.clone()],
                                place(i),
                                rows_in.map(|r| r / all_inputs.len().max(1) as u64),
                            );
                            parts.push(t.id.clone().into());
                            new_tasks.push(t);
                        }
                        new_tasks.push(mk(TaskPart::Out, TaskKind::Reduce, parts, place(0), None));
                    }
                    Fanout::Single => new_tasks.push(mk(
                        TaskPart::Out,
                        TaskKind::Fit,
                        all_inputs.clone(),
                        place(0),
                        rows_in,
                    )),
                }
                let _ = model;
            }
            LOp::Sink { output }
                if matches!(output.kind, OutputKind::Dataset { .. }) && !data_in.is_empty() =>
            {
                // One file per partition, written where the partition is.
                let ins: Vec<PartitionId> = data_in
                    .iter()
                    .flat_map(|(s, p, _, _)| in_parts(&(*s, p.clone())))
                    .collect();
                let k = ins.len().max(1) as u64;
                let mut ids = Vec::new();
                for (p, input) in (0u32..).zip(ins) {
                    let tid = TaskId::new(&id, TaskPart::Partition(p));
                    ids.push(PartitionId::from(tid.clone()));
                    new_tasks.push(Task {
                        id: tid.clone(),
                        node: id.clone(),
                        kind: TaskKind::Write,
                        inputs: std::iter::once(input)
                            .chain(other_in.iter().cloned())
                            .collect(),
                        outputs: vec![tid.into()],
                        est_rows: rows_in.map(|r| r / k),
                        est_bytes: bytes_in.map(|b| b / k),
                        worker: place(p),
                    });
                }
                finished.insert(n, ids);
            }
            LOp::Predict { .. } => {
                let tid = TaskId::new(&id, TaskPart::Out);
                new_tasks.push(Task {
                    id: tid.clone(),
                    node: id.clone(),
                    kind: TaskKind::Predict,
                    inputs: all_inputs.clone(),
                    outputs: vec![tid.into()],
                    est_rows: rows_in,
                    est_bytes: None,
                    worker: place(0),
                });
            }
            LOp::Evaluate { .. } | LOp::Sink { .. } => {
                let kind = if matches!(node.op, LOp::Evaluate { .. }) {
                    TaskKind::Evaluate
                } else {
                    TaskKind::Write
                };
                let mut inputs = all_inputs.clone();
                if kind == TaskKind::Evaluate {
                    // A dataset of many partitions (not a split's part) is
                    // scored partition by partition where each is, and only
                    // the tallies travel to the evaluation.
                    let mut scored = Vec::new();
                    for (s, p, _, _) in &data_in {
                        // A split by worker: each shard's validation part is
                        // scored on its worker by every model, and its other
                        // parts are not read here (the rows stay put).
                        let LOp::Split { split } = &g[*s].op else {
                            continue;
                        };
                        if !matches!(
                            split.kind,
                            SplitKind::Shards {
                                by: ShardBy::Worker { .. },
                                ..
                            }
                        ) {
                            continue;
                        }
                        let parts = in_parts(&(*s, p.clone()));
                        inputs.retain(|x| !parts.contains(x));
                        for part in parts {
                            let PartitionId::Data { dataset, index } = &part else {
                                continue;
                            };
                            if !matches!(dataset.split_part(), Some((_, Part::ShardValidation(_))))
                            {
                                continue;
                            }
                            let tid = TaskId::new(
                                &id,
                                TaskPart::Score {
                                    data: dataset.to_string(),
                                    index: *index,
                                },
                            );
                            new_tasks.push(Task {
                                id: tid.clone(),
                                node: id.clone(),
                                kind: TaskKind::ScorePartition,
                                inputs: std::iter::once(part.clone())
                                    .chain(other_in.iter().cloned())
                                    .collect(),
                                outputs: vec![tid.clone().into()],
                                est_rows: None,
                                est_bytes: None,
                                worker: None,
                            });
                            inputs.push(tid.into());
                        }
                    }
                    for (s, p, rows, bytes) in &data_in {
                        let parts = in_parts(&(*s, p.clone()));
                        if matches!(g[*s].op, LOp::Split { .. }) || parts.len() < 2 {
                            continue;
                        }
                        let k = parts.len() as u64;
                        // A source the model's fit reads too (through any
                        // steps): its partitions would all be held from their
                        // read until the model can score them, so each is read
                        // again where it is scored, after the fit. Not a source
                        // read on each worker from its own data root: its
                        // partitions stay where they were read (see `pins`).
                        let reread = matches!(
                            g[*s].op,
                            LOp::Source {
                                on_workers: None,
                                ..
                            }
                        ) && g
                            .edges_directed(n, Direction::Incoming)
                            .filter(|e| matches!(e.weight(), EdgeKind::Model))
                            .any(|e| petgraph::algo::has_path_connecting(g, *s, e.source(), None));
                        for part in parts {
                            let PartitionId::Data { dataset, index } = &part else {
                                continue;
                            };
                            let tid = TaskId::new(
                                &id,
                                TaskPart::Score {
                                    data: dataset.to_string(),
                                    index: *index,
                                },
                            );
                            scored.push((part.clone(), tid.clone()));
                            let (kind, data) = if reread {
                                (TaskKind::RereadScore { source: g[*s].id() }, None)
                            } else {
                                (TaskKind::ScorePartition, Some(part.clone()))
                            };
                            new_tasks.push(Task {
                                id: tid.clone(),
                                node: id.clone(),
                                kind,
                                inputs: data.into_iter().chain(other_in.iter().cloned()).collect(),
                                outputs: vec![tid.into()],
                                est_rows: rows.map(|r| r / k),
                                est_bytes: bytes.map(|b| b / k),
                                worker: place(*index),
                            });
                        }
                    }
                    // Each scored partition's first place among the inputs
                    // now reads its score task (a map: a dataset of 100,000
                    // partitions was quadratic here).
                    let mut scored: std::collections::HashMap<PartitionId, TaskId> =
                        scored.into_iter().rev().collect();
                    for x in inputs.iter_mut() {
                        if let Some(tid) = scored.remove(x) {
                            *x = tid.into();
                        }
                    }
                    for t in cross_fits(g, n, &produced) {
                        inputs.push(t.id.clone().into());
                        // Two evaluations of one model over one split share its fits.
                        if !tasks.iter().chain(&new_tasks).any(|x| x.id == t.id) {
                            new_tasks.push(t);
                        }
                    }
                }
                let tid = TaskId::new(&id, TaskPart::Out);
                new_tasks.push(Task {
                    id: tid.clone(),
                    node: id.clone(),
                    kind,
                    inputs,
                    outputs: vec![tid.into()],
                    est_rows: rows_in,
                    est_bytes: bytes_in,
                    worker: place(0),
                });
            }
        }
        tasks.extend(new_tasks);
    }
    // By id as text (what `TaskId`'s order is), as plans always were sorted;
    // each id is printed once, not at every comparison.
    tasks.sort_by_cached_key(|t| (t.id.to_string(), format!("{:?}", t.id)));
    let mut plan = plan;
    for (n, f) in listed {
        if let LOp::Source { files, .. } = &mut plan.graph[n].op {
            *files = Some(f);
        }
    }
    PhysicalPlan {
        logical: plan,
        tasks,
        workers,
    }
}

/// The files a source that reads back a dataset this pipeline writes will find:
/// `part-NNNNN.EXT`, one per partition written, when the source reads the
/// output's folder in its format, with the task writing each. `None` otherwise
/// (the source lists its files when it runs, as one partition).
fn read_back(
    g: &crate::compile::logical::Graph,
    n: NodeIndex,
    source: &crate::frontend::pipeline::Source,
    finished: &BTreeMap<NodeIndex, Vec<PartitionId>>,
) -> Option<(Vec<String>, Vec<PartitionId>)> {
    source.after.as_ref()?;
    let (path, reads) = source.file_path()?;
    g.edges_directed(n, Direction::Incoming)
        .filter(|e| matches!(e.weight(), EdgeKind::Order))
        .find_map(|e| {
            let LOp::Sink { output } = &g[e.source()].op else {
                return None;
            };
            let OutputKind::Dataset { format, .. } = &output.kind else {
                return None;
            };
            let dir = output.path.value.trim_end_matches('/');
            let writers = finished.get(&e.source())?;
            // A dataset is only ever CSV, Parquet or Arrow: the formats compare.
            (format.value == reads
                && path.value.trim_end_matches('/') == dir
                && !writers.is_empty())
            .then(|| {
                let files = (0..writers.len())
                    .map(|i| format!("{dir}/{}", crate::data::write::part_file_name(i, reads)))
                    .collect();
                (files, writers.clone())
            })
        })
}

/// The fits a cross-validation needs: for an evaluation `n` over a whole k-fold
/// split, one fit of its model per fold, on the other folds. They belong to the
/// model's node, so they run its operation; `FitFold` says which fold is left out.
fn cross_fits(
    g: &crate::compile::logical::Graph,
    n: NodeIndex,
    produced: &BTreeMap<(NodeIndex, Option<Part>), Vec<PartitionId>>,
) -> Vec<Task> {
    let Some(fit) = g
        .edges_directed(n, Direction::Incoming)
        .find(|e| matches!(e.weight(), EdgeKind::Model))
        .map(|e| e.source())
    else {
        return vec![];
    };
    let fit_id = g[fit].id();
    let mut out = Vec::new();
    for e in g.edges_directed(n, Direction::Incoming) {
        let (EdgeKind::Data { part: None, .. }, LOp::Split { split }) =
            (e.weight(), &g[e.source()].op)
        else {
            continue;
        };
        let SplitKind::KFold { k, .. } = &split.kind else {
            continue;
        };
        let name = &split.name.value;
        for fold in 1..=k.value {
            let inputs: Vec<PartitionId> = (1..=k.value)
                .filter(|j| *j != fold)
                .flat_map(|j| {
                    produced
                        .get(&(e.source(), Some(Part::Fold(j))))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            let tid = TaskId::new(
                &fit_id,
                TaskPart::WithoutFold {
                    split: name.clone(),
                    fold,
                },
            );
            out.push(Task {
                id: tid.clone(),
                node: fit_id.clone(),
                kind: TaskKind::FitFold {
                    split: name.clone(),
                    fold,
                },
                inputs,
                outputs: vec![tid.into()],
                est_rows: None,
                est_bytes: None,
                worker: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize;

    #[test]
    fn mnist_rf_is_read_split_ten_tree_groups_and_a_combine() {
        let text = std::fs::read_to_string("pipelines/mnist_rf.toml").unwrap();
        let plan = crate::optimize::testutil::plan(&text);
        let (plan, _) = optimize::optimize(plan);
        let p = physical(plan);
        let fit = p.tasks_of("fit:forest");
        assert_eq!(fit.len(), 11);
        assert_eq!(
            fit.iter()
                .filter(|t| matches!(t.kind, TaskKind::FitTrees { count: 10, .. }))
                .count(),
            10
        );
        assert_eq!(
            fit[0].inputs,
            vec![PartitionId::split_part("mnist", Part::Train, 0)]
        );
        assert_eq!(fit[0].est_rows, Some(60_000));
        // Placement over the file's two workers alternates the tree groups.
        let workers: Vec<_> = fit.iter().take(4).map(|t| t.worker).collect();
        assert_eq!(workers, vec![Some(0), Some(1), Some(0), Some(1)]);
        // Same file, same plan.
        let again = physical(optimize::optimize(crate::optimize::testutil::plan(&text)).0);
        assert_eq!(p.display(), again.display());
    }

    #[test]
    fn cross_validation_fits_the_model_once_per_fold_without_that_fold() {
        let text = r#"
[pipeline]
name = "cv"
seed = 3

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 900
features = 4
classes = 2
partitions = 2

[splits.cv]
kind = "kfold"
input = "rows"
k = 3

[models.tree]
estimator = "decision_tree"
input = "rows"
target = "y"

[evaluations.a]
model = "tree"
data = "cv"
metrics = ["accuracy"]

[evaluations.b]
model = "tree"
data = ["cv", "rows"]
metrics = ["f1"]
"#;
        let p = physical(optimize::optimize(crate::optimize::testutil::plan(text)).0);
        let folds: Vec<&Task> = p
            .tasks
            .iter()
            .filter(|t| matches!(t.kind, TaskKind::FitFold { .. }))
            .collect();
        // Shared by both evaluations: one fit per fold, not one per evaluation.
        assert_eq!(folds.len(), 3, "{}", p.display());
        for (i, t) in folds.iter().enumerate() {
            let held_out = Part::Fold(i as u32 + 1);
            assert_eq!(t.node, "fit:tree");
            assert_eq!(t.inputs.len(), 2, "{}", p.display());
            assert!(t.inputs.iter().all(|x| {
                x.dataset().and_then(DatasetId::split_part) != Some(("cv", &held_out))
            }));
        }
        for e in ["evaluate:a/out", "evaluate:b/out"] {
            let ev = p
                .tasks
                .iter()
                .find(|t| t.id.to_string() == e)
                .expect("evaluate task");
            for t in &folds {
                let fit = PartitionId::from(t.id.clone());
                assert!(ev.inputs.contains(&fit), "{}", p.display());
            }
        }
    }

    #[test]
    fn a_dataset_written_and_read_back_is_one_file_and_one_partition_each() {
        let text = std::fs::read_to_string("pipelines/gauss_linreg.toml").unwrap();
        let p = physical(optimize::optimize(crate::optimize::testutil::plan(&text)).0);
        let writes = p.tasks_of("sink:written");
        let reads = p.tasks_of("source:reread");
        assert_eq!(writes.len(), 100);
        assert_eq!(reads.len(), 100);
        for r in &reads {
            // Read p waits for the task writing file p, and for nothing else.
            let p = r.partition().expect("a read task per partition");
            let writer = TaskId::new("sink:written", TaskPart::Partition(p));
            assert_eq!(r.inputs, vec![PartitionId::from(writer)]);
        }
        let files = p
            .logical
            .graph
            .node_weights()
            .find_map(|n| match &n.op {
                LOp::Source {
                    source,
                    files: Some(f),
                    ..
                } if source.name.value == "reread" => Some(f.clone()),
                _ => None,
            })
            .expect("the read-back source lists the files written");
        assert_eq!(files.len(), 100);
        assert_eq!(files[7], "out/gauss_linreg/line/part-00007.parquet");
        // The linear fit reduces partial sums of the 100 partitions read back.
        assert_eq!(p.tasks_of("fit:linreg").len(), 101);
    }

    #[test]
    fn a_source_the_model_was_fitted_on_is_read_again_to_be_scored() {
        let text = std::fs::read_to_string("pipelines/gauss_linreg.toml").unwrap();
        let p = physical(optimize::optimize(crate::optimize::testutil::plan(&text)).0);
        let scores: Vec<&Task> = p
            .tasks_of("evaluate:fit")
            .into_iter()
            .filter(|t| t.id.part != TaskPart::Out)
            .collect();
        assert_eq!(scores.len(), 100);
        let model = PartitionId::from(TaskId::new("fit:linreg", TaskPart::Out));
        for t in &scores {
            // The partition is read again by the score task, after the model:
            // nothing holds the fit's read of it until then.
            assert_eq!(
                t.kind,
                TaskKind::RereadScore {
                    source: "source:reread".into()
                }
            );
            assert_eq!(t.inputs, vec![model.clone()], "{}", p.display());
        }
        // The reads' only reader is then the fit's partial sums.
        let reads: std::collections::HashSet<PartitionId> = p
            .tasks_of("source:reread")
            .iter()
            .flat_map(|t| t.outputs.clone())
            .collect();
        for t in &p.tasks {
            if t.inputs.iter().any(|i| reads.contains(i)) {
                assert_eq!(t.kind, TaskKind::PartialStats, "{}", t.id);
            }
        }
    }

    #[test]
    fn a_source_scored_by_a_model_fitted_elsewhere_is_scored_where_it_is_read() {
        let text = r#"
[pipeline]
name = "other"
seed = 3

[sources.train]
kind = "synthetic"
generator = "regression"
rows = 400
features = 2
partitions = 2

[sources.test]
kind = "synthetic"
generator = "regression"
rows = 400
features = 2
partitions = 4

[models.lin]
estimator = "linear_regression"
input = "train"
target = "y"

[evaluations.e]
model = "lin"
data = "test"
metrics = ["r2"]
"#;
        let p = physical(optimize::optimize(crate::optimize::testutil::plan(text)).0);
        let scores: Vec<&Task> = p
            .tasks_of("evaluate:e")
            .into_iter()
            .filter(|t| t.id.part != TaskPart::Out)
            .collect();
        assert_eq!(scores.len(), 4, "{}", p.display());
        for (i, t) in (0u32..).zip(&scores) {
            // The model does not wait for `test`: reading it once is enough.
            assert_eq!(t.kind, TaskKind::ScorePartition);
            assert_eq!(t.inputs[0], PartitionId::data("test", i), "{}", p.display());
        }
    }

    #[test]
    fn a_plan_travels_as_json_unchanged() {
        // Workers receive tasks and their operations as data, never code.
        let text = std::fs::read_to_string("pipelines/house_prices_ensemble.toml").unwrap();
        let p = physical(optimize::optimize(crate::optimize::testutil::plan(&text)).0);
        let json = serde_json::to_string(&p).unwrap();
        let back: PhysicalPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(back.tasks, p.tasks);
        assert_eq!(back.logical.display(), p.logical.display());
        assert_eq!(
            crate::plan::dot::to_dot(&back, dot::Level::Physical),
            crate::plan::dot::to_dot(&p, dot::Level::Physical)
        );
    }
}

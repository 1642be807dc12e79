//! Lowering a checked pipeline to the [`LogicalPlan`]: a petgraph DAG with one node
//! per operation and the dataset schema on every data edge.
//!
//! In: the pipeline and its resolved references. Out: the plan and the column
//! diagnostics found while inferring schemas along it.
//! Must not: do I/O or decide placement (that is `plan`).

use super::resolve::{DataTarget, Dataset, Resolved};
use super::schema::{self, Schema};
use crate::data::split::Part;
use crate::frontend::diag::{Code, Diagnostic};
use crate::frontend::pipeline::*;
use crate::frontend::span::Span;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use std::collections::BTreeMap;

/// How one logical operation is cut into parallel tasks.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Fanout {
    /// One task.
    Single,
    /// A forest fitted as `groups` tasks of about `trees / groups` trees each.
    TreeGroups { groups: u32, trees: u32 },
    /// One fit per shard.
    PerShard,
    /// One partial-statistics task per partition, then one reduce.
    PartialStats,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LOp {
    /// Read (or generate) a dataset; `columns` is set by projection pushdown.
    Source {
        source: Source,
        columns: Option<Vec<String>>,
        /// The files read, one partition each, when a split shards by file (listed
        /// by `compile::shard_files` before planning); else the source decides.
        #[serde(default)]
        files: Option<Vec<String>>,
        /// Partition `i` is read on worker `on_workers[i]`, from its
        /// `--data-root` (a split shards by worker; set with `files` by
        /// `compile::shard_files`).
        #[serde(default)]
        on_workers: Option<Vec<String>>,
    },
    /// Row and column operations; after fusion, the names of all fused transforms.
    Transform {
        names: Vec<String>,
        steps: Vec<crate::frontend::span::Spanned<Op>>,
    },
    Split {
        split: Split,
    },
    Fit {
        model: ModelSpec,
        fanout: Fanout,
    },
    Evaluate {
        evaluation: Evaluation,
    },
    Sink {
        output: Output,
    },
    /// The predictions of fit `model` on dataset `data` (as its id shows it,
    /// `mnist.test`), made once for every evaluation and output that needs
    /// them (added by `optimize::shared_predictions`).
    Predict {
        model: String,
        data: String,
    },
}

impl LOp {
    pub fn kind(&self) -> &'static str {
        match self {
            LOp::Source { .. } => "source",
            LOp::Transform { .. } => "transform",
            LOp::Split { .. } => "split",
            LOp::Fit { .. } => "fit",
            LOp::Evaluate { .. } => "evaluate",
            LOp::Sink { .. } => "sink",
            LOp::Predict { .. } => "predict",
        }
    }

    pub fn name(&self) -> String {
        match self {
            LOp::Source { source, .. } => source.name.value.clone(),
            LOp::Transform { names, .. } => names.join("+"),
            LOp::Split { split } => split.name.value.clone(),
            LOp::Fit { model, .. } => model.name.value.clone(),
            LOp::Evaluate { evaluation } => evaluation.name.value.clone(),
            LOp::Sink { output } => output.name.value.clone(),
            LOp::Predict { model, data } => format!("{model}@{data}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LNode {
    pub op: LOp,
    pub span: Span,
}

impl LNode {
    /// Stable id: `kind:name`. Unique because step names are unique.
    pub fn id(&self) -> String {
        format!("{}:{}", self.op.kind(), self.op.name())
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum EdgeKind {
    /// Rows flow; `part` names the part of a split.
    Data { part: Option<Part>, schema: Schema },
    /// A fitted model flows.
    Model,
    /// Metrics flow.
    Metrics,
    /// A model's predictions on a dataset flow (from a `Predict` node).
    Predictions,
    /// Only an ordering: the target runs after the source (a read-back after a write).
    Order,
}

pub type Graph = StableDiGraph<LNode, EdgeKind>;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LogicalPlan {
    pub name: String,
    pub seed: u64,
    pub graph: Graph,
    pub cluster: Option<Cluster>,
}

impl LogicalPlan {
    /// Nodes sorted by id: the deterministic order every printer uses.
    pub fn sorted_nodes(&self) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self.graph.node_indices().collect();
        v.sort_by_cached_key(|i| self.graph[*i].id());
        v
    }

    pub fn find(&self, id: &str) -> Option<NodeIndex> {
        self.graph
            .node_indices()
            .find(|i| self.graph[*i].id() == id)
    }

    /// The schema of the rows leaving a node (its first outgoing data edge, or
    /// computed from its inputs for a node with no consumers).
    pub fn inputs(&self, n: NodeIndex) -> Vec<(NodeIndex, &EdgeKind)> {
        let mut v: Vec<(NodeIndex, &EdgeKind)> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.source(), e.weight()))
            .collect();
        v.sort_by_cached_key(|(i, _)| self.graph[*i].id());
        v
    }

    /// A plain-text listing, one node per line with its inputs: for `--explain` and tests.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for n in self.sorted_nodes() {
            let node = &self.graph[n];
            let ins: Vec<String> = self
                .inputs(n)
                .iter()
                .map(|(i, e)| match e {
                    EdgeKind::Data { part: Some(p), .. } => {
                        format!("{}[{}]", self.graph[*i].id(), p.label())
                    }
                    EdgeKind::Order => format!("after {}", self.graph[*i].id()),
                    _ => self.graph[*i].id(),
                })
                .collect();
            out.push_str(&format!("{}{}", node.id(), describe(&node.op)));
            if !ins.is_empty() {
                out.push_str(&format!(" <- {}", ins.join(", ")));
            }
            out.push('\n');
        }
        out
    }
}

/// Short parameters of an operation for listings and pictures.
pub fn describe(op: &LOp) -> String {
    match op {
        LOp::Source {
            source, columns, ..
        } => {
            let what = match &source.kind {
                SourceKind::Mnist { path, .. } => format!("mnist {}", path.value),
                SourceKind::Csv(c) => format!("csv {}", c.path.value),
                SourceKind::Parquet { path } => format!("parquet {}", path.value),
                SourceKind::Arrow { path } => format!("arrow {}", path.value),
                SourceKind::Synthetic(g) => format!("synthetic {} rows", g.rows.value),
            };
            match columns {
                Some(c) => format!(" ({what}; columns {})", c.join(",")),
                None => format!(" ({what})"),
            }
        }
        LOp::Transform { steps, .. } => format!(
            " ({})",
            steps
                .iter()
                .map(|s| s.value.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        LOp::Split { split } => format!(
            " ({})",
            match &split.kind {
                SplitKind::Holdout { test_fraction, .. } =>
                    format!("holdout {}", test_fraction.value),
                SplitKind::Predefined { .. } => "predefined".into(),
                SplitKind::KFold { k, .. } => format!("kfold k={}", k.value),
                SplitKind::Shards { .. } => "shards".into(),
            }
        ),
        LOp::Fit { model, fanout } => {
            let f = match fanout {
                Fanout::Single => String::new(),
                Fanout::TreeGroups { groups, trees } => {
                    format!("; {trees} trees in {groups} tasks")
                }
                Fanout::PerShard => "; one per shard".into(),
                Fanout::PartialStats => "; partial sums per partition + reduce".into(),
            };
            format!(" ({}{f})", model.estimator.value.name())
        }
        LOp::Evaluate { evaluation } => format!(
            " ({})",
            evaluation
                .metrics
                .iter()
                .map(|m| m.value.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        LOp::Sink { output } => format!(" ({})", output.path.value),
        LOp::Predict { model, data } => format!(" (model {model} on {data}, shared)"),
    }
}

/// Build the logical plan and infer schemas. `source_schemas` overrides what a
/// source's schema is (from `--data`), by source index.
pub fn build(
    p: &Pipeline,
    r: &Resolved,
    source_schemas: &BTreeMap<usize, Schema>,
) -> (LogicalPlan, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut g = Graph::default();
    let src: Vec<NodeIndex> = p
        .sources
        .iter()
        .map(|s| {
            g.add_node(LNode {
                op: LOp::Source {
                    source: s.clone(),
                    columns: None,
                    files: None,
                    on_workers: None,
                },
                span: s.span,
            })
        })
        .collect();
    let tr: Vec<NodeIndex> = p
        .transforms
        .iter()
        .map(|t| {
            g.add_node(LNode {
                op: LOp::Transform {
                    names: vec![t.name.value.clone()],
                    steps: t.steps.clone(),
                },
                span: t.span,
            })
        })
        .collect();
    let sp: Vec<NodeIndex> = p
        .splits
        .iter()
        .map(|s| {
            g.add_node(LNode {
                op: LOp::Split { split: s.clone() },
                span: s.span,
            })
        })
        .collect();
    let fit: Vec<NodeIndex> = p
        .models
        .iter()
        .map(|m| {
            g.add_node(LNode {
                op: LOp::Fit {
                    model: m.clone(),
                    fanout: Fanout::Single,
                },
                span: m.span,
            })
        })
        .collect();
    let ev: Vec<NodeIndex> = p
        .evaluations
        .iter()
        .map(|e| {
            g.add_node(LNode {
                op: LOp::Evaluate {
                    evaluation: e.clone(),
                },
                span: e.span,
            })
        })
        .collect();
    let out: Vec<NodeIndex> = p
        .outputs
        .iter()
        .map(|o| {
            g.add_node(LNode {
                op: LOp::Sink { output: o.clone() },
                span: o.span,
            })
        })
        .collect();

    let data_node = |d: &Dataset| -> (NodeIndex, Option<Part>) {
        match d {
            Dataset::Source(i) => (src[*i], None),
            Dataset::Transform(i) => (tr[*i], None),
            Dataset::Part { split, part } => (sp[*split], Some(part.clone())),
        }
    };
    let data = |part: Option<Part>| EdgeKind::Data {
        part,
        schema: Schema::open(),
    };
    for (i, d) in r.transform_inputs.iter().enumerate() {
        if let Some(d) = d {
            let (n, part) = data_node(d);
            g.add_edge(n, tr[i], data(part));
        }
    }
    for (i, ins) in r.split_inputs.iter().enumerate() {
        for d in ins {
            let (n, part) = data_node(d);
            g.add_edge(n, sp[i], data(part));
        }
    }
    for (i, t) in r.model_inputs.iter().enumerate() {
        match t {
            Some(DataTarget::Dataset(d)) => {
                let (n, part) = data_node(d);
                g.add_edge(n, fit[i], data(part));
            }
            Some(DataTarget::Split(s)) => {
                g.add_edge(sp[*s], fit[i], data(None));
            }
            None => {}
        }
    }
    for (i, m) in r.eval_models.iter().enumerate() {
        if let Some(m) = m {
            g.add_edge(fit[*m], ev[i], EdgeKind::Model);
        }
        for t in &r.eval_data[i] {
            match t {
                DataTarget::Dataset(d) => {
                    let (n, part) = data_node(d);
                    g.add_edge(n, ev[i], data(part));
                }
                DataTarget::Split(s) => {
                    g.add_edge(sp[*s], ev[i], data(None));
                }
            }
        }
    }
    for (i, &sink) in out.iter().enumerate() {
        if let Some(m) = r.output_models[i] {
            g.add_edge(fit[m], sink, EdgeKind::Model);
        }
        for e in &r.output_evals[i] {
            g.add_edge(ev[*e], sink, EdgeKind::Metrics);
        }
        if let Some(d) = &r.output_data[i] {
            let (n, part) = data_node(d);
            g.add_edge(n, sink, data(part));
        }
    }
    for (i, after) in r.source_after.iter().enumerate() {
        if let Some(o) = after {
            g.add_edge(out[*o], src[i], EdgeKind::Order);
        }
    }

    let mut plan = LogicalPlan {
        name: p.name.value.clone(),
        seed: p.seed,
        graph: g,
        cluster: p.cluster.clone(),
    };
    match petgraph::algo::toposort(&plan.graph, None) {
        Ok(order) => infer(&mut plan, &order, source_schemas, &mut diags),
        Err(cycle) => {
            let n = &plan.graph[cycle.node_id()];
            diags.push(
                Diagnostic::new(
                    Code::Cycle,
                    n.span,
                    format!("`{}` depends on its own result", n.op.name()),
                )
                .with_help("a source that reads back an output cannot feed that output"),
            );
        }
    }
    (plan, diags)
}

/// Estimated rows of one part of a split of `rows` rows.
pub fn part_rows(split: &Split, part: &Part, rows: u64) -> u64 {
    let f = |x: f64| (rows as f64 * x).round() as u64;
    match (&split.kind, part) {
        (
            SplitKind::Predefined {
                from: PredefinedFrom::Source(_),
            },
            Part::Train,
        ) if rows == 70_000 => 60_000,
        (
            SplitKind::Predefined {
                from: PredefinedFrom::Source(_),
            },
            Part::Test,
        ) if rows == 70_000 => 10_000,
        (SplitKind::Holdout { test_fraction, .. }, Part::Train) => f(1.0 - test_fraction.value),
        (SplitKind::Holdout { test_fraction, .. }, Part::Test) => f(test_fraction.value),
        (SplitKind::KFold { k, .. }, _) => rows / k.value.max(1) as u64,
        (
            SplitKind::Shards {
                by: ShardBy::Rows { names },
                validation_fraction,
                ..
            },
            p,
        ) => {
            let shard = rows / names.len().max(1) as u64;
            match p {
                Part::ShardTrain(_) => {
                    (shard as f64 * (1.0 - validation_fraction.value)).round() as u64
                }
                Part::ShardValidation(_) => {
                    (shard as f64 * validation_fraction.value).round() as u64
                }
                _ => shard,
            }
        }
        _ => rows,
    }
}

/// Walk the DAG in order, computing each dataset's schema and checking columns.
fn infer(
    plan: &mut LogicalPlan,
    order: &[NodeIndex],
    overrides: &BTreeMap<usize, Schema>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut out_schema: BTreeMap<NodeIndex, Schema> = BTreeMap::new();
    let mut source_i = 0usize;
    // Sources were added first, in pipeline order.
    let source_index: BTreeMap<NodeIndex, usize> = plan
        .graph
        .node_indices()
        .filter(|n| matches!(plan.graph[*n].op, LOp::Source { .. }))
        .map(|n| {
            source_i += 1;
            (n, source_i - 1)
        })
        .collect();
    for &n in order {
        let ins: Vec<Schema> = plan
            .graph
            .edges_directed(n, Direction::Incoming)
            .filter(|&e| matches!(e.weight(), EdgeKind::Data { .. }))
            .map(|e| {
                out_schema
                    .get(&e.source())
                    .cloned()
                    .unwrap_or_else(Schema::open)
            })
            .collect();
        let first = ins.first().cloned().unwrap_or_else(Schema::open);
        let s = match &plan.graph[n].op {
            LOp::Source { source, .. } => source_index
                .get(&n)
                .and_then(|i| overrides.get(i))
                .cloned()
                .unwrap_or_else(|| schema::source_schema(source)),
            LOp::Transform { names, steps } => schema::apply_ops(
                first,
                steps,
                &format!("transform `{}`", names.join("+")),
                diags,
            ),
            LOp::Split { split } => {
                let step = format!("split `{}`", split.name.value);
                match &split.kind {
                    SplitKind::Holdout {
                        stratify: Some(c), ..
                    }
                    | SplitKind::KFold {
                        stratify: Some(c), ..
                    } => {
                        first.require(c, &step, diags);
                    }
                    SplitKind::Shards {
                        by: ShardBy::Column { column, .. },
                        ..
                    } => {
                        first.require(column, &step, diags);
                    }
                    SplitKind::Predefined {
                        from: PredefinedFrom::Pair { .. },
                    } if ins.len() == 2
                        && !ins[0].open
                        && !ins[1].open
                        && ins[0].names() != ins[1].names() =>
                    {
                        diags.push(
                                Diagnostic::new(Code::UnknownColumn, split.name.span, format!("the train and test sources of split `{}` have different columns", split.name.value))
                                    .with_help("both parts must have the same columns in the same order"),
                            );
                    }
                    _ => {}
                }
                first
            }
            LOp::Fit { model, .. } => {
                schema::check_model_columns(model, &first, diags);
                first
            }
            LOp::Evaluate { evaluation } => {
                let model = plan
                    .graph
                    .edges_directed(n, Direction::Incoming)
                    .find(|e| matches!(e.weight(), EdgeKind::Model))
                    .map(|e| e.source());
                if let Some(LOp::Fit { model, .. }) = model.map(|m| &plan.graph[m].op) {
                    for s in &ins {
                        schema::check_model_columns(model, s, diags);
                    }
                }
                let _ = evaluation;
                first
            }
            LOp::Sink { output } => {
                if let OutputKind::Predictions { .. } = output.kind {
                    let model = plan
                        .graph
                        .edges_directed(n, Direction::Incoming)
                        .find(|e| matches!(e.weight(), EdgeKind::Model))
                        .map(|e| e.source());
                    if let Some(LOp::Fit { model, .. }) = model.map(|m| &plan.graph[m].op) {
                        let step = format!("output `{}`", output.name.value);
                        for f in model.features.iter().flatten() {
                            first.require(f, &step, diags);
                        }
                    }
                }
                first
            }
            // Added by the optimizer, after inference.
            LOp::Predict { .. } => first,
        };
        out_schema.insert(n, s);
    }
    // Store schemas on data edges.
    let edges: Vec<_> = plan.graph.edge_indices().collect();
    for e in edges {
        let (a, _) = plan.graph.edge_endpoints(e).expect("edge exists");
        let split = match &plan.graph[a].op {
            LOp::Split { split } => Some(split.clone()),
            _ => None,
        };
        if let Some(EdgeKind::Data { schema, part }) = plan.graph.edge_weight_mut(e)
            && let Some(s) = out_schema.get(&a)
        {
            *schema = s.clone();
            if let (Some(split), Some(pt)) = (&split, part.as_ref()) {
                schema.rows = s.rows.map(|r| part_rows(split, pt, r));
            }
        }
    }
}

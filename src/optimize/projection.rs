//! Projection pushdown: a CSV, Parquet or Arrow source reads only the columns that
//! some later step uses; the reader skips the others.
//!
//! Needs flow backwards from every consumer: a model with listed features needs
//! those and its target; a model without a list, a predictions or dataset output
//! needs every column, and then nothing is pruned.

use super::Rule;
use crate::compile::logical::{EdgeKind, LOp, LogicalPlan};
use crate::compile::schema::Schema;
use crate::frontend::pipeline::{Op, OutputKind, ShardBy, SourceKind, SplitKind};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::{BTreeMap, BTreeSet};

pub struct ProjectionPushdown;

/// Columns a consumer needs from a dataset: a set, or all of them.
#[derive(Clone, Debug, PartialEq)]
enum Need {
    All,
    Cols(BTreeSet<String>),
}

impl Need {
    fn union(self, other: Need) -> Need {
        match (self, other) {
            (Need::Cols(mut a), Need::Cols(b)) => {
                a.extend(b);
                Need::Cols(a)
            }
            _ => Need::All,
        }
    }

    fn with(self, cols: impl IntoIterator<Item = String>) -> Need {
        match self {
            Need::All => Need::All,
            Need::Cols(mut a) => {
                a.extend(cols);
                Need::Cols(a)
            }
        }
    }
}

/// What a transform's input must hold for its output to hold `out`.
fn through_ops(steps: &[crate::frontend::span::Spanned<Op>], mut need: Need) -> Need {
    for op in steps.iter().rev() {
        need = match (&op.value, need) {
            (Op::Select { columns }, Need::All) => {
                Need::Cols(columns.iter().map(|c| c.value.clone()).collect())
            }
            (Op::Select { columns }, Need::Cols(n)) => Need::Cols(
                columns
                    .iter()
                    .map(|c| c.value.clone())
                    .filter(|c| n.contains(c))
                    .collect(),
            ),
            (Op::Derive { column, expr }, Need::Cols(mut n)) => {
                n.remove(&column.value);
                Need::Cols(n).with(expr.value.columns().into_iter().map(|c| c.value))
            }
            (Op::Filter { expr }, n) => n.with(expr.value.columns().into_iter().map(|c| c.value)),
            (Op::Cast { column, .. }, n) => n.with([column.value.clone()]),
            (
                Op::Impute {
                    columns: Some(c), ..
                }
                | Op::OneHot {
                    columns: Some(c), ..
                }
                | Op::Ordinal { columns: Some(c) },
                n,
            ) => n.with(c.iter().map(|x| x.value.clone())),
            (Op::StandardScale { columns: Some(c) } | Op::MinMaxScale { columns: Some(c) }, n) => {
                n.with(c.iter().map(|x| x.value.clone()))
            }
            // An op over "every column of a kind" keeps whatever it is given.
            (_, n) => n,
        };
    }
    need
}

fn model_need(m: &crate::frontend::pipeline::ModelSpec) -> Need {
    match &m.features {
        Some(f) => Need::Cols(
            f.iter()
                .map(|c| c.value.clone())
                .chain([m.target.value.clone()])
                .collect(),
        ),
        None => Need::All,
    }
}

impl Rule for ProjectionPushdown {
    fn name(&self) -> &'static str {
        "projection pushdown"
    }

    fn apply(&self, plan: &mut LogicalPlan) -> bool {
        let Ok(order) = petgraph::algo::toposort(&plan.graph, None) else {
            return false;
        };
        let g = &plan.graph;
        // What each node needs of each of its data inputs, computed consumers first.
        let mut need_of: BTreeMap<NodeIndex, Need> = BTreeMap::new();
        for &n in order.iter().rev() {
            let out_need = g
                .edges_directed(n, Direction::Outgoing)
                .filter(|e| matches!(e.weight(), EdgeKind::Data { .. }))
                .map(|e| need_from(plan, e.target()))
                .reduce(Need::union);
            let out_need = out_need.unwrap_or(Need::Cols(BTreeSet::new()));
            let in_need = match &g[n].op {
                LOp::Transform { steps, .. } => through_ops(steps, out_need),
                LOp::Split { split } => match &split.kind {
                    SplitKind::Holdout {
                        stratify: Some(c), ..
                    }
                    | SplitKind::KFold {
                        stratify: Some(c), ..
                    } => out_need.with([c.value.clone()]),
                    SplitKind::Shards {
                        by: ShardBy::Column { column, .. },
                        ..
                    } => out_need.with([column.value.clone()]),
                    _ => out_need,
                },
                _ => out_need,
            };
            need_of.insert(n, in_need);
        }
        let mut changed = false;
        for n in plan.graph.node_indices().collect::<Vec<_>>() {
            let Some(Need::Cols(cols)) = need_of.get(&n).cloned() else {
                continue;
            };
            let schema = plan
                .graph
                .edges_directed(n, Direction::Outgoing)
                .find_map(|e| match e.weight() {
                    EdgeKind::Data { schema, .. } => Some(schema.clone()),
                    _ => None,
                })
                .unwrap_or_else(Schema::open);
            if let LOp::Source {
                source, columns, ..
            } = &mut plan.graph[n].op
            {
                let prunable = matches!(
                    source.kind,
                    SourceKind::Csv(_) | SourceKind::Parquet { .. } | SourceKind::Arrow { .. }
                );
                // Keep file order where the schema knows it.
                let mut list: Vec<String> = schema
                    .names()
                    .into_iter()
                    .filter(|c| cols.contains(*c))
                    .map(String::from)
                    .collect();
                let extra: Vec<String> =
                    cols.iter().filter(|c| !list.contains(c)).cloned().collect();
                list.extend(extra);
                if prunable && !list.is_empty() && columns.as_ref() != Some(&list) {
                    *columns = Some(list);
                    changed = true;
                }
            }
        }
        changed
    }
}

/// What consumer `c` needs of the data it receives (its own needs, not its inputs').
fn need_from(plan: &LogicalPlan, c: NodeIndex) -> Need {
    match &plan.graph[c].op {
        LOp::Fit { model, .. } => model_need(model),
        LOp::Evaluate { .. } | LOp::Predict { .. } => plan
            .graph
            .neighbors_directed(c, Direction::Incoming)
            .find_map(|m| match &plan.graph[m].op {
                LOp::Fit { model, .. } => Some(model_need(model)),
                _ => None,
            })
            .unwrap_or(Need::All),
        LOp::Sink { output } => match output.kind {
            OutputKind::Dataset { .. } | OutputKind::Predictions { .. } => Need::All,
            _ => Need::Cols(BTreeSet::new()),
        },
        // Transforms and splits: computed by the walk; recompute here on demand.
        LOp::Transform { steps, .. } => {
            let out = plan
                .graph
                .edges_directed(c, Direction::Outgoing)
                .filter(|e| matches!(e.weight(), EdgeKind::Data { .. }))
                .map(|e| need_from(plan, e.target()))
                .reduce(Need::union)
                .unwrap_or(Need::Cols(BTreeSet::new()));
            through_ops(steps, out)
        }
        LOp::Split { split } => {
            let out = plan
                .graph
                .edges_directed(c, Direction::Outgoing)
                .filter(|e| matches!(e.weight(), EdgeKind::Data { .. }))
                .map(|e| need_from(plan, e.target()))
                .reduce(Need::union)
                .unwrap_or(Need::Cols(BTreeSet::new()));
            match &split.kind {
                SplitKind::Holdout {
                    stratify: Some(c), ..
                }
                | SplitKind::KFold {
                    stratify: Some(c), ..
                } => out.with([c.value.clone()]),
                SplitKind::Shards {
                    by: ShardBy::Column { column, .. },
                    ..
                } => out.with([column.value.clone()]),
                _ => out,
            }
        }
        LOp::Source { .. } => Need::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::testutil::plan;

    #[test]
    fn a_csv_reads_only_the_columns_a_model_uses() {
        let mut p = plan(
            r#"
[sources.t]
kind = "csv"
path = "x.csv"
columns = { a = "float", b = "float", unused = "float", y = "float" }
[transforms.d]
input = "t"
steps = [{ op = "derive", column = "c", expr = "a * 2" }]
[models.m]
estimator = "ridge"
input = "d"
target = "y"
features = ["c", "b"]
[outputs.o]
kind = "model"
model = "m"
path = "out/m.model"
"#,
        );
        assert!(ProjectionPushdown.apply(&mut p));
        let src = p.find("source:t").unwrap();
        let LOp::Source { columns, .. } = &p.graph[src].op else {
            panic!()
        };
        assert_eq!(
            columns.as_deref(),
            Some(&["a".to_string(), "b".into(), "y".into()][..])
        );
    }

    #[test]
    fn a_model_without_a_feature_list_reads_everything() {
        let mut p = plan(
            "[sources.t]\nkind = \"csv\"\npath = \"x.csv\"\n[models.m]\nestimator = \"ridge\"\ninput = \"t\"\ntarget = \"y\"\n[outputs.o]\nkind = \"model\"\nmodel = \"m\"\npath = \"out/m.model\"\n",
        );
        assert!(!ProjectionPushdown.apply(&mut p));
    }
}

//! Shared predictions: when two or more consumers (evaluations, predictions
//! outputs) need the predictions of one model on one part of a split, a
//! `predict` node computes them once and each consumer reads them. An
//! evaluation of one model on two or more split parts also gets a `predict`
//! node per part (even as their only consumer), so the parts are predicted by
//! tasks that run side by side rather than one after the other in its task.
//!
//! In: the plan after fan-out. Out: one `predict:<model>@<dataset>` node per
//! shared (model, dataset), fed by the fit's model and the split part's rows,
//! with a predictions edge to every consumer (which keeps its data edge: an
//! evaluation still reads the labels, an output still writes the rows).
//! Must not: share predictions a consumer would make differently: only the
//! evaluation's own model on a dataset it names exactly (not a fold's model,
//! not a shard's), and only a split's part (one partition, so the rows
//! predicted are the rows each consumer would have predicted, in its order).

use super::Rule;
use crate::compile::logical::{EdgeKind, LNode, LOp, LogicalPlan};
use crate::frontend::pipeline::OutputKind;
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::BTreeMap;

pub struct SharedPredictions;

/// (fit node, split node, part label): one set of predictions.
type Key = (NodeIndex, NodeIndex, String);

/// A consumer of predictions: the node and its data edge's weight.
type Use = (NodeIndex, EdgeKind);

fn model_of(plan: &LogicalPlan, n: NodeIndex) -> Option<NodeIndex> {
    plan.graph
        .edges_directed(n, Direction::Incoming)
        .find(|e| {
            matches!(e.weight(), EdgeKind::Model)
                && matches!(plan.graph[e.source()].op, LOp::Fit { .. })
        })
        .map(|e| e.source())
}

/// The split parts `n` reads, as `(split node, dataset id text, edge weight)`.
fn split_parts(plan: &LogicalPlan, n: NodeIndex) -> Vec<(NodeIndex, String, EdgeKind)> {
    plan.graph
        .edges_directed(n, Direction::Incoming)
        .filter_map(|e| match (e.weight(), &plan.graph[e.source()].op) {
            (EdgeKind::Data { part: Some(p), .. }, LOp::Split { split }) => Some((
                e.source(),
                format!("{}.{}", split.name.value, p.label()),
                e.weight().clone(),
            )),
            _ => None,
        })
        .collect()
}

impl Rule for SharedPredictions {
    fn name(&self) -> &'static str {
        "shared predictions"
    }

    fn apply(&self, plan: &mut LogicalPlan) -> bool {
        let mut uses: BTreeMap<Key, (String, Vec<Use>)> = BTreeMap::new();
        for n in plan.sorted_nodes() {
            let wanted: Vec<String> = match &plan.graph[n].op {
                LOp::Evaluate { evaluation } => {
                    evaluation.data.iter().map(|r| r.value.clone()).collect()
                }
                LOp::Sink { output } if matches!(output.kind, OutputKind::Predictions { .. }) => {
                    split_parts(plan, n).into_iter().map(|p| p.1).collect()
                }
                _ => continue,
            };
            let Some(m) = model_of(plan, n) else { continue };
            for (split, data, edge) in split_parts(plan, n) {
                if !wanted.contains(&data) {
                    continue;
                }
                let e = uses
                    .entry((m, split, data.clone()))
                    .or_insert_with(|| (data, Vec::new()));
                if !e.1.iter().any(|(c, _)| *c == n) {
                    e.1.push((n, edge));
                }
            }
        }
        // An evaluation that needs predictions on two or more datasets gets a
        // predict node for each even when it is their only consumer: the
        // predictions then run as tasks side by side (on two workers) instead
        // of one after the other inside the evaluation's task.
        let mut keys_of: BTreeMap<NodeIndex, usize> = BTreeMap::new();
        for (_, consumers) in uses.values() {
            for (c, _) in consumers {
                if matches!(plan.graph[*c].op, LOp::Evaluate { .. }) {
                    *keys_of.entry(*c).or_default() += 1;
                }
            }
        }
        let mut changed = false;
        for ((m, split, _), (data, consumers)) in uses {
            let side_by_side = consumers
                .iter()
                .any(|(c, _)| keys_of.get(c).is_some_and(|&k| k >= 2));
            if consumers.len() < 2 && !side_by_side {
                continue;
            }
            let model = plan.graph[m].op.name();
            let op = LOp::Predict { model, data };
            if plan.find(&format!("predict:{}", op.name())).is_some() {
                continue;
            }
            let span = plan.graph[consumers[0].0].span;
            let p = plan.graph.add_node(LNode { op, span });
            plan.graph.add_edge(m, p, EdgeKind::Model);
            plan.graph.add_edge(split, p, consumers[0].1.clone());
            for (c, _) in consumers {
                plan.graph.add_edge(p, c, EdgeKind::Predictions);
            }
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::testutil::plan;

    const PIPELINE: &str = r#"
[sources.g]
kind = "synthetic"
generator = "classification"
rows = 100
[splits.s]
kind = "holdout"
input = "g"
test_fraction = 0.2
[models.f]
estimator = "random_forest"
input = "s.train"
target = "y"
[evaluations.e]
model = "f"
data = ["s.train", "s.test"]
metrics = ["accuracy"]
[outputs.p]
kind = "predictions"
model = "f"
data = "s.test"
path = "out/p.parquet"
"#;

    #[test]
    fn an_evaluation_and_a_predictions_output_share_the_test_predictions() {
        let mut p = plan(PIPELINE);
        assert!(SharedPredictions.apply(&mut p));
        let shown = p.display();
        assert!(
            shown.contains("predict:f@s.test (model f on s.test, shared) <- fit:f, split:s[test]"),
            "{shown}"
        );
        assert!(
            shown.contains("evaluate:e (accuracy) <- fit:f, predict:f@s.test"),
            "{shown}"
        );
        assert!(
            shown.contains("sink:p (out/p.parquet) <- fit:f, predict:f@s.test, split:s[test]"),
            "{shown}"
        );
        // The training rows have one consumer, but it evaluates two parts:
        // each part gets its own predict node, to run side by side.
        assert!(
            shown.contains(
                "predict:f@s.train (model f on s.train, shared) <- fit:f, split:s[train]"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("evaluate:e (accuracy) <- fit:f, predict:f@s.test, predict:f@s.train"),
            "{shown}"
        );
        // Once is enough.
        assert!(!SharedPredictions.apply(&mut p));
    }

    #[test]
    fn one_consumer_shares_nothing() {
        let text = PIPELINE.replace("data = \"s.test\"\n", "data = \"s.train\"\n");
        let text = text.replace("data = [\"s.train\", \"s.test\"]", "data = [\"s.test\"]");
        let mut p = plan(&text);
        assert!(!SharedPredictions.apply(&mut p), "{}", p.display());
    }
}

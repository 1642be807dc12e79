//! Shared predictions: when two or more consumers (evaluations, predictions
//! outputs) need the predictions of one model on one part of a split, a
//! `predict` node computes them once and each consumer reads them.
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
        let mut changed = false;
        for ((m, split, _), (data, consumers)) in uses {
            if consumers.len() < 2 {
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
        // The training rows have one consumer: nothing to share.
        assert!(!shown.contains("predict:f@s.train"), "{shown}");
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

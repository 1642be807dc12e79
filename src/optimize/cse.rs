//! Common-subexpression elimination: the same source, or the same transform of the
//! same input, is computed once; its consumers share the result.

use super::Rule;
use crate::compile::logical::{EdgeKind, LOp, LogicalPlan};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::HashMap;

pub struct CommonSubexpressions;

/// What makes two nodes compute the same rows: their operation (names aside) and inputs.
fn same(plan: &LogicalPlan, a: NodeIndex, b: NodeIndex) -> bool {
    let (na, nb) = (&plan.graph[a].op, &plan.graph[b].op);
    let op_same = match (na, nb) {
        (
            LOp::Source {
                source: x,
                columns: cx,
                files: fx,
                on_workers: wx,
            },
            LOp::Source {
                source: y,
                columns: cy,
                files: fy,
                on_workers: wy,
            },
        ) => x.kind == y.kind && x.after == y.after && cx == cy && fx == fy && wx == wy,
        (LOp::Transform { steps: x, .. }, LOp::Transform { steps: y, .. }) => x == y,
        _ => false,
    };
    op_same
        && plan
            .inputs(a)
            .iter()
            .map(|(n, e)| (*n, (*e).clone()))
            .eq(plan.inputs(b).iter().map(|(n, e)| (*n, (*e).clone())))
}

impl Rule for CommonSubexpressions {
    fn name(&self) -> &'static str {
        "common-subexpression elimination"
    }

    fn apply(&self, plan: &mut LogicalPlan) -> bool {
        let mut changed = false;
        // Repeat: merging two sources can make their transforms identical.
        // Each pass buckets the nodes by a printed key of what `same`
        // compares, so only nodes of one bucket are compared: a pairwise
        // search over every node was quadratic (2,000 parallel transforms
        // took most of a second to plan).
        loop {
            let mut buckets: HashMap<String, Vec<NodeIndex>> = HashMap::new();
            let mut merges: Vec<(NodeIndex, NodeIndex)> = Vec::new();
            for n in plan.sorted_nodes() {
                let Some(k) = key(plan, n) else { continue };
                let bucket = buckets.entry(k).or_default();
                match bucket.iter().find(|keep| same(plan, **keep, n)) {
                    Some(keep) => merges.push((*keep, n)),
                    None => bucket.push(n),
                }
            }
            if merges.is_empty() {
                break;
            }
            for (keep, drop) in merges {
                let outs: Vec<(NodeIndex, EdgeKind)> = plan
                    .graph
                    .edges_directed(drop, Direction::Outgoing)
                    .map(|e| (e.target(), e.weight().clone()))
                    .collect();
                for (t, w) in outs {
                    plan.graph.add_edge(keep, t, w);
                }
                plan.graph.remove_node(drop);
            }
            changed = true;
        }
        changed
    }
}

/// A printed form of what [`same`] compares, for bucketing: nodes with
/// different keys are never the same; nodes with one key are compared by
/// `same` itself. `None` for operations that are never merged.
fn key(plan: &LogicalPlan, n: NodeIndex) -> Option<String> {
    let op = match &plan.graph[n].op {
        LOp::Source {
            source,
            columns,
            files,
            on_workers,
        } => serde_json::json!([
            "source",
            source.kind,
            source.after,
            columns,
            files,
            on_workers
        ]),
        LOp::Transform { steps, .. } => serde_json::json!(["transform", steps]),
        _ => return None,
    };
    let inputs: Vec<(usize, &EdgeKind)> = plan
        .inputs(n)
        .into_iter()
        .map(|(i, e)| (i.index(), e))
        .collect();
    let mut v = serde_json::json!([op, inputs]);
    without_spans(&mut v);
    Some(v.to_string())
}

/// Where a value was written is not what it says (`Spanned`'s equality
/// ignores it too): every `span` field goes.
fn without_spans(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("span");
            m.values_mut().for_each(without_spans);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_spans),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::testutil::plan;

    #[test]
    fn merges_the_same_csv_loaded_twice() {
        let mut p = plan(
            r#"
[sources.a]
kind = "csv"
path = "x.csv"
[sources.b]
kind = "csv"
path = "x.csv"
[outputs.oa]
kind = "dataset"
data = "a"
path = "out/a"
[outputs.ob]
kind = "dataset"
data = "b"
path = "out/b"
"#,
        );
        assert!(CommonSubexpressions.apply(&mut p));
        assert_eq!(
            p.display(),
            "sink:oa (out/a) <- source:a\nsink:ob (out/b) <- source:a\nsource:a (csv x.csv)\n"
        );
    }

    #[test]
    fn merged_sources_make_their_equal_transforms_one() {
        // Written at different places (different spans), saying the same thing.
        let mut p = plan(
            r#"
[sources.a]
kind = "csv"
path = "x.csv"
[sources.b]
kind = "csv"
path = "x.csv"
[transforms.ta]
input = "a"
steps = [{ op = "derive", column = "z", expr = "x0 + 1" }]
[transforms.tb]
input = "b"
steps = [{ op = "derive", column = "z", expr = "x0 + 1" }]
[transforms.tc]
input = "b"
steps = [{ op = "derive", column = "z", expr = "x0 + 2" }]
[outputs.oa]
kind = "dataset"
data = "ta"
path = "out/a"
[outputs.ob]
kind = "dataset"
data = "tb"
path = "out/b"
[outputs.oc]
kind = "dataset"
data = "tc"
path = "out/c"
"#,
        );
        assert!(CommonSubexpressions.apply(&mut p));
        let shown = p.display();
        assert!(shown.contains("sink:ob (out/b) <- transform:ta"), "{shown}");
        assert!(shown.contains("sink:oc (out/c) <- transform:tc"), "{shown}");
        assert!(
            shown.contains("transform:tc (derive) <- source:a"),
            "{shown}"
        );
        assert!(
            !shown.contains("source:b") && !shown.contains("transform:tb"),
            "{shown}"
        );
    }

    #[test]
    fn keeps_different_sources_apart() {
        let mut p = plan(
            "[sources.a]\nkind = \"csv\"\npath = \"x.csv\"\n[sources.b]\nkind = \"csv\"\npath = \"y.csv\"\n[outputs.oa]\nkind = \"dataset\"\ndata = \"a\"\npath = \"out/a\"\n[outputs.ob]\nkind = \"dataset\"\ndata = \"b\"\npath = \"out/b\"\n",
        );
        assert!(!CommonSubexpressions.apply(&mut p));
    }
}

//! Common-subexpression elimination: the same source, or the same transform of the
//! same input, is computed once; its consumers share the result.

use super::Rule;
use crate::compile::logical::{EdgeKind, LOp, LogicalPlan};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

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
        loop {
            let nodes = plan.sorted_nodes();
            let pair = nodes.iter().enumerate().find_map(|(i, a)| {
                nodes[i + 1..]
                    .iter()
                    .find(|b| same(plan, *a, **b))
                    .map(|b| (*a, *b))
            });
            let Some((keep, drop)) = pair else { break };
            let outs: Vec<(NodeIndex, EdgeKind)> = plan
                .graph
                .edges_directed(drop, Direction::Outgoing)
                .map(|e| (e.target(), e.weight().clone()))
                .collect();
            for (t, w) in outs {
                plan.graph.add_edge(keep, t, w);
            }
            plan.graph.remove_node(drop);
            changed = true;
        }
        changed
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
    fn keeps_different_sources_apart() {
        let mut p = plan(
            "[sources.a]\nkind = \"csv\"\npath = \"x.csv\"\n[sources.b]\nkind = \"csv\"\npath = \"y.csv\"\n[outputs.oa]\nkind = \"dataset\"\ndata = \"a\"\npath = \"out/a\"\n[outputs.ob]\nkind = \"dataset\"\ndata = \"b\"\npath = \"out/b\"\n",
        );
        assert!(!CommonSubexpressions.apply(&mut p));
    }
}

//! Dead-step elimination: drop every node whose result reaches no evaluation or sink.

use super::Rule;
use crate::compile::logical::{LOp, LogicalPlan};
use petgraph::Direction;
use std::collections::BTreeSet;

pub struct DeadSteps;

impl Rule for DeadSteps {
    fn name(&self) -> &'static str {
        "dead-step elimination"
    }

    fn apply(&self, plan: &mut LogicalPlan) -> bool {
        let g = &plan.graph;
        let mut live: BTreeSet<_> = g
            .node_indices()
            .filter(|n| matches!(g[*n].op, LOp::Evaluate { .. } | LOp::Sink { .. }))
            .collect();
        let mut stack: Vec<_> = live.iter().copied().collect();
        while let Some(n) = stack.pop() {
            for p in g.neighbors_directed(n, Direction::Incoming) {
                if live.insert(p) {
                    stack.push(p);
                }
            }
        }
        let dead: Vec<_> = g.node_indices().filter(|n| !live.contains(n)).collect();
        for n in &dead {
            plan.graph.remove_node(*n);
        }
        !dead.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::testutil::plan;

    #[test]
    fn removes_an_unused_source_and_transform() {
        let mut p = plan(
            r#"
[sources.a]
kind = "synthetic"
generator = "regression"
rows = 10
[sources.unused]
kind = "synthetic"
generator = "regression"
rows = 10
[transforms.t]
input = "unused"
steps = [{ op = "drop", columns = ["x0"] }]
[outputs.o]
kind = "dataset"
data = "a"
path = "out/a"
"#,
        );
        assert!(DeadSteps.apply(&mut p));
        assert_eq!(
            p.display(),
            "sink:o (out/a) <- source:a\nsource:a (synthetic 10 rows)\n"
        );
        assert!(!DeadSteps.apply(&mut p), "a second run changes nothing");
    }
}

//! Fusion: consecutive row-wise transforms (select, drop, derive, filter, cast)
//! become one transform, run as one task per partition.

use super::Rule;
use crate::compile::logical::{EdgeKind, LOp, LogicalPlan};
use crate::frontend::pipeline::Op;
use petgraph::Direction;
use petgraph::visit::EdgeRef;

pub struct Fusion;

fn row_wise(op: &LOp) -> bool {
    match op {
        LOp::Transform { steps, .. } => steps.iter().all(|s| {
            matches!(
                s.value,
                Op::Select { .. }
                    | Op::Drop { .. }
                    | Op::Derive { .. }
                    | Op::Filter { .. }
                    | Op::Cast { .. }
            )
        }),
        _ => false,
    }
}

impl Rule for Fusion {
    fn name(&self) -> &'static str {
        "fusion of row-wise transforms"
    }

    fn apply(&self, plan: &mut LogicalPlan) -> bool {
        let mut changed = false;
        loop {
            // A row-wise transform whose only input is a row-wise transform with no other consumer.
            let pair = plan.sorted_nodes().into_iter().find_map(|down| {
                if !row_wise(&plan.graph[down].op) {
                    return None;
                }
                let ins: Vec<_> = plan
                    .graph
                    .edges_directed(down, Direction::Incoming)
                    .collect();
                let [e] = ins.as_slice() else { return None };
                let up = e.source();
                let plain = matches!(e.weight(), EdgeKind::Data { part: None, .. });
                let single = plan.graph.edges_directed(up, Direction::Outgoing).count() == 1;
                (plain && single && row_wise(&plan.graph[up].op)).then_some((up, down))
            });
            let Some((up, down)) = pair else { break };
            let (up_names, up_steps) = match &plan.graph[up].op {
                LOp::Transform { names, steps } => (names.clone(), steps.clone()),
                _ => break,
            };
            if let LOp::Transform { names, steps } = &mut plan.graph[down].op {
                let mut n = up_names;
                n.append(names);
                *names = n;
                let mut s = up_steps;
                s.append(steps);
                *steps = s;
            }
            let ins: Vec<_> = plan
                .graph
                .edges_directed(up, Direction::Incoming)
                .map(|e| (e.source(), e.weight().clone()))
                .collect();
            for (s, w) in ins {
                plan.graph.add_edge(s, down, w);
            }
            plan.graph.remove_node(up);
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
    fn fuses_a_chain_of_row_wise_transforms() {
        let mut p = plan(
            r#"
[sources.g]
kind = "synthetic"
generator = "gaussian"
columns = ["a"]
rows = 100
[transforms.t1]
input = "g"
steps = [{ op = "derive", column = "b", expr = "4 * a + 3" }]
[transforms.t2]
input = "t1"
steps = [{ op = "filter", expr = "b > 0" }]
[outputs.o]
kind = "dataset"
data = "t2"
path = "out/g"
"#,
        );
        assert!(Fusion.apply(&mut p));
        assert!(
            p.display()
                .contains("transform:t1+t2 (derive, filter) <- source:g"),
            "{}",
            p.display()
        );
    }

    #[test]
    fn does_not_fuse_a_transform_that_feeds_two_steps() {
        let mut p = plan(
            "[sources.g]\nkind = \"synthetic\"\ngenerator = \"gaussian\"\nrows = 5\n[transforms.t1]\ninput = \"g\"\nsteps = [{ op = \"drop\", columns = [\"x1\"] }]\n[transforms.t2]\ninput = \"t1\"\nsteps = [{ op = \"drop\", columns = [\"x2\"] }]\n[outputs.a]\nkind = \"dataset\"\ndata = \"t1\"\npath = \"out/a\"\n[outputs.b]\nkind = \"dataset\"\ndata = \"t2\"\npath = \"out/b\"\n",
        );
        assert!(!Fusion.apply(&mut p));
    }
}

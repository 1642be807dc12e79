//! Fusion: consecutive row-wise transforms (select, drop, derive, filter, cast)
//! become one transform, run as one task per partition.

use super::Rule;
use crate::compile::logical::{EdgeKind, LOp, LogicalPlan};
use crate::frontend::pipeline::Op;
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
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
        // One scan finds every candidate; each is checked again, live, when
        // its turn comes (an earlier fusion may have changed or removed it).
        // Rescanning the whole plan after every fusion was quadratic.
        loop {
            let downs: Vec<NodeIndex> = plan
                .sorted_nodes()
                .into_iter()
                .filter(|d| fusable(plan, *d).is_some())
                .collect();
            if downs.is_empty() {
                break;
            }
            for down in downs {
                if !plan.graph.contains_node(down) {
                    continue;
                }
                let Some(up) = fusable(plan, down) else {
                    continue;
                };
                fuse(plan, up, down);
                changed = true;
            }
        }
        changed
    }
}

/// The input `down` fuses with: a row-wise transform whose only input is a
/// plain data edge from a row-wise transform with no other consumer. The
/// cheap conditions come first: a source read by thousands of transforms is
/// never counted.
fn fusable(plan: &LogicalPlan, down: NodeIndex) -> Option<NodeIndex> {
    if !row_wise(&plan.graph[down].op) {
        return None;
    }
    let mut ins = plan.graph.edges_directed(down, Direction::Incoming);
    let e = ins.next()?;
    if ins.next().is_some() {
        return None;
    }
    let up = e.source();
    let plain = matches!(e.weight(), EdgeKind::Data { part: None, .. });
    if !plain || !row_wise(&plan.graph[up].op) {
        return None;
    }
    let mut outs = plan.graph.edges_directed(up, Direction::Outgoing);
    (outs.next().is_some() && outs.next().is_none()).then_some(up)
}

/// `up`'s steps go in front of `down`'s, `up`'s inputs become `down`'s, and
/// `up` is removed.
fn fuse(plan: &mut LogicalPlan, up: NodeIndex, down: NodeIndex) {
    let (up_names, up_steps) = match &plan.graph[up].op {
        LOp::Transform { names, steps } => (names.clone(), steps.clone()),
        _ => return,
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

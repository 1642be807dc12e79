//! Fan-out: decide how each fit is cut into parallel tasks. A forest becomes one
//! task per group of trees, a per-shard fit one task per shard, a linear or ridge
//! regression one partial-statistics task per partition plus a reduce.
//!
//! The cut depends only on the pipeline, never on the machine, so that plans (and
//! the seeds derived from task identities) are the same everywhere.

use super::Rule;
use crate::compile::logical::{self, LOp, LogicalPlan};
use crate::frontend::pipeline::{EstimatorKind, Params};

pub struct Fanout;

/// Trees per forest task: small enough to spread 100 trees over 10 tasks.
pub const TREES_PER_TASK: u32 = 10;

impl Rule for Fanout {
    fn name(&self) -> &'static str {
        "fan-out of fits"
    }

    fn apply(&self, plan: &mut LogicalPlan) -> bool {
        let mut changed = false;
        for n in plan.sorted_nodes() {
            let LOp::Fit { model, fanout } = &mut plan.graph[n].op else {
                continue;
            };
            let new = if model.per_shard {
                logical::Fanout::PerShard
            } else {
                match (&model.estimator.value, &model.params) {
                    (EstimatorKind::RandomForest, Params::Tree(t)) if t.n_trees > 1 => {
                        logical::Fanout::TreeGroups {
                            groups: t.n_trees.div_ceil(TREES_PER_TASK),
                            trees: t.n_trees,
                        }
                    }
                    // Partial sums per partition need features that do not depend
                    // on other partitions: no fitted preprocessing.
                    (EstimatorKind::LinearRegression | EstimatorKind::Ridge, _)
                        if model.preprocess.is_empty() =>
                    {
                        logical::Fanout::PartialStats
                    }
                    _ => logical::Fanout::Single,
                }
            };
            if *fanout != new {
                *fanout = new;
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::testutil::plan;

    #[test]
    fn a_forest_of_100_trees_is_10_tasks() {
        let mut p = plan(
            "[sources.g]\nkind = \"synthetic\"\ngenerator = \"classification\"\nrows = 100\n[models.f]\nestimator = \"random_forest\"\ninput = \"g\"\ntarget = \"y\"\nparams = { n_trees = 100 }\n[outputs.o]\nkind = \"model\"\nmodel = \"f\"\npath = \"out/f.model\"\n",
        );
        assert!(Fanout.apply(&mut p));
        let f = p.find("fit:f").unwrap();
        assert!(matches!(
            p.graph[f].op,
            LOp::Fit {
                fanout: logical::Fanout::TreeGroups {
                    groups: 10,
                    trees: 100
                },
                ..
            }
        ));
    }
}

//! The optimizer: rewrite rules over the [`LogicalPlan`], one file per rule.
//!
//! In: a logical plan from `compile`. Out: an equivalent plan that does less work,
//! and, for `plan --explain`, the plan after each rule that changed it.
//! Must not: change what a pipeline computes (every rule keeps every evaluation's
//! and output's result), or depend on the machine: the same file gives the same plan.

mod cse;
mod dead_steps;
mod fanout;
mod fusion;
mod projection;
mod shared_predictions;

use crate::compile::logical::LogicalPlan;

/// One rewrite. `apply` returns whether it changed the plan.
pub trait Rule {
    fn name(&self) -> &'static str;
    fn apply(&self, plan: &mut LogicalPlan) -> bool;
}

/// The rules in the order they run.
pub fn rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(dead_steps::DeadSteps),
        Box::new(cse::CommonSubexpressions),
        Box::new(projection::ProjectionPushdown),
        Box::new(fusion::Fusion),
        Box::new(fanout::Fanout),
        Box::new(shared_predictions::SharedPredictions),
    ]
}

/// The plan after one rule, for `--explain`.
pub struct Step {
    pub rule: &'static str,
    pub plan: String,
}

/// Run every rule once, in order; keep a listing after each rule that changed the plan.
pub fn optimize(mut plan: LogicalPlan) -> (LogicalPlan, Vec<Step>) {
    let mut steps = Vec::new();
    for rule in rules() {
        if rule.apply(&mut plan) {
            steps.push(Step {
                rule: rule.name(),
                plan: plan.display(),
            });
        }
    }
    (plan, steps)
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::compile::logical::LogicalPlan;

    /// The logical plan of a TOML pipeline text (panics on invalid test input).
    pub fn plan(text: &str) -> LogicalPlan {
        let mut parsed = crate::frontend::parse_str("t.toml", text);
        let checked = crate::compile::check(&mut parsed);
        let errors: Vec<String> = parsed
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.render(&parsed.file))
            .collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        checked.expect("checked").plan
    }
}

//! The compile phase: a lowered [`Pipeline`] → a checked, resolved pipeline.
//!
//! In: the model from `spec`. Out: [`Checked`] (the pipeline with every reference
//! resolved) and the graph-level diagnostics. Must not: parse text, or touch data
//! files unless asked (`check --data`).

pub mod data_check;
pub mod logical;
pub mod resolve;
pub mod schema;
pub mod shard_files;

use crate::frontend::{Diagnostic, Parsed, Pipeline};
pub use resolve::Resolved;
use std::collections::BTreeMap;

/// A pipeline whose names all resolve, with its logical plan.
#[derive(Debug)]
pub struct Checked {
    pub pipeline: Pipeline,
    pub resolved: Resolved,
    pub plan: logical::LogicalPlan,
}

/// Run every check that needs no data; diagnostics are appended to `parsed`'s.
pub fn check(parsed: &mut Parsed) -> Option<Checked> {
    check_with(parsed, &BTreeMap::new())
}

/// As [`check`], with source schemas read from the data (`--data`), by source index.
pub fn check_with(
    parsed: &mut Parsed,
    source_schemas: &BTreeMap<usize, schema::Schema>,
) -> Option<Checked> {
    // Names after a syntax error may be missing from the recovered tree: graph
    // checks would report guesses, so they wait until the syntax is fixed.
    if parsed
        .diagnostics
        .iter()
        .any(|d| d.code == crate::frontend::Code::Syntax)
    {
        sort(&mut parsed.diagnostics);
        return None;
    }
    let pipeline = parsed.pipeline.clone()?;
    let (resolved, diags) = resolve::resolve(&pipeline);
    let resolve_failed = diags.iter().any(Diagnostic::is_error) || parsed.has_errors();
    parsed.diagnostics.extend(diags);
    if !resolve_failed && let Some(d) = resolve::nothing_to_run(&pipeline) {
        parsed.diagnostics.push(d);
    }
    let mut plan = None;
    if !resolve_failed {
        let (p, diags) = logical::build(&pipeline, &resolved, source_schemas);
        parsed.diagnostics.extend(diags);
        plan = Some(p);
    }
    sort(&mut parsed.diagnostics);
    match plan {
        Some(plan) if !parsed.has_errors() => Some(Checked {
            pipeline,
            resolved,
            plan,
        }),
        _ => None,
    }
}

/// File order, errors before warnings at the same place; duplicates removed.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        let ka = (a.span.map(|s| s.start).unwrap_or(0), a.severity, a.code);
        let kb = (b.span.map(|s| s.start).unwrap_or(0), b.severity, b.code);
        ka.cmp(&kb)
    });
    diags.dedup();
}

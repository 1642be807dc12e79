//! The compile phase: a lowered [`Pipeline`] → a checked, resolved pipeline.
//!
//! In: the model from `spec`. Out: [`Checked`] (the pipeline with every reference
//! resolved) and the graph-level diagnostics. Must not: parse text, or touch data
//! files unless asked (`check --data`).

pub mod resolve;

use crate::spec::{Diagnostic, Parsed, Pipeline};
pub use resolve::Resolved;

/// A pipeline whose names all resolve.
#[derive(Debug)]
pub struct Checked {
    pub pipeline: Pipeline,
    pub resolved: Resolved,
}

/// Run every check that needs no data; diagnostics are appended to `parsed`'s.
pub fn check(parsed: &mut Parsed) -> Option<Checked> {
    let pipeline = parsed.pipeline.clone()?;
    let (resolved, diags) = resolve::resolve(&pipeline);
    parsed.diagnostics.extend(diags);
    sort(&mut parsed.diagnostics);
    (!parsed.has_errors()).then_some(Checked { pipeline, resolved })
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

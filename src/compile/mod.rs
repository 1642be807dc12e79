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
        parsed.diagnostics.extend(size_warnings(&pipeline, &p));
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

/// W0302: a source estimated larger than the memory of the cluster the file
/// declares (`[cluster]` with `workers` and `memory_limit`): it can run only
/// by spilling to the workers' disks. Machine-independent: only what the file
/// says is compared.
fn size_warnings(p: &crate::frontend::Pipeline, plan: &logical::LogicalPlan) -> Vec<Diagnostic> {
    use crate::frontend::pipeline::Cluster;
    let Some(Cluster::Local {
        workers: Some(w),
        memory_limit: Some(m),
        ..
    }) = &p.cluster
    else {
        return Vec::new();
    };
    let total = u64::from(w.value).saturating_mul(m.value);
    let g = &plan.graph;
    let mut out = Vec::new();
    for n in plan.sorted_nodes() {
        let logical::LOp::Source { source, .. } = &g[n].op else {
            continue;
        };
        let est = g.edges(n).find_map(|e| match e.weight() {
            logical::EdgeKind::Data { schema, part: None } => schema.est_bytes(),
            _ => None,
        });
        if let Some(bytes) = est.filter(|b| *b > total) {
            out.push(
                Diagnostic::new(
                    crate::frontend::Code::ExceedsClusterMemory,
                    source.name.span,
                    format!(
                        "source `{}` is estimated at ~{}, more than the memory of the cluster this file declares ({} workers × {} = {})",
                        source.name.value,
                        human_bytes(bytes),
                        w.value,
                        human_bytes(m.value),
                        human_bytes(total)
                    ),
                )
                .with_help(format!(
                    "it can run only by spilling: the workers' data roots need ~{} free between them; use fewer rows, more workers or a larger `memory_limit`",
                    human_bytes(bytes.saturating_sub(total))
                )),
            );
        }
    }
    out
}

/// Bytes as the plan prints them (`plan::dot::human_bytes`, a later layer).
fn human_bytes(b: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
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

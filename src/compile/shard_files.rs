//! Shards by file: list the files behind a split with `by = "file"`, so that the
//! plan can give each file its own partition and name each shard by its stem.
//! Shards by worker (`by = "worker"`): one partition per named worker, each
//! read from the source's path under that worker's data root.
//!
//! In: a checked [`LogicalPlan`] and the folder relative paths are read from.
//! Out: the plan with each such split's shard names filled in and its source's
//! file list set (one read partition per file), or diagnostics: a source that is
//! not read from files, no file found, two files with the same stem, a reference
//! to a shard no file gives. Must not: read more than the folder listings (the
//! files themselves are read by the run), nor touch any other split.

use super::logical::{EdgeKind, LOp, LogicalPlan};
use crate::data::split::Part;
use crate::frontend::diag::{Code, Diagnostic};
use crate::frontend::pipeline::{ShardBy, SplitKind};
use crate::frontend::span::Spanned;
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::path::Path;

/// Fill in every split by file of `plan` from the files under `base`.
pub fn list(plan: &mut LogicalPlan, base: &Path) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let splits: Vec<NodeIndex> = plan
        .graph
        .node_indices()
        .filter(|n| {
            matches!(
                &plan.graph[*n].op,
                LOp::Split { split } if matches!(split.kind, SplitKind::Shards { by: ShardBy::File { .. } | ShardBy::Worker { .. }, .. })
            )
        })
        .collect();
    for n in splits {
        let span = plan.graph[n].span;
        let split_name = plan.graph[n].op.name();
        // Up from the split through row-wise transforms to the source: a
        // transform keeps its input's partitions, so file i stays partition i.
        let mut at = data_input(plan, n);
        while let Some(x) = at {
            if matches!(plan.graph[x].op, LOp::Transform { .. }) {
                at = data_input(plan, x);
            } else {
                break;
            }
        }
        let Some(src) = at else { continue };
        let LOp::Source { source, .. } = &plan.graph[src].op else {
            diags.push(
                Diagnostic::new(
                    Code::WrongStepKind,
                    span,
                    format!("split `{split_name}` shards by file or worker, but its input does not come from a source read from files"),
                )
                .with_help("shard a CSV, Parquet or Arrow source that names a folder or a glob, or use `by = \"rows\"`"),
            );
            continue;
        };
        if source.after.is_some() {
            diags.push(
                Diagnostic::new(
                    Code::Conflict,
                    span,
                    format!(
                        "split `{split_name}` shards by file, but source `{}` is written by this pipeline: its files are not known before the run",
                        source.name.value
                    ),
                )
                .with_help("shard by rows, or read the files in a second pipeline"),
            );
            continue;
        }
        let at_path = source.path().map(|p| p.span).unwrap_or(span);
        if let LOp::Split { split } = &plan.graph[n].op
            && let SplitKind::Shards {
                by: ShardBy::Worker { names },
                ..
            } = &split.kind
        {
            let names: Vec<String> = names.iter().map(|n| n.value.clone()).collect();
            match source.path() {
                Some(p)
                    if Path::new(&p.value).is_relative()
                        && !Path::new(&p.value)
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir)) =>
                {
                    let files = vec![p.value.clone(); names.len()];
                    if let LOp::Source {
                        files: f,
                        on_workers,
                        ..
                    } = &mut plan.graph[src].op
                    {
                        *f = Some(files);
                        *on_workers = Some(names);
                    }
                }
                _ => diags.push(
                    Diagnostic::new(
                        Code::WrongStepKind,
                        at_path,
                        format!(
                            "split `{split_name}` shards by worker: its source's path is read under each worker's --data-root, so it must be a relative path inside it (no `..`)"
                        ),
                    )
                    .with_help("give a CSV, Parquet or Arrow source a path like `shard.csv` or `data/part.parquet`"),
                ),
            }
            continue;
        }
        let files = match crate::data::source::list(source, base) {
            Ok(f) => f,
            Err(e) => {
                diags.push(
                    Diagnostic::new(
                        Code::MissingFile,
                        at_path,
                        format!("split `{split_name}` shards by file: {e}"),
                    )
                    .with_help("the path names a folder or a glob of the files, one shard each"),
                );
                continue;
            }
        };
        let stems: Vec<String> = files
            .iter()
            .map(|f| {
                Path::new(f)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| f.clone())
            })
            .collect();
        if let Some((i, s)) = stems
            .iter()
            .enumerate()
            .find(|(i, s)| stems[..*i].contains(s))
        {
            let first = stems.iter().position(|x| x == s).unwrap_or(0);
            diags.push(
                Diagnostic::new(
                    Code::DuplicateName,
                    at_path,
                    format!(
                        "split `{split_name}` shards by file, and `{}` and `{}` would both be shard `{s}`",
                        files[first], files[i]
                    ),
                )
                .with_help("shard names are file stems: give the files different names"),
            );
            continue;
        }
        // Every shard a step names must be one of the files.
        for e in plan.graph.edges_directed(n, Direction::Outgoing) {
            let EdgeKind::Data {
                part: Some(Part::Shard(s) | Part::ShardTrain(s) | Part::ShardValidation(s)),
                ..
            } = e.weight()
            else {
                continue;
            };
            if !stems.contains(s) {
                let user = &plan.graph[e.target()];
                diags.push(
                    Diagnostic::new(
                        Code::UnknownReference,
                        user.span,
                        format!(
                            "{} `{}` reads shard `{s}` of `{split_name}`, but no file is named `{s}`",
                            user.op.kind(),
                            user.op.name()
                        ),
                    )
                    .with_help(format!("the files give the shards {}", stems.join(", "))),
                );
            }
        }
        if let LOp::Source { files: f, .. } = &mut plan.graph[src].op {
            *f = Some(files);
        }
        if let LOp::Split { split } = &mut plan.graph[n].op
            && let SplitKind::Shards {
                by: ShardBy::File { names },
                ..
            } = &mut split.kind
        {
            *names = stems.into_iter().map(|s| Spanned::new(s, span)).collect();
        }
    }
    diags
}

/// The node a step reads its data from, if it has one.
fn data_input(plan: &LogicalPlan, n: NodeIndex) -> Option<NodeIndex> {
    plan.graph
        .edges_directed(n, Direction::Incoming)
        .find(|e| matches!(e.weight(), EdgeKind::Data { .. }))
        .map(|e| e.source())
}

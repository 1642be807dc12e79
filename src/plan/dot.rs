//! The task graph as Graphviz DOT, built with graphviz-rust.
//!
//! In: a physical plan (logical nodes with their tasks). Out: DOT text, emitted
//! deterministically (nodes and edges sorted by id). A fan-out of many tasks is one
//! node with a count, so 100 trees or N shards stay readable. A plan of more
//! than [`MAX_DRAWN_STEPS`] steps is drawn collapsed for a picture
//! ([`to_dot_for_picture`]): one node per step kind, edges counted, with a
//! note (the layout of thousands of nodes takes minutes; DOT text keeps every
//! step).
//! Must not: run Graphviz (that is `render`).

use super::PhysicalPlan;
use crate::compile::logical::{EdgeKind, Fanout, LOp, describe};
use graphviz_rust::dot_structures::{
    Attribute, Edge, EdgeTy, Graph, GraphAttributes, Id, Node, NodeId, Stmt, Vertex,
};
use graphviz_rust::printer::{DotPrinter, PrinterContext};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Logical,
    Physical,
}

fn esc(s: &str) -> Id {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    Id::Escaped(out)
}

fn attr(k: &str, v: &str) -> Attribute {
    Attribute(Id::Plain(k.into()), esc(v))
}

fn colour(op: &LOp) -> &'static str {
    match op {
        LOp::Source { .. } => "#cfe2f3",
        LOp::Transform { .. } => "#fff2cc",
        LOp::Split { .. } => "#ead1dc",
        LOp::Fit { .. } => "#f4cccc",
        LOp::Evaluate { .. } => "#d9ead3",
        LOp::Sink { .. } => "#eeeeee",
        LOp::Predict { .. } => "#fce5cd",
    }
}

/// Human size: 1.2 MB, 60,000 rows.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1000.0 && i < U.len() - 1 {
        x /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", U[i])
    }
}

pub fn human_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The DOT text of a plan at a level.
pub fn to_dot(p: &PhysicalPlan, level: Level) -> String {
    let lp = &p.logical;
    let mut stmts: Vec<Stmt> = vec![
        Stmt::GAttribute(GraphAttributes::Graph(vec![
            attr("rankdir", "TB"),
            attr(
                "label",
                &format!("{} ({:?} plan)", lp.name, level).to_lowercase(),
            ),
            attr("fontname", "Helvetica"),
        ])),
        Stmt::GAttribute(GraphAttributes::Node(vec![
            attr("shape", "box"),
            attr("style", "rounded,filled"),
            attr("fontname", "Helvetica"),
            attr("fontsize", "11"),
        ])),
        Stmt::GAttribute(GraphAttributes::Edge(vec![
            attr("fontname", "Helvetica"),
            attr("fontsize", "9"),
        ])),
    ];
    for n in lp.sorted_nodes() {
        let node = &lp.graph[n];
        let id = node.id();
        let mut label = format!(
            "{} {}\n{}",
            node.op.kind(),
            node.op.name(),
            describe(&node.op)
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
        );
        let rows = lp.graph.edges(n).find_map(|e| match e.weight() {
            EdgeKind::Data { schema, part: None } => Some(schema.clone()),
            _ => None,
        });
        if let Some(s) = rows {
            let cols = match (s.open, s.columns.len()) {
                (true, 0) => "columns from the file".to_string(),
                (true, n) => format!("≥ {n} columns"),
                (false, n) => format!("{n} columns"),
            };
            match (s.rows, s.est_bytes()) {
                (Some(r), Some(b)) => label.push_str(&format!(
                    "\n{} rows × {cols} · ~{}",
                    human_count(r),
                    human_bytes(b)
                )),
                _ => label.push_str(&format!("\n{cols}")),
            }
        }
        let mut attrs = vec![attr("fillcolor", colour(&node.op))];
        if level == Level::Physical {
            let tasks = p.tasks_of(&id);
            if tasks.len() > 1 {
                label.push_str(&format!("\n× {} tasks", tasks.len()));
                let folds = tasks
                    .iter()
                    .filter(|t| matches!(t.kind, super::TaskKind::FitFold { .. }))
                    .count();
                if folds > 0 {
                    label.push_str(&format!(" ({folds} for cross-validation)"));
                }
                attrs.push(attr("shape", "box3d"));
                attrs.push(attr("style", "filled"));
            }
            let mut workers: Vec<u32> = tasks.iter().filter_map(|t| t.worker).collect();
            workers.sort();
            workers.dedup();
            if !workers.is_empty() && p.workers.is_some_and(|w| w > 1) {
                label.push_str(&format!(
                    "\non worker{} {}",
                    if workers.len() > 1 { "s" } else { "" },
                    workers
                        .iter()
                        .map(|w| w.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
        } else if let LOp::Fit {
            fanout: Fanout::TreeGroups { .. } | Fanout::PerShard | Fanout::PartialStats,
            ..
        } = node.op
        {
            attrs.push(attr("shape", "box3d"));
            attrs.push(attr("style", "filled"));
        }
        attrs.push(attr("label", &label));
        stmts.push(Stmt::Node(Node::new(NodeId(esc(&id), None), attrs)));
    }
    let mut edges: Vec<(String, String, String, &'static str)> = (&lp.graph)
        .edge_references()
        .map(|e| {
            let (a, b) = (lp.graph[e.source()].id(), lp.graph[e.target()].id());
            let (label, style) = match e.weight() {
                EdgeKind::Data {
                    part: Some(pt),
                    schema,
                } => (
                    match schema.rows {
                        Some(r) => format!("{} ({} rows)", pt.label(), human_count(r)),
                        None => pt.label(),
                    },
                    "solid",
                ),
                EdgeKind::Data { .. } => (String::new(), "solid"),
                EdgeKind::Model => ("model".into(), "dashed"),
                EdgeKind::Metrics => ("metrics".into(), "dotted"),
                EdgeKind::Predictions => ("predictions".into(), "dashed"),
                EdgeKind::Order => ("after".into(), "dotted"),
            };
            (a, b, label, style)
        })
        .collect();
    edges.sort();
    edges.dedup();
    for (a, b, label, style) in edges {
        let mut attrs = vec![attr("style", style)];
        if !label.is_empty() {
            attrs.push(attr("label", &label));
        }
        stmts.push(Stmt::Edge(Edge {
            ty: EdgeTy::Pair(
                Vertex::N(NodeId(esc(&a), None)),
                Vertex::N(NodeId(esc(&b), None)),
            ),
            attributes: attrs,
        }));
    }
    let g = Graph::DiGraph {
        id: esc(&lp.name),
        strict: false,
        stmts,
    };
    let mut ctx = PrinterContext::default();
    let mut text = g.print(&mut ctx);
    text.push('\n');
    text
}

/// Steps beyond which a picture shows the plan collapsed by step kind.
pub const MAX_DRAWN_STEPS: usize = 150;

/// The DOT text to draw as a picture (SVG, PNG): [`to_dot`], or, for a plan
/// of more than [`MAX_DRAWN_STEPS`] steps, one node per step kind with its
/// step and task counts and the edges between kinds counted; then the note
/// that says so.
pub fn to_dot_for_picture(p: &PhysicalPlan, level: Level) -> (String, Option<String>) {
    let lp = &p.logical;
    let steps = lp.graph.node_count();
    if steps <= MAX_DRAWN_STEPS {
        return (to_dot(p, level), None);
    }
    let note = format!(
        "{steps} steps are more than {MAX_DRAWN_STEPS}: drawn collapsed by step kind; write .dot for every step"
    );
    // Kind → (steps, tasks, colour), in the order kinds first appear.
    let mut kinds: Vec<(&'static str, usize, usize, &'static str)> = Vec::new();
    for n in lp.sorted_nodes() {
        let node = &lp.graph[n];
        let k = node.op.kind();
        let tasks = p.tasks_of(&node.id()).len();
        match kinds.iter_mut().find(|x| x.0 == k) {
            Some(x) => {
                x.1 += 1;
                x.2 += tasks;
            }
            None => kinds.push((k, 1, tasks, colour(&node.op))),
        }
    }
    let mut stmts: Vec<Stmt> = vec![
        Stmt::GAttribute(GraphAttributes::Graph(vec![
            attr("rankdir", "TB"),
            attr(
                "label",
                &format!("{} ({:?} plan)\n{note}", lp.name, level).to_lowercase(),
            ),
            attr("fontname", "Helvetica"),
        ])),
        Stmt::GAttribute(GraphAttributes::Node(vec![
            attr("shape", "box3d"),
            attr("style", "filled"),
            attr("fontname", "Helvetica"),
            attr("fontsize", "11"),
        ])),
    ];
    for (k, n, tasks, fill) in &kinds {
        let mut label = format!("{k} × {n} step{}", if *n == 1 { "" } else { "s" });
        if level == Level::Physical {
            label.push_str(&format!("\n{tasks} tasks"));
        }
        stmts.push(Stmt::Node(Node::new(
            NodeId(esc(k), None),
            vec![attr("fillcolor", fill), attr("label", &label)],
        )));
    }
    let mut edges: std::collections::BTreeMap<(&'static str, &'static str), usize> =
        std::collections::BTreeMap::new();
    for e in (&lp.graph).edge_references() {
        let a = lp.graph[e.source()].op.kind();
        let b = lp.graph[e.target()].op.kind();
        *edges.entry((a, b)).or_default() += 1;
    }
    for ((a, b), n) in edges {
        stmts.push(Stmt::Edge(Edge {
            ty: EdgeTy::Pair(
                Vertex::N(NodeId(esc(a), None)),
                Vertex::N(NodeId(esc(b), None)),
            ),
            attributes: vec![attr("label", &format!("{n}"))],
        }));
    }
    let g = Graph::DiGraph {
        id: esc(&lp.name),
        strict: false,
        stmts,
    };
    let mut ctx = PrinterContext::default();
    let mut text = g.print(&mut ctx);
    text.push('\n');
    (text, Some(note))
}

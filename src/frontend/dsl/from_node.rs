//! A checked [`Node`] tree (from either front end) → dagml statements, for
//! `dagml convert --to dagml`. Keeps what the file says, value by value (explicit
//! defaults stay explicit); steps come out in file order.
//!
//! In: a tree that lowered without errors (so every key is known and well typed).
//! Out: a [`File`] for `print`. Must not: lose a key: anything a statement form
//! has no clause for is written as a `key = value` parameter.

use super::ast::*;
use super::print::is_word;
use crate::frontend::node::{Node, Table, Value};
use crate::frontend::span::{Span, Spanned};

fn w(s: &str, span: Span) -> Word {
    Spanned::new(s.to_string(), span)
}

/// A string value as a bare word when it reads back the same, else quoted.
fn sval(s: &str, span: Span, quoted: bool) -> Val {
    if !quoted && is_word(s) {
        Val::new(ValKind::Word(s.to_string()), span)
    } else {
        Val::new(ValKind::Str(s.to_string()), span)
    }
}

/// Keys whose string values are always written in quotes (paths, free text).
fn quoted_key(k: &str) -> bool {
    matches!(
        k,
        "path"
            | "description"
            | "memory_limit"
            | "scheduler"
            | "delimiter"
            | "value"
            | "na_values"
            | "name"
    )
}

fn val(n: &Node, quoted: bool) -> Val {
    let kind = match &n.value {
        Value::Str(s) => return sval(s, n.span, quoted),
        Value::Int(i) => ValKind::Int(*i),
        Value::Float(x) => ValKind::Float(*x),
        Value::Bool(b) => ValKind::Bool(*b),
        Value::Datetime(d) => ValKind::Str(d.clone()),
        Value::Array(items) => ValKind::List(items.iter().map(|x| val(x, quoted)).collect()),
        Value::Table(t) => ValKind::Table(params(t, &[])),
    };
    Val::new(kind, n.span)
}

fn params(t: &Table, skip: &[&str]) -> Vec<Param> {
    t.entries
        .iter()
        .filter(|(k, _)| !skip.contains(&k.value.as_str()))
        .map(|(k, v)| Param {
            key: k.clone(),
            value: val(v, quoted_key(&k.value)),
        })
        .collect()
}

fn get_str<'a>(t: &'a Table, k: &str) -> Option<&'a str> {
    match t.get(k).map(|n| &n.value) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

fn list_val(n: &Node) -> Val {
    match &n.value {
        Value::Array(_) => val(n, false),
        _ => Val::new(ValKind::List(vec![val(n, false)]), n.span),
    }
}

/// An expression as one line of dagml text.
fn expr_text(s: &str) -> String {
    let one: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    one.trim().to_string()
}

fn op(n: &Node) -> Op {
    let empty = Table::default();
    let t = match &n.value {
        Value::Table(t) => t,
        _ => &empty,
    };
    let name = get_str(t, "op").unwrap_or("");
    let sp = n.span;
    let column = || {
        t.get("column")
            .map(|c| val(c, false))
            .unwrap_or(Val::new(ValKind::Str(String::new()), sp))
    };
    let kind = match name {
        "derive" => OpKind::Derive {
            kw: sp,
            column: column(),
            expr: w(&expr_text(get_str(t, "expr").unwrap_or("")), sp),
        },
        "filter" => OpKind::Filter {
            kw: sp,
            expr: w(&expr_text(get_str(t, "expr").unwrap_or("")), sp),
        },
        "cast" => OpKind::Cast {
            kw: sp,
            column: column(),
            to: t
                .get("to")
                .map(|x| val(x, false))
                .unwrap_or(Val::new(ValKind::Str(String::new()), sp)),
        },
        _ => {
            let sugar = matches!(name, "select" | "drop");
            OpKind::Other {
                name: w(name, sp),
                columns: if sugar {
                    t.get("columns").map(list_val)
                } else {
                    None
                },
                params: params(t, if sugar { &["op", "columns"] } else { &["op"] }),
            }
        }
    };
    Op {
        kind,
        span: sp,
        comments: Comments::default(),
    }
}

fn ops(n: &Node) -> Vec<Op> {
    match &n.value {
        Value::Array(items) => items.iter().map(op).collect(),
        _ => vec![],
    }
}

fn stmt(kind: StmtKind, span: Span) -> Stmt {
    Stmt {
        kind,
        span,
        comments: Comments::default(),
        blank_before: true,
    }
}

fn step(section: &str, name: &Word, t: &Table, span: Span) -> Option<StmtKind> {
    let sp = span;
    Some(match section {
        "sources" => {
            let kind = get_str(t, "kind").unwrap_or("csv");
            let pos_key = if kind == "synthetic" {
                "generator"
            } else {
                "path"
            };
            StmtKind::Load {
                name: name.clone(),
                kw: sp,
                kind: w(kind, sp),
                positional: t.get(pos_key).map(|n| val(n, pos_key == "path")),
                params: params(t, &["kind", pos_key, "after"]),
                after: t.get("after").map(|n| val(n, false)),
            }
        }
        "transforms" => StmtKind::Transform {
            name: name.clone(),
            kw: sp,
            input: t
                .get("input")
                .map(|n| val(n, false))
                .unwrap_or(Val::new(ValKind::Str(String::new()), sp)),
            ops: t.get("steps").map(ops).unwrap_or_default(),
            ops_span: sp,
        },
        "splits" => {
            let input = t
                .get("input")
                .filter(|n| matches!(&n.value, Value::Str(s) if is_word(s)));
            StmtKind::Split {
                names: vec![name.clone()],
                kw: sp,
                input: input.map(|n| val(n, false)),
                kind: w(get_str(t, "kind").unwrap_or("holdout"), sp),
                params: params(
                    t,
                    if input.is_some() {
                        &["kind", "input"]
                    } else {
                        &["kind"]
                    },
                ),
            }
        }
        "models" => {
            let mut clauses = Vec::new();
            for (k, c) in [
                ("input", "on"),
                ("target", "target"),
                ("features", "features"),
                ("task", "task"),
                ("per_shard", "per_shard"),
                ("combine", "combine"),
                ("preprocess", "preprocess"),
            ] {
                let Some(n) = t.get(k) else { continue };
                let value = match (k, &n.value) {
                    ("per_shard", Value::Bool(true)) => ClauseVal::Flag,
                    ("per_shard", Value::Bool(false)) => continue,
                    ("preprocess", _) => ClauseVal::Ops(ops(n), n.span),
                    ("features", _) => ClauseVal::Val(list_val(n)),
                    _ => ClauseVal::Val(val(n, false)),
                };
                clauses.push(Clause {
                    key: w(c, sp),
                    value,
                });
            }
            StmtKind::Fit {
                name: name.clone(),
                kw: sp,
                estimator: w(get_str(t, "estimator").unwrap_or(""), sp),
                params: match t.get("params").map(|n| &n.value) {
                    Some(Value::Table(p)) if !p.entries.is_empty() => Some(params(p, &[])),
                    _ => None,
                },
                clauses,
            }
        }
        "evaluations" => {
            let model = get_str(t, "model").unwrap_or("");
            let data = match t.get("data").map(|n| (&n.value, n)) {
                Some((Value::Array(items), _)) => items.iter().map(|n| val(n, false)).collect(),
                Some((_, n)) => vec![val(n, false)],
                None => vec![],
            };
            StmtKind::Evaluate {
                name: (name.value != default_evaluation_name(model)).then(|| name.clone()),
                kw: sp,
                model: sval(model, sp, false),
                data,
                metrics: t
                    .get("metrics")
                    .map(list_val)
                    .unwrap_or(Val::new(ValKind::List(vec![]), sp)),
            }
        }
        "outputs" => {
            let kind = get_str(t, "kind").unwrap_or("model");
            let s = |k: &str| {
                t.get(k)
                    .map(|n| val(n, false))
                    .unwrap_or(Val::new(ValKind::Str(String::new()), sp))
            };
            let what = match kind {
                "model" => SaveWhat::Model {
                    explicit: false,
                    model: s("model"),
                },
                "metrics" => SaveWhat::Metrics {
                    evaluations: t.get("evaluations").map(list_val),
                },
                "report" => SaveWhat::Report {
                    evaluations: t.get("evaluations").map(list_val),
                },
                "predictions" => SaveWhat::Predictions {
                    model: s("model"),
                    data: s("data"),
                },
                "plan" => SaveWhat::Plan,
                _ => SaveWhat::Dataset { data: s("data") },
            };
            StmtKind::Save {
                name: (name.value != kind).then(|| name.clone()),
                kw: sp,
                what,
                path: t
                    .get("path")
                    .map(|n| val(n, true))
                    .unwrap_or(Val::new(ValKind::Str(String::new()), sp)),
                format: t.get("format").map(|n| val(n, false)),
            }
        }
        _ => return None,
    })
}

/// The statements of a checked tree. `default_name` names the pipeline when the
/// tree does not.
pub fn from_node(root: &Node, default_name: &str) -> File {
    let empty = Table::default();
    let top = match &root.value {
        Value::Table(t) => t,
        _ => &empty,
    };
    let mut file = File::default();
    // The header always comes first and always names the pipeline.
    let (pname, pparams) = match top.get("pipeline").map(|n| &n.value) {
        Some(Value::Table(p)) => (
            get_str(p, "name").unwrap_or(default_name).to_string(),
            params(p, &["name"]),
        ),
        _ => (default_name.to_string(), vec![]),
    };
    let mut header = stmt(
        StmtKind::Pipeline {
            kw: Span::default(),
            name: w(&pname, Span::default()),
            params: pparams,
        },
        Span::default(),
    );
    header.blank_before = false;
    file.stmts.push(header);
    let mut steps: Vec<(usize, &str, Stmt)> = Vec::new();
    for (sec, n) in &top.entries {
        match (sec.value.as_str(), &n.value) {
            ("cluster", Value::Table(c)) => {
                let kind = get_str(c, "kind").unwrap_or(if c.get("scheduler").is_some() {
                    "remote"
                } else {
                    "local"
                });
                let positional = (kind == "remote").then(|| c.get("scheduler")).flatten();
                let kind_span = c.key_span("kind").unwrap_or(n.span);
                steps.push((
                    n.span.start,
                    "cluster",
                    stmt(
                        StmtKind::Cluster {
                            kw: n.span,
                            kind: w(kind, kind_span),
                            positional: positional.map(|p| val(p, true)),
                            params: params(
                                c,
                                if positional.is_some() {
                                    &["kind", "scheduler"]
                                } else {
                                    &["kind"]
                                },
                            ),
                        },
                        n.span,
                    ),
                ));
            }
            (section, Value::Table(t)) if section != "pipeline" => {
                for (name, s) in &t.entries {
                    if let Value::Table(st) = &s.value
                        && let Some(k) = step(section, name, st, s.span)
                    {
                        steps.push((s.span.start, section, stmt(k, s.span)));
                    }
                }
            }
            _ => {}
        }
    }
    steps.sort_by_key(|(at, _, _)| *at);
    // A blank line where the section changes: sources together, models together...
    let mut prev = "pipeline";
    for (_, section, mut s) in steps {
        s.blank_before = section != prev;
        prev = section;
        file.stmts.push(s);
    }
    file
}

//! Statements → the generic [`Node`] tree that `lower` reads, exactly as the TOML
//! front end would build it: each statement becomes a step table in its section,
//! each clause or parameter a key (with the span of what the user wrote), so
//! lowering reports the same diagnostics for both syntaxes.
//!
//! Also here, because they need the whole file: names defined twice in one
//! section, a second `pipeline` or `cluster` statement, and `A, B = split ...`
//! (the split is named `A_B`; `A` and `B` stand for its train and test parts).

use super::ast::*;
use crate::frontend::diag::{Code, Diagnostic};
use crate::frontend::node::{Node, Table, Value};
use crate::frontend::span::{Span, Spanned};
use std::collections::HashMap;

const SECTIONS: [&str; 6] = [
    "sources",
    "transforms",
    "splits",
    "models",
    "evaluations",
    "outputs",
];

const KIND_NAMES: [&str; 6] = [
    "source",
    "transform",
    "split",
    "model",
    "evaluation",
    "output",
];

struct Builder<'a> {
    diags: Vec<Diagnostic>,
    aliases: HashMap<String, (String, Span)>,
    sections: [Table; 6],
    spans: [Option<Span>; 6],
    index: [HashMap<String, Span>; 6],
    pipeline: Option<(Span, Node)>,
    cluster: Option<(Span, Node)>,
    _p: std::marker::PhantomData<&'a ()>,
}

/// Build the tree. The root's span covers the whole text.
pub fn to_node(file: &File, text_len: usize) -> (Node, Vec<Diagnostic>) {
    let mut b = Builder {
        diags: Vec::new(),
        aliases: HashMap::new(),
        sections: Default::default(),
        spans: [None; 6],
        index: Default::default(),
        pipeline: None,
        cluster: None,
        _p: std::marker::PhantomData,
    };
    // Pass 1: the names that stand for parts of a split.
    for s in &file.stmts {
        if let StmtKind::Split { names, kind, .. } = &s.kind
            && names.len() == 2
        {
            let split = pair_split_name(&names[0].value, &names[1].value);
            if matches!(kind.value.as_str(), "holdout" | "predefined") {
                for (n, part) in names.iter().zip(["train", "test"]) {
                    b.aliases
                        .insert(n.value.clone(), (format!("{split}.{part}"), n.span));
                }
            } else {
                b.diags.push(
                    Diagnostic::new(
                        Code::Syntax,
                        names[0].span.join(names[1].span),
                        format!(
                            "`{}, {} = split` names a train and a test part, but a `{}` split has other parts",
                            names[0].value, names[1].value, kind.value
                        ),
                    )
                    .with_help(format!(
                        "give the split one name and refer to its parts by it: `{0} = split ...`, then `{0}.fold1` or `{0}.A`",
                        split
                    )),
                );
            }
        }
    }
    for s in &file.stmts {
        b.stmt(s);
    }
    let mut root = Table::default();
    if let Some((k, n)) = b.pipeline.take() {
        root.entries.push((Spanned::new("pipeline".into(), k), n));
    }
    let sections = std::mem::take(&mut b.sections);
    for (i, t) in sections.into_iter().enumerate() {
        if let Some(span) = b.spans[i] {
            root.entries.push((
                Spanned::new(SECTIONS[i].to_string(), Span::new(span.start, span.start)),
                Node::new(Value::Table(t), span),
            ));
        }
    }
    if let Some((k, n)) = b.cluster.take() {
        root.entries.push((Spanned::new("cluster".into(), k), n));
    }
    (
        Node::new(Value::Table(root), Span::new(0, text_len)),
        b.diags,
    )
}

fn val(v: &Val) -> Node {
    let value = match &v.kind {
        ValKind::Str(s) | ValKind::Word(s) => Value::Str(s.clone()),
        ValKind::Int(i) => Value::Int(*i),
        ValKind::Float(x) => Value::Float(*x),
        ValKind::Bool(b) => Value::Bool(*b),
        ValKind::List(items) => Value::Array(items.iter().map(val).collect()),
        ValKind::Table(ps) => Value::Table(params_table(ps, &mut Vec::new())),
    };
    Node::new(value, v.span)
}

fn params_table(ps: &[Param], diags: &mut Vec<Diagnostic>) -> Table {
    let mut t = Table::default();
    for p in ps {
        put(&mut t, p.key.clone(), val(&p.value), diags);
    }
    t
}

/// Add a key; a key given twice is reported and the first kept (like TOML).
fn put(t: &mut Table, key: Spanned<String>, node: Node, diags: &mut Vec<Diagnostic>) {
    if let Some(first) = t.key_span(&key.value) {
        diags.push(
            Diagnostic::new(
                Code::Syntax,
                key.span,
                format!("`{}` is given twice", key.value),
            )
            .with_related(first, "first given here"),
        );
        return;
    }
    t.entries.push((key, node));
}

fn key(name: &str, span: Span) -> Spanned<String> {
    Spanned::new(name.to_string(), span)
}

fn str_node(s: &Spanned<String>) -> Node {
    Node::new(Value::Str(s.value.clone()), s.span)
}

impl Builder<'_> {
    /// A dataset reference, with `A, B = split` names replaced by the parts they stand for.
    fn data(&self, v: &Val) -> Node {
        if let ValKind::Word(w) = &v.kind
            && let Some((full, _)) = self.aliases.get(w)
        {
            return Node::new(Value::Str(full.clone()), v.span);
        }
        val(v)
    }

    fn step(&mut self, section: usize, name: &Word, span: Span, t: Table, help: Option<String>) {
        if let Some(first) = self.index[section].get(&name.value) {
            let mut d = Diagnostic::new(
                Code::DuplicateName,
                name.span,
                format!(
                    "`{}` is already the name of a{} {}",
                    name.value,
                    if KIND_NAMES[section].starts_with(['a', 'e', 'o']) {
                        "n"
                    } else {
                        ""
                    },
                    KIND_NAMES[section]
                ),
            )
            .with_related(
                *first,
                format!(
                    "the {} `{}` is defined here",
                    KIND_NAMES[section], name.value
                ),
            );
            d.help = Some(help.unwrap_or_else(|| {
                format!(
                    "rename this {}: every step needs its own name",
                    KIND_NAMES[section]
                )
            }));
            self.diags.push(d);
            return;
        }
        self.index[section].insert(name.value.clone(), name.span);
        self.spans[section] = Some(match self.spans[section] {
            Some(s) => s.join(span),
            None => span,
        });
        self.sections[section]
            .entries
            .push((name.clone(), Node::new(Value::Table(t), span)));
    }

    fn op(&mut self, op: &Op) -> Node {
        let mut t = Table::default();
        let d = &mut self.diags;
        match &op.kind {
            OpKind::Derive { kw, column, expr } => {
                put(
                    &mut t,
                    key("op", *kw),
                    Node::new(Value::Str("derive".into()), *kw),
                    d,
                );
                put(&mut t, key("column", column.span), val(column), d);
                put(&mut t, key("expr", expr.span), str_node(expr), d);
            }
            OpKind::Filter { kw, expr } => {
                put(
                    &mut t,
                    key("op", *kw),
                    Node::new(Value::Str("filter".into()), *kw),
                    d,
                );
                put(&mut t, key("expr", expr.span), str_node(expr), d);
            }
            OpKind::Cast { kw, column, to } => {
                put(
                    &mut t,
                    key("op", *kw),
                    Node::new(Value::Str("cast".into()), *kw),
                    d,
                );
                put(&mut t, key("column", column.span), val(column), d);
                put(&mut t, key("to", to.span), val(to), d);
            }
            OpKind::Other {
                name,
                columns,
                params,
            } => {
                put(&mut t, key("op", name.span), str_node(name), d);
                if let Some(c) = columns {
                    put(&mut t, key("columns", c.span), val(c), d);
                }
                for p in params {
                    put(&mut t, p.key.clone(), val(&p.value), d);
                }
            }
        }
        Node::new(Value::Table(t), op.span)
    }

    fn ops(&mut self, ops: &[Op], span: Span) -> Node {
        Node::new(Value::Array(ops.iter().map(|o| self.op(o)).collect()), span)
    }

    fn stmt(&mut self, s: &Stmt) {
        let mut t = Table::default();
        match &s.kind {
            StmtKind::Pipeline { kw, name, params } => {
                put(
                    &mut t,
                    key("name", name.span),
                    str_node(name),
                    &mut self.diags,
                );
                for p in params {
                    put(&mut t, p.key.clone(), val(&p.value), &mut self.diags);
                }
                if let Some((first, _)) = &self.pipeline {
                    self.diags.push(
                        Diagnostic::new(Code::Conflict, *kw, "a second `pipeline` statement")
                            .with_related(*first, "the pipeline is named here")
                            .with_help("a file holds one pipeline; remove one of them"),
                    );
                    return;
                }
                self.pipeline = Some((*kw, Node::new(Value::Table(t), s.span)));
            }
            StmtKind::Load {
                name,
                kw,
                kind,
                positional,
                params,
                after,
            } => {
                put(
                    &mut t,
                    key("kind", kind.span),
                    str_node(kind),
                    &mut self.diags,
                );
                if let Some(p) = positional {
                    let k = if kind.value == "synthetic" {
                        "generator"
                    } else {
                        "path"
                    };
                    put(&mut t, key(k, p.span), val(p), &mut self.diags);
                }
                for p in params {
                    put(&mut t, p.key.clone(), val(&p.value), &mut self.diags);
                }
                if let Some(a) = after {
                    put(&mut t, key("after", a.span), val(a), &mut self.diags);
                }
                let _ = kw;
                self.step(0, name, s.span, t, None);
            }
            StmtKind::Transform {
                name,
                kw,
                input,
                ops,
                ops_span,
            } => {
                let input = self.data(input);
                put(&mut t, key("input", input.span), input, &mut self.diags);
                let steps = self.ops(ops, *ops_span);
                put(&mut t, key("steps", *kw), steps, &mut self.diags);
                self.step(1, name, s.span, t, None);
            }
            StmtKind::Split {
                names,
                kw,
                input,
                kind,
                params,
            } => {
                put(
                    &mut t,
                    key("kind", kind.span),
                    str_node(kind),
                    &mut self.diags,
                );
                if let Some(i) = input {
                    let n = self.data(i);
                    put(&mut t, key("input", i.span), n, &mut self.diags);
                }
                for p in params {
                    let n = match p.key.value.as_str() {
                        "input" | "train" | "test" => self.data(&p.value),
                        _ => val(&p.value),
                    };
                    put(&mut t, p.key.clone(), n, &mut self.diags);
                }
                let _ = kw;
                let name = if names.len() == 2 {
                    Spanned::new(
                        pair_split_name(&names[0].value, &names[1].value),
                        names[0].span.join(names[1].span),
                    )
                } else {
                    names[0].clone()
                };
                self.step(2, &name, s.span, t, None);
            }
            StmtKind::Fit {
                name,
                kw,
                estimator,
                params,
                clauses,
            } => {
                put(
                    &mut t,
                    key("estimator", estimator.span),
                    str_node(estimator),
                    &mut self.diags,
                );
                if let Some(ps) = params {
                    let span = ps
                        .iter()
                        .map(|p| p.key.span.join(p.value.span))
                        .reduce(Span::join)
                        .unwrap_or(estimator.span);
                    let pt = params_table(ps, &mut self.diags);
                    put(
                        &mut t,
                        key("params", estimator.span),
                        Node::new(Value::Table(pt), span),
                        &mut self.diags,
                    );
                }
                for c in clauses {
                    let k = if c.key.value == "on" {
                        "input".to_string()
                    } else {
                        c.key.value.clone()
                    };
                    let node = match &c.value {
                        ClauseVal::Flag => Node::new(Value::Bool(true), c.key.span),
                        ClauseVal::Val(v) if k == "input" => self.data(v),
                        ClauseVal::Val(v) => val(v),
                        ClauseVal::Ops(ops, span) => self.ops(ops, *span),
                    };
                    put(&mut t, Spanned::new(k, c.key.span), node, &mut self.diags);
                }
                let _ = kw;
                self.step(3, name, s.span, t, None);
            }
            StmtKind::Evaluate {
                name,
                kw,
                model,
                data,
                metrics,
            } => {
                put(
                    &mut t,
                    key("model", model.span),
                    val(model),
                    &mut self.diags,
                );
                let dn = if data.len() == 1 {
                    self.data(&data[0])
                } else {
                    let span = data
                        .iter()
                        .map(|d| d.span)
                        .reduce(Span::join)
                        .unwrap_or(*kw);
                    Node::new(
                        Value::Array(data.iter().map(|d| self.data(d)).collect()),
                        span,
                    )
                };
                put(&mut t, key("data", dn.span), dn, &mut self.diags);
                put(
                    &mut t,
                    key("metrics", metrics.span),
                    val(metrics),
                    &mut self.diags,
                );
                let (name, help) = match name {
                    Some(n) => (n.clone(), None),
                    None => {
                        let m = model.as_str().unwrap_or("model");
                        let n = default_evaluation_name(m);
                        let help = format!(
                            "an evaluation written without a name is named `{n}`; name this one: `{m}_more = evaluate ...`"
                        );
                        (Spanned::new(n, *kw), Some(help))
                    }
                };
                self.step(4, &name, s.span, t, help);
            }
            StmtKind::Save {
                name,
                kw,
                what,
                path,
                format,
            } => {
                let kind = what.kind();
                put(
                    &mut t,
                    key("kind", *kw),
                    Node::new(Value::Str(kind.into()), *kw),
                    &mut self.diags,
                );
                put(&mut t, key("path", path.span), val(path), &mut self.diags);
                match what {
                    SaveWhat::Model { model, .. } => put(
                        &mut t,
                        key("model", model.span),
                        val(model),
                        &mut self.diags,
                    ),
                    SaveWhat::Metrics { evaluations } | SaveWhat::Report { evaluations } => {
                        if let Some(e) = evaluations {
                            put(&mut t, key("evaluations", e.span), val(e), &mut self.diags);
                        }
                    }
                    SaveWhat::Predictions { model, data } => {
                        put(
                            &mut t,
                            key("model", model.span),
                            val(model),
                            &mut self.diags,
                        );
                        let d = self.data(data);
                        put(&mut t, key("data", data.span), d, &mut self.diags);
                    }
                    SaveWhat::Plan => {}
                    SaveWhat::Dataset { data } => {
                        let d = self.data(data);
                        put(&mut t, key("data", data.span), d, &mut self.diags);
                    }
                }
                if let Some(f) = format {
                    put(&mut t, key("format", f.span), val(f), &mut self.diags);
                }
                let (name, help) = match name {
                    Some(n) => (n.clone(), None),
                    None => (
                        Spanned::new(kind.to_string(), *kw),
                        Some(format!(
                            "an output written without a name is named `{kind}`; name this one: `{kind}2 = save ...`"
                        )),
                    ),
                };
                self.step(5, &name, s.span, t, help);
            }
            StmtKind::Cluster {
                kw,
                kind,
                positional,
                params,
            } => {
                put(
                    &mut t,
                    key("kind", kind.span),
                    str_node(kind),
                    &mut self.diags,
                );
                if let Some(p) = positional {
                    put(&mut t, key("scheduler", p.span), val(p), &mut self.diags);
                }
                for p in params {
                    put(&mut t, p.key.clone(), val(&p.value), &mut self.diags);
                }
                if let Some((first, _)) = &self.cluster {
                    self.diags.push(
                        Diagnostic::new(Code::Conflict, *kw, "a second `cluster` statement")
                            .with_related(*first, "the cluster is set here")
                            .with_help("a pipeline runs on one cluster; remove one of them"),
                    );
                    return;
                }
                self.cluster = Some((*kw, Node::new(Value::Table(t), s.span)));
            }
        }
    }
}

//! Statements → canonical `.dagml` text (what `dagml fmt` writes).
//!
//! Layout: one statement per line, single spaces around `=` and between words,
//! `key = value` parameters separated by `, `, operation lists one per line
//! indented by four spaces (a lone operation without comments stays inline in a
//! `preprocess` clause), at most one blank line kept between statements, comments
//! kept where they were (before a statement or operation, or at the end of its
//! line). Printing the parse of the output gives the output again.

use super::ast::*;

pub const INDENT: &str = "    ";

/// Whether a string can be written as a bare word (and read back as the same string).
pub fn is_word(s: &str) -> bool {
    let mut parts = s.split('.');
    let first = parts.next().unwrap_or("");
    let ok_first = first.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    ok_first
        && parts.all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        && !matches!(s, "true" | "false")
}

pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Integers of five digits or more are grouped by thousands with `_`.
pub fn int(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut s = String::new();
    if n < 0 {
        s.push('-');
    }
    if digits.len() < 5 {
        s.push_str(&digits);
        return s;
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push('_');
        }
        s.push(c);
    }
    s
}

pub fn float(x: f64) -> String {
    // Debug always keeps a `.` or an exponent, so it reads back as a float.
    format!("{x:?}")
}

pub fn value(v: &Val, out: &mut String) {
    match &v.kind {
        ValKind::Str(s) => out.push_str(&quote(s)),
        ValKind::Word(s) if is_word(s) => out.push_str(s),
        ValKind::Word(s) => out.push_str(&quote(s)),
        ValKind::Int(n) => out.push_str(&int(*n)),
        ValKind::Float(x) => out.push_str(&float(*x)),
        ValKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ValKind::List(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                value(it, out);
            }
            out.push(']');
        }
        ValKind::Table(ps) => {
            out.push('{');
            params(ps, out);
            out.push('}');
        }
    }
}

fn key(k: &str, out: &mut String) {
    if is_word(k) && !k.contains('.') {
        out.push_str(k);
    } else {
        out.push_str(&quote(k));
    }
}

fn params(ps: &[Param], out: &mut String) {
    for (i, p) in ps.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        key(&p.key.value, out);
        out.push_str(" = ");
        value(&p.value, out);
    }
}

fn args(pos: Option<&Val>, ps: &[Param], out: &mut String) {
    if pos.is_none() && ps.is_empty() {
        return;
    }
    out.push('(');
    if let Some(p) = pos {
        value(p, out);
        if !ps.is_empty() {
            out.push_str(", ");
        }
    }
    params(ps, out);
    out.push(')');
}

fn column(v: &Val, out: &mut String) {
    match v.as_str() {
        Some(s) if is_word(s) && !s.contains('.') => out.push_str(s),
        Some(s) => out.push_str(&quote(s)),
        None => value(v, out),
    }
}

fn op(o: &Op, out: &mut String) {
    match &o.kind {
        OpKind::Derive {
            column: c, expr, ..
        } => {
            out.push_str("derive ");
            column(c, out);
            out.push_str(" = ");
            out.push_str(&expr.value);
        }
        OpKind::Filter { expr, .. } => {
            out.push_str("filter ");
            out.push_str(&expr.value);
        }
        OpKind::Cast { column: c, to, .. } => {
            out.push_str("cast ");
            column(c, out);
            out.push_str(" to ");
            value(to, out);
        }
        OpKind::Other {
            name,
            columns,
            params: ps,
        } => {
            out.push_str(&name.value);
            if let Some(c) = columns {
                out.push(' ');
                value(c, out);
            }
            if !ps.is_empty() {
                if columns.is_some() {
                    out.push(' ');
                }
                args(None, ps, out);
            }
        }
    }
}

fn trailing(c: &Comments, out: &mut String) {
    if let Some(t) = &c.trailing {
        out.push_str("  #");
        out.push_str(t);
    }
}

fn leading(c: &[String], indent: &str, out: &mut String) {
    for l in c {
        out.push_str(indent);
        out.push('#');
        out.push_str(l);
        out.push('\n');
    }
}

/// An operation list; the statement's own trailing comment goes after `[` when the
/// list is written one operation per line.
fn ops(list: &[Op], inline_ok: bool, stmt: &Comments, out: &mut String) -> bool {
    let inline = inline_ok
        && list.len() <= 1
        && list
            .iter()
            .all(|o| o.comments.leading.is_empty() && o.comments.trailing.is_none());
    out.push('[');
    if inline || list.is_empty() {
        if let Some(o) = list.first() {
            op(o, out);
        }
        out.push(']');
        return false;
    }
    trailing(stmt, out);
    out.push('\n');
    for o in list {
        leading(&o.comments.leading, INDENT, out);
        out.push_str(INDENT);
        op(o, out);
        trailing(&o.comments, out);
        out.push('\n');
    }
    out.push(']');
    true
}

fn name_eq(name: &Option<Word>, out: &mut String) {
    if let Some(n) = name {
        out.push_str(&n.value);
        out.push_str(" = ");
    }
}

fn refv(v: &Val, out: &mut String) {
    value(v, out);
}

/// One statement, without its leading comments; returns whether its trailing
/// comment was already written.
fn stmt(s: &Stmt, out: &mut String) -> bool {
    match &s.kind {
        StmtKind::Pipeline {
            name, params: ps, ..
        } => {
            out.push_str("pipeline ");
            out.push_str(&name.value);
            if !ps.is_empty() {
                out.push(' ');
                args(None, ps, out);
            }
            false
        }
        StmtKind::Load {
            name,
            kind,
            positional,
            params: ps,
            after,
            ..
        } => {
            out.push_str(&name.value);
            out.push_str(" = load ");
            out.push_str(&kind.value);
            args(positional.as_ref(), ps, out);
            if let Some(a) = after {
                out.push_str(" after ");
                refv(a, out);
            }
            false
        }
        StmtKind::Transform {
            name,
            input,
            ops: o,
            ..
        } => {
            out.push_str(&name.value);
            out.push_str(" = transform ");
            refv(input, out);
            out.push(' ');
            ops(o, false, &s.comments, out)
        }
        StmtKind::Split {
            names,
            input,
            kind,
            params: ps,
            ..
        } => {
            let ns: Vec<&str> = names.iter().map(|n| n.value.as_str()).collect();
            out.push_str(&ns.join(", "));
            out.push_str(" = split ");
            if let Some(i) = input {
                refv(i, out);
                out.push(' ');
            }
            out.push_str(&kind.value);
            args(None, ps, out);
            false
        }
        StmtKind::Fit {
            name,
            estimator,
            params: ps,
            clauses,
            ..
        } => {
            out.push_str(&name.value);
            out.push_str(" = fit ");
            out.push_str(&estimator.value);
            if let Some(ps) = ps {
                args(None, ps, out);
            }
            let mut done = false;
            for c in clauses {
                out.push(' ');
                out.push_str(&c.key.value);
                match &c.value {
                    ClauseVal::Flag => {}
                    ClauseVal::Val(v) => {
                        out.push(' ');
                        value(v, out);
                    }
                    ClauseVal::Ops(o, _) => {
                        out.push(' ');
                        done |= ops(o, true, &s.comments, out);
                    }
                }
            }
            done
        }
        StmtKind::Evaluate {
            name,
            model,
            data,
            metrics,
            ..
        } => {
            name_eq(name, out);
            out.push_str("evaluate ");
            refv(model, out);
            out.push_str(" on ");
            for (i, d) in data.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                refv(d, out);
            }
            out.push(' ');
            value(metrics, out);
            false
        }
        StmtKind::Save {
            name,
            what,
            path,
            format,
            ..
        } => {
            name_eq(name, out);
            out.push_str("save ");
            match what {
                SaveWhat::Model { explicit, model } => {
                    let m = model.as_str().unwrap_or("");
                    if *explicit
                        || matches!(
                            m,
                            "metrics" | "report" | "plan" | "predictions" | "dataset" | "model"
                        )
                    {
                        out.push_str("model ");
                    }
                    refv(model, out);
                }
                SaveWhat::Metrics { evaluations } | SaveWhat::Report { evaluations } => {
                    out.push_str(what.kind());
                    if let Some(e) = evaluations {
                        out.push(' ');
                        value(e, out);
                    }
                }
                SaveWhat::Predictions { model, data } => {
                    out.push_str("predictions of ");
                    refv(model, out);
                    out.push_str(" on ");
                    refv(data, out);
                }
                SaveWhat::Plan => out.push_str("plan"),
                SaveWhat::Dataset { data } => {
                    out.push_str("dataset ");
                    refv(data, out);
                }
            }
            out.push_str(" to ");
            value(path, out);
            if let Some(f) = format {
                out.push_str(" as ");
                value(f, out);
            }
            false
        }
        StmtKind::Cluster {
            kind,
            positional,
            params: ps,
            ..
        } => {
            out.push_str("cluster ");
            out.push_str(&kind.value);
            args(positional.as_ref(), ps, out);
            false
        }
    }
}

/// The whole file in canonical layout.
pub fn print(file: &File) -> String {
    let mut out = String::new();
    for (i, s) in file.stmts.iter().enumerate() {
        if i > 0 && s.blank_before {
            out.push('\n');
        }
        leading(&s.comments.leading, "", &mut out);
        if !stmt(s, &mut out) {
            trailing(&s.comments, &mut out);
        }
        out.push('\n');
    }
    if !file.trailing.is_empty() {
        if file.blank_before_trailing && !file.stmts.is_empty() {
            out.push('\n');
        }
        leading(&file.trailing, "", &mut out);
    }
    out
}

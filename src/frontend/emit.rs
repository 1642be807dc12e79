//! Emitters and conversion: a checked pipeline file → TOML or dagml text.
//!
//! In: a file's path and text. Out: the same pipeline in the other syntax (or the
//! same, normalized), or every diagnostic when the file is not valid (convert
//! refuses invalid input rather than guess). Works on the generic [`Node`] tree,
//! not on the lowered model, so that what the file says explicitly (a default
//! written out, a value's spelling) is kept; lowering both sides gives equal
//! models (tests/roundtrip.rs).
//! Must not: do I/O.

use super::Syntax;
use super::diag::Diagnostic;
use super::dsl;
use super::dsl::print::{float, quote};
use super::node::{Node, Table, Value};
use super::toml_front;

/// Convert a pipeline file's text to `to`. Errors: the file's diagnostics.
pub fn convert(path: &str, text: &str, to: Syntax) -> Result<String, Vec<Diagnostic>> {
    let from = Syntax::of_path(path).unwrap_or(Syntax::Toml);
    let stem = super::stem(path);
    let (node, mut diags) = match from {
        Syntax::Dagml => dsl::parse(text),
        Syntax::Toml => toml_front::parse(text),
    };
    let Some(node) = node else { return Err(diags) };
    let (_, d) = super::lower::lower(&node, text, &stem);
    diags.extend(d);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    Ok(match (from, to) {
        // dagml to dagml keeps comments and the forms written.
        (Syntax::Dagml, Syntax::Dagml) => dsl::format(text)?,
        (_, Syntax::Dagml) => dsl::emit(&node, &stem),
        (_, Syntax::Toml) => to_toml(&node, &stem),
    })
}

/// The pipeline's canonical text, the same for a `.toml` file and its `.dagml`
/// twin and blind to comments and layout: what a model file's pipeline hash is
/// taken over, so both syntaxes give byte-identical model files. `None` when the
/// file does not parse.
pub fn canonical(path: &str, text: &str) -> Option<String> {
    let (node, diags) = match Syntax::of_path(path).unwrap_or(Syntax::Toml) {
        Syntax::Dagml => dsl::parse(text),
        Syntax::Toml => toml_front::parse(text),
    };
    if diags.iter().any(Diagnostic::is_error) {
        return None;
    }
    node.map(|n| dsl::emit(&n, &super::stem(path)))
}

fn bare_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn toml_key(k: &str) -> String {
    if bare_key(k) { k.to_string() } else { quote(k) }
}

fn toml_value(n: &Node, out: &mut String) {
    match &n.value {
        Value::Str(s) => out.push_str(&quote(s)),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(x) if x.is_nan() => out.push_str("nan"),
        Value::Float(x) if x.is_infinite() => out.push_str(if *x > 0.0 { "inf" } else { "-inf" }),
        Value::Float(x) => out.push_str(&float(*x)),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Datetime(d) => out.push_str(d),
        Value::Array(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                toml_value(it, out);
            }
            out.push(']');
        }
        Value::Table(t) => {
            if t.entries.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (i, (k, v)) in t.entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&toml_key(&k.value));
                out.push_str(" = ");
                toml_value(v, out);
            }
            out.push_str(" }");
        }
    }
}

/// The body of one section: `key = value` lines; lists of tables one per line.
fn toml_body(t: &Table, out: &mut String) {
    for (k, v) in &t.entries {
        out.push_str(&toml_key(&k.value));
        out.push_str(" = ");
        match &v.value {
            Value::Array(items)
                if !items.is_empty()
                    && items.iter().all(|x| matches!(x.value, Value::Table(_))) =>
            {
                out.push_str("[\n");
                for it in items {
                    out.push_str("  ");
                    toml_value(it, out);
                    out.push_str(",\n");
                }
                out.push(']');
            }
            _ => toml_value(v, out),
        }
        out.push('\n');
    }
}

/// A checked tree as TOML: `[pipeline]` first, then one `[section.name]` table
/// per step in file order, `[cluster]` where it was written.
pub fn to_toml(root: &Node, default_name: &str) -> String {
    let empty = Table::default();
    let top = match &root.value {
        Value::Table(t) => t,
        _ => &empty,
    };
    let mut out = String::new();
    out.push_str("[pipeline]\n");
    let mut header = match top.get("pipeline").map(|n| &n.value) {
        Some(Value::Table(p)) => p.clone(),
        _ => Table::default(),
    };
    if header.get("name").is_none() {
        header.entries.insert(
            0,
            (
                super::span::Spanned::new("name".into(), Default::default()),
                Node::new(Value::Str(default_name.into()), Default::default()),
            ),
        );
    }
    toml_body(&header, &mut out);
    let mut blocks: Vec<(usize, String)> = Vec::new();
    for (sec, n) in &top.entries {
        match (sec.value.as_str(), &n.value) {
            ("pipeline", _) => {}
            ("cluster", Value::Table(c)) => {
                let mut s = String::from("\n[cluster]\n");
                toml_body(c, &mut s);
                blocks.push((n.span.start, s));
            }
            (section, Value::Table(t)) => {
                for (name, step) in &t.entries {
                    let mut s = format!("\n[{}.{}]\n", toml_key(section), toml_key(&name.value));
                    match &step.value {
                        Value::Table(st) => toml_body(st, &mut s),
                        _ => continue,
                    }
                    blocks.push((step.span.start, s));
                }
            }
            _ => {}
        }
    }
    blocks.sort_by_key(|(at, _)| *at);
    for (_, b) in blocks {
        out.push_str(&b);
    }
    out
}

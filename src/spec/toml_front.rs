//! TOML front end: pipeline file text → [`Node`] tree, with every syntax error.
//!
//! In: the file's text. Out: the spanned tree (best effort on broken input) and
//! diagnostics. Must not: interpret keys (that is `lower`), touch the file system,
//! panic or overflow the stack on any input, however broken.

use super::diag::{Code, Diagnostic};
use super::node::{Node, Table, Value};
use super::span::{Span, Spanned};
use toml::de::{DeTable, DeValue};

/// The deepest nesting of arrays and inline tables dagml accepts. Real pipelines
/// nest three or four levels; the limit keeps the recursive parser far from the
/// end of the stack on hostile input.
pub const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    if let Some(d) = check_depth(text) {
        return (None, vec![d]);
    }
    let (doc, errors) = DeTable::parse_recoverable(text);
    for e in errors {
        let span = e.span().map(Span::from).unwrap_or_else(|| Span::new(0, 0));
        diags.push(
            Diagnostic::new(
                Code::Syntax,
                span,
                format!("invalid TOML: {}", first_line(e.message())),
            )
            .with_help("see docs/pipelines.md for the file format"),
        );
    }
    let span = Span::from(doc.span());
    let table = convert_table(doc.get_ref(), &mut diags);
    (Some(Node::new(Value::Table(table), span)), diags)
}

fn first_line(msg: &str) -> &str {
    msg.trim()
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('.')
}

fn convert_table(t: &DeTable<'_>, diags: &mut Vec<Diagnostic>) -> Table {
    let mut out = Table::default();
    for (k, v) in t.iter() {
        let key = Spanned::new(k.get_ref().to_string(), Span::from(k.span()));
        out.entries.push((key, convert(v, diags)));
    }
    out
}

fn convert(v: &toml::Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> Node {
    let span = Span::from(v.span());
    let value = match v.get_ref() {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
            match i64::from_str_radix(digits.trim_start_matches('+'), i.radix()) {
                Ok(n) => Value::Int(n),
                Err(_) => {
                    diags.push(Diagnostic::new(
                        Code::OutOfRange,
                        span,
                        "integer does not fit in 64 bits",
                    ));
                    Value::Int(0)
                }
            }
        }
        DeValue::Float(f) => {
            let digits: String = f.as_str().chars().filter(|c| *c != '_').collect();
            let parsed = match digits.trim_start_matches('+') {
                "inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                "nan" | "-nan" => Some(f64::NAN),
                d => d.parse::<f64>().ok(),
            };
            match parsed {
                Some(x) => Value::Float(x),
                None => {
                    diags.push(Diagnostic::new(Code::Syntax, span, "invalid float"));
                    Value::Float(0.0)
                }
            }
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|x| convert(x, diags)).collect()),
        DeValue::Table(t) => Value::Table(convert_table(t, diags)),
    };
    Node::new(value, span)
}

/// A lexical pre-scan that refuses nesting deeper than [`MAX_DEPTH`] before the
/// recursive parser sees it. It skips strings and comments; brackets of table
/// headers open and close on one line and never accumulate.
fn check_depth(text: &str) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let triple = bytes.get(i..i + 3) == Some(&[q, q, q][..]);
                if triple {
                    i += 3;
                    while i < bytes.len() && bytes.get(i..i + 3) != Some(&[q, q, q][..]) {
                        if q == b'"' && bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 2;
                } else {
                    i += 1;
                    while i < bytes.len() && bytes[i] != q && bytes[i] != b'\n' {
                        if q == b'"' && bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(
                        Diagnostic::new(
                            Code::TooDeep,
                            Span::new(i, i + 1),
                            format!("nesting deeper than {MAX_DEPTH} levels"),
                        )
                        .with_help("a pipeline file never needs this much nesting; is this the right file?"),
                    );
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spans_of_keys_and_values() {
        let (node, diags) = parse("[a]\nb = 12\n");
        assert!(diags.is_empty());
        let Some(Node {
            value: Value::Table(t),
            ..
        }) = node
        else {
            panic!("no table")
        };
        let Some(Value::Table(a)) = t.get("a").map(|n| &n.value) else {
            panic!("no a")
        };
        let (k, v) = &a.entries[0];
        assert_eq!((k.value.as_str(), k.span), ("b", Span::new(4, 5)));
        assert_eq!((&v.value, v.span), (&Value::Int(12), Span::new(8, 10)));
    }

    #[test]
    fn reports_several_syntax_errors() {
        let (_, diags) = parse("a = \nb = [1,\nc = \"x\n");
        assert!(diags.len() >= 2, "{diags:?}");
        assert!(diags.iter().all(|d| d.code == Code::Syntax));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        let text = format!("a = {}{}", "[".repeat(5000), "]".repeat(5000));
        let (node, diags) = parse(&text);
        assert!(node.is_none());
        assert_eq!(diags[0].code, Code::TooDeep);
    }
}

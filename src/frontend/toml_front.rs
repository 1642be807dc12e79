//! TOML front end: pipeline file text → [`Node`] tree, with every syntax error.
//!
//! In: the file's text. Out: the spanned tree (best effort on broken input) and
//! diagnostics. Must not: interpret keys (that is `lower`), touch the file system,
//! panic or overflow the stack on any input, however broken.

use super::diag::{Code, Diagnostic, Sections};
use super::node::{Node, Table, Value};
use super::span::SourceFile;
use super::span::{Span, Spanned};
use toml::de::{DeTable, DeValue};

/// The deepest nesting of arrays and inline tables dagml accepts. Real pipelines
/// nest three or four levels; the limit keeps the recursive parser far from the
/// end of the stack on hostile input.
pub const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
    let scan = match scan(text) {
        Ok(scan) => scan,
        Err(d) => return (None, vec![d]),
    };
    let (doc, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        let span = Span::from(doc.span());
        let mut diags = Vec::new();
        let table = convert_table(doc.get_ref(), &mut diags);
        return (Some(Node::new(Value::Table(table), span)), diags);
    }
    // A list or inline table that is never closed swallows the rest of the file,
    // and the parser's recovery then reports every later line. Report the opening
    // bracket once and read only what comes before it.
    if let Some(open) = scan.unclosed {
        let (close, what) = if text.as_bytes()[open] == b'{' {
            ('}', "inline table")
        } else {
            (']', "list")
        };
        let line_start = text[..open].rfind('\n').map_or(0, |i| i + 1);
        let header = text[line_start..open].trim().is_empty();
        let line_end = text[open..].find('\n').map_or(text.len(), |i| open + i);
        if header && text[open..line_end].contains('=') {
            // `[kind = "model"`: a stray bracket before a key. Read the file
            // without it, so the key and everything after it still count.
            let mut repaired = text.to_string();
            repaired.replace_range(open..open + 1, " ");
            let (doc, errors) = DeTable::parse_recoverable(&repaired);
            let mut diags = syntax_diagnostics(&repaired, errors);
            diags.push(
                Diagnostic::new(
                    Code::Syntax,
                    Span::new(open, open + 1),
                    "invalid TOML: a stray `[` before a key",
                )
                .with_help(
                    "remove it: a key line does not start with `[` (a section header is `[name]`)",
                ),
            );
            diags.sort_by_key(|d| d.span.map(|s| s.start));
            let span = Span::new(0, text.len());
            let table = convert_quietly(doc.get_ref(), &mut diags);
            return (Some(Node::new(Value::Table(table), span)), diags);
        }
        // Keep the key (`metrics = []`) so lowering does not call it missing; a
        // section header that is never closed is dropped with its line.
        let prefix = if header {
            text[..line_start].to_string()
        } else {
            format!("{}{}{close}", &text[..open], &text[open..open + 1])
        };
        let (doc, errors) = DeTable::parse_recoverable(&prefix);
        let mut diags = syntax_diagnostics(&prefix, errors);
        diags.retain(|d| d.span.is_some_and(|s| s.start < line_start));
        let help = if header {
            format!(
                "close the section header on its line: `{}]`",
                text[open..line_end].trim_end()
            )
        } else if close == '}' {
            "close the inline table with `}` on the same line: inline tables cannot span lines"
                .to_string()
        } else {
            format!(
                "close the {what} with `{close}`; everything after it was read as part of the {what}"
            )
        };
        diags.push(
            Diagnostic::new(
                Code::Syntax,
                Span::new(open, open + 1),
                format!(
                    "invalid TOML: this `{}` is never closed",
                    &text[open..open + 1]
                ),
            )
            .with_help(help),
        );
        let span = Span::new(0, text.len());
        let table = convert_quietly(doc.get_ref(), &mut diags);
        return (Some(Node::new(Value::Table(table), span)), diags);
    }
    let mut diags = syntax_diagnostics(text, errors);
    let span = Span::from(doc.span());
    let table = convert_quietly(doc.get_ref(), &mut diags);
    (Some(Node::new(Value::Table(table), span)), diags)
}

/// Convert a tree the parser recovered: a value it could not read (an invalid
/// float) was reported by the parser already.
fn convert_quietly(t: &DeTable<'_>, diags: &mut Vec<Diagnostic>) -> Table {
    let mut own = Vec::new();
    let table = convert_table(t, &mut own);
    diags.extend(own.into_iter().filter(|d| d.code != Code::Syntax));
    table
}

/// The parser's errors as diagnostics: the first in each section, in words a
/// pipeline author can act on.
fn syntax_diagnostics(text: &str, errors: Vec<toml::de::Error>) -> Vec<Diagnostic> {
    let mut errors: Vec<(Span, String)> = errors
        .iter()
        .map(|e| {
            let span = e.span().map(Span::from).unwrap_or_else(|| Span::new(0, 0));
            (span, first_line(e.message()).to_string())
        })
        .collect();
    errors.sort_by_key(|(s, _)| (s.start, s.end));
    let file = SourceFile::new("", text);
    let sections = Sections::new(text);
    let mut diags: Vec<Diagnostic> = Vec::new();
    // The first error in a section is reported; the parser's recovery makes the
    // later ones mostly consequences of it (the keys of a section defined twice,
    // the lines of a list whose opening line broke).
    let mut last_section = None;
    for (span, msg) in errors {
        let section = Some(sections.of(span.start));
        if last_section == Some(section) {
            continue;
        }
        let line_text = file.line_text(file.line_col(span.start).0);
        let is_header = line_text.trim_start().starts_with('[');
        let slice = text
            .get(span.start..span.end.min(text.len()))
            .unwrap_or("")
            .trim();
        let d = if msg == "duplicate key" && is_header {
            let head = line_text.trim();
            Diagnostic::new(
                Code::Syntax,
                span,
                format!("invalid TOML: the section `{head}` is defined twice"),
            )
            .with_help(
                "a section may appear once; rename one of them: every step needs its own name",
            )
        } else if msg == "duplicate key" {
            Diagnostic::new(
                Code::Syntax,
                span,
                format!("invalid TOML: the key `{slice}` is given twice in this table"),
            )
            .with_help("a key may appear once in a table; remove one of them")
        } else if msg.starts_with("string values must be quoted") && slice.is_empty() {
            Diagnostic::new(
                Code::Syntax,
                span,
                "invalid TOML: a value is missing after `=`",
            )
            .with_help("write a value, or remove the key to use its default")
        } else if msg.starts_with("string values must be quoted") {
            Diagnostic::new(Code::Syntax, span, format!("invalid TOML: {msg}"))
                .with_help(format!("write it in quotes: \"{slice}\""))
        } else if msg.starts_with("invalid basic string")
            || msg.starts_with("invalid literal string")
        {
            Diagnostic::new(Code::Syntax, span, "invalid TOML: this string is not closed on its line")
                .with_help("end the string with a quote before the end of the line (or use \"\"\" for text over several lines)")
        } else {
            Diagnostic::new(Code::Syntax, span, format!("invalid TOML: {msg}"))
                .with_help("see docs/pipelines.md for the file format")
        };
        last_section = Some(section);
        diags.push(d);
    }
    diags
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

/// What the lexical pre-scan found.
struct Scan {
    /// The outermost `[` or `{` that is never closed, if any.
    unclosed: Option<usize>,
}

/// A lexical pre-scan that refuses nesting deeper than [`MAX_DEPTH`] before the
/// recursive parser sees it, and finds a bracket that is never closed. It skips
/// strings and comments; brackets of table headers open and close on one line.
fn scan(text: &str) -> Result<Scan, Diagnostic> {
    let bytes = text.as_bytes();
    let mut open: Vec<usize> = Vec::new();
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
                open.push(i);
                if open.len() > MAX_DEPTH {
                    return Err(Diagnostic::new(
                        Code::TooDeep,
                        Span::new(i, i + 1),
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                    )
                    .with_help(
                        "a pipeline file never needs this much nesting; is this the right file?",
                    ));
                }
            }
            b']' | b'}' => {
                open.pop();
            }
            _ => {}
        }
        i += 1;
    }
    Ok(Scan {
        unclosed: open.first().copied(),
    })
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

    #[test]
    fn an_unclosed_list_is_reported_once_at_its_bracket() {
        let text = "[e]\nmetrics = [\"accuracy\"\n\n[o]\nkind = \"metrics\"\npath = \"m.json\"\n";
        let (node, diags) = parse(text);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].span, Some(Span::new(14, 15)));
        assert!(diags[0].message.contains("never closed"));
        // What comes before the bracket is still read, with the key kept.
        let Some(Node {
            value: Value::Table(t),
            ..
        }) = node
        else {
            panic!("no table")
        };
        assert!(
            matches!(t.get("e").map(|n| &n.value), Some(Value::Table(e)) if e.get("metrics").is_some())
        );
        assert!(t.get("o").is_none());
    }

    #[test]
    fn a_section_defined_twice_is_one_error_not_one_per_key() {
        let (_, diags) = parse("[m.f]\na = 1\nb = 2\n[m.f]\na = 3\nb = 4\n[m.g]\na = 1\na = 2\n");
        let msgs: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "invalid TOML: the section `[m.f]` is defined twice",
                "invalid TOML: the key `a` is given twice in this table",
            ]
        );
    }

    #[test]
    fn an_unclosed_section_header_says_how_to_close_it() {
        let (_, diags) = parse("[pipeline]\nname = \"x\"\n[models.forest\nestimator = \"ridge\"\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(
            diags[0].help.as_deref(),
            Some("close the section header on its line: `[models.forest]`")
        );
    }

    #[test]
    fn a_stray_bracket_before_a_key_loses_nothing_else() {
        let text = "[o]\n[kind = \"model\"\npath = \"x\"\n";
        let (node, diags) = parse(text);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].message, "invalid TOML: a stray `[` before a key");
        assert_eq!(diags[0].span, Some(Span::new(4, 5)));
        let Some(Node {
            value: Value::Table(t),
            ..
        }) = node
        else {
            panic!("no table")
        };
        assert!(
            matches!(t.get("o").map(|n| &n.value), Some(Value::Table(o)) if o.get("kind").is_some() && o.get("path").is_some())
        );
    }

    #[test]
    fn an_invalid_float_is_reported_once() {
        let (_, diags) = parse("[s]\na = 0.3x\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
    }

    #[test]
    fn a_missing_value_says_so() {
        let (_, diags) = parse("seed =\nname = \"x\"\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(
            diags[0].message,
            "invalid TOML: a value is missing after `=`"
        );
    }
}

//! The `.dagml` parser: text → [`File`] (statements with spans and comments) and
//! every syntax error, built from nom combinators that follow grammar/dagml.ebnf
//! rule by rule (each rule's function is named after it).
//!
//! In: the file's text. Out: the statements that parsed, and diagnostics. A
//! statement that does not parse is reported where it goes wrong ("expected `=`
//! after `forest`, found `fit`") and skipped up to the next line that starts in
//! column 1 with a name: one run reports every syntax error.
//! Must not: interpret keys (that is `lower`), panic, or recurse without bound:
//! values nest at most [`MAX_DEPTH`] levels; expressions are cut out of the text
//! without recursion and parsed by `frontend::expr`, which has its own limit.

use super::ast::*;
use crate::frontend::diag::{Code, Diagnostic, did_you_mean};
use crate::frontend::span::{Span, Spanned};
use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::combinator::{opt, recognize};
use nom::error::{ErrorKind, ParseError};
use nom::sequence::pair;
use std::cell::{Cell, RefCell};

/// The deepest nesting of lists, tables and parameter lists accepted.
pub const MAX_DEPTH: usize = 64;

/// Words that start a statement.
const STATEMENT_WORDS: &[&str] = &["pipeline", "evaluate", "save", "cluster"];
const STATEMENT: &str = "a statement (`pipeline`, `NAME = load|transform|split|fit ...`, `evaluate`, `save` or `cluster`)";
/// Words that may follow `NAME =`.
const RHS_WORDS: &[&str] = &["load", "transform", "split", "fit", "evaluate", "save"];
/// Clauses of a `fit` statement (besides unknown ones, reported by lowering).
pub const FIT_CLAUSES: &[&str] = &[
    "on",
    "target",
    "features",
    "task",
    "per_shard",
    "combine",
    "preprocess",
];

/// A parse error: where, what was expected there, or a message of its own.
#[derive(Clone, Debug)]
pub struct PErr<'a> {
    rest: &'a str,
    expected: Vec<String>,
    msg: Option<(Code, String)>,
    /// An opening bracket that the error may be about.
    open: Option<Span>,
}

impl<'a> PErr<'a> {
    fn expected(rest: &'a str, what: impl Into<String>) -> Self {
        PErr {
            rest,
            expected: vec![what.into()],
            msg: None,
            open: None,
        }
    }
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        PErr {
            rest: input,
            expected: vec![],
            msg: None,
            open: None,
        }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }

    /// Keep the error that got furthest; at the same place, merge what was expected.
    fn or(mut self, other: Self) -> Self {
        if other.rest.len() < self.rest.len() {
            return other;
        }
        if self.rest.len() < other.rest.len() {
            return self;
        }
        for e in other.expected {
            if !self.expected.contains(&e) {
                self.expected.push(e);
            }
        }
        self.msg = self.msg.or(other.msg);
        self.open = self.open.or(other.open);
        self
    }
}

type PResult<'a, O> = IResult<&'a str, O, PErr<'a>>;

fn fail<'a, O>(rest: &'a str, what: impl Into<String>) -> PResult<'a, O> {
    Err(nom::Err::Error(PErr::expected(rest, what)))
}

fn fatal<'a, O>(rest: &'a str, code: Code, msg: impl Into<String>) -> PResult<'a, O> {
    Err(nom::Err::Failure(PErr {
        rest,
        expected: vec![],
        msg: Some((code, msg.into())),
        open: None,
    }))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `ws`: spaces, tabs and comments; a line break followed by an indented,
/// non-blank line continues the statement.
pub fn ws(i: &str) -> &str {
    let b = i.as_bytes();
    let mut k = 0;
    loop {
        while k < b.len() && matches!(b[k], b' ' | b'\t' | b'\r') {
            k += 1;
        }
        if k < b.len() && b[k] == b'#' {
            while k < b.len() && b[k] != b'\n' {
                k += 1;
            }
        }
        if k < b.len() && b[k] == b'\n' && matches!(b.get(k + 1), Some(b' ' | b'\t')) {
            let mut m = k + 1;
            while m < b.len() && matches!(b[m], b' ' | b'\t' | b'\r') {
                m += 1;
            }
            if m < b.len() && b[m] != b'\n' {
                k = m;
                continue;
            }
        }
        break;
    }
    &i[k..]
}

/// Spaces, tabs and a comment, up to the end of the line.
fn ws_line(i: &str) -> &str {
    let t = i.trim_start_matches([' ', '\t', '\r']);
    if t.starts_with('#') {
        &t[t.find('\n').unwrap_or(t.len())..]
    } else {
        t
    }
}

/// After spaces, the text past `s` if it comes next.
fn eat<'a>(i: &'a str, s: &str) -> Option<&'a str> {
    ws(i).strip_prefix(s)
}

/// `wsnl`: any whitespace, line breaks and comments (inside brackets).
pub fn wsnl(i: &str) -> &str {
    let b = i.as_bytes();
    let mut k = 0;
    while k < b.len() {
        match b[k] {
            b' ' | b'\t' | b'\r' | b'\n' => k += 1,
            b'#' => {
                while k < b.len() && b[k] != b'\n' {
                    k += 1;
                }
            }
            _ => break,
        }
    }
    &i[k..]
}

/// Parser state: the whole text (for offsets), the nesting depth, and
/// diagnostics that do not stop the statement (an integer out of range).
pub struct Ctx<'s> {
    src: &'s str,
    depth: Cell<usize>,
    soft: RefCell<Vec<Diagnostic>>,
}

impl<'s> Ctx<'s> {
    pub fn new(src: &'s str) -> Self {
        Ctx {
            src,
            depth: Cell::new(0),
            soft: RefCell::new(Vec::new()),
        }
    }

    pub fn off(&self, i: &str) -> usize {
        (i.as_ptr() as usize).saturating_sub(self.src.as_ptr() as usize)
    }

    fn span(&self, from: &str, to: &str) -> Span {
        Span::new(self.off(from), self.off(to))
    }

    // ---- lexical rules ----------------------------------------------------

    /// `name = letter { letter | digit | "_" | "-" }`
    fn name(&self, i: &'s str) -> PResult<'s, Word> {
        let i = ws(i);
        let (r, w) = recognize(pair(take_while1(is_ident_start), take_while(is_ident_char)))
            .parse(i)
            .or_else(|_: nom::Err<PErr>| fail(i, "a name"))?;
        Ok((r, Spanned::new(w.to_string(), self.span(i, r))))
    }

    /// `ref = name { "." part }` (`holdout.train`, `shards.A`).
    fn reference(&self, i: &'s str) -> PResult<'s, Word> {
        let i = ws(i);
        let (r, w) = recognize(pair(
            pair(take_while1(is_ident_start), take_while(is_ident_char)),
            nom::multi::many0(pair(tag("."), take_while1(is_ident_char))),
        ))
        .parse(i)
        .or_else(|_: nom::Err<PErr>| fail(i, "a name"))?;
        Ok((r, Spanned::new(w.to_string(), self.span(i, r))))
    }

    /// A keyword: the name `word`, and not a longer name.
    fn keyword(&self, i: &'s str, word: &'static str) -> PResult<'s, Span> {
        let i = ws(i);
        match self.name(i) {
            Ok((r, w)) if w.value == word => Ok((r, w.span)),
            _ => fail(i, format!("`{word}`")),
        }
    }

    /// Punctuation after optional spaces.
    fn sym(&self, i: &'s str, s: &'static str) -> PResult<'s, Span> {
        let i = ws(i);
        match tag::<_, _, PErr>(s).parse(i) {
            Ok((r, _)) => Ok((r, self.span(i, r))),
            Err(_) => fail(i, format!("`{s}`")),
        }
    }

    fn peek_is(&self, i: &'s str, s: &str) -> bool {
        ws(i).starts_with(s)
    }

    fn peek_name(&self, i: &'s str) -> Option<Word> {
        self.name(i).ok().map(|(_, w)| w)
    }

    /// `string = '"' { char | escape } '"'`
    fn string(&self, i: &'s str) -> PResult<'s, Val> {
        let i = ws(i);
        if !i.starts_with('"') {
            return fail(i, "a string");
        }
        let mut out = String::new();
        let mut chars = i.char_indices().skip(1);
        while let Some((k, c)) = chars.next() {
            match c {
                '"' => {
                    let r = &i[k + 1..];
                    return Ok((r, Val::new(ValKind::Str(out), self.span(i, r))));
                }
                '\n' => break,
                '\\' => {
                    let Some((k2, e)) = chars.next() else { break };
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '"' => '"',
                        '\\' => '\\',
                        'u' => {
                            let hex = i.get(k2 + 1..k2 + 5).unwrap_or("");
                            match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                                Some(ch) if hex.len() == 4 => {
                                    for _ in 0..4 {
                                        chars.next();
                                    }
                                    ch
                                }
                                _ => {
                                    return fatal(
                                        &i[k..],
                                        Code::Syntax,
                                        "`\\u` must be followed by 4 hex digits",
                                    );
                                }
                            }
                        }
                        other => {
                            return fatal(
                                &i[k..],
                                Code::Syntax,
                                format!("unknown escape `\\{other}` in a string"),
                            );
                        }
                    });
                }
                c => out.push(c),
            }
        }
        fatal(i, Code::Syntax, "unterminated string")
    }

    /// `number = ["-" | "+"] digits ["." digits] [("e" | "E") ["-" | "+"] digits]`
    fn number(&self, i: &'s str) -> PResult<'s, Val> {
        let i = ws(i);
        let digits = |s| take_while1(|c: char| c.is_ascii_digit() || c == '_').parse(s);
        let (r, text) = recognize((
            opt(alt((tag("-"), tag("+")))),
            digits,
            opt(pair(tag("."), digits)),
            opt((
                alt((tag("e"), tag("E"))),
                opt(alt((tag("-"), tag("+")))),
                digits,
            )),
        ))
        .parse(i)
        .or_else(|_: nom::Err<PErr>| fail(i, "a number"))?;
        if r.starts_with(is_ident_char) {
            return fail(r, "a number");
        }
        let clean: String = text.chars().filter(|c| *c != '_' && *c != '+').collect();
        let span = self.span(i, r);
        let kind = if clean.contains(['.', 'e', 'E']) {
            match clean.parse::<f64>() {
                Ok(x) => ValKind::Float(x),
                Err(_) => return fatal(i, Code::Syntax, "invalid number"),
            }
        } else {
            match clean.parse::<i64>() {
                Ok(n) => ValKind::Int(n),
                Err(_) => {
                    self.soft.borrow_mut().push(Diagnostic::new(
                        Code::OutOfRange,
                        span,
                        "integer does not fit in 64 bits",
                    ));
                    ValKind::Int(0)
                }
            }
        };
        Ok((r, Val::new(kind, span)))
    }

    /// `word_value = ref` (`true` and `false` are booleans).
    fn word_value(&self, i: &'s str) -> PResult<'s, Val> {
        let (r, w) = self.reference(i)?;
        let kind = match w.value.as_str() {
            "true" => ValKind::Bool(true),
            "false" => ValKind::Bool(false),
            _ => ValKind::Word(w.value),
        };
        Ok((r, Val::new(kind, w.span)))
    }

    fn enter(&self, i: &'s str) -> Result<(), nom::Err<PErr<'s>>> {
        let d = self.depth.get() + 1;
        if d > MAX_DEPTH {
            return Err(nom::Err::Failure(PErr {
                rest: i,
                expected: vec![],
                msg: Some((
                    Code::TooDeep,
                    format!("nesting deeper than {MAX_DEPTH} levels"),
                )),
                open: None,
            }));
        }
        self.depth.set(d);
        Ok(())
    }

    fn leave(&self) {
        self.depth.set(self.depth.get().saturating_sub(1));
    }

    // ---- values -------------------------------------------------------------

    /// `value = string | number | list | table | word_value`
    pub fn value(&self, i: &'s str) -> PResult<'s, Val> {
        let i = ws(i);
        let v = match i.chars().next() {
            Some('"') => self.string(i),
            Some('[') => self.list(i),
            Some('{') => self.table(i),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.number(i),
            Some(c) if is_ident_start(c) => self.word_value(i),
            _ => return fail(i, "a value"),
        };
        match v {
            Err(nom::Err::Error(e)) if e.rest.len() == i.len() => fail(i, "a value"),
            other => other,
        }
    }

    /// `list = "[" [ value { "," value } [","] ] "]"`
    fn list(&self, i: &'s str) -> PResult<'s, Val> {
        let i = ws(i);
        let (mut r, open) = self.sym(i, "[")?;
        self.enter(i)?;
        let mut items = Vec::new();
        loop {
            r = wsnl(r);
            if let Some(r2) = eat(r, "]") {
                self.leave();
                return Ok((r2, Val::new(ValKind::List(items), self.span(i, r2))));
            }
            let (r2, v) = self.value(r).map_err(|e| with_open(e, open))?;
            items.push(v);
            r = wsnl(r2);
            if let Some(r2) = eat(r, ",") {
                r = r2;
            } else if !r.starts_with(']') {
                return Err(with_open(
                    nom::Err::Error(PErr::expected(r, "`,` or `]`")),
                    open,
                ));
            }
        }
    }

    /// `table = "{" [ param { "," param } [","] ] "}"`
    fn table(&self, i: &'s str) -> PResult<'s, Val> {
        let i = ws(i);
        let (r, open) = self.sym(i, "{")?;
        self.enter(i)?;
        let (r, params) = self.params_until(r, "}", open)?;
        self.leave();
        Ok((r, Val::new(ValKind::Table(params), self.span(i, r))))
    }

    /// `param = (name | string) "=" value`
    fn param(&self, i: &'s str) -> PResult<'s, Param> {
        let i = ws(i);
        let (r, key) = match self.name(i) {
            Ok(x) => x,
            Err(_) => match self.string(i) {
                Ok((r, v)) => {
                    let s = v.as_str().unwrap_or("").to_string();
                    (r, Spanned::new(s, v.span))
                }
                Err(_) => return fail(i, "a parameter name"),
            },
        };
        let (r, _) = self.sym(r, "=")?;
        let (r, value) = self.value(wsnl(r))?;
        Ok((r, Param { key, value }))
    }

    /// Parameters up to `close` (after the opening bracket).
    fn params_until(
        &self,
        mut r: &'s str,
        close: &'static str,
        open: Span,
    ) -> PResult<'s, Vec<Param>> {
        let mut params = Vec::new();
        loop {
            r = wsnl(r);
            if let Some(r2) = eat(r, close) {
                return Ok((r2, params));
            }
            let (r2, p) = self.param(r).map_err(|e| with_open(e, open))?;
            params.push(p);
            r = wsnl(r2);
            if let Some(r2) = eat(r, ",") {
                r = r2;
            } else if !r.starts_with(close) {
                let what = if close == ")" {
                    "`,` or `)`"
                } else {
                    "`,` or `}`"
                };
                return Err(with_open(nom::Err::Error(PErr::expected(r, what)), open));
            }
        }
    }

    /// `args = "(" [ (value | param) { "," param } [","] ] ")"`: an optional
    /// positional value first, then parameters.
    fn args(&self, i: &'s str, positional: bool) -> PResult<'s, (Option<Val>, Vec<Param>)> {
        let i = ws(i);
        let (r, open) = self.sym(i, "(")?;
        self.enter(i)?;
        let r1 = wsnl(r);
        let mut pos = None;
        let mut r = r;
        let is_param = {
            let after = self
                .name(r1)
                .map(|(x, _)| x)
                .or_else(|_| self.string(r1).map(|(x, _)| x));
            matches!(after, Ok(x) if ws(x).starts_with('=') && !ws(x).starts_with("=="))
        };
        if positional && !is_param && !r1.starts_with(')') {
            let (r2, v) = self.value(r1).map_err(|e| with_open(e, open))?;
            pos = Some(v);
            r = wsnl(r2);
            if let Some(r2) = eat(r, ",") {
                r = r2;
            } else if !r.starts_with(')') {
                return Err(with_open(
                    nom::Err::Error(PErr::expected(r, "`,` or `)`")),
                    open,
                ));
            }
        }
        let (r, params) = self.params_until(r, ")", open)?;
        self.leave();
        Ok((r, (pos, params)))
    }

    /// The extent of an expression: up to a `,`, `]`, `}`, an unopened `)`, a
    /// comment or the end of the line, skipping strings and backquoted names.
    /// Parsed later by `frontend::expr`, which reports what is wrong inside it.
    fn expression(&self, i: &'s str) -> PResult<'s, Word> {
        let i = ws(i);
        let b = i.as_bytes();
        let mut k = 0;
        let mut depth = 0usize;
        while k < b.len() {
            match b[k] {
                b'\n' | b'#' => break,
                b',' | b']' | b'}' if depth == 0 => break,
                b'(' => depth += 1,
                b')' if depth == 0 => break,
                b')' => depth -= 1,
                q @ (b'"' | b'\'' | b'`') => {
                    k += 1;
                    while k < b.len() && b[k] != q && b[k] != b'\n' {
                        if b[k] == b'\\' && q != b'`' {
                            k += 1;
                        }
                        k += 1;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        let k = k.min(b.len());
        let text = i[..k].trim_end();
        if text.is_empty() {
            return fail(i, "an expression");
        }
        let r = &i[text.len()..];
        Ok((r, Spanned::new(text.to_string(), self.span(i, r))))
    }

    /// A column name: a name or a string.
    fn column(&self, i: &'s str) -> PResult<'s, Val> {
        let i = ws(i);
        if i.starts_with('"') {
            return self.string(i);
        }
        match self.name(i) {
            Ok((r, w)) => Ok((r, Val::new(ValKind::Word(w.value), w.span))),
            Err(_) => fail(i, "a column name"),
        }
    }

    // ---- operations ----------------------------------------------------------

    /// `op = "derive" column "=" expression | "filter" expression
    ///      | "cast" column "to" name | name [list] [args]`
    fn op(&self, i: &'s str) -> PResult<'s, Op> {
        let i = ws(i);
        let (r, name) = self.name(i).or_else(|_| fail(i, "an operation"))?;
        let (r, kind) = match name.value.as_str() {
            "derive" => {
                let (r, column) = self.column(r)?;
                let (r, _) = self.sym(r, "=")?;
                let (r, expr) = self.expression(r)?;
                (
                    r,
                    OpKind::Derive {
                        kw: name.span,
                        column,
                        expr,
                    },
                )
            }
            "filter" => {
                let (r, expr) = self.expression(r)?;
                (
                    r,
                    OpKind::Filter {
                        kw: name.span,
                        expr,
                    },
                )
            }
            "cast" => {
                let (r, column) = self.column(r)?;
                let (r, _) = self.keyword(r, "to")?;
                let (r, to) = self
                    .word_value(r)
                    .or_else(|_| fail(ws(r), "a column type"))?;
                (
                    r,
                    OpKind::Cast {
                        kw: name.span,
                        column,
                        to,
                    },
                )
            }
            _ => {
                let (r, columns) = if self.peek_is(r, "[") {
                    let (r, l) = self.list(r)?;
                    (r, Some(l))
                } else {
                    (r, None)
                };
                let (r, params) = if self.peek_is(r, "(") {
                    let (r, (_, p)) = self.args(r, false)?;
                    (r, p)
                } else {
                    (r, vec![])
                };
                (
                    r,
                    OpKind::Other {
                        name,
                        columns,
                        params,
                    },
                )
            }
        };
        Ok((
            r,
            Op {
                kind,
                span: self.span(i, r),
                comments: Comments::default(),
            },
        ))
    }

    /// `ops = "[" { op ("," | newline) } "]"`
    fn ops(&self, i: &'s str) -> PResult<'s, (Vec<Op>, Span)> {
        let i = ws(i);
        let (mut r, open) = self
            .sym(i, "[")
            .or_else(|_| fail(i, "`[` and a list of operations"))?;
        self.enter(i)?;
        let mut ops = Vec::new();
        loop {
            r = wsnl(r);
            if let Some(r2) = eat(r, "]") {
                self.leave();
                return Ok((r2, (ops, self.span(i, r2))));
            }
            let (r2, op) = self.op(r).map_err(|e| with_open(e, open))?;
            ops.push(op);
            let r3 = ws_line(r2);
            if let Ok((r4, _)) = self.sym(r3, ",") {
                r = r4;
            } else if r3.starts_with(']') || r3.starts_with('\n') {
                r = r3;
            } else {
                return Err(with_open(
                    nom::Err::Error(PErr::expected(r3, "`,`, a new line or `]`")),
                    open,
                ));
            }
        }
    }

    // ---- statements --------------------------------------------------------

    /// `statement = pipeline | cluster | evaluate | save | assignment`
    pub fn statement(&self, i: &'s str) -> PResult<'s, StmtKind> {
        let (r, first) = self.name(i).or_else(|_| fail(i, STATEMENT))?;
        let after = ws(r);
        let assigns =
            (after.starts_with('=') && !after.starts_with("==")) || after.starts_with(',');
        if !assigns {
            match first.value.as_str() {
                "pipeline" => return self.pipeline(r, first.span),
                "cluster" => return self.cluster(r, first.span),
                "evaluate" => return self.evaluate(r, None, first.span),
                "save" => return self.save(r, None, first.span),
                w if did_you_mean(w, STATEMENT_WORDS.iter().copied()).is_some() => {
                    return fail(i, STATEMENT);
                }
                _ => {}
            }
        }
        self.assignment(i, r, first)
    }

    /// `assignment = name ["," name] "=" ("load" load | "transform" transform
    ///              | "split" split | "fit" fit | "evaluate" evaluate | "save" save)`
    fn assignment(&self, _i: &'s str, r: &'s str, first: Word) -> PResult<'s, StmtKind> {
        let mut names = vec![first];
        let mut r = r;
        if let Some(r2) = eat(r, ",") {
            let (r2, second) = self.name(r2)?;
            names.push(second);
            r = r2;
        }
        let (r, _) = match self.sym(r, "=") {
            Ok(x) => x,
            Err(e) if names.len() == 1 => {
                let known = STATEMENT_WORDS.contains(&names[0].value.as_str());
                return Err(e.map(|mut e| {
                    if !known {
                        e.expected.push("`,`".into());
                    }
                    e
                }));
            }
            Err(e) => return Err(e),
        };
        let r0 = ws(r);
        let (r, kw) = self.name(r0).or_else(|_| rhs_fail(r0))?;
        if names.len() == 2 && kw.value != "split" {
            return fatal(
                ws(&self.src[names[1].span.start..]),
                Code::Syntax,
                "only a `split` assigns two names (its train and test parts)",
            );
        }
        let one = names[0].clone();
        match kw.value.as_str() {
            "load" => self.load(r, one, kw.span),
            "transform" => self.transform(r, one, kw.span),
            "split" => self.split(r, names, kw.span),
            "fit" => self.fit(r, one, kw.span),
            "evaluate" => self.evaluate(r, Some(one), kw.span),
            "save" => self.save(r, Some(one), kw.span),
            _ => rhs_fail(r0),
        }
    }

    /// `pipeline = "pipeline" name [args]`
    fn pipeline(&self, r: &'s str, kw: Span) -> PResult<'s, StmtKind> {
        let (r, name) = self.name(r)?;
        let (r, params) = if self.peek_is(r, "(") {
            let (r, (_, p)) = self.args(r, false)?;
            (r, p)
        } else {
            (r, vec![])
        };
        Ok((r, StmtKind::Pipeline { kw, name, params }))
    }

    /// `load = name [args] ["after" ref]`
    fn load(&self, r: &'s str, name: Word, kw: Span) -> PResult<'s, StmtKind> {
        let (r, kind) = self.name(r).or_else(|_| {
            fail(
                ws(r),
                "a source kind (`mnist`, `csv`, `parquet`, `arrow` or `synthetic`)",
            )
        })?;
        let (r, (positional, params)) = if self.peek_is(r, "(") {
            self.args(r, true)?
        } else {
            (r, (None, vec![]))
        };
        let (r, after) = match self.keyword(r, "after") {
            Ok((r, _)) => {
                let (r, w) = self.reference(r)?;
                (r, Some(Val::new(ValKind::Word(w.value), w.span)))
            }
            Err(_) => (r, None),
        };
        Ok((
            r,
            StmtKind::Load {
                name,
                kw,
                kind,
                positional,
                params,
                after,
            },
        ))
    }

    fn ref_value(&self, r: &'s str) -> PResult<'s, Val> {
        let r0 = ws(r);
        let (r, w) = self.reference(r0).or_else(|_| fail(r0, "a dataset name"))?;
        Ok((r, Val::new(ValKind::Word(w.value), w.span)))
    }

    /// `transform = ref ops`
    fn transform(&self, r: &'s str, name: Word, kw: Span) -> PResult<'s, StmtKind> {
        let (r, input) = self.ref_value(r)?;
        let (r, (ops, ops_span)) = self.ops(r)?;
        Ok((
            r,
            StmtKind::Transform {
                name,
                kw,
                input,
                ops,
                ops_span,
            },
        ))
    }

    /// `split = [ref] name [args]`
    fn split(&self, r: &'s str, names: Vec<Word>, kw: Span) -> PResult<'s, StmtKind> {
        let r0 = ws(r);
        let (r, first) = self
            .reference(r0)
            .or_else(|_| fail(r0, "the dataset to split, or a split kind"))?;
        let (r, input, kind) = match self.name(r) {
            Ok((r2, kind)) => (
                r2,
                Some(Val::new(ValKind::Word(first.value), first.span)),
                kind,
            ),
            Err(_) if !first.value.contains('.') => (r, None, first),
            Err(e) => {
                return Err(e.map(|mut e| {
                    e.expected =
                        vec!["a split kind (`holdout`, `predefined`, `kfold` or `shards`)".into()];
                    e
                }));
            }
        };
        let (r, params) = if self.peek_is(r, "(") {
            let (r, (_, p)) = self.args(r, false)?;
            (r, p)
        } else {
            (r, vec![])
        };
        Ok((
            r,
            StmtKind::Split {
                names,
                kw,
                input,
                kind,
                params,
            },
        ))
    }

    /// `fit = name [args] { clause }`;
    /// `clause = "per_shard" | "preprocess" ops | name value`
    fn fit(&self, r: &'s str, name: Word, kw: Span) -> PResult<'s, StmtKind> {
        let (r, estimator) = self.name(r).or_else(|_| {
            fail(
                ws(r),
                "an estimator (`random_forest`, `logistic_regression`, ...)",
            )
        })?;
        let (mut r, params) = if self.peek_is(r, "(") {
            let (r, (_, p)) = self.args(r, false)?;
            (r, Some(p))
        } else {
            (r, None)
        };
        let mut clauses = Vec::new();
        loop {
            let r0 = ws(r);
            if r0.is_empty() || r0.starts_with('\n') {
                break;
            }
            let (r1, key) = self.name(r0).map_err(|_| {
                let mut e = PErr::expected(r0, "a clause");
                e.expected = FIT_CLAUSES.iter().map(|c| format!("`{c}`")).collect();
                nom::Err::Error(e)
            })?;
            let (r1, value) = match key.value.as_str() {
                "preprocess" => {
                    let (r2, (ops, span)) = self.ops(r1)?;
                    (r2, ClauseVal::Ops(ops, span))
                }
                "per_shard" => match self.word_value(r1) {
                    Ok((r2, v)) if matches!(v.kind, ValKind::Bool(_)) => (r2, ClauseVal::Val(v)),
                    _ => (r1, ClauseVal::Flag),
                },
                known if FIT_CLAUSES.contains(&known) => {
                    let (r2, v) = self.value(r1)?;
                    (r2, ClauseVal::Val(v))
                }
                _ => {
                    let next = ws(r1);
                    let flag = next.is_empty()
                        || next.starts_with('\n')
                        || self
                            .peek_name(next)
                            .is_some_and(|w| FIT_CLAUSES.contains(&w.value.as_str()));
                    if flag {
                        (r1, ClauseVal::Flag)
                    } else {
                        let (r2, v) = self.value(r1)?;
                        (r2, ClauseVal::Val(v))
                    }
                }
            };
            clauses.push(Clause { key, value });
            r = r1;
        }
        Ok((
            r,
            StmtKind::Fit {
                name,
                kw,
                estimator,
                params,
                clauses,
            },
        ))
    }

    /// `evaluate = ref "on" ref { "," ref } list`
    fn evaluate(&self, r: &'s str, name: Option<Word>, kw: Span) -> PResult<'s, StmtKind> {
        let r0 = ws(r);
        let (r, model) = self
            .reference(r0)
            .or_else(|_| fail(r0, "the model to evaluate"))?;
        let model = Val::new(ValKind::Word(model.value), model.span);
        let (mut r, _) = self.keyword(r, "on")?;
        let mut data = Vec::new();
        loop {
            let (r2, d) = self.ref_value(r)?;
            data.push(d);
            match self.sym(r2, ",") {
                Ok((r3, _)) => r = r3,
                Err(_) => {
                    r = r2;
                    break;
                }
            }
        }
        let r0 = ws(r);
        if !r0.starts_with('[') {
            return fail(r0, "`,` or a list of metrics like `[accuracy]`");
        }
        let (r, metrics) = self.list(r0)?;
        Ok((
            r,
            StmtKind::Evaluate {
                name,
                kw,
                model,
                data,
                metrics,
            },
        ))
    }

    /// `save = ( "metrics" [list] | "report" [list] | "plan" | "predictions" "of" ref "on" ref
    ///         | "dataset" ref | ["model"] ref ) "to" value ["as" name]`
    fn save(&self, r: &'s str, name: Option<Word>, kw: Span) -> PResult<'s, StmtKind> {
        let r0 = ws(r);
        let (r1, first) = self.reference(r0).or_else(|_| {
            fail(
                r0,
                "what to save: a model, `metrics`, `predictions`, `dataset` or `plan`",
            )
        })?;
        let word = |w: Word| Val::new(ValKind::Word(w.value), w.span);
        let (r, what) = match first.value.as_str() {
            "metrics" => {
                if self.peek_is(r1, "[") {
                    let (r, l) = self.list(r1)?;
                    (
                        r,
                        SaveWhat::Metrics {
                            evaluations: Some(l),
                        },
                    )
                } else {
                    (r1, SaveWhat::Metrics { evaluations: None })
                }
            }
            "report" => {
                if self.peek_is(r1, "[") {
                    let (r, l) = self.list(r1)?;
                    (
                        r,
                        SaveWhat::Report {
                            evaluations: Some(l),
                        },
                    )
                } else {
                    (r1, SaveWhat::Report { evaluations: None })
                }
            }
            "plan" => (r1, SaveWhat::Plan),
            "predictions" => {
                let (r, _) = self.keyword(r1, "of")?;
                let (r, model) = self.ref_value(r)?;
                let (r, _) = self.keyword(r, "on")?;
                let (r, data) = self.ref_value(r)?;
                (r, SaveWhat::Predictions { model, data })
            }
            "dataset" => {
                let (r, data) = self.ref_value(r1)?;
                (r, SaveWhat::Dataset { data })
            }
            "model" if self.peek_name(r1).is_none_or(|w| w.value != "to") => {
                let (r, model) = self.ref_value(r1)?;
                (
                    r,
                    SaveWhat::Model {
                        explicit: true,
                        model,
                    },
                )
            }
            _ => (
                r1,
                SaveWhat::Model {
                    explicit: false,
                    model: word(first),
                },
            ),
        };
        let (r, _) = self.keyword(r, "to")?;
        let r0 = ws(r);
        let (r, path) = self.string(r0).or_else(|e| match e {
            nom::Err::Failure(_) => Err(e),
            _ => fail(r0, "a path in quotes"),
        })?;
        let (r, format) = match self.keyword(r, "as") {
            Ok((r, _)) => {
                let (r, f) = self
                    .word_value(r)
                    .or_else(|_| fail(ws(r), "a file format (`parquet`, `csv`, ...)"))?;
                (r, Some(f))
            }
            Err(_) => (r, None),
        };
        Ok((
            r,
            StmtKind::Save {
                name,
                kw,
                what,
                path,
                format,
            },
        ))
    }

    /// `cluster = "cluster" name [args]`
    fn cluster(&self, r: &'s str, kw: Span) -> PResult<'s, StmtKind> {
        let (r, kind) = self
            .name(r)
            .or_else(|_| fail(ws(r), "a cluster kind (`local` or `remote`)"))?;
        let (r, (positional, params)) = if self.peek_is(r, "(") {
            self.args(r, true)?
        } else {
            (r, (None, vec![]))
        };
        Ok((
            r,
            StmtKind::Cluster {
                kw,
                kind,
                positional,
                params,
            },
        ))
    }
}

fn rhs_fail<O>(rest: &str) -> PResult<'_, O> {
    let mut e = PErr::expected(rest, "");
    e.expected = RHS_WORDS.iter().map(|w| format!("`{w}`")).collect();
    Err(nom::Err::Error(e))
}

fn with_open<'a>(e: nom::Err<PErr<'a>>, open: Span) -> nom::Err<PErr<'a>> {
    e.map(|mut e| {
        e.open = e.open.or(Some(open));
        e
    })
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// One comment: where it starts, its text after `#`, and whether it is alone on its line.
#[derive(Clone, Debug)]
pub struct RawComment {
    pub at: usize,
    pub text: String,
    pub own_line: bool,
}

/// Every comment of the file, found by a scan that skips strings and quoted names
/// the way the parser does.
pub fn comments(text: &str) -> Vec<RawComment> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut k = 0;
    let mut line_start = 0;
    while k < b.len() {
        match b[k] {
            b'\n' => line_start = k + 1,
            b'#' => {
                let end = text[k..].find('\n').map(|e| k + e).unwrap_or(b.len());
                out.push(RawComment {
                    at: k,
                    text: text[k + 1..end].trim_end().to_string(),
                    own_line: text[line_start..k].trim().is_empty(),
                });
                k = end;
                continue;
            }
            q @ (b'"' | b'\'' | b'`') => {
                k += 1;
                while k < b.len() && b[k] != q && b[k] != b'\n' {
                    if b[k] == b'\\' && q != b'`' {
                        k += 1;
                    }
                    k += 1;
                }
                if k < b.len() && b[k] == b'\n' {
                    continue;
                }
            }
            _ => {}
        }
        k += 1;
    }
    out
}

/// Where the code before `at` ends: whitespace and comments skipped backwards.
fn content_end(src: &str, at: usize) -> usize {
    let before = &src[..at];
    let mut end = before.trim_end().len();
    loop {
        let line_start = before[..end].rfind('\n').map(|x| x + 1).unwrap_or(0);
        let line = &before[line_start..end];
        match comments(line).first() {
            Some(c) => end = before[..line_start + c.at].trim_end().len(),
            None => return end,
        }
    }
}

/// The text of the token just before `at` (for "after `forest`").
fn previous_token(src: &str, at: usize) -> Option<&str> {
    let t = &src[..content_end(src, at)];
    let last = t.chars().next_back()?;
    let start = if is_ident_char(last) || last == '.' {
        t.rfind(|c: char| !(is_ident_char(c) || c == '.'))
            .map(|x| x + 1)
            .unwrap_or(0)
    } else if last == '"' {
        t[..t.len() - 1].rfind('"').unwrap_or(t.len() - 1)
    } else {
        t.len() - last.len_utf8()
    };
    let tok = &t[start..];
    (tok.chars().count() <= 40).then_some(tok)
}

/// What is at `rest`, as a user would name it.
fn found(rest: &str) -> String {
    let r = rest.trim_start_matches([' ', '\t', '\r']);
    if r.is_empty() {
        return "the end of the file".into();
    }
    if r.starts_with('\n') || r.starts_with('#') {
        return "the end of the line".into();
    }
    let c = r.chars().next().unwrap_or(' ');
    let tok: String = if is_ident_char(c) {
        r.chars()
            .take_while(|c| is_ident_char(*c) || *c == '.')
            .collect()
    } else {
        c.to_string()
    };
    format!("`{}`", tok.chars().take(30).collect::<String>())
}

/// Turn a parse error into a diagnostic.
fn diagnostic(src: &str, e: &PErr) -> Diagnostic {
    let at = (e.rest.as_ptr() as usize)
        .saturating_sub(src.as_ptr() as usize)
        .min(src.len());
    let lead = e.rest.len() - e.rest.trim_start_matches([' ', '\t', '\r']).len();
    let mut at = at + if e.msg.is_none() { lead } else { 0 };
    // A list left open runs into the next statement: say so at the end of its line.
    let closing = e
        .expected
        .iter()
        .any(|x| x.contains("`]`") || x.contains("`)`") || x.contains("`}`"));
    if e.msg.is_none() && closing && at > 0 && src.as_bytes()[at - 1] == b'\n' {
        at = content_end(src, at);
    }
    let len = src[at..]
        .chars()
        .next()
        .filter(|c| *c != '\n')
        .map(|c| {
            if is_ident_char(c) {
                src[at..]
                    .find(|c: char| !(is_ident_char(c) || c == '.'))
                    .unwrap_or(src.len() - at)
            } else {
                c.len_utf8()
            }
        })
        .unwrap_or(0);
    let span = Span::new(
        at,
        at + len
            .max(if at < src.len() { 1 } else { 0 })
            .min(src.len() - at),
    );
    if let Some((code, msg)) = &e.msg {
        let mut d = Diagnostic::new(*code, Span::new(at, (at + 1).min(src.len())), msg.clone());
        if *code == Code::TooDeep {
            d = d.with_help(
                "a pipeline file never needs this much nesting; is this the right file?",
            );
        } else if msg == "unterminated string" {
            d = d.with_help("close the string with `\"` on the same line");
        }
        return d;
    }
    let mut expected = e.expected.clone();
    expected.dedup();
    let what = if expected.is_empty() {
        "something else".to_string()
    } else {
        join_or(&expected)
    };
    let mut msg = format!("expected {what}");
    let statement_start = expected.iter().any(|x| x == STATEMENT);
    if let Some(prev) = previous_token(src, at).filter(|_| !statement_start) {
        msg.push_str(&format!(" after `{prev}`"));
    }
    msg.push_str(&format!(", found {}", found(&src[at..])));
    let mut d = Diagnostic::new(Code::Syntax, span, msg);
    // A misspelt keyword: suggest the closest expected one.
    let word: String = src[at..]
        .chars()
        .take_while(|c| is_ident_char(*c))
        .collect();
    if !word.is_empty() {
        let words: Vec<&str> = expected
            .iter()
            .filter_map(|x| x.strip_prefix('`').and_then(|x| x.strip_suffix('`')))
            .filter(|x| x.chars().all(is_ident_char))
            .chain(if statement_start {
                STATEMENT_WORDS.to_vec()
            } else {
                vec![]
            })
            .collect();
        if let Some(best) = did_you_mean(&word, words.iter().copied()).filter(|b| *b != word) {
            d = d.with_help(format!("did you mean `{best}`?"));
        }
    }
    if let Some(open) = e.open
        && d.help.is_none()
        && (what.contains("`]`") || what.contains("`)`") || what.contains("`}`"))
    {
        d = d.with_related(open, "the bracket opened here is not closed");
    }
    d
}

/// Parse a whole file: statements, comments attached, and every syntax error.
pub fn parse_file(src: &str) -> (File, Vec<Diagnostic>) {
    let cx = Ctx::new(src);
    let mut diags = Vec::new();
    let mut file = File::default();
    let mut i = src;
    loop {
        i = wsnl(i);
        if i.is_empty() {
            break;
        }
        let start = cx.off(i);
        cx.depth.set(0);
        let res = cx.statement(i).and_then(|(r, kind)| {
            let r2 = ws(r);
            if r2.is_empty() || r2.starts_with('\n') {
                Ok((r2, kind, r))
            } else {
                Err(nom::Err::Error(PErr::expected(
                    r2,
                    "the end of the statement",
                )))
            }
        });
        match res {
            Ok((rest, kind, end)) => {
                file.stmts.push(Stmt {
                    kind,
                    span: Span::new(start, cx.off(end)),
                    comments: Comments::default(),
                    blank_before: false,
                });
                i = rest;
            }
            Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => {
                diags.push(diagnostic(src, &e));
                i = recover(src, start);
            }
            Err(nom::Err::Incomplete(_)) => {
                diags.push(Diagnostic::new(
                    Code::Syntax,
                    Span::new(start, start),
                    "incomplete input",
                ));
                i = recover(src, start);
            }
        }
    }
    diags.extend(cx.soft.into_inner());
    attach_comments(src, &mut file);
    (file, diags)
}

/// The next line after `from`'s line that starts in column 1 with a name.
fn recover(src: &str, from: usize) -> &str {
    let mut k = from;
    loop {
        match src[k..].find('\n') {
            None => return "",
            Some(n) => {
                k += n + 1;
                if src[k..].starts_with(is_ident_start) {
                    return &src[k..];
                }
            }
        }
    }
}

/// Line numbers (0-based) of byte offsets, by binary search over line starts.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    fn of(&self, at: usize) -> usize {
        match self.starts.binary_search(&at) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    fn is_blank(&self, src: &str, line: usize) -> bool {
        let Some(&s) = self.starts.get(line) else {
            return false;
        };
        let e = self.starts.get(line + 1).copied().unwrap_or(src.len());
        src[s..e].trim().is_empty()
    }
}

/// Give each comment to the statement or operation it belongs to.
fn attach_comments(src: &str, file: &mut File) {
    let lines = Lines::new(src);
    for c in comments(src) {
        let idx = file.stmts.partition_point(|s| s.span.start < c.at);
        // idx: the first statement starting after the comment.
        let inside = idx > 0 && c.at < file.stmts[idx - 1].span.end;
        if c.own_line && !inside {
            match file.stmts.get_mut(idx) {
                Some(s) => s.comments.leading.push(c.text),
                None => file.trailing.push(c.text),
            }
            continue;
        }
        if idx == 0 {
            file.trailing.push(c.text);
            continue;
        }
        let line = lines.of(c.at);
        let stmt = &mut file.stmts[idx - 1];
        let stmt_end_line = lines.of(stmt.span.end);
        let ops: Vec<&mut Op> = match &mut stmt.kind {
            StmtKind::Transform { ops, .. } => ops.iter_mut().collect(),
            StmtKind::Fit { clauses, .. } => clauses
                .iter_mut()
                .filter_map(|c| match &mut c.value {
                    ClauseVal::Ops(o, _) => Some(o.iter_mut()),
                    _ => None,
                })
                .flatten()
                .collect(),
            _ => vec![],
        };
        if c.own_line {
            if let Some(op) = ops.into_iter().find(|o| o.span.start > c.at) {
                op.comments.leading.push(c.text);
            } else {
                stmt.comments.leading.push(c.text);
            }
            continue;
        }
        let n_ops = ops.len();
        if let Some(op) = ops
            .into_iter()
            .find(|o| lines.of(o.span.end) == line)
            .filter(|_| n_ops > 1 || line != stmt_end_line)
        {
            push_trailing(&mut op.comments, c.text);
        } else {
            push_trailing(&mut stmt.comments, c.text);
        }
    }
    // Blank lines before each statement's block (its leading comments included).
    let mut prev_end: Option<usize> = None;
    for s in &mut file.stmts {
        let first_line = lines
            .of(s.span.start)
            .saturating_sub(s.comments.leading.len());
        s.blank_before = prev_end.is_some_and(|pe| {
            let prev_line = lines.of(pe);
            (prev_line + 1..first_line).any(|l| lines.is_blank(src, l))
        });
        prev_end = Some(s.span.end);
    }
    if let (false, Some(pe)) = (file.trailing.is_empty(), prev_end) {
        let first = comments(&src[pe..])
            .first()
            .map(|c| lines.of(pe + c.at))
            .unwrap_or(lines.of(pe));
        file.blank_before_trailing = (lines.of(pe) + 1..first).any(|l| lines.is_blank(src, l));
    }
}

fn push_trailing(c: &mut Comments, text: String) {
    c.trailing = Some(match c.trailing.take() {
        Some(t) => format!("{t} #{text}"),
        None => text,
    });
}

//! Row expressions: `4*a + 3`, `log(SalePrice)`, `YearBuilt > 2000 and not is_null(x)`.
//!
//! In: expression text and the byte offset where it starts in its file.
//! Out: an [`Expr`] tree with file spans, or a diagnostic pointing at the first
//! problem and saying what was expected. `Display` prints the canonical form that
//! parses back to the same tree.
//! Must not: resolve columns or functions (that is `compile`), recurse without bound.
//!
//! Grammar (also in grammar/dagml.ebnf):
//! ```text
//! expr    = or ;
//! or      = and { ("or" | "||") and } ;
//! and     = not { ("and" | "&&") not } ;
//! not     = ("not" | "!") not | cmp ;
//! cmp     = add [ ("==" | "!=" | "<" | "<=" | ">" | ">=") add ] ;
//! add     = mul { ("+" | "-") mul } ;
//! mul     = unary { ("*" | "/" | "%") unary } ;
//! unary   = "-" unary | power ;
//! power   = primary [ "^" unary ] ;
//! primary = number | string | "true" | "false" | "null"
//!         | ident [ "(" [ expr { "," expr } ] ")" ] | "`" column name "`" | "(" expr ")" ;
//! ```

use super::diag::{Code, Diagnostic};
use super::span::{Span, Spanned};
use std::fmt;

/// Deepest nesting of parentheses and operators accepted.
pub const MAX_EXPR_DEPTH: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        use BinOp::*;
        match self {
            Or => "or",
            And => "and",
            Eq => "==",
            Ne => "!=",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Rem => "%",
            Pow => "^",
        }
    }

    fn precedence(self) -> u8 {
        use BinOp::*;
        match self {
            Or => 1,
            And => 2,
            Eq | Ne | Lt | Le | Gt | Ge => 4,
            Add | Sub => 5,
            Mul | Div | Rem => 6,
            Pow => 8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ExprKind {
    Column(String),
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Null,
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Spanned<String>, Vec<Expr>),
}

/// An expression; equality ignores spans.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Expr {
    /// Every column the expression reads, with its span, in order of appearance.
    pub fn columns(&self) -> Vec<Spanned<String>> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let ExprKind::Column(c) = &e.kind {
                out.push(Spanned::new(c.clone(), e.span));
            }
        });
        out
    }

    pub fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Unary(_, e) => e.walk(f),
            ExprKind::Binary(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            ExprKind::Call(_, args) => args.iter().for_each(|a| a.walk(f)),
            _ => {}
        }
    }
}

fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(s, "and" | "or" | "not" | "true" | "false" | "null")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_prec(f, 0)
    }
}

impl Expr {
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, outer: u8) -> fmt::Result {
        match &self.kind {
            ExprKind::Column(c) if is_plain_ident(c) => write!(f, "{c}"),
            ExprKind::Column(c) => write!(f, "`{c}`"),
            ExprKind::Int(i) => write!(f, "{i}"),
            ExprKind::Float(x) => {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    write!(f, "{x:.1}")
                } else {
                    write!(f, "{x}")
                }
            }
            ExprKind::Str(s) => write!(f, "{s:?}"),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Null => write!(f, "null"),
            ExprKind::Unary(op, e) => {
                let (sym, prec) = match op {
                    UnOp::Neg => ("-", 7),
                    UnOp::Not => ("not ", 3),
                };
                if prec < outer {
                    write!(f, "(")?;
                }
                write!(f, "{sym}")?;
                e.fmt_prec(f, prec)?;
                if prec < outer {
                    write!(f, ")")?;
                }
                Ok(())
            }
            ExprKind::Binary(op, a, b) => {
                let p = op.precedence();
                let paren = p < outer;
                if paren {
                    write!(f, "(")?;
                }
                // Left-associative except `^`; comparisons do not chain.
                let (lp, rp) = match op {
                    BinOp::Pow => (p + 1, p),
                    BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                        (p + 1, p + 1)
                    }
                    _ => (p, p + 1),
                };
                a.fmt_prec(f, lp)?;
                write!(f, " {} ", op.symbol())?;
                b.fmt_prec(f, rp)?;
                if paren {
                    write!(f, ")")?;
                }
                Ok(())
            }
            ExprKind::Call(name, args) => {
                write!(f, "{}(", name.value)?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    a.fmt_prec(f, 0)?;
                }
                write!(f, ")")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, len: usize, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::new(
            Code::BadExpression,
            Span::new(self.base + at, self.base + at + len),
            msg,
        )
    }

    fn next(&mut self) -> Result<(Tok, Span), Diagnostic> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let span = |end: usize| Span::new(self.base + start, self.base + end);
        let Some(&c) = bytes.get(start) else {
            return Ok((Tok::End, span(start)));
        };
        let (tok, end) = match c {
            b'(' => (Tok::LParen, start + 1),
            b')' => (Tok::RParen, start + 1),
            b',' => (Tok::Comma, start + 1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => {
                let op = match c {
                    b'+' => "+",
                    b'-' => "-",
                    b'*' if bytes.get(start + 1) == Some(&b'*') => {
                        return {
                            self.pos = start + 2;
                            Ok((Tok::Op("^"), span(start + 2)))
                        };
                    }
                    b'*' => "*",
                    b'/' => "/",
                    b'%' => "%",
                    _ => "^",
                };
                (Tok::Op(op), start + 1)
            }
            b'=' | b'!' | b'<' | b'>' | b'&' | b'|' => {
                let two = bytes.get(start..start + 2).unwrap_or(&[]);
                let op = match two {
                    b"==" => "==",
                    b"!=" => "!=",
                    b"<=" => "<=",
                    b">=" => ">=",
                    b"&&" => "and",
                    b"||" => "or",
                    _ => "",
                };
                if !op.is_empty() {
                    (Tok::Op(op), start + 2)
                } else {
                    match c {
                        b'<' => (Tok::Op("<"), start + 1),
                        b'>' => (Tok::Op(">"), start + 1),
                        b'!' => (Tok::Op("not"), start + 1),
                        b'=' => {
                            return Err(self
                                .err(start, 1, "`=` is not an operator here")
                                .with_help("compare with `==`"));
                        }
                        _ => {
                            return Err(self.err(start, 1, format!("unexpected `{}`", c as char)));
                        }
                    }
                }
            }
            b'"' | b'\'' => {
                let mut s = String::new();
                let mut i = start + 1;
                loop {
                    let Some(ch) = self.text[i..].chars().next() else {
                        return Err(self
                            .err(start, 1, "unterminated string")
                            .with_help(format!("close it with {}", c as char)));
                    };
                    i += ch.len_utf8();
                    if ch as u32 == c as u32 {
                        break;
                    }
                    if ch == '\\' {
                        let Some(esc) = self.text[i..].chars().next() else {
                            continue;
                        };
                        i += esc.len_utf8();
                        s.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else {
                        s.push(ch);
                    }
                }
                (Tok::Str(s), i)
            }
            b'`' => match self.text[start + 1..].find('`') {
                Some(rel) => (
                    Tok::Quoted(self.text[start + 1..start + 1 + rel].to_string()),
                    start + rel + 2,
                ),
                None => return Err(self.err(start, 1, "unterminated `quoted` column name")),
            },
            b'0'..=b'9' | b'.' => {
                let mut i = start;
                let mut is_float = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'0'..=b'9' | b'_' => i += 1,
                        b'.' if !is_float => {
                            is_float = true;
                            i += 1
                        }
                        b'e' | b'E' => {
                            is_float = true;
                            i += 1;
                            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                                i += 1;
                            }
                        }
                        _ => break,
                    }
                }
                let lit: String = self.text[start..i].chars().filter(|c| *c != '_').collect();
                let tok = if is_float {
                    lit.parse::<f64>().map(Tok::Float).ok()
                } else {
                    lit.parse::<i64>().map(Tok::Int).ok()
                };
                match tok {
                    Some(t) => (t, i),
                    None => {
                        return Err(self.err(start, i - start, format!("invalid number `{lit}`")));
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut i = start;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &self.text[start..i];
                let tok = match word {
                    "and" => Tok::Op("and"),
                    "or" => Tok::Op("or"),
                    "not" => Tok::Op("not"),
                    w => Tok::Ident(w.to_string()),
                };
                (tok, i)
            }
            _ => {
                let ch = self.text[start..].chars().next().unwrap_or('?');
                return Err(self.err(start, ch.len_utf8(), format!("unexpected `{ch}`")));
            }
        };
        self.pos = end;
        Ok((tok, span(end)))
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    span: Span,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn bump(&mut self) -> Result<(), Diagnostic> {
        let (t, s) = self.lex.next()?;
        self.tok = t;
        self.span = s;
        Ok(())
    }

    fn expected(&self, what: &str) -> Diagnostic {
        let found = match &self.tok {
            Tok::End => "the end of the expression".to_string(),
            Tok::Ident(i) => format!("`{i}`"),
            Tok::Quoted(q) => format!("`{q}`"),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Float(x) => format!("`{x}`"),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Op(o) => format!("`{o}`"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
        };
        let span = if self.span.start == self.span.end {
            Span::new(self.span.start, self.span.start + 1)
        } else {
            self.span
        };
        Diagnostic::new(
            Code::BadExpression,
            span,
            format!("expected {what}, found {found}"),
        )
    }

    /// `expected`, for the parenthesis at `open` that is not closed where it should be.
    fn unclosed(&self, open: Span, what: &str) -> Diagnostic {
        let d = self.expected(what);
        if self.tok == Tok::End {
            d.with_related(open, "the parenthesis opened here")
                .with_help("close it with `)`")
        } else {
            d.with_related(open, "in the parenthesis opened here")
        }
    }

    fn enter(&mut self) -> Result<(), Diagnostic> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return Err(Diagnostic::new(
                Code::TooDeep,
                self.span,
                format!("expression nested deeper than {MAX_EXPR_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn binop(&self) -> Option<BinOp> {
        let Tok::Op(o) = &self.tok else { return None };
        Some(match *o {
            "or" => BinOp::Or,
            "and" => BinOp::And,
            "==" => BinOp::Eq,
            "!=" => BinOp::Ne,
            "<" => BinOp::Lt,
            "<=" => BinOp::Le,
            ">" => BinOp::Gt,
            ">=" => BinOp::Ge,
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "%" => BinOp::Rem,
            "^" => BinOp::Pow,
            _ => return None,
        })
    }

    /// Precedence climbing; `min` is the lowest binding power accepted.
    fn expr(&mut self, min: u8) -> Result<Expr, Diagnostic> {
        self.enter()?;
        let mut lhs = self.prefix()?;
        while let Some(op) = self.binop() {
            let p = op.precedence();
            if p < min {
                break;
            }
            let op_span = self.span;
            self.bump()?;
            let next_min = match op {
                BinOp::Pow => p,
                _ => p + 1,
            };
            let rhs = self.expr(next_min)?;
            let is_cmp = |o: BinOp| o.precedence() == 4;
            if is_cmp(op)
                && let Some(op2) = self.binop().filter(|o| is_cmp(*o))
            {
                return Err(Diagnostic::new(
                    Code::BadExpression,
                    self.span,
                    format!(
                        "comparisons do not chain: `{}` after `{}`",
                        op2.symbol(),
                        op.symbol()
                    ),
                )
                .with_help("join two comparisons with `and`")
                .with_note(format!("the first comparison is at byte {}", op_span.start)));
            }
            let span = lhs.span.join(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn prefix(&mut self) -> Result<Expr, Diagnostic> {
        let start = self.span;
        match self.tok.clone() {
            Tok::Op("-") => {
                self.bump()?;
                self.enter()?;
                let e = self.expr(7)?;
                self.depth -= 1;
                let span = start.join(e.span);
                Ok(Expr {
                    kind: ExprKind::Unary(UnOp::Neg, Box::new(e)),
                    span,
                })
            }
            Tok::Op("not") => {
                self.bump()?;
                self.enter()?;
                let e = self.expr(3)?;
                self.depth -= 1;
                let span = start.join(e.span);
                Ok(Expr {
                    kind: ExprKind::Unary(UnOp::Not, Box::new(e)),
                    span,
                })
            }
            Tok::LParen => {
                self.bump()?;
                let mut e = self.expr(0)?;
                if self.tok != Tok::RParen {
                    return Err(self.unclosed(start, "`)`"));
                }
                e.span = start.join(self.span);
                self.bump()?;
                Ok(e)
            }
            Tok::Int(i) => self.leaf(ExprKind::Int(i)),
            Tok::Float(x) => self.leaf(ExprKind::Float(x)),
            Tok::Str(s) => self.leaf(ExprKind::Str(s)),
            Tok::Quoted(q) => self.leaf(ExprKind::Column(q)),
            Tok::Ident(w) => match w.as_str() {
                "true" => self.leaf(ExprKind::Bool(true)),
                "false" => self.leaf(ExprKind::Bool(false)),
                "null" => self.leaf(ExprKind::Null),
                _ => {
                    self.bump()?;
                    if self.tok != Tok::LParen {
                        return Ok(Expr {
                            kind: ExprKind::Column(w),
                            span: start,
                        });
                    }
                    let open = self.span;
                    self.bump()?;
                    let mut args = Vec::new();
                    if self.tok != Tok::RParen {
                        loop {
                            args.push(self.expr(0)?);
                            match self.tok {
                                Tok::Comma => self.bump()?,
                                Tok::RParen => break,
                                _ => return Err(self.unclosed(open, "`,` or `)`")),
                            }
                        }
                    }
                    let span = start.join(self.span);
                    self.bump()?;
                    Ok(Expr {
                        kind: ExprKind::Call(Spanned::new(w, start), args),
                        span,
                    })
                }
            },
            _ => Err(self.expected("a column, a number, a string or `(`")),
        }
    }

    fn leaf(&mut self, kind: ExprKind) -> Result<Expr, Diagnostic> {
        let span = self.span;
        self.bump()?;
        Ok(Expr { kind, span })
    }
}

/// Parse a whole expression. `base` is the byte offset of `text` in its file.
pub fn parse(text: &str, base: usize) -> Result<Expr, Diagnostic> {
    let (expr, used) = parse_prefix(text, base)?;
    if used < text.len() && !text[used..].trim().is_empty() {
        let rest = text[used..].trim_start();
        let at = text.len() - rest.len();
        let len = rest.chars().next().map(char::len_utf8).unwrap_or(1);
        return Err(Diagnostic::new(
            Code::BadExpression,
            Span::new(base + at, base + at + len),
            "expected an operator or the end of the expression",
        ));
    }
    Ok(expr)
}

/// Parse the longest expression at the start of `text`; returns it and the
/// number of bytes used (for parsers that embed expressions in other syntax).
pub fn parse_prefix(text: &str, base: usize) -> Result<(Expr, usize), Diagnostic> {
    let mut p = Parser {
        lex: Lexer { text, pos: 0, base },
        tok: Tok::End,
        span: Span::new(base, base),
        depth: 0,
    };
    p.bump()?;
    if p.tok == Tok::End {
        return Err(p.expected("an expression"));
    }
    let e = p.expr(0)?;
    // The current token was lexed but not consumed.
    let used = p.span.start - base;
    Ok((e, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &str) -> String {
        parse(s, 0)
            .map(|e| e.to_string())
            .unwrap_or_else(|d| d.message)
    }

    #[test]
    fn precedence_and_canonical_form() {
        assert_eq!(round("4*a+3"), "4 * a + 3");
        assert_eq!(round("(a + b) * c"), "(a + b) * c");
        assert_eq!(round("a - (b - c)"), "a - (b - c)");
        assert_eq!(round("2 ^ 3 ^ 2"), "2 ^ 3 ^ 2");
        assert_eq!(round("-x ** 2"), "-x ^ 2");
        assert_eq!(round("not a > 1 && b"), "not a > 1 and b");
        assert_eq!(round("contains(Name, \"God\")"), "contains(Name, \"God\")");
        assert_eq!(round("`Sale Price` / 1000.0"), "`Sale Price` / 1000.0");
    }

    #[test]
    fn canonical_form_parses_to_the_same_tree() {
        for s in [
            "4*a+3",
            "-(a+b)*2",
            "not (a or b) and c",
            "log(abs(x - 1)) >= 0.5",
            "(-a) ^ 2",
        ] {
            let e = parse(s, 0).unwrap();
            let again = parse(&e.to_string(), 0).unwrap();
            assert_eq!(e, again, "{s} -> {e}");
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        let d = parse("4 * (a + 3", 10).unwrap_err();
        assert_eq!(d.message, "expected `)`, found the end of the expression");
        assert_eq!(d.span, Some(Span::new(20, 21)));
        assert_eq!(d.related[0].0, Span::new(14, 15));
        assert_eq!(d.help.as_deref(), Some("close it with `)`"));
        let d = parse("max(a, log(b)", 0).unwrap_err();
        assert_eq!(d.related[0].0, Span::new(3, 4));
        let d = parse("a = 3", 0).unwrap_err();
        assert_eq!(d.help.as_deref(), Some("compare with `==`"));
        let d = parse("1 < a < 3", 0).unwrap_err();
        assert!(d.message.contains("do not chain"));
        assert!(parse("a b", 0).is_err());
        assert!(parse("", 0).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(parse(&s, 0).unwrap_err().code, Code::TooDeep);
        let s = format!("{}a", "-".repeat(100_000));
        assert_eq!(parse(&s, 0).unwrap_err().code, Code::TooDeep);
    }

    #[test]
    fn columns_in_order() {
        let e = parse("b + log(a) * b", 0).unwrap();
        let cols: Vec<String> = e.columns().into_iter().map(|c| c.value).collect();
        assert_eq!(cols, ["b", "a", "b"]);
    }
}

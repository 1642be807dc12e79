//! The syntax tree of a `.dagml` file: statements as written, with spans and comments.
//!
//! In: built by `parser` (from text) or by `from_node` (from a checked `Node` tree).
//! Out: consumed by `to_node` (for lowering) and `print` (canonical text for `fmt`
//! and `convert`). Must not: know the pipeline schema beyond the statement forms.

use crate::frontend::span::{Span, Spanned};

pub type Word = Spanned<String>;

/// A value in parameters, lists and clauses.
#[derive(Clone, Debug, PartialEq)]
pub struct Val {
    pub kind: ValKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValKind {
    /// `"text"`.
    Str(String),
    /// A bare word or dotted reference (`median`, `holdout.train`): a string value.
    Word(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Val>),
    Table(Vec<Param>),
}

impl Val {
    pub fn new(kind: ValKind, span: Span) -> Self {
        Val { kind, span }
    }

    /// The string a `Str` or `Word` holds.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            ValKind::Str(s) | ValKind::Word(s) => Some(s),
            _ => None,
        }
    }
}

/// `key = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub key: Word,
    pub value: Val,
}

/// One preprocessing operation in a `transform [...]` or `preprocess [...]` list.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub kind: OpKind,
    pub span: Span,
    pub comments: Comments,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// `derive COLUMN = EXPR`; the expression is kept as written.
    Derive { kw: Span, column: Val, expr: Word },
    /// `filter EXPR`.
    Filter { kw: Span, expr: Word },
    /// `cast COLUMN to TYPE`.
    Cast { kw: Span, column: Val, to: Val },
    /// `NAME [columns] (key = value, ...)`, both parts optional.
    Other {
        name: Word,
        columns: Option<Val>,
        params: Vec<Param>,
    },
}

/// A clause of a `fit` statement: `on X`, `target y`, `per_shard`, `preprocess [...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    pub key: Word,
    pub value: ClauseVal,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClauseVal {
    Flag,
    Val(Val),
    Ops(Vec<Op>, Span),
}

/// What a `save` statement writes.
#[derive(Clone, Debug, PartialEq)]
pub enum SaveWhat {
    /// `save [model] MODEL to PATH`; `explicit` when the word `model` was written.
    Model { explicit: bool, model: Val },
    /// `save metrics [evaluations] to PATH`.
    Metrics { evaluations: Option<Val> },
    /// `save report [evaluations] to PATH` (an HTML file).
    Report { evaluations: Option<Val> },
    /// `save predictions of MODEL on DATA to PATH`.
    Predictions { model: Val, data: Val },
    /// `save plan to PATH`.
    Plan,
    /// `save dataset DATA to PATH`.
    Dataset { data: Val },
}

impl SaveWhat {
    pub fn kind(&self) -> &'static str {
        match self {
            SaveWhat::Model { .. } => "model",
            SaveWhat::Metrics { .. } => "metrics",
            SaveWhat::Report { .. } => "report",
            SaveWhat::Predictions { .. } => "predictions",
            SaveWhat::Plan => "plan",
            SaveWhat::Dataset { .. } => "dataset",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `pipeline NAME (key = value, ...)`.
    Pipeline {
        kw: Span,
        name: Word,
        params: Vec<Param>,
    },
    /// `NAME = load KIND(positional, key = value, ...) [after OUTPUT]`.
    Load {
        name: Word,
        kw: Span,
        kind: Word,
        positional: Option<Val>,
        params: Vec<Param>,
        after: Option<Val>,
    },
    /// `NAME = transform INPUT [ops]`.
    Transform {
        name: Word,
        kw: Span,
        input: Val,
        ops: Vec<Op>,
        ops_span: Span,
    },
    /// `NAME = split [INPUT] KIND(key = value, ...)` or `A, B = split ...`.
    Split {
        names: Vec<Word>,
        kw: Span,
        input: Option<Val>,
        kind: Word,
        params: Vec<Param>,
    },
    /// `NAME = fit ESTIMATOR(params) clause...`.
    Fit {
        name: Word,
        kw: Span,
        estimator: Word,
        params: Option<Vec<Param>>,
        clauses: Vec<Clause>,
    },
    /// `[NAME =] evaluate MODEL on DATA, ... [metrics]`.
    Evaluate {
        name: Option<Word>,
        kw: Span,
        model: Val,
        data: Vec<Val>,
        metrics: Val,
    },
    /// `[NAME =] save ... to PATH [as FORMAT]`.
    Save {
        name: Option<Word>,
        kw: Span,
        what: SaveWhat,
        path: Val,
        format: Option<Val>,
    },
    /// `cluster KIND(positional, key = value, ...)`.
    Cluster {
        kw: Span,
        kind: Word,
        positional: Option<Val>,
        params: Vec<Param>,
    },
}

/// Comments attached to a statement or an operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comments {
    /// Whole-line comments just before it (text after `#`, trimmed at the end).
    pub leading: Vec<String>,
    /// The comment at the end of its line(s).
    pub trailing: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
    pub comments: Comments,
    /// A blank line separates it from what comes before.
    pub blank_before: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct File {
    pub stmts: Vec<Stmt>,
    /// Comments after the last statement.
    pub trailing: Vec<String>,
    pub blank_before_trailing: bool,
}

/// Default name of an evaluation written without `NAME =`.
pub fn default_evaluation_name(model: &str) -> String {
    format!("{model}_scores")
}

/// Default name of a split written `A, B = split ...`.
pub fn pair_split_name(a: &str, b: &str) -> String {
    format!("{a}_{b}")
}

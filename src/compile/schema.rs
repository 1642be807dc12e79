//! Schemas: the columns and types that flow along the plan's edges.
//!
//! In: source descriptions and the operations applied to them. Out: a [`Schema`]
//! per dataset, and a diagnostic for every column a step asks for that is not
//! there at that step (with "did you mean"). A schema is `open` when dagml cannot
//! know all the columns before reading the data (a CSV without `--data`); missing
//! columns are then not errors.
//! Must not: read data files (`--data` reads headers in `data_check` and hands the
//! result in as a closed schema).

use crate::frontend::diag::{Code, Diagnostic, suggest};
use crate::frontend::expr::{BinOp, Expr, ExprKind, UnOp};
use crate::frontend::pipeline::*;
use crate::frontend::span::Spanned;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// Small non-negative integers stored in one byte (MNIST pixels).
    UInt8,
    Int,
    Float,
    Bool,
    String,
    /// Not known before the data is read.
    Unknown,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::UInt8 => "uint8",
            DType::Int => "int",
            DType::Float => "float",
            DType::Bool => "bool",
            DType::String => "string",
            DType::Unknown => "?",
        }
    }

    pub fn of(t: ColumnType) -> DType {
        match t {
            ColumnType::Int => DType::Int,
            ColumnType::Float => DType::Float,
            ColumnType::Bool => DType::Bool,
            ColumnType::String => DType::String,
        }
    }

    fn numeric(self) -> bool {
        matches!(
            self,
            DType::Int | DType::Float | DType::Bool | DType::Unknown
        )
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    pub columns: Vec<(String, DType)>,
    /// More columns may exist than are listed.
    pub open: bool,
    /// Rows, when known before reading (generated data, MNIST).
    pub rows: Option<u64>,
}

impl Schema {
    pub fn open() -> Self {
        Schema {
            columns: vec![],
            open: true,
            rows: None,
        }
    }

    pub fn get(&self, name: &str) -> Option<DType> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
    }

    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Estimated bytes of the dataset (8 bytes per numeric cell, 16 per text cell).
    pub fn est_bytes(&self) -> Option<u64> {
        let rows = self.rows?;
        let width: u64 = self
            .columns
            .iter()
            .map(|(_, t)| match t {
                DType::String => 16,
                DType::UInt8 | DType::Bool => 1,
                _ => 8,
            })
            .sum();
        Some(rows * width)
    }

    /// Check that a column exists; report it otherwise. Returns its type.
    pub fn require(
        &self,
        col: &Spanned<String>,
        step: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<DType> {
        if let Some(t) = self.get(&col.value) {
            return Some(t);
        }
        if self.open {
            return Some(DType::Unknown);
        }
        let names = self.names();
        let help = if names.len() > 12
            && crate::frontend::diag::did_you_mean(&col.value, names.iter().copied()).is_none()
        {
            format!(
                "the data has {} columns here, from `{}` to `{}`",
                names.len(),
                names[0],
                names[names.len() - 1]
            )
        } else {
            suggest(&col.value, &names, "column")
        };
        diags.push(
            Diagnostic::new(
                Code::UnknownColumn,
                col.span,
                format!(
                    "{step} needs column `{}`, which does not exist at that point",
                    col.value
                ),
            )
            .with_help(help),
        );
        None
    }

    fn remove(&mut self, name: &str) {
        self.columns.retain(|(n, _)| n != name);
    }

    fn set(&mut self, name: &str, t: DType) {
        match self.columns.iter_mut().find(|(n, _)| n == name) {
            Some(c) => c.1 = t,
            None => self.columns.push((name.to_string(), t)),
        }
    }
}

/// The schema a source produces, before any data is read.
pub fn source_schema(s: &Source) -> Schema {
    match &s.kind {
        SourceKind::Mnist { subset, .. } => {
            let mut columns: Vec<(String, DType)> = (0..784)
                .map(|i| (format!("pixel{i}"), DType::UInt8))
                .collect();
            columns.push(("label".into(), DType::UInt8));
            let rows = match subset {
                MnistSubset::Train => 60_000,
                MnistSubset::Test => 10_000,
                MnistSubset::All => 70_000,
            };
            Schema {
                columns,
                open: false,
                rows: Some(rows),
            }
        }
        SourceKind::Csv(c) => Schema {
            columns: c
                .columns
                .iter()
                .map(|(n, t)| (n.value.clone(), DType::of(t.value)))
                .collect(),
            open: true,
            rows: None,
        },
        SourceKind::Parquet { .. } | SourceKind::Arrow { .. } => Schema::open(),
        SourceKind::Synthetic(g) => {
            let mut columns: Vec<(String, DType)> =
                if g.generator == Generator::Gaussian && !g.columns.is_empty() {
                    g.columns
                        .iter()
                        .map(|c| (c.value.clone(), DType::Float))
                        .collect()
                } else {
                    (0..g.features.value)
                        .map(|i| (format!("x{i}"), DType::Float))
                        .collect()
                };
            match g.generator {
                Generator::Classification | Generator::Blobs => {
                    columns.push((g.target.clone(), DType::Int))
                }
                Generator::Regression => columns.push((g.target.clone(), DType::Float)),
                Generator::Gaussian => {}
            }
            Schema {
                columns,
                open: false,
                rows: Some(g.rows.value),
            }
        }
    }
}

/// Known functions: name and argument count.
pub const FUNCTIONS: &[(&str, usize)] = &[
    ("log", 1),
    ("log10", 1),
    ("exp", 1),
    ("sqrt", 1),
    ("abs", 1),
    ("round", 1),
    ("floor", 1),
    ("ceil", 1),
    ("pow", 2),
    ("min", 2),
    ("max", 2),
    ("contains", 2),
    ("starts_with", 2),
    ("ends_with", 2),
    ("lower", 1),
    ("upper", 1),
    ("len", 1),
    ("is_null", 1),
    ("coalesce", 2),
];

/// Check an expression against a schema and infer its type.
pub fn expr_type(e: &Expr, s: &Schema, step: &str, diags: &mut Vec<Diagnostic>) -> DType {
    match &e.kind {
        ExprKind::Column(c) => s
            .require(&Spanned::new(c.clone(), e.span), step, diags)
            .unwrap_or(DType::Unknown),
        ExprKind::Int(_) => DType::Int,
        ExprKind::Float(_) => DType::Float,
        ExprKind::Str(_) => DType::String,
        ExprKind::Bool(_) => DType::Bool,
        ExprKind::Null => DType::Unknown,
        ExprKind::Unary(UnOp::Neg, a) => {
            let t = expr_type(a, s, step, diags);
            if t == DType::String {
                diags.push(Diagnostic::new(
                    Code::BadExpression,
                    a.span,
                    "cannot negate text",
                ));
            }
            t
        }
        ExprKind::Unary(UnOp::Not, a) => {
            expr_type(a, s, step, diags);
            DType::Bool
        }
        ExprKind::Binary(op, a, b) => {
            let (ta, tb) = (expr_type(a, s, step, diags), expr_type(b, s, step, diags));
            match op {
                BinOp::And
                | BinOp::Or
                | BinOp::Eq
                | BinOp::Ne
                | BinOp::Lt
                | BinOp::Le
                | BinOp::Gt
                | BinOp::Ge => DType::Bool,
                _ => {
                    for (t, x) in [(ta, a), (tb, b)] {
                        if !t.numeric() {
                            diags.push(
                                Diagnostic::new(Code::BadExpression, x.span, format!("`{}` needs numbers, but this is {}", op.symbol(), t.name()))
                                    .with_help("text columns can be compared with `==` or tested with contains(...)"),
                            );
                        }
                    }
                    let int = |t: DType| matches!(t, DType::Int | DType::UInt8);
                    if int(ta) && int(tb) && !matches!(op, BinOp::Div | BinOp::Pow) {
                        DType::Int
                    } else {
                        DType::Float
                    }
                }
            }
        }
        ExprKind::Call(name, args) => {
            let types: Vec<DType> = args.iter().map(|a| expr_type(a, s, step, diags)).collect();
            let Some((_, arity)) = FUNCTIONS.iter().find(|(n, _)| *n == name.value) else {
                let names: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
                diags.push(
                    Diagnostic::new(
                        Code::BadFunction,
                        name.span,
                        format!("unknown function `{}`", name.value),
                    )
                    .with_help(suggest(&name.value, &names, "function")),
                );
                return DType::Unknown;
            };
            if args.len() != *arity {
                diags.push(Diagnostic::new(
                    Code::BadFunction,
                    e.span,
                    format!(
                        "`{}` takes {arity} argument{}, found {}",
                        name.value,
                        if *arity == 1 { "" } else { "s" },
                        args.len()
                    ),
                ));
            }
            match name.value.as_str() {
                "contains" | "starts_with" | "ends_with" | "is_null" => DType::Bool,
                "lower" | "upper" => DType::String,
                "len" => DType::Int,
                "coalesce" => types.first().copied().unwrap_or(DType::Unknown),
                _ => DType::Float,
            }
        }
    }
}

/// Apply operations to a schema, checking every column they name.
pub fn apply_ops(
    mut s: Schema,
    ops: &[Spanned<Op>],
    owner: &str,
    diags: &mut Vec<Diagnostic>,
) -> Schema {
    for op in ops {
        let step = format!("`{}` in {owner}", op.value.name());
        let cols = |list: &Option<Vec<Name>>, s: &Schema, diags: &mut Vec<Diagnostic>| {
            for c in list.iter().flatten() {
                s.require(c, &step, diags);
            }
        };
        match &op.value {
            Op::Select { columns } => {
                let mut next = Schema {
                    columns: vec![],
                    open: false,
                    rows: s.rows,
                };
                for c in columns {
                    // A missing column is reported here, once, and not carried on.
                    if let Some(t) = s.require(c, &step, diags) {
                        next.columns.push((c.value.clone(), t));
                    }
                }
                s = next;
            }
            Op::Drop { columns } => {
                for c in columns {
                    s.require(c, &step, diags);
                    s.remove(&c.value);
                }
            }
            Op::Derive { column, expr } => {
                let t = expr_type(&expr.value, &s, &step, diags);
                s.set(&column.value, t);
            }
            Op::Filter { expr } => {
                expr_type(&expr.value, &s, &step, diags);
                s.rows = None;
            }
            Op::Cast { column, to } => {
                s.require(column, &step, diags);
                s.set(&column.value, DType::of(to.value));
            }
            Op::Impute { columns, .. } => cols(columns, &s, diags),
            Op::OneHot { columns, .. } => {
                cols(columns, &s, diags);
                // The new column names depend on the values in the data.
                let targets: Vec<String> = match columns {
                    Some(list) => list.iter().map(|c| c.value.clone()).collect(),
                    None => s
                        .columns
                        .iter()
                        .filter(|(_, t)| matches!(t, DType::String | DType::Unknown))
                        .map(|(n, _)| n.clone())
                        .collect(),
                };
                if !targets.is_empty() || s.open {
                    for t in &targets {
                        s.remove(t);
                    }
                    s.open = true;
                }
            }
            Op::Ordinal { columns } => {
                cols(columns, &s, diags);
                for (n, t) in s.columns.iter_mut() {
                    let listed = columns
                        .as_ref()
                        .is_none_or(|l| l.iter().any(|c| &c.value == n));
                    if listed && *t == DType::String {
                        *t = DType::Int;
                    }
                }
            }
            Op::StandardScale { columns } | Op::MinMaxScale { columns } => {
                cols(columns, &s, diags);
                for (n, t) in s.columns.iter_mut() {
                    let listed = columns
                        .as_ref()
                        .is_none_or(|l| l.iter().any(|c| &c.value == n));
                    if listed && matches!(t, DType::UInt8 | DType::Int | DType::Bool) {
                        *t = DType::Float;
                    }
                }
            }
        }
    }
    s
}

/// The features and target a model reads from `s`, checked.
pub fn check_model_columns(m: &ModelSpec, s: &Schema, diags: &mut Vec<Diagnostic>) {
    let step = format!("model `{}`", m.name.value);
    s.require(&m.target, &step, diags);
    if let Some(features) = &m.features {
        for f in features {
            s.require(f, &step, diags);
            if f.value == m.target.value {
                diags.push(
                    Diagnostic::new(
                        Code::Conflict,
                        f.span,
                        format!("the target `{}` is also listed as a feature", f.value),
                    )
                    .with_help(
                        "a model cannot learn its target from itself; remove it from `features`",
                    ),
                );
            }
        }
    }
    apply_ops(s.clone(), &m.preprocess, &step, diags);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::expr;
    use crate::frontend::span::Span;

    fn closed(cols: &[(&str, DType)]) -> Schema {
        Schema {
            columns: cols.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            open: false,
            rows: Some(10),
        }
    }

    fn sp(s: &str) -> Spanned<String> {
        Spanned::new(s.to_string(), Span::new(0, s.len()))
    }

    #[test]
    fn derive_adds_and_drop_removes() {
        let ops = vec![
            Spanned::new(
                Op::Derive {
                    column: sp("b"),
                    expr: Spanned::new(expr::parse("4*a+3", 0).unwrap(), Span::default()),
                },
                Span::default(),
            ),
            Spanned::new(
                Op::Drop {
                    columns: vec![sp("a")],
                },
                Span::default(),
            ),
        ];
        let mut d = vec![];
        let s = apply_ops(closed(&[("a", DType::Int)]), &ops, "t", &mut d);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s.columns, vec![("b".to_string(), DType::Int)]);
    }

    #[test]
    fn a_dropped_column_is_an_error_later_with_a_hint() {
        let ops = vec![
            Spanned::new(
                Op::Drop {
                    columns: vec![sp("price")],
                },
                Span::default(),
            ),
            Spanned::new(
                Op::Derive {
                    column: sp("p2"),
                    expr: Spanned::new(expr::parse("log(price)", 0).unwrap(), Span::default()),
                },
                Span::default(),
            ),
        ];
        let mut d = vec![];
        apply_ops(
            closed(&[("price", DType::Float), ("prices", DType::Float)]),
            &ops,
            "t",
            &mut d,
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, Code::UnknownColumn);
        assert_eq!(d[0].help.as_deref(), Some("did you mean `prices`?"));
    }

    #[test]
    fn open_schemas_do_not_report_unknown_columns() {
        let mut d = vec![];
        Schema::open().require(&sp("anything"), "x", &mut d);
        assert!(d.is_empty());
    }

    #[test]
    fn functions_are_checked() {
        let mut d = vec![];
        let e = expr::parse("lg(a) + pow(a)", 0).unwrap();
        expr_type(&e, &closed(&[("a", DType::Float)]), "t", &mut d);
        let codes: Vec<_> = d.iter().map(|x| (x.code, x.help.clone())).collect();
        assert_eq!(
            codes[0],
            (Code::BadFunction, Some("did you mean `log`?".to_string()))
        );
        assert_eq!(codes[1].0, Code::BadFunction);
    }
}

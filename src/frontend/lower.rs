//! Lowering: the generic [`Node`] tree → the [`Pipeline`] model, checking the schema.
//!
//! In: the tree from either front end, and the file's text (to place diagnostics
//! inside expression strings). Out: the pipeline (best effort: every section that
//! could be read) and every schema diagnostic: unknown keys with "did you mean",
//! wrong types, missing keys, values out of range, unknown choices, secrets.
//! Must not: resolve references between steps (that is `compile`), do I/O, or stop
//! at the first problem.

use super::diag::{Code, Diagnostic, did_you_mean, suggest};
use super::expr;
use super::node::{Node, Table, Value};
use super::pipeline::*;
use super::span::{Span, Spanned};

pub const SECTIONS: &[&str] = &[
    "pipeline",
    "sources",
    "transforms",
    "splits",
    "models",
    "evaluations",
    "outputs",
    "cluster",
];

/// Lower a whole document. `default_name` names the pipeline when the file does not.
/// The longest name (pipeline, step, shard) a file system takes as a file name.
pub const MAX_NAME_BYTES: usize = 255;

pub fn lower(root: &Node, text: &str, default_name: &str) -> (Option<Pipeline>, Vec<Diagnostic>) {
    let mut cx = Cx {
        text,
        diags: Vec::new(),
        broken: Vec::new(),
    };
    let Value::Table(top) = &root.value else {
        cx.err(
            Code::WrongType,
            root.span,
            "a pipeline file is a table of sections",
        );
        return (None, cx.diags);
    };
    let mut r = Reader::new(top, root.span, Span::new(0, 0), "the pipeline file".into());
    let mut p = Pipeline {
        name: Spanned::new(default_name.to_string(), Span::new(0, 0)),
        description: None,
        seed: DEFAULT_SEED,
        sources: vec![],
        transforms: vec![],
        splits: vec![],
        models: vec![],
        evaluations: vec![],
        outputs: vec![],
        cluster: None,
        broken: vec![],
    };
    if let Some((head, t, span)) = r.table(&mut cx, "pipeline") {
        let mut pr = Reader::new(t, span, head, "`[pipeline]`".into());
        if let Some(n) = pr.string(&mut cx, "name") {
            cx.check_ident(&n, "pipeline name");
            p.name = n;
        }
        p.description = pr.string(&mut cx, "description").map(|s| s.value);
        if let Some(s) = pr.int(&mut cx, "seed", 0, i64::MAX) {
            p.seed = s.value as u64;
        }
        pr.finish(&mut cx);
    }
    for (name, t, span) in r.named_tables(&mut cx, "sources") {
        let b = broken(&name, t);
        match lower_source(&mut cx, name, t, span) {
            Some(s) => p.sources.push(s),
            None => cx.broken.push(b),
        }
    }
    for (name, t, span) in r.named_tables(&mut cx, "transforms") {
        let mut tr = Reader::new(t, span, name.span, format!("transform `{}`", name.value));
        let input = tr.req_string(&mut cx, "input");
        let steps = tr.op_list(&mut cx, "steps", true);
        tr.finish(&mut cx);
        match input {
            Some(input) => p.transforms.push(Transform {
                name,
                span,
                input,
                steps,
            }),
            None => cx.broken.push(broken(&name, t)),
        }
    }
    for (name, t, span) in r.named_tables(&mut cx, "splits") {
        let b = broken(&name, t);
        match lower_split(&mut cx, name, t, span) {
            Some(s) => p.splits.push(s),
            None => cx.broken.push(b),
        }
    }
    for (name, t, span) in r.named_tables(&mut cx, "models") {
        let b = broken(&name, t);
        match lower_model(&mut cx, name, t, span) {
            Some(m) => p.models.push(m),
            None => cx.broken.push(b),
        }
    }
    for (name, t, span) in r.named_tables(&mut cx, "evaluations") {
        let mut er = Reader::new(t, span, name.span, format!("evaluation `{}`", name.value));
        let model = er.req_string(&mut cx, "model");
        let data = er.req_string_list(&mut cx, "data");
        let metrics = er.req_string_list(&mut cx, "metrics").map(|ms| {
            ms.into_iter()
                .filter_map(|m| {
                    cx.choice_of(&m, Metric::NAMES, "metric").and_then(|i| {
                        Metric::from_name(Metric::NAMES[i]).map(|x| Spanned::new(x, m.span))
                    })
                })
                .collect::<Vec<_>>()
        });
        er.finish(&mut cx);
        match (model, data, metrics) {
            (Some(model), Some(data), Some(metrics)) => p.evaluations.push(Evaluation {
                name,
                span,
                model,
                data,
                metrics,
            }),
            _ => cx.broken.push(broken(&name, t)),
        }
    }
    for (name, t, span) in r.named_tables(&mut cx, "outputs") {
        let b = broken(&name, t);
        match lower_output(&mut cx, name, t, span) {
            Some(o) => p.outputs.push(o),
            None => cx.broken.push(b),
        }
    }
    if let Some((head, t, span)) = r.table(&mut cx, "cluster") {
        p.cluster = lower_cluster(&mut cx, head, t, span);
    }
    // Steps under a misspelt section (`[model.forest]`) are in the file too: a
    // reference to them is not a second mistake.
    // A step header without its dot (`[sourcestable]`) is a step too.
    let mut glued: Vec<(Span, String)> = Vec::new();
    for (k, v) in &top.entries {
        if let (false, Value::Table(t)) = (SECTIONS.contains(&k.value.as_str()), &v.value) {
            for (name, v) in &t.entries {
                if let Value::Table(inner) = &v.value {
                    cx.broken.push(broken(name, inner));
                }
            }
            let section = SECTIONS
                .iter()
                .filter(|s| **s != "pipeline" && **s != "cluster")
                .find(|s| k.value.starts_with(**s));
            if let Some(section) = section {
                let rest = k.value[section.len()..].trim_start_matches(['.', '_', '-']);
                if !rest.is_empty() {
                    let name = Spanned::new(rest.to_string(), k.span);
                    cx.broken.push(broken(&name, t));
                    glued.push((
                        k.span,
                        format!(
                            "write the step's section and name with a dot: `[{section}.{rest}]`"
                        ),
                    ));
                }
            }
        }
    }
    r.finish(&mut cx);
    for (span, help) in glued {
        if let Some(d) = cx
            .diags
            .iter_mut()
            .find(|d| d.code == Code::UnknownKey && d.span == Some(span))
        {
            d.help = Some(help);
        }
    }
    p.broken = cx.broken;
    (Some(p), cx.diags)
}

/// Keys users bring from scikit-learn, with dagml's name for the same thing.
const SKLEARN_NAMES: &[(&str, &str)] = &[
    ("n_estimators", "n_trees"),
    ("test_size", "test_fraction"),
    ("n_splits", "k"),
    ("random_state", "seed"),
    ("C", "c"),
];

/// The keys by which a step refers to other steps.
const REFERENCE_KEYS: &[&str] = &[
    "input",
    "data",
    "model",
    "train",
    "test",
    "evaluations",
    "after",
];

/// A reference that is not a name (`input = {}`): it could mean any step.
pub const UNKNOWN_REF: &str = "*";

/// A step that could not be lowered: its name and the names it refers to.
fn broken(name: &Spanned<String>, t: &Table) -> BrokenStep {
    let mut refs = Vec::new();
    // Misspelt reference keys (`inpt`) count: the step was meant to read them.
    let keys = t.entries.iter().filter(|(k, _)| {
        REFERENCE_KEYS.contains(&k.value.as_str())
            || did_you_mean(&k.value, REFERENCE_KEYS.iter().copied()).is_some()
    });
    for (_, n) in keys {
        match &n.value {
            Value::Str(s) => refs.push(Spanned::new(s.clone(), n.span)),
            Value::Array(items) if !items.is_empty() => {
                for it in items {
                    match &it.value {
                        Value::Str(s) => refs.push(Spanned::new(s.clone(), it.span)),
                        _ => refs.push(Spanned::new(UNKNOWN_REF.to_string(), it.span)),
                    }
                }
            }
            _ => refs.push(Spanned::new(UNKNOWN_REF.to_string(), n.span)),
        }
    }
    BrokenStep {
        name: name.clone(),
        refs,
    }
}

struct Cx<'t> {
    text: &'t str,
    diags: Vec<Diagnostic>,
    /// Steps that could not be lowered (see [`Pipeline::broken`]).
    broken: Vec<BrokenStep>,
}

impl Cx<'_> {
    fn err(&mut self, code: Code, span: Span, msg: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::new(code, span, msg));
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn choice_of(&mut self, s: &Spanned<String>, names: &[&str], what: &str) -> Option<usize> {
        let found = names.iter().position(|n| *n == s.value);
        if found.is_none() {
            let code = if what == "estimator" {
                Code::UnknownEstimator
            } else {
                Code::UnknownChoice
            };
            let help = suggest(&s.value, names, what);
            self.err(code, s.span, format!("unknown {what} `{}`", s.value))
                .help = Some(help);
        }
        found
    }

    fn check_ident(&mut self, n: &Spanned<String>, what: &str) {
        let ok = !n.value.is_empty()
            && n.value
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            && !n.value.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            self.err(
                Code::UnknownChoice,
                n.span,
                format!("`{}` is not a valid {what}", n.value),
            )
            .help = Some("use letters, digits, `_` and `-`, not starting with a digit".into());
        } else if n.value.len() > MAX_NAME_BYTES {
            // Names become file and folder names (out/NAME/, model files).
            self.err(
                Code::NameTooLong,
                n.span,
                format!(
                    "this {what} is {} bytes long; a name must fit in a file name ({MAX_NAME_BYTES} bytes)",
                    n.value.len()
                ),
            )
            .help = Some("shorten it".into());
        }
    }

    /// Parse an expression held in a string node, placing errors inside the string
    /// when the string is written without escapes.
    fn expression(&mut self, s: &Spanned<String>) -> Option<Spanned<expr::Expr>> {
        let raw = self.text.get(s.span.start..s.span.end).unwrap_or("");
        let base = if raw == s.value {
            Some(s.span.start)
        } else if raw.len() >= 2 && raw.get(1..raw.len() - 1) == Some(s.value.as_str()) {
            Some(s.span.start + 1)
        } else {
            None
        };
        match expr::parse(&s.value, base.unwrap_or(0)) {
            Ok(mut e) => {
                if base.is_none() {
                    reset_spans(&mut e, s.span);
                }
                Some(Spanned::new(e, s.span))
            }
            Err(mut d) => {
                if base.is_none() {
                    d.span = Some(s.span);
                }
                self.diags.push(d);
                None
            }
        }
    }
}

fn reset_spans(e: &mut expr::Expr, span: Span) {
    e.span = span;
    match &mut e.kind {
        expr::ExprKind::Unary(_, a) => reset_spans(a, span),
        expr::ExprKind::Binary(_, a, b) => {
            reset_spans(a, span);
            reset_spans(b, span);
        }
        expr::ExprKind::Call(n, args) => {
            n.span = span;
            args.iter_mut().for_each(|a| reset_spans(a, span));
        }
        _ => {}
    }
}

/// Reads the keys of one table, remembering which keys the schema asked for so
/// that `finish` can report the rest as unknown, with the closest known key.
struct Reader<'a> {
    t: &'a Table,
    span: Span,
    head: Span,
    what: String,
    known: Vec<&'static str>,
    /// Keys that are valid elsewhere but not here, with the reason.
    misplaced: Vec<(&'static str, String)>,
    /// Required keys reported missing, with the index of that diagnostic: a
    /// misspelling of one (`inputs`) replaces the report that it is missing.
    missing_at: Vec<(String, usize)>,
}

impl<'a> Reader<'a> {
    fn new(t: &'a Table, span: Span, head: Span, what: String) -> Self {
        Reader {
            t,
            span,
            head,
            what,
            known: vec![],
            misplaced: vec![],
            missing_at: vec![],
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Node> {
        self.known.push(key);
        self.t.get(key)
    }

    fn has(&self, key: &str) -> bool {
        self.t.get(key).is_some()
    }

    /// Where a missing key should be reported: the table's name.
    fn missing(&mut self, cx: &mut Cx, key: &str, example: &str) {
        self.missing_at.push((key.to_string(), cx.diags.len()));
        let span = if self.head == Span::new(0, 0) {
            Span::new(self.span.start, self.span.start)
        } else {
            self.head
        };
        cx.err(
            Code::MissingKey,
            span,
            format!("{} has no `{key}`", self.what),
        )
        .help = Some(format!("add `{key} = {example}`"));
    }

    fn type_err(&self, cx: &mut Cx, key: &str, n: &Node, want: &str) {
        cx.err(
            Code::WrongType,
            n.span,
            format!(
                "`{key}` in {} must be {want}, found {}",
                self.what,
                n.type_name()
            ),
        );
    }

    fn string(&mut self, cx: &mut Cx, key: &'static str) -> Option<Spanned<String>> {
        let n = self.get(key)?;
        match &n.value {
            Value::Str(s) => Some(Spanned::new(s.clone(), n.span)),
            _ => {
                self.type_err(cx, key, n, "a string");
                None
            }
        }
    }

    fn req_string(&mut self, cx: &mut Cx, key: &'static str) -> Option<Spanned<String>> {
        if !self.has(key) {
            self.known.push(key);
            self.missing(cx, key, "\"...\"");
            return None;
        }
        self.string(cx, key)
    }

    fn bool(&mut self, cx: &mut Cx, key: &'static str) -> Option<bool> {
        let n = self.get(key)?;
        match n.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.type_err(cx, key, n, "true or false");
                None
            }
        }
    }

    fn int(&mut self, cx: &mut Cx, key: &'static str, min: i64, max: i64) -> Option<Spanned<i64>> {
        let n = self.get(key)?;
        match n.value {
            Value::Int(i) if (min..=max).contains(&i) => Some(Spanned::new(i, n.span)),
            Value::Int(i) => {
                let range = if max == i64::MAX || max == u32::MAX as i64 {
                    format!("at least {min}")
                } else {
                    format!("from {min} to {max}")
                };
                cx.err(
                    Code::OutOfRange,
                    n.span,
                    format!("`{key}` in {} must be {range}, found {i}", self.what),
                );
                None
            }
            _ => {
                self.type_err(cx, key, n, "an integer");
                None
            }
        }
    }

    fn u32(&mut self, cx: &mut Cx, key: &'static str, min: u32, max: u32) -> Option<Spanned<u32>> {
        self.int(cx, key, min as i64, max as i64)
            .map(|s| s.map(|v| v as u32))
    }

    /// A float in a range; `open_lo`/`open_hi` exclude the bound. Integers are accepted.
    fn float(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        lo: f64,
        hi: f64,
        open_lo: bool,
        open_hi: bool,
    ) -> Option<Spanned<f64>> {
        let n = self.get(key)?;
        let x = match n.value {
            Value::Float(x) => x,
            Value::Int(i) => i as f64,
            _ => {
                self.type_err(cx, key, n, "a number");
                return None;
            }
        };
        let ok_lo = if open_lo { x > lo } else { x >= lo };
        let ok_hi = if open_hi { x < hi } else { x <= hi };
        if !(ok_lo && ok_hi) || x.is_nan() {
            let range = if hi.is_infinite() {
                format!("{} {lo}", if open_lo { "greater than" } else { "at least" })
            } else {
                format!(
                    "in {}{lo}, {hi}{}",
                    if open_lo { "(" } else { "[" },
                    if open_hi { ")" } else { "]" }
                )
            };
            cx.err(
                Code::OutOfRange,
                n.span,
                format!("`{key}` in {} must be {range}, found {x}", self.what),
            );
            return None;
        }
        Some(Spanned::new(x, n.span))
    }

    fn choice(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        names: &[&str],
        what: &str,
    ) -> Option<Spanned<usize>> {
        let s = self.string(cx, key)?;
        cx.choice_of(&s, names, what)
            .map(|i| Spanned::new(i, s.span))
    }

    /// A string or a list of strings.
    fn string_list(&mut self, cx: &mut Cx, key: &'static str) -> Option<Vec<Spanned<String>>> {
        let n = self.get(key)?;
        match &n.value {
            Value::Str(s) => Some(vec![Spanned::new(s.clone(), n.span)]),
            Value::Array(items) => {
                let mut out = Vec::new();
                for it in items {
                    match &it.value {
                        Value::Str(s) => out.push(Spanned::new(s.clone(), it.span)),
                        _ => {
                            cx.err(
                                Code::WrongType,
                                it.span,
                                format!(
                                    "`{key}` in {} must list strings, found {}",
                                    self.what,
                                    it.type_name()
                                ),
                            );
                        }
                    }
                }
                Some(out)
            }
            _ => {
                self.type_err(cx, key, n, "a string or a list of strings");
                None
            }
        }
    }

    fn req_string_list(&mut self, cx: &mut Cx, key: &'static str) -> Option<Vec<Spanned<String>>> {
        if !self.has(key) {
            self.known.push(key);
            self.missing(cx, key, "[\"...\"]");
            return None;
        }
        let v = self.string_list(cx, key)?;
        if v.is_empty() {
            let span = self.t.get(key).map(|n| n.span).unwrap_or(self.head);
            cx.err(
                Code::OutOfRange,
                span,
                format!("`{key}` in {} is empty", self.what),
            );
            return None;
        }
        Some(v)
    }

    /// A sub-table: (its key span, the table, the table's span).
    fn table(&mut self, cx: &mut Cx, key: &'static str) -> Option<(Span, &'a Table, Span)> {
        let n = self.get(key)?;
        let head = self.t.key_span(key).unwrap_or(n.span);
        match &n.value {
            Value::Table(t) => Some((head, t, n.span)),
            _ => {
                self.type_err(cx, key, n, "a table");
                None
            }
        }
    }

    /// A section of named tables, like `[sources.NAME]`.
    fn named_tables(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
    ) -> Vec<(Spanned<String>, &'a Table, Span)> {
        let Some((_, t, _)) = self.table(cx, key) else {
            return vec![];
        };
        let mut out = Vec::new();
        for (k, v) in &t.entries {
            cx.check_ident(k, "step name");
            match &v.value {
                Value::Table(inner) => out.push((k.clone(), inner, v.span)),
                _ => {
                    cx.broken.push(BrokenStep {
                        name: k.clone(),
                        refs: vec![],
                    });
                    cx.err(
                        Code::WrongType,
                        v.span,
                        format!(
                            "`{key}.{}` must be a table, found {}",
                            k.value,
                            v.type_name()
                        ),
                    )
                    .help = Some(format!("write it as a section: `[{key}.{}]`", k.value));
                }
            }
        }
        out
    }

    /// A list of operation tables (`steps = [{ op = "drop", columns = [...] }, ...]`).
    fn op_list(&mut self, cx: &mut Cx, key: &'static str, required: bool) -> Vec<Spanned<Op>> {
        if required && !self.has(key) {
            self.known.push(key);
            self.missing(cx, key, "[{ op = \"...\" }]");
            return vec![];
        }
        let Some(n) = self.get(key) else {
            return vec![];
        };
        let Value::Array(items) = &n.value else {
            self.type_err(cx, key, n, "a list of operations");
            return vec![];
        };
        let mut out = Vec::new();
        for it in items {
            match &it.value {
                Value::Table(t) => {
                    if let Some(op) = lower_op(cx, t, it.span, &self.what) {
                        out.push(Spanned::new(op, it.span));
                    }
                }
                _ => {
                    cx.err(
                        Code::WrongType,
                        it.span,
                        format!("each of `{key}` in {} must be a table like {{ op = \"drop\", columns = [\"Id\"] }}, found {}", self.what, it.type_name()),
                    );
                }
            }
        }
        out
    }

    fn misplace(&mut self, key: &'static str, why: String) {
        self.misplaced.push((key, why));
    }

    /// Report every key the schema did not ask for.
    fn finish(self, cx: &mut Cx) {
        let mut replaced: Vec<usize> = Vec::new();
        for (k, _) in &self.t.entries {
            if self.known.contains(&k.value.as_str()) {
                continue;
            }
            if let Some((_, why)) = self.misplaced.iter().find(|(m, _)| *m == k.value) {
                cx.err(
                    Code::UnknownKey,
                    k.span,
                    format!("`{}` is not a key of {}", k.value, self.what),
                )
                .help = Some(why.clone());
                continue;
            }
            let mut known: Vec<&str> = self.known.clone();
            known.sort_unstable();
            known.dedup();
            let help = match SKLEARN_NAMES.iter().find(|(theirs, _)| *theirs == k.value) {
                Some((theirs, ours)) if known.contains(ours) => {
                    format!("dagml calls scikit-learn's `{theirs}` `{ours}`")
                }
                _ => suggest(&k.value, &known, "key"),
            };
            let best = did_you_mean(&k.value, known.iter().copied());
            if let Some((_, i)) = self
                .missing_at
                .iter()
                .find(|(m, _)| Some(m.as_str()) == best)
            {
                replaced.push(*i);
            }
            cx.err(
                Code::UnknownKey,
                k.span,
                format!("unknown key `{}` in {}", k.value, self.what),
            )
            .help = Some(help);
        }
        replaced.sort_unstable();
        replaced.dedup();
        for i in replaced.into_iter().rev() {
            if cx.diags.get(i).is_some_and(|d| d.code == Code::MissingKey) {
                cx.diags.remove(i);
            }
        }
    }
}

fn lower_source(cx: &mut Cx, name: Spanned<String>, t: &Table, span: Span) -> Option<Source> {
    const KINDS: &[&str] = &["mnist", "csv", "parquet", "arrow", "synthetic"];
    let mut r = Reader::new(t, span, name.span, format!("source `{}`", name.value));
    let kind = if r.has("kind") {
        r.choice(cx, "kind", KINDS, "source kind")
    } else {
        r.known.push("kind");
        r.missing(cx, "kind", "\"csv\"");
        None
    };
    let Some(kind) = kind else {
        // Keys cannot be checked without knowing the kind.
        return None;
    };
    let kname = KINDS[kind.value];
    r.what = format!("{kname} source `{}`", name.value);
    let sk = match kname {
        "mnist" => {
            let path = r.req_string(cx, "path");
            let subset = r
                .choice(cx, "subset", &["train", "test", "all"], "MNIST subset")
                .map(|i| [MnistSubset::Train, MnistSubset::Test, MnistSubset::All][i.value])
                .unwrap_or(MnistSubset::All);
            path.map(|path| SourceKind::Mnist { path, subset })
        }
        "csv" => {
            let path = r.req_string(cx, "path");
            let header = r.bool(cx, "header").unwrap_or(true);
            let delimiter = match r.string(cx, "delimiter") {
                Some(d) if d.value.chars().count() == 1 && d.value.is_ascii() => {
                    d.value.chars().next().unwrap_or(',')
                }
                Some(d) => {
                    cx.err(
                        Code::OutOfRange,
                        d.span,
                        "`delimiter` must be one ASCII character",
                    )
                    .help = Some("for tabs write delimiter = \"\\t\"".into());
                    ','
                }
                None => ',',
            };
            let na_values = r
                .string_list(cx, "na_values")
                .map(|v| v.into_iter().map(|s| s.value).collect())
                .unwrap_or_else(|| DEFAULT_NA_VALUES.iter().map(|s| s.to_string()).collect());
            let mut columns = Vec::new();
            if let Some((_, ct, _)) = r.table(cx, "columns") {
                for (k, v) in &ct.entries {
                    match &v.value {
                        Value::Str(s) => {
                            let sp = Spanned::new(s.clone(), v.span);
                            if let Some(i) = cx.choice_of(&sp, ColumnType::NAMES, "column type") {
                                let ty = [
                                    ColumnType::Int,
                                    ColumnType::Float,
                                    ColumnType::Bool,
                                    ColumnType::String,
                                ][i];
                                columns.push((k.clone(), Spanned::new(ty, v.span)));
                            }
                        }
                        _ => {
                            cx.err(Code::WrongType, v.span, format!("the type of column `{}` must be a string like \"float\", found {}", k.value, v.type_name()));
                        }
                    }
                }
            }
            path.map(|path| {
                SourceKind::Csv(CsvSource {
                    path,
                    header,
                    delimiter,
                    na_values,
                    columns,
                })
            })
        }
        "parquet" => r
            .req_string(cx, "path")
            .map(|path| SourceKind::Parquet { path }),
        "arrow" => r
            .req_string(cx, "path")
            .map(|path| SourceKind::Arrow { path }),
        _ => lower_synthetic(cx, &mut r).map(SourceKind::Synthetic),
    };
    for (k, why) in [
        ("delimiter", "only csv sources have a delimiter"),
        ("header", "only csv sources have a header"),
        ("generator", "only synthetic sources have a generator"),
        ("rows", "only synthetic sources take `rows`"),
        (
            "path",
            "synthetic sources generate their rows and read no file",
        ),
    ] {
        if !r.known.contains(&k) {
            r.misplace(k, why.to_string());
        }
    }
    let after = if kname == "synthetic" {
        None
    } else {
        r.string(cx, "after")
    };
    // An unreadable `after` changes what the source may read (and its order):
    // without it, it would be reported again as overwriting its own input.
    let after_unreadable = after.is_none() && kname != "synthetic" && r.has("after");
    r.finish(cx);
    if after_unreadable {
        return None;
    }
    sk.map(|kind| Source {
        name,
        span,
        kind,
        after,
    })
}

fn lower_synthetic(cx: &mut Cx, r: &mut Reader) -> Option<Synthetic> {
    let generator = if r.has("generator") {
        r.choice(cx, "generator", Generator::NAMES, "generator")
            .map(|i| {
                [
                    Generator::Classification,
                    Generator::Regression,
                    Generator::Blobs,
                    Generator::Gaussian,
                ][i.value]
            })
    } else {
        r.known.push("generator");
        r.missing(cx, "generator", "\"classification\"");
        None
    };
    let rows = r.int(cx, "rows", 1, 1_000_000_000_000);
    let rows = match rows {
        Some(v) => Some(v.map(|x| x as u64)),
        None if !r.has("rows") => {
            r.missing(cx, "rows", "1000");
            None
        }
        None => None,
    };
    let columns: Vec<Spanned<String>> = r.string_list(cx, "columns").unwrap_or_default();
    let features = r.u32(cx, "features", 1, 100_000);
    let informative = r.u32(cx, "informative", 1, 100_000);
    let classes = r.u32(cx, "classes", 2, 10_000);
    let noise = r
        .float(cx, "noise", 0.0, f64::INFINITY, false, true)
        .map(|s| s.value)
        .unwrap_or(0.0);
    let partitions = r.u32(cx, "partitions", 1, 100_000);
    let target = r
        .string(cx, "target")
        .map(|s| s.value)
        .unwrap_or_else(|| "y".into());
    let generator = generator?;
    let default_features = if generator == Generator::Gaussian && !columns.is_empty() {
        columns.len() as u32
    } else {
        20
    };
    let features = features.unwrap_or(Spanned::new(default_features, r.head));
    if let Some(inf) = &informative
        && inf.value > features.value
    {
        cx.err(
            Code::OutOfRange,
            inf.span,
            format!(
                "`informative` ({}) is more than `features` ({})",
                inf.value, features.value
            ),
        );
    }
    if generator == Generator::Gaussian
        && !columns.is_empty()
        && columns.len() as u32 != features.value
    {
        cx.err(
            Code::Conflict,
            features.span,
            format!(
                "`features` is {} but `columns` names {}",
                features.value,
                columns.len()
            ),
        )
        .help = Some("drop `features`: it follows from `columns`".into());
    }
    Some(Synthetic {
        generator,
        rows: rows?,
        features,
        informative,
        classes: classes.unwrap_or(Spanned::new(2, r.head)),
        noise,
        partitions: partitions.unwrap_or(Spanned::new(1, r.head)),
        columns,
        target,
    })
}

fn lower_op(cx: &mut Cx, t: &Table, span: Span, owner: &str) -> Option<Op> {
    let mut r = Reader::new(t, span, span, format!("an operation in {owner}"));
    let op = if r.has("op") {
        r.choice(cx, "op", Op::NAMES, "operation")?
    } else {
        r.known.push("op");
        r.missing(cx, "op", "\"drop\"");
        return None;
    };
    let opname = Op::NAMES[op.value];
    r.what = format!("`{opname}` in {owner}");
    let cols_opt = |r: &mut Reader, cx: &mut Cx| r.string_list(cx, "columns");
    let out = match opname {
        "select" | "drop" => {
            let cols = r.req_string_list(cx, "columns");
            cols.map(|columns| {
                if opname == "select" {
                    Op::Select { columns }
                } else {
                    Op::Drop { columns }
                }
            })
        }
        "derive" => {
            let column = r.req_string(cx, "column");
            let e = r.req_string(cx, "expr").and_then(|s| cx.expression(&s));
            match (column, e) {
                (Some(column), Some(expr)) => Some(Op::Derive { column, expr }),
                _ => None,
            }
        }
        "filter" => r
            .req_string(cx, "expr")
            .and_then(|s| cx.expression(&s))
            .map(|expr| Op::Filter { expr }),
        "cast" => {
            let column = r.req_string(cx, "column");
            let to = if r.has("to") {
                r.choice(cx, "to", ColumnType::NAMES, "column type")
            } else {
                r.known.push("to");
                r.missing(cx, "to", "\"float\"");
                None
            };
            match (column, to) {
                (Some(column), Some(to)) => Some(Op::Cast {
                    column,
                    to: to.map(|i| {
                        [
                            ColumnType::Int,
                            ColumnType::Float,
                            ColumnType::Bool,
                            ColumnType::String,
                        ][i]
                    }),
                }),
                _ => None,
            }
        }
        "impute" => {
            let columns = cols_opt(&mut r, cx);
            let strategy = r
                .choice(cx, "strategy", ImputeStrategy::NAMES, "impute strategy")
                .map(|i| {
                    [
                        ImputeStrategy::Mean,
                        ImputeStrategy::Median,
                        ImputeStrategy::MostFrequent,
                        ImputeStrategy::Constant,
                    ][i.value]
                });
            let vnode = r.get("value");
            let value = vnode.and_then(|n| match &n.value {
                Value::Int(i) => Some(Literal::Int(*i)),
                Value::Float(x) => Some(Literal::Float(*x)),
                Value::Bool(b) => Some(Literal::Bool(*b)),
                Value::Str(s) => Some(Literal::Str(s.clone())),
                _ => {
                    cx.err(
                        Code::WrongType,
                        n.span,
                        format!(
                            "`value` must be a number, a boolean or a string, found {}",
                            n.type_name()
                        ),
                    );
                    None
                }
            });
            let strategy = strategy.unwrap_or(if vnode.is_some() {
                ImputeStrategy::Constant
            } else {
                ImputeStrategy::Median
            });
            if strategy == ImputeStrategy::Constant && vnode.is_none() {
                r.missing(cx, "value", "0");
            }
            if let (Some(n), true) = (vnode, strategy != ImputeStrategy::Constant) {
                cx.err(
                    Code::Conflict,
                    n.span,
                    "`value` is only used with strategy = \"constant\"",
                )
                .help = Some("remove `value`, or set strategy = \"constant\"".into());
            }
            Some(Op::Impute {
                columns,
                strategy,
                value,
            })
        }
        "one_hot" => {
            let columns = cols_opt(&mut r, cx);
            let max_categories = r.u32(cx, "max_categories", 2, 1_000_000);
            Some(Op::OneHot {
                columns,
                max_categories,
            })
        }
        "ordinal" => Some(Op::Ordinal {
            columns: cols_opt(&mut r, cx),
        }),
        "standard_scale" => Some(Op::StandardScale {
            columns: cols_opt(&mut r, cx),
        }),
        _ => Some(Op::MinMaxScale {
            columns: cols_opt(&mut r, cx),
        }),
    };
    r.finish(cx);
    out
}

fn lower_split(cx: &mut Cx, name: Spanned<String>, t: &Table, span: Span) -> Option<Split> {
    const KINDS: &[&str] = &["holdout", "predefined", "kfold", "shards"];
    let mut r = Reader::new(t, span, name.span, format!("split `{}`", name.value));
    let kind = if r.has("kind") {
        r.choice(cx, "kind", KINDS, "split kind")?
    } else {
        r.known.push("kind");
        r.missing(cx, "kind", "\"holdout\"");
        return None;
    };
    let kname = KINDS[kind.value];
    r.what = format!("{kname} split `{}`", name.value);
    let seed = |r: &mut Reader, cx: &mut Cx| r.int(cx, "seed", 0, i64::MAX).map(|s| s.value as u64);
    let sk = match kname {
        "holdout" => {
            let input = r.req_string(cx, "input");
            let tf = r.float(cx, "test_fraction", 0.0, 1.0, true, true);
            let tf = tf.unwrap_or_else(|| Spanned::new(0.25, r.head));
            let stratify = r.string(cx, "stratify");
            let seed = seed(&mut r, cx);
            input.map(|input| SplitKind::Holdout {
                input,
                test_fraction: tf,
                stratify,
                seed,
            })
        }
        "predefined" => {
            let input = r.string(cx, "input");
            let train = r.string(cx, "train");
            let test = r.string(cx, "test");
            match (input, train, test) {
                (Some(i), None, None) => Some(SplitKind::Predefined {
                    from: PredefinedFrom::Source(i),
                }),
                (None, Some(train), Some(test)) => Some(SplitKind::Predefined {
                    from: PredefinedFrom::Pair { train, test },
                }),
                (Some(i), _, _) => {
                    cx.err(Code::Conflict, i.span, "a predefined split takes either `input` or `train` and `test`, not both")
                        .help = Some("use `input` for a source with its own train/test files (MNIST), `train`/`test` for two sources".into());
                    None
                }
                // Given but not readable: reported where it is written.
                (None, None, None) if r.has("input") || r.has("train") || r.has("test") => None,
                (None, None, None) => {
                    // A misspelt `input` (or `train`) replaces this report.
                    r.missing_at.push(("input".into(), cx.diags.len()));
                    r.missing_at.push(("train".into(), cx.diags.len()));
                    cx.err(
                        Code::MissingKey,
                        r.head,
                        format!("{} has neither `input` nor `train` and `test`", r.what),
                    )
                    .help = Some(
                        "add `input = \"digits\"` or `train = \"...\"` and `test = \"...\"`".into(),
                    );
                    None
                }
                (None, Some(_), None) => {
                    r.missing(cx, "test", "\"...\"");
                    None
                }
                (None, None, Some(_)) => {
                    r.missing(cx, "train", "\"...\"");
                    None
                }
            }
        }
        "kfold" => {
            let input = r.req_string(cx, "input");
            let k = r
                .u32(cx, "k", 2, 1000)
                .unwrap_or_else(|| Spanned::new(5, r.head));
            let stratify = r.string(cx, "stratify");
            let shuffle = r.bool(cx, "shuffle").unwrap_or(true);
            let seed = seed(&mut r, cx);
            input.map(|input| SplitKind::KFold {
                input,
                k,
                stratify,
                shuffle,
                seed,
            })
        }
        _ => {
            let input = r.req_string(cx, "input");
            let by = r
                .choice(
                    cx,
                    "by",
                    &["rows", "column", "file", "worker"],
                    "shard method",
                )
                .map(|i| i.value)
                .unwrap_or(0);
            let names = r.string_list(cx, "names");
            let count = r.u32(cx, "count", 1, 10_000);
            let validation = r
                .float(cx, "validation_fraction", 0.0, 1.0, false, true)
                .unwrap_or_else(|| Spanned::new(0.2, r.head));
            let seed = seed(&mut r, cx);
            let by = match by {
                0 => {
                    let names_span = r.t.get("names").map(|n| n.span);
                    let names = match (names, count) {
                        (Some(n), None) if !n.is_empty() => Some(n),
                        (None, Some(c)) => Some(
                            (1..=c.value)
                                .map(|i| Spanned::new(format!("shard{i}"), c.span))
                                .collect(),
                        ),
                        (Some(_), Some(c)) => {
                            cx.err(
                                Code::Conflict,
                                c.span,
                                "give either `names` or `count`, not both",
                            );
                            None
                        }
                        (Some(_), None) => {
                            cx.err(
                                Code::OutOfRange,
                                names_span.unwrap_or(r.head),
                                format!("`names` in {} is empty", r.what),
                            )
                            .help = Some("name one shard or more: `names = [\"A\", \"B\"]`".into());
                            None
                        }
                        // Given but not readable: reported where it is written.
                        (None, None) if r.has("names") || r.has("count") => None,
                        (None, None) => {
                            cx.err(
                                Code::MissingKey,
                                r.head,
                                format!("{} needs `names` (one per shard) or `count`", r.what),
                            )
                            .help = Some("add `names = [\"A\", \"B\", \"C\"]`".into());
                            None
                        }
                    };
                    for n in names.iter().flatten() {
                        cx.check_ident(n, "shard name");
                    }
                    // Without shard names the split has no parts: it is not lowered,
                    // so references to its parts are not reported again.
                    names.map(|names| ShardBy::Rows { names })
                }
                1 => {
                    let col = r.req_string(cx, "column");
                    col.map(|column| ShardBy::Column {
                        column,
                        names: names.unwrap_or_default(),
                    })
                }
                2 => Some(ShardBy::File { names: vec![] }),
                _ => match names {
                    Some(names) if !names.is_empty() => Some(ShardBy::Worker { names }),
                    _ => {
                        cx.err(
                            Code::MissingKey,
                            r.head,
                            format!(
                                "{} shards by worker and needs `names`: the workers' `--name`s, one shard each",
                                r.what
                            ),
                        )
                        .help = Some("add `names = [\"node1\", \"node2\"]`".into());
                        None
                    }
                },
            };
            match (input, by) {
                (Some(input), Some(by)) => Some(SplitKind::Shards {
                    input,
                    by,
                    validation_fraction: validation,
                    seed,
                }),
                _ => None,
            }
        }
    };
    r.finish(cx);
    sk.map(|kind| Split { name, span, kind })
}

fn lower_model(cx: &mut Cx, name: Spanned<String>, t: &Table, span: Span) -> Option<ModelSpec> {
    let mut r = Reader::new(t, span, name.span, format!("model `{}`", name.value));
    let est = if r.has("estimator") {
        r.string(cx, "estimator").and_then(|s| {
            cx.choice_of(&s, EstimatorKind::NAMES, "estimator")
                .map(|i| Spanned::new(i, s.span))
        })
    } else {
        r.known.push("estimator");
        r.missing(cx, "estimator", "\"random_forest\"");
        None
    };
    let estimator = est.and_then(|i| {
        EstimatorKind::from_name(EstimatorKind::NAMES[i.value]).map(|k| Spanned::new(k, i.span))
    });
    let task = r
        .choice(cx, "task", &["classification", "regression"], "task")
        .map(|i| i.map(|v| [Problem::Classification, Problem::Regression][v]));
    let input = r.req_string(cx, "input");
    let target = r.req_string(cx, "target");
    let features = r.string_list(cx, "features");
    let preprocess = r.op_list(cx, "preprocess", false);
    let per_shard = r.bool(cx, "per_shard");
    // An unreadable `per_shard` changes what the model may read: the model is not
    // lowered, so its input and evaluations are not reported again.
    let per_shard_unreadable = per_shard.is_none() && r.has("per_shard");
    let per_shard = per_shard.unwrap_or(false);
    let combine = r
        .choice(cx, "combine", &["vote", "average"], "combine method")
        .map(|i| [Combine::Vote, Combine::Average][i.value])
        .unwrap_or(Combine::Average);
    let params_table = r.table(cx, "params");
    if let (Some(est), Some(task)) = (&estimator, &task)
        && !est.value.tasks().contains(&task.value)
    {
        cx.err(
            Code::TargetKind,
            task.span,
            format!("{} does not do {}", est.value.name(), task.value.name()),
        )
        .help = Some(match est.value {
            EstimatorKind::LogisticRegression => {
                "for regression use linear_regression, ridge or random_forest".into()
            }
            _ => {
                "for classification use logistic_regression, decision_tree or random_forest".into()
            }
        });
    }
    let params = estimator.as_ref().map(|est| {
        let empty = Table::default();
        let (head, pt, pspan) = params_table.unwrap_or((name.span, &empty, span));
        lower_params(cx, est.value, pt, pspan, head, &name.value)
    });
    r.finish(cx);
    if per_shard_unreadable {
        return None;
    }
    Some(ModelSpec {
        name,
        span,
        estimator: estimator?,
        task,
        input: input?,
        target: target?,
        features,
        params: params?,
        preprocess,
        per_shard,
        combine,
    })
}

fn lower_params(
    cx: &mut Cx,
    est: EstimatorKind,
    t: &Table,
    span: Span,
    head: Span,
    model: &str,
) -> Params {
    let mut r = Reader::new(
        t,
        span,
        head,
        format!("the {} parameters of model `{model}`", est.name()),
    );
    let p = match est {
        EstimatorKind::RandomForest | EstimatorKind::DecisionTree => {
            let forest = est == EstimatorKind::RandomForest;
            let n_trees = if forest {
                r.u32(cx, "n_trees", 1, 100_000)
                    .map(|s| s.value)
                    .unwrap_or(100)
            } else {
                1
            };
            let bootstrap = if forest {
                r.bool(cx, "bootstrap").unwrap_or(true)
            } else {
                false
            };
            if !forest {
                r.misplace(
                    "n_trees",
                    "a decision_tree is one tree; use estimator = \"random_forest\" for many"
                        .into(),
                );
                r.misplace(
                    "bootstrap",
                    "only a random_forest draws bootstrap samples".into(),
                );
            }
            let max_depth = r.u32(cx, "max_depth", 1, 10_000).map(|s| s.value);
            let min_samples_split = r
                .u32(cx, "min_samples_split", 2, u32::MAX)
                .map(|s| s.value)
                .unwrap_or(2);
            let min_samples_leaf = r
                .u32(cx, "min_samples_leaf", 1, u32::MAX)
                .map(|s| s.value)
                .unwrap_or(1);
            let max_features = r.get("max_features").and_then(|n| match &n.value {
                Value::Str(s) => match s.as_str() {
                    "sqrt" => Some(MaxFeatures::Sqrt),
                    "log2" => Some(MaxFeatures::Log2),
                    "all" => Some(MaxFeatures::All),
                    other => {
                        let help = suggest(other, &["sqrt", "log2", "all"], "choice");
                        cx.err(Code::UnknownChoice, n.span, format!("unknown max_features `{other}`"))
                            .help = Some(format!("{help}; or a fraction in (0, 1], or a count of at least 1"));
                        None
                    }
                },
                Value::Float(x) if *x > 0.0 && *x <= 1.0 => Some(MaxFeatures::Fraction(*x)),
                Value::Int(i) if *i >= 1 && *i <= u32::MAX as i64 => Some(MaxFeatures::Count(*i as u32)),
                Value::Float(_) | Value::Int(_) => {
                    cx.err(Code::OutOfRange, n.span, "`max_features` must be a fraction in (0, 1] or a count of at least 1");
                    None
                }
                _ => {
                    cx.err(Code::WrongType, n.span, format!("`max_features` must be \"sqrt\", \"log2\", \"all\", a fraction or a count, found {}", n.type_name()));
                    None
                }
            });
            let criterion = r
                .choice(cx, "criterion", Criterion::NAMES, "criterion")
                .map(|i| [Criterion::Gini, Criterion::Entropy, Criterion::SquaredError][i.value]);
            let class_weight_balanced = r
                .choice(cx, "class_weight", &["balanced", "none"], "class_weight")
                .is_some_and(|i| i.value == 0);
            let max_bins = r
                .u32(cx, "max_bins", 2, 256)
                .map(|s| s.value)
                .unwrap_or(256);
            Params::Tree(TreeParams {
                n_trees,
                max_depth,
                min_samples_split,
                min_samples_leaf,
                max_features,
                bootstrap,
                criterion,
                class_weight_balanced,
                max_bins,
            })
        }
        EstimatorKind::LogisticRegression
        | EstimatorKind::LinearRegression
        | EstimatorKind::Ridge => {
            let c = if est == EstimatorKind::LogisticRegression {
                r.float(cx, "c", 0.0, f64::INFINITY, true, true)
                    .map(|s| s.value)
                    .unwrap_or(1.0)
            } else {
                r.misplace(
                    "c",
                    "`c` is logistic regression's inverse regularization; ridge takes `alpha`"
                        .into(),
                );
                0.0
            };
            let alpha = if est == EstimatorKind::Ridge {
                r.float(cx, "alpha", 0.0, f64::INFINITY, false, true)
                    .map(|s| s.value)
                    .unwrap_or(1.0)
            } else {
                let why = if est == EstimatorKind::LogisticRegression {
                    "logistic_regression takes `c` (inverse strength, like scikit-learn's C)"
                } else {
                    "linear_regression has no regularization; use estimator = \"ridge\""
                };
                r.misplace("alpha", why.into());
                0.0
            };
            let fit_intercept = r.bool(cx, "fit_intercept").unwrap_or(true);
            let (max_iter, tol) = if est == EstimatorKind::LogisticRegression {
                (
                    r.u32(cx, "max_iter", 1, 1_000_000)
                        .map(|s| s.value)
                        .unwrap_or(100),
                    r.float(cx, "tol", 0.0, f64::INFINITY, true, true)
                        .map(|s| s.value)
                        .unwrap_or(1e-4),
                )
            } else {
                (0, 0.0)
            };
            Params::Linear(LinearParams {
                c,
                alpha,
                fit_intercept,
                max_iter,
                tol,
            })
        }
    };
    r.finish(cx);
    p
}

fn format_of(
    cx: &mut Cx,
    r: &mut Reader,
    path: &Spanned<String>,
    allowed: &[FileFormat],
) -> Option<Spanned<FileFormat>> {
    let names: Vec<&str> = allowed.iter().map(|f| f.name()).collect();
    if let Some(f) = r.string(cx, "format") {
        let i = cx.choice_of(&f, &names, "format")?;
        return Some(Spanned::new(allowed[i], f.span));
    }
    match FileFormat::from_path(&path.value) {
        Some(f) if allowed.contains(&f) => Some(Spanned::new(f, path.span)),
        _ if allowed.len() == 1 => Some(Spanned::new(allowed[0], path.span)),
        _ => {
            cx.err(
                Code::MissingKey,
                path.span,
                format!(
                    "cannot tell the format of `{}` from its extension",
                    path.value
                ),
            )
            .help = Some(format!(
                "add `format = ` one of {}",
                names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            None
        }
    }
}

fn lower_output(cx: &mut Cx, name: Spanned<String>, t: &Table, span: Span) -> Option<Output> {
    let mut r = Reader::new(t, span, name.span, format!("output `{}`", name.value));
    let kind = if r.has("kind") {
        r.choice(cx, "kind", OutputKind::NAMES, "output kind")?
    } else {
        r.known.push("kind");
        r.missing(cx, "kind", "\"model\"");
        return None;
    };
    let kname = OutputKind::NAMES[kind.value];
    r.what = format!("{kname} output `{}`", name.value);
    let path = r.req_string(cx, "path");
    // The other keys are read even when `path` is missing or wrong, so that they
    // are not reported as unknown too.
    let fmt = |cx: &mut Cx, r: &mut Reader, allowed: &[FileFormat]| match &path {
        Some(p) => format_of(cx, r, p, allowed),
        None => {
            r.get("format");
            None
        }
    };
    let out = match kname {
        "model" => r
            .req_string(cx, "model")
            .map(|model| OutputKind::Model { model }),
        "metrics" => Some(OutputKind::Metrics {
            evaluations: r.string_list(cx, "evaluations").unwrap_or_default(),
        }),
        "report" => Some(OutputKind::Report {
            evaluations: r.string_list(cx, "evaluations").unwrap_or_default(),
        }),
        "predictions" => {
            let model = r.req_string(cx, "model");
            let data = r.req_string(cx, "data");
            let format = fmt(
                cx,
                &mut r,
                &[FileFormat::Parquet, FileFormat::Csv, FileFormat::Arrow],
            );
            match (model, data, format) {
                (Some(model), Some(data), Some(format)) => Some(OutputKind::Predictions {
                    model,
                    data,
                    format,
                }),
                _ => None,
            }
        }
        "plan" => fmt(
            cx,
            &mut r,
            &[FileFormat::Svg, FileFormat::Dot, FileFormat::Png],
        )
        .map(|format| OutputKind::Plan { format }),
        _ => {
            let data = r.req_string(cx, "data");
            let has_ext = path
                .as_ref()
                .is_some_and(|p| FileFormat::from_path(&p.value).is_some());
            let format = if r.has("format") || has_ext {
                fmt(
                    cx,
                    &mut r,
                    &[FileFormat::Parquet, FileFormat::Csv, FileFormat::Arrow],
                )
            } else {
                path.as_ref()
                    .map(|p| Spanned::new(FileFormat::Parquet, p.span))
            };
            match (data, format) {
                (Some(data), Some(format)) => Some(OutputKind::Dataset { data, format }),
                _ => None,
            }
        }
    };
    r.finish(cx);
    Some(Output {
        name,
        span,
        path: path?,
        kind: out?,
    })
}

fn lower_cluster(cx: &mut Cx, head: Span, t: &Table, span: Span) -> Option<Cluster> {
    let mut r = Reader::new(t, span, head, "`[cluster]`".into());
    let kind = r
        .choice(cx, "kind", &["local", "remote"], "cluster kind")
        .map(|i| i.value);
    let kind = kind.unwrap_or(if r.has("scheduler") { 1 } else { 0 });
    for secret in ["token", "password", "auth_token"] {
        if let Some(k) = t.key_span(secret) {
            r.known.push(secret);
            cx.err(Code::SecretInFile, k, format!("`{secret}` must not be written in a pipeline file"))
                .help = Some("put the token in an environment variable and name it: `token_env = \"DAGML_TOKEN\"`".into());
        }
    }
    let out = if kind == 0 {
        let workers = r.u32(cx, "workers", 1, 1024);
        let threads = r
            .u32(cx, "threads", 1, 1024)
            .unwrap_or_else(|| Spanned::new(1, head));
        let memory_limit = match r.get("memory_limit") {
            None => None,
            Some(n) => match &n.value {
                Value::Str(s) => match parse_bytes(s) {
                    Some(b) if b > 0 => Some(Spanned::new(b, n.span)),
                    _ => {
                        cx.err(
                            Code::OutOfRange,
                            n.span,
                            format!("`{s}` is not a memory size"),
                        )
                        .help =
                            Some("write it like \"6GB\", \"512MiB\" or a number of bytes".into());
                        None
                    }
                },
                Value::Int(i) if *i > 0 => Some(Spanned::new(*i as u64, n.span)),
                _ => {
                    cx.err(
                        Code::WrongType,
                        n.span,
                        format!(
                            "`memory_limit` must be a size like \"6GB\", found {}",
                            n.type_name()
                        ),
                    );
                    None
                }
            },
        };
        r.misplace(
            "scheduler",
            "a local cluster runs in this process; set kind = \"remote\" to use a scheduler".into(),
        );
        Some(Cluster::Local {
            span,
            workers,
            threads,
            memory_limit,
        })
    } else {
        let scheduler = r.req_string(cx, "scheduler");
        let token_env = r.string(cx, "token_env");
        for k in ["workers", "threads", "memory_limit"] {
            r.misplace(
                k,
                format!("`{k}` is set on each `dagml worker`'s command line for a remote cluster"),
            );
        }
        scheduler.map(|scheduler| Cluster::Remote {
            span,
            scheduler,
            token_env,
        })
    };
    r.finish(cx);
    out
}

#[cfg(test)]
mod tests {
    use crate::frontend::toml_front;

    use super::*;

    fn lower_text(text: &str) -> (Option<Pipeline>, Vec<Diagnostic>) {
        let (node, mut diags) = toml_front::parse(text);
        let (p, d) = lower(&node.unwrap(), text, "t");
        diags.extend(d);
        (p, diags)
    }

    fn codes(text: &str) -> Vec<(Code, String)> {
        lower_text(text)
            .1
            .into_iter()
            .map(|d| (d.code, d.message))
            .collect()
    }

    #[test]
    fn a_minimal_pipeline_lowers() {
        let (p, d) = lower_text(
            r#"
[pipeline]
name = "m"
seed = 7
[sources.digits]
kind = "mnist"
path = "data/mnist"
[splits.s]
kind = "predefined"
input = "digits"
[models.f]
estimator = "random_forest"
input = "s.train"
target = "label"
params = { n_trees = 10, max_features = "sqrt" }
[evaluations.e]
model = "f"
data = ["s.test"]
metrics = ["accuracy"]
"#,
        );
        assert!(d.is_empty(), "{d:?}");
        let p = p.unwrap();
        assert_eq!(p.seed, 7);
        let Params::Tree(tp) = &p.models[0].params else {
            panic!()
        };
        assert_eq!((tp.n_trees, tp.max_features), (10, Some(MaxFeatures::Sqrt)));
    }

    #[test]
    fn unknown_keys_suggest_the_closest() {
        let d = lower_text("[sources.a]\nkind = \"csv\"\npath = \"x.csv\"\ndelimeter = \";\"\n").1;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].help.as_deref(), Some("did you mean `delimiter`?"));
    }

    #[test]
    fn a_misspelt_required_key_is_not_also_missing() {
        let d = lower_text("[models.f]\nestimator = \"ridge\"\ninputs = \"a\"\ntarget = \"y\"\n").1;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, Code::UnknownKey);
        assert_eq!(d[0].help.as_deref(), Some("did you mean `input`?"));
    }

    #[test]
    fn an_output_with_a_bad_path_still_knows_its_keys() {
        let d = lower_text(
            "[outputs.p]\nkind = \"predictions\"\nmodel = \"m\"\ndata = \"d\"\nformat = \"csv\"\npath = []\n",
        )
        .1;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, Code::WrongType);
    }

    #[test]
    fn a_split_key_of_the_wrong_type_is_not_also_missing() {
        let c = codes("[splits.s]\nkind = \"predefined\"\ninput = 3\n");
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].0, Code::WrongType);
        let c = codes("[splits.s]\nkind = \"shards\"\ninput = \"d\"\nnames = []\n");
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].1, "`names` in shards split `s` is empty");
        let c = codes("[splits.s]\nkind = \"shards\"\ninput = \"d\"\ncount = 0\n");
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].0, Code::OutOfRange);
        // Without shard names the split is not lowered (its parts are unknown).
        let (p, d) = lower_text("[splits.s]\nkind = \"shards\"\ninput = \"d\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, Code::MissingKey);
        assert!(p.is_some_and(|p| p.splits.is_empty() && p.broken.len() == 1));
    }

    #[test]
    fn keys_that_change_the_graph_leave_their_step_unlowered_when_unreadable() {
        let (p, d) = lower_text(
            "[models.f]\nestimator = \"ridge\"\ninput = \"s\"\ntarget = \"y\"\nper_shard = \"yes\"\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(p.is_some_and(|p| p.models.is_empty() && p.broken.len() == 1));
        let (p, d) = lower_text("[sources.r]\nkind = \"parquet\"\npath = \"out/x\"\nafter = 1\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(p.is_some_and(|p| p.sources.is_empty() && p.broken.len() == 1));
    }

    #[test]
    fn a_misspelt_split_input_is_one_error_and_still_a_reference() {
        let (p, d) = lower_text("[splits.s]\nkind = \"predefined\"\ninpt = \"digits\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].help.as_deref(), Some("did you mean `input`?"));
        let p = p.expect("a pipeline");
        assert_eq!(p.broken[0].refs[0].value, "digits");
    }

    #[test]
    fn a_step_header_without_its_dot_is_still_a_step() {
        let (p, d) = lower_text("[sourcestable]\nkind = \"csv\"\npath = \"t.csv\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].help.as_deref(),
            Some("write the step's section and name with a dot: `[sources.table]`")
        );
        assert!(p.is_some_and(|p| p.broken.iter().any(|b| b.name.value == "table")));
    }

    #[test]
    fn typo_in_estimator_names_the_right_one() {
        let d = lower_text(
            "[models.f]\nestimator = \"random_forrest\"\ninput = \"a\"\ntarget = \"y\"\n",
        )
        .1;
        assert_eq!(d[0].code, Code::UnknownEstimator);
        assert_eq!(d[0].help.as_deref(), Some("did you mean `random_forest`?"));
    }

    #[test]
    fn every_problem_is_reported() {
        let c = codes(
            "[models.f]\nestimator = \"ridge\"\ninput = 3\ntarget = \"y\"\nparams = { alpha = -1, c = 2 }\n[cluster]\ntoken = \"x\"\n",
        );
        let cs: Vec<Code> = c.iter().map(|x| x.0).collect();
        assert!(cs.contains(&Code::WrongType), "{c:?}");
        assert!(cs.contains(&Code::OutOfRange), "{c:?}");
        assert!(cs.contains(&Code::UnknownKey), "{c:?}");
        assert!(cs.contains(&Code::SecretInFile), "{c:?}");
    }

    #[test]
    fn expression_errors_point_inside_the_string() {
        let text = "[transforms.t]\ninput = \"a\"\nsteps = [{ op = \"derive\", column = \"b\", expr = \"4 * (a + 3\" }]\n";
        let d = lower_text(text).1;
        assert_eq!(d.len(), 1, "{d:?}");
        let s = d[0].span.unwrap();
        assert_eq!(&text[s.start..s.end], "\"");
    }
}

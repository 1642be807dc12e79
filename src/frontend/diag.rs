//! Diagnostics: what is wrong with a pipeline file, where, and what to do about it.
//!
//! In: problems found by any front-end or compiler phase, each with a [`Span`].
//! Out: rustc-shaped text (`path:line:col: error[CODE]: message`, the line, a caret,
//! `help:`) or one JSON object per problem for CI tools.
//! Must not: stop at the first problem, or print anything itself.
//!
//! The first line of each text diagnostic is the grep- and editor-friendly
//! `path:line:col:` form that CI problem matchers parse; miette/ariadne put the
//! location on a second line, which is why this renderer is our own (it is small).

use super::span::{SourceFile, Span};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Stable diagnostic codes. Layers: E01xx syntax, E02xx schema (keys, types,
/// values), E03xx graph (names, references, cycles, columns), E04xx data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// The file is not valid TOML / dagml syntax.
    Syntax,
    /// The file is not UTF-8 text.
    NotText,
    /// Nesting or size beyond what dagml accepts.
    TooDeep,
    /// A key the schema does not know.
    UnknownKey,
    /// A value of the wrong type.
    WrongType,
    /// A required key is missing.
    MissingKey,
    /// A number outside its allowed range.
    OutOfRange,
    /// A string that is not one of the allowed choices.
    UnknownChoice,
    /// An unknown estimator name.
    UnknownEstimator,
    /// An expression that does not parse.
    BadExpression,
    /// A secret written in the file.
    SecretInFile,
    /// Two keys or options that contradict each other.
    Conflict,
    /// A name defined twice.
    DuplicateName,
    /// A reference to a step or dataset that does not exist.
    UnknownReference,
    /// Steps that depend on each other in a cycle.
    Cycle,
    /// An estimator used for a target of the wrong kind.
    TargetKind,
    /// An output whose path is also an input.
    OverwritesInput,
    /// A column that does not exist at that step.
    UnknownColumn,
    /// A reference to a step of the wrong kind.
    WrongStepKind,
    /// An unknown function or a wrong argument count in an expression.
    BadFunction,
    /// A file named by the pipeline does not exist or cannot be read.
    MissingFile,
    /// A column named by the pipeline is not in the data.
    ColumnNotInData,
    /// A step whose result reaches no output or evaluation.
    UnusedStep,
    /// A name longer than fits in a file name (255 bytes).
    NameTooLong,
    /// A pipeline with no evaluation and no output: nothing to run.
    NothingToRun,
    /// Two columns of a data file have the same name.
    DuplicateColumnInData,
    /// A data file that is empty or has a header and no rows.
    EmptyData,
    /// A column of numbers but for a few cells, read as text.
    MostlyNumeric,
    /// A dataset estimated larger than the declared cluster's memory.
    ExceedsClusterMemory,
    /// Two outputs write the same path.
    DuplicateOutput,
}

impl Code {
    /// Every code, in the order of the table in docs/diagnostics.md.
    pub const ALL: &'static [Code] = &[
        Code::Syntax,
        Code::NotText,
        Code::TooDeep,
        Code::UnknownKey,
        Code::WrongType,
        Code::MissingKey,
        Code::OutOfRange,
        Code::UnknownChoice,
        Code::UnknownEstimator,
        Code::BadExpression,
        Code::SecretInFile,
        Code::Conflict,
        Code::NameTooLong,
        Code::DuplicateName,
        Code::UnknownReference,
        Code::Cycle,
        Code::TargetKind,
        Code::OverwritesInput,
        Code::UnknownColumn,
        Code::WrongStepKind,
        Code::BadFunction,
        Code::DuplicateOutput,
        Code::NothingToRun,
        Code::MissingFile,
        Code::ColumnNotInData,
        Code::DuplicateColumnInData,
        Code::EmptyData,
        Code::UnusedStep,
        Code::ExceedsClusterMemory,
        Code::MostlyNumeric,
    ];

    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Syntax => "E0101",
            NotText => "E0102",
            TooDeep => "E0103",
            UnknownKey => "E0201",
            WrongType => "E0202",
            MissingKey => "E0203",
            OutOfRange => "E0204",
            UnknownChoice => "E0205",
            UnknownEstimator => "E0206",
            BadExpression => "E0207",
            SecretInFile => "E0208",
            Conflict => "E0209",
            NameTooLong => "E0210",
            DuplicateName => "E0301",
            UnknownReference => "E0302",
            Cycle => "E0303",
            TargetKind => "E0304",
            OverwritesInput => "E0305",
            UnknownColumn => "E0306",
            WrongStepKind => "E0307",
            BadFunction => "E0308",
            DuplicateOutput => "E0309",
            NothingToRun => "E0310",
            MissingFile => "E0401",
            ColumnNotInData => "E0402",
            DuplicateColumnInData => "E0403",
            EmptyData => "E0404",
            UnusedStep => "W0301",
            ExceedsClusterMemory => "W0302",
            MostlyNumeric => "W0401",
        }
    }

    pub fn default_severity(self) -> Severity {
        match self {
            Code::UnusedStep | Code::MostlyNumeric | Code::ExceedsClusterMemory => {
                Severity::Warning
            }
            _ => Severity::Error,
        }
    }
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub span: Option<Span>,
    pub help: Option<String>,
    pub notes: Vec<String>,
    /// Other places that explain this one ("first defined here").
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(code: Code, span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: code.default_severity(),
            code,
            message: message.into(),
            span: span.into(),
            help: None,
            notes: Vec::new(),
            related: Vec::new(),
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn with_related(mut self, span: Span, note: impl Into<String>) -> Self {
        self.related.push((span, note.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// rustc-shaped text for a terminal or a log.
    pub fn render(&self, file: &SourceFile) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        let Some(span) = self.span else {
            let _ = writeln!(
                out,
                "{}: {sev}[{}]: {}",
                file.path,
                self.code.as_str(),
                self.message
            );
            self.render_tail(&mut out, file, 2);
            return out;
        };
        let (line, col) = file.line_col(span.start);
        let (end_line, end_col) = file.line_col(span.end);
        let _ = writeln!(
            out,
            "{}:{line}:{col}: {sev}[{}]: {}",
            file.path,
            self.code.as_str(),
            self.message
        );
        let text = file.line_text(line);
        let gutter = line.to_string().len();
        let shown = printable(text);
        let _ = writeln!(out, "{:gutter$} |", "");
        let _ = writeln!(out, "{line} | {shown}");
        let line_chars = text.chars().count();
        let caret_start = col - 1;
        let caret_end = if end_line == line {
            (end_col - 1).max(caret_start + 1)
        } else {
            line_chars.max(caret_start + 1)
        };
        let pad: String = text
            .chars()
            .take(caret_start)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let _ = writeln!(
            out,
            "{:gutter$} | {pad}{}",
            "",
            "^".repeat((caret_end - caret_start).min(200))
        );
        self.render_tail(&mut out, file, gutter);
        out
    }

    fn render_tail(&self, out: &mut String, file: &SourceFile, gutter: usize) {
        for (span, note) in &self.related {
            let (l, c) = file.line_col(span.start);
            let _ = writeln!(out, "{:gutter$} = note: {note}: {}:{l}:{c}", "", file.path);
        }
        for note in &self.notes {
            let _ = writeln!(out, "{:gutter$} = note: {note}", "");
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{:gutter$} = help: {help}", "");
        }
    }

    /// One JSON object (one line) for CI tools.
    pub fn to_json(&self, file: &SourceFile) -> serde_json::Value {
        let (line, column, end_line, end_column) = match self.span {
            Some(s) => {
                let (l, c) = file.line_col(s.start);
                let (el, ec) = file.line_col(s.end);
                (Some(l), Some(c), Some(el), Some(ec))
            }
            None => (None, None, None, None),
        };
        serde_json::json!({
            "file": file.path,
            "line": line,
            "column": column,
            "end_line": end_line,
            "end_column": end_column,
            "severity": self.severity,
            "code": self.code.as_str(),
            "message": self.message,
            "help": self.help,
            "notes": self.notes.iter().cloned().chain(self.related.iter().map(|(s, n)| {
                let (l, c) = file.line_col(s.start);
                format!("{n}: {}:{l}:{c}", file.path)
            })).collect::<Vec<_>>(),
        })
    }
}

/// Where the sections of a TOML text start (the lines that begin with `[`), to
/// tell which section a position is in. Built once: lookups are binary searches.
pub struct Sections {
    starts: Vec<usize>,
}

impl Sections {
    pub fn new(text: &str) -> Self {
        let mut starts = Vec::new();
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            if line.trim_start().starts_with('[') {
                starts.push(at);
            }
            at += line.len();
        }
        Sections { starts }
    }

    /// The start of the section holding byte `at`; `None` before the first header.
    pub fn of(&self, at: usize) -> Option<usize> {
        let i = self.starts.partition_point(|s| *s <= at);
        i.checked_sub(1).map(|i| self.starts[i])
    }
}

/// Drop diagnostics that are consequences of a syntax error: later layers read
/// the parser's recovered tree, and in a section it could not read they would
/// report guesses (a missing value read as a string of the wrong type, keys of a
/// broken table as missing, and so on). The section is reported for its syntax;
/// the rest follows once that is fixed.
pub fn drop_consequences(diags: &mut Vec<Diagnostic>, file: &SourceFile) {
    let sections = Sections::new(&file.text);
    let bad: std::collections::BTreeSet<Option<usize>> = diags
        .iter()
        .filter(|d| d.code == Code::Syntax)
        .filter_map(|d| d.span)
        .map(|s| sections.of(s.start))
        .collect();
    if bad.is_empty() {
        return;
    }
    diags.retain(|d| {
        d.code == Code::Syntax
            || d.span.is_none_or(|s| {
                // A value the parser made up while recovering has an empty span
                // at the start of the file.
                s.end > 0 && !bad.contains(&sections.of(s.start))
            })
    });
}

/// Replace control characters so a broken file cannot mess up the terminal,
/// and cut very long lines.
fn printable(text: &str) -> String {
    let mut s: String = text
        .chars()
        .take(300)
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut close: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .collect();
    close.sort_unstable();
    close.dedup();
    match close.as_slice() {
        // Two equally close names (`x8` against `x0`..`x7`): a guess would mislead.
        [(d0, _), (d1, _), ..] if d0 == d1 => None,
        [(_, best), ..] => Some(best),
        [] => None,
    }
}

/// `help:` text for an unknown name: "did you mean" or the list of choices.
pub fn suggest(word: &str, candidates: &[&str], what: &str) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if candidates.is_empty() => format!("no {what} is defined"),
        None => format!(
            "expected one of {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_caret_and_help() {
        let f = SourceFile::new("p.toml", "[models.f]\nestimator = \"random_forrest\"\n");
        let d = Diagnostic::new(
            Code::UnknownEstimator,
            Span::new(23, 39),
            "unknown estimator",
        )
        .with_help("did you mean `random_forest`?");
        let text = d.render(&f);
        assert_eq!(
            text,
            "p.toml:2:13: error[E0206]: unknown estimator\n  |\n2 | estimator = \"random_forrest\"\n  |             ^^^^^^^^^^^^^^^^\n  = help: did you mean `random_forest`?\n"
        );
    }

    #[test]
    fn every_code_is_listed_once_with_its_own_string() {
        let strs: std::collections::BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strs.len(), Code::ALL.len());
        // A new variant must be added to ALL: the match below stops compiling otherwise.
        for c in Code::ALL {
            match c {
                Code::Syntax
                | Code::NotText
                | Code::TooDeep
                | Code::UnknownKey
                | Code::WrongType
                | Code::MissingKey
                | Code::OutOfRange
                | Code::UnknownChoice
                | Code::UnknownEstimator
                | Code::BadExpression
                | Code::SecretInFile
                | Code::Conflict
                | Code::DuplicateName
                | Code::UnknownReference
                | Code::Cycle
                | Code::TargetKind
                | Code::OverwritesInput
                | Code::UnknownColumn
                | Code::WrongStepKind
                | Code::BadFunction
                | Code::DuplicateOutput
                | Code::MissingFile
                | Code::ColumnNotInData
                | Code::UnusedStep
                | Code::NameTooLong
                | Code::NothingToRun
                | Code::DuplicateColumnInData
                | Code::EmptyData
                | Code::MostlyNumeric
                | Code::ExceedsClusterMemory => {}
            }
        }
        assert_eq!(Code::ALL.len(), 30);
    }

    #[test]
    fn did_you_mean_finds_close_names_only() {
        let c = ["random_forest", "decision_tree", "ridge"];
        assert_eq!(did_you_mean("random_forrest", c), Some("random_forest"));
        assert_eq!(did_you_mean("RIDGE", c), Some("ridge"));
        assert_eq!(did_you_mean("xgboost", c), None);
        // A tie is no hint.
        assert_eq!(did_you_mean("x8", ["x0", "x1", "y"]), None);
    }
}

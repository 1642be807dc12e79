//! Golden diagnostics for every invalid pipeline under `tests/fixtures/invalid/`.
//!
//! Each fixture is a realistic pipeline with one or a few deliberate mistakes. Its
//! first line says which codes it must produce (`# expect: E0206`); its full
//! human-readable diagnostics (`path:line:col: error[CODE]: message`, the line, the
//! caret, the notes and the `help:`) are an insta snapshot. Fixtures named `data_*`
//! are checked with `--data`. Paths are relative to the crate root (where cargo runs
//! tests), so snapshots do not depend on where the repository is checked out.

use dagml::frontend::{Code, Diagnostic, Severity, SourceFile};
use dagml::workspace::{self, CheckOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const DIR: &str = "tests/fixtures/invalid";

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("tests/fixtures/invalid exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| Path::new(DIR).join(p.file_name().expect("a file name")))
        .collect();
    v.sort();
    v
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .expect("UTF-8 fixture name")
        .to_string()
}

fn needs_data(path: &Path) -> bool {
    stem(path).starts_with("data_")
}

/// The codes named on the fixture's `# expect:` line.
fn expected_codes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("fixture readable");
    let text = String::from_utf8_lossy(&bytes);
    let line = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect:"))
        .unwrap_or_else(|| panic!("{} does not start with `# expect: CODE...`", path.display()));
    let codes: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert!(!codes.is_empty(), "{}: empty expect line", path.display());
    codes
}

fn check(path: &Path) -> (String, Vec<Diagnostic>) {
    let (text, diags, _) = check_with_file(path);
    (text, diags)
}

fn check_with_file(path: &Path) -> (String, Vec<Diagnostic>, SourceFile) {
    let opts = CheckOptions {
        data: needs_data(path),
        ..Default::default()
    };
    let report = workspace::check_file(path, &opts);
    let text: String = report
        .parsed
        .diagnostics
        .iter()
        .map(|d| d.render(&report.parsed.file))
        .collect::<Vec<_>>()
        .join("\n");
    (text, report.parsed.diagnostics, report.parsed.file)
}

#[test]
fn there_are_at_least_forty_fixtures() {
    let n = fixtures().len();
    assert!(n >= 40, "only {n} invalid fixtures");
}

#[test]
fn every_fixture_matches_its_golden_diagnostics() {
    for path in fixtures() {
        let (text, diags) = check(&path);
        let shown = path.display().to_string();
        assert!(
            diags.iter().any(Diagnostic::is_error),
            "{shown}: no error reported:\n{text}"
        );
        let codes: BTreeSet<&str> = diags.iter().map(|d| d.code.as_str()).collect();
        for want in expected_codes(&path) {
            assert!(
                codes.contains(want.as_str()),
                "{shown}: expected {want}, found {codes:?}:\n{text}"
            );
        }
        for d in &diags {
            // Every problem in a file points at a place in it (only whole-file
            // problems, like a file too large to read, may not).
            assert!(d.span.is_some(), "{shown}: no location:\n{text}");
            assert!(
                text.contains(&format!("{shown}:")),
                "{shown}: the path is not shown:\n{text}"
            );
        }
        // In file order.
        let starts: Vec<usize> = diags
            .iter()
            .filter_map(|d| d.span)
            .map(|s| s.start)
            .collect();
        assert!(
            starts.windows(2).all(|w| w[0] <= w[1]),
            "{shown}: not in file order:\n{text}"
        );
        insta::with_settings!({
            description => format!("dagml check{} {shown}", if needs_data(&path) { " --data" } else { "" }),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(stem(&path), text);
        });
    }
}

#[test]
fn every_diagnostic_code_has_a_fixture() {
    let mut seen = BTreeSet::new();
    for path in fixtures() {
        for d in check(&path).1 {
            seen.insert(d.code);
        }
    }
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !seen.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn the_misspelt_estimator_points_at_the_name_and_suggests_the_right_one() {
    let path = Path::new(DIR).join("estimator_typo.toml");
    let (text, diags) = check(&path);
    assert_eq!(diags.len(), 1, "{text}");
    assert_eq!(diags[0].code, Code::UnknownEstimator);
    assert_eq!(diags[0].severity, Severity::Error);
    assert!(
        text.starts_with("tests/fixtures/invalid/estimator_typo.toml:17:13: error[E0206]: "),
        "{text}"
    );
    assert_eq!(
        diags[0].help.as_deref(),
        Some("did you mean `random_forest`?")
    );
}

#[test]
fn several_problems_in_one_file_are_all_reported_in_file_order() {
    let path = Path::new(DIR).join("multiple_problems.toml");
    let (text, diags, file) = check_with_file(&path);
    let got: Vec<(usize, &str)> = diags
        .iter()
        .map(|d| {
            (
                file.line_col(d.span.map_or(0, |s| s.start)).0,
                d.code.as_str(),
            )
        })
        .collect();
    // One per mistake written in the file, top to bottom.
    assert_eq!(
        got,
        vec![
            (11, "E0201"),
            (13, "W0301"),
            (20, "E0204"),
            (23, "E0206"),
            (31, "E0204"),
            (35, "E0302"),
        ],
        "{text}"
    );
}

/// Through the binary: every fixture exits 1 and prints `path:line:col: error[CODE]`.
#[test]
fn every_fixture_exits_1_from_the_command_line() {
    for path in fixtures() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagml"));
        cmd.arg("check");
        if needs_data(&path) {
            cmd.arg("--data");
        }
        let out = cmd.arg(&path).output().expect("dagml runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{}:\n{stdout}", path.display());
        let first = expected_codes(&path).remove(0);
        let shown = path.display().to_string();
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{shown}:"))
                && (l.contains(&format!(": error[{first}]: "))
                    || l.contains(&format!(": warning[{first}]: ")))),
            "{shown}: no `{shown}:line:col: error[{first}]` line:\n{stdout}"
        );
    }
}

/// docs/diagnostics.md has a section for every code, and docs/pipelines.md names
/// every choice the schema accepts.
#[test]
fn the_docs_cover_every_code_and_choice() {
    let diagnostics = std::fs::read_to_string("docs/diagnostics.md").expect("docs/diagnostics.md");
    for c in Code::ALL {
        assert!(
            diagnostics.contains(&format!("\n## {}\n", c.as_str())),
            "docs/diagnostics.md has no section for {}",
            c.as_str()
        );
    }
    use dagml::frontend::pipeline::*;
    let reference = std::fs::read_to_string("docs/pipelines.md").expect("docs/pipelines.md");
    let lists: [(&str, &[&str]); 8] = [
        ("estimator", EstimatorKind::NAMES),
        ("metric", Metric::NAMES),
        ("operation", Op::NAMES),
        ("generator", Generator::NAMES),
        ("output kind", OutputKind::NAMES),
        ("column type", ColumnType::NAMES),
        ("impute strategy", ImputeStrategy::NAMES),
        ("criterion", Criterion::NAMES),
    ];
    for (what, names) in lists {
        for n in names {
            assert!(
                reference.contains(&format!("`{n}`")),
                "docs/pipelines.md does not name the {what} `{n}`"
            );
        }
    }
    for section in dagml::frontend::lower::SECTIONS {
        assert!(
            reference.contains(&format!("[{section}")),
            "no [{section}] in docs/pipelines.md"
        );
    }
}

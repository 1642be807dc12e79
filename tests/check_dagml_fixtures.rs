//! Golden diagnostics for invalid .dagml files: every file in
//! tests/fixtures/invalid_dagml/ is checked (syntax, schema and graph layers, as
//! `dagml check` does) and its rendered diagnostics are compared with the snapshot.

use dagml::workspace::{self, CheckOptions};
use std::path::PathBuf;

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/invalid_dagml")
        .expect("the fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dagml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_invalid_fixture_has_golden_diagnostics() {
    let files = fixtures();
    assert!(files.len() >= 24, "only {} fixtures", files.len());
    for path in files {
        let report = workspace::check_file(&path, &CheckOptions::default());
        let errors = report
            .parsed
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .count();
        assert!(errors > 0, "{} has no error", path.display());
        let rendered: String = report
            .parsed
            .diagnostics
            .iter()
            .map(|d| d.render(&report.parsed.file))
            .collect::<Vec<_>>()
            .join("\n");
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("invalid_dagml__{name}"), rendered);
    }
}

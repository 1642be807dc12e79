//! `dagml check` from the command line: exit statuses, folders, JSON lines, warnings.

use std::path::Path;
use std::process::{Command, Output};

fn dagml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(args)
        .output()
        .expect("the dagml binary runs")
}

fn dagml_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dagml"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the dagml binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A valid pipeline with one unused source (a warning, W0301).
const WITH_UNUSED_SOURCE: &str = r#"[pipeline]
name = "blobs"

[sources.blobs]
kind = "synthetic"
generator = "classification"
rows = 1000

[sources.spare]
kind = "synthetic"
generator = "classification"
rows = 1000

[models.forest]
estimator = "random_forest"
input = "blobs"
target = "y"

[evaluations.fit]
model = "forest"
data = "blobs"
metrics = ["accuracy"]
"#;

/// Two problems: a misspelt key (line 8) and a misspelt estimator (line 12).
const TWO_PROBLEMS: &str = r#"[sources.blobs]
kind = "synthetic"
generator = "classification"
rows = 1000

[models.forest]
estimator = "random_forest"
inputs = "blobs"
target = "y"

[models.tree]
estimator = "decision_tre"
input = "blobs"
target = "y"
"#;

#[test]
fn the_shipped_pipelines_are_valid() {
    let o = dagml(&["check", "pipelines/"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "", "no diagnostics expected");
    assert!(stderr(&o).contains("0 errors"), "{}", stderr(&o));
}

#[test]
fn an_invalid_file_exits_1_with_its_location() {
    let path = "tests/fixtures/invalid/estimator_typo.toml";
    let o = dagml(&["check", path]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "{path}:17:13: error[E0206]: unknown estimator `random_forrest`"
        )),
        "{out}"
    );
    assert!(
        out.contains("= help: did you mean `random_forest`?"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("checked 1 file: 1 error, 0 warnings"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn valid_and_invalid_together_exit_1() {
    let o = dagml(&[
        "check",
        "pipelines/mnist_rf.toml",
        "tests/fixtures/invalid/cycle.toml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error[E0303]"), "{}", stdout(&o));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["check"][..],                                  // no path
        &["check", "--no-such-flag", "pipelines/"][..],  // unknown flag
        &["check", "--format", "xml", "pipelines/"][..], // unknown format
        &["check", "does/not/exist.toml"][..],           // missing path
        &["chek", "pipelines/"][..],                     // unknown command
    ] {
        let o = dagml(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}: usage errors go to stderr");
        assert!(!stderr(&o).is_empty(), "{args:?}: nothing said");
    }
    let o = dagml(&["check", "does/not/exist.toml"]);
    assert!(
        stderr(&o).contains("`does/not/exist.toml` does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_folder_is_searched_recursively_for_toml_and_dagml_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nested = dir.path().join("team/experiments");
    std::fs::create_dir_all(&nested).expect("mkdir");
    std::fs::write(dir.path().join("good.toml"), WITH_UNUSED_SOURCE).expect("write");
    std::fs::write(nested.join("bad.toml"), TWO_PROBLEMS).expect("write");
    // Not a pipeline in either syntax: reported, whichever languages this build reads.
    std::fs::write(nested.join("notes.dagml"), "this is not a pipeline (\n").expect("write");
    // Not pipeline files: skipped.
    std::fs::write(nested.join("README.md"), "# notes\n").expect("write");
    std::fs::write(nested.join("data.csv"), "a,b\n1,2\n").expect("write");
    std::fs::create_dir_all(dir.path().join(".hidden")).expect("mkdir");
    std::fs::write(dir.path().join(".hidden/x.toml"), "not = [valid").expect("write");

    let o = dagml_in(dir.path(), &["check", "."]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        stderr(&o).contains("checked 3 files"),
        "{}\n{out}",
        stderr(&o)
    );
    assert!(
        out.contains("team/experiments/bad.toml:8:1: error[E0201]"),
        "{out}"
    );
    assert!(out.contains("team/experiments/notes.dagml:"), "{out}");
    assert!(!out.contains(".hidden"), "{out}");

    // A folder with no pipelines is a usage error.
    let empty = tempfile::tempdir().expect("temp dir");
    let o = dagml(&["check", &empty.path().to_string_lossy()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn json_prints_one_object_per_problem_per_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("two.toml"), TWO_PROBLEMS).expect("write");
    let o = dagml_in(dir.path(), &["check", "--format", "json", "two.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    // The misspelt key (not also a missing `input`) and the misspelt estimator.
    let got: Vec<(String, i64, i64, String)> = objects
        .iter()
        .map(|v| {
            (
                v["file"].as_str().unwrap_or("?").to_string(),
                v["line"].as_i64().unwrap_or(-1),
                v["column"].as_i64().unwrap_or(-1),
                v["code"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("two.toml".to_string(), 8, 1, "E0201".to_string()),
            ("two.toml".to_string(), 12, 13, "E0206".to_string()),
        ],
        "{out}"
    );
    for v in &objects {
        for key in [
            "file",
            "line",
            "column",
            "end_line",
            "end_column",
            "severity",
            "code",
            "message",
            "help",
            "notes",
        ] {
            assert!(v.get(key).is_some(), "no `{key}` in {v}");
        }
        assert_eq!(v["severity"], "error");
    }
    assert_eq!(
        objects[0]["message"],
        "unknown key `inputs` in model `forest`"
    );
    assert_eq!(objects[0]["help"], "did you mean `input`?");
    assert_eq!(objects[1]["help"], "did you mean `decision_tree`?");
    // JSON mode prints nothing else on stdout (the summary is for people).
    assert_eq!(out.lines().count(), 2);
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.toml"), WITH_UNUSED_SOURCE).expect("write");
    let o = dagml_in(dir.path(), &["check", "p.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).starts_with("p.toml:9:10: warning[W0301]: source `spare` is never used"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("0 errors, 1 warning"), "{}", stderr(&o));

    let o = dagml_in(dir.path(), &["check", "--deny-warnings", "p.toml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

    let o = dagml_in(
        dir.path(),
        &["check", "--deny-warnings", "--format", "json", "p.toml"],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(v["severity"], "warning");
    assert_eq!(v["code"], "W0301");
}

/// The recipes in docs/ci.md and .pre-commit-hooks.yaml work on real output.
#[test]
fn the_ci_recipes_match_real_output() {
    // The GitHub problem matcher's regexp parses a real diagnostic line.
    let doc = std::fs::read_to_string("docs/ci.md").expect("docs/ci.md");
    let start = doc
        .find("{\n  \"problemMatcher\"")
        .expect("a matcher in docs/ci.md");
    let end = start + doc[start..].find("\n```").expect("end of the JSON block");
    let matcher: serde_json::Value =
        serde_json::from_str(&doc[start..end]).expect("the matcher is JSON");
    let pattern = &matcher["problemMatcher"][0]["pattern"][0];
    let re = regex::Regex::new(pattern["regexp"].as_str().expect("a regexp")).expect("a regex");
    let o = dagml(&["check", "tests/fixtures/invalid/estimator_typo.toml"]);
    let first = stdout(&o).lines().next().unwrap_or_default().to_string();
    let caps = re
        .captures(&first)
        .unwrap_or_else(|| panic!("no match: {first}"));
    let group = |k: &str| {
        let i = pattern[k].as_u64().expect("a group index") as usize;
        caps.get(i)
            .map(|m| m.as_str().to_string())
            .unwrap_or_default()
    };
    assert_eq!(group("file"), "tests/fixtures/invalid/estimator_typo.toml");
    assert_eq!((group("line"), group("column")), ("17".into(), "13".into()));
    assert_eq!(
        (group("severity"), group("code")),
        ("error".into(), "E0206".into())
    );
    assert_eq!(group("message"), "unknown estimator `random_forrest`");

    // The pre-commit hook picks pipeline files and nothing else, and its entry
    // passes on the shipped pipelines.
    let hooks = std::fs::read_to_string(".pre-commit-hooks.yaml").expect("hooks file");
    let value = |key: &str| {
        hooks
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no `{key}` in .pre-commit-hooks.yaml"))
            .to_string()
    };
    let files = regex::Regex::new(&value("files")).expect("files is a regex");
    for yes in ["pipelines/mnist_rf.toml", "ml/pipelines/a/b.dagml"] {
        assert!(files.is_match(yes), "{yes}");
    }
    for no in [
        "Cargo.toml",
        "pyproject.toml",
        "pipelines/README.md",
        "pipelines_old.toml",
    ] {
        assert!(!files.is_match(no), "{no}");
    }
    let entry = value("entry");
    let mut words = entry.split_whitespace();
    assert_eq!(words.next(), Some("dagml"));
    let mut args: Vec<String> = words.map(str::to_string).collect();
    let mut shipped: Vec<String> = std::fs::read_dir("pipelines")
        .expect("pipelines/")
        .filter_map(|e| e.ok())
        .map(|e| format!("pipelines/{}", e.file_name().to_string_lossy()))
        .filter(|p| files.is_match(p))
        .collect();
    shipped.sort();
    assert!(!shipped.is_empty());
    args.extend(shipped);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = dagml(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = dagml(&[&args[..], &["tests/fixtures/invalid/cycle.toml"]].concat());
    assert_eq!(o.status.code(), Some(1));
}

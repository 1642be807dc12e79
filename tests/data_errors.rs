//! Data that is wrong at run time (issue 12, items 3-5): each message names the
//! file (and line where there is one), the step, and what to do.

use std::process::Command;

const PIPELINE: &str = r#"
[pipeline]
name = "t"

[sources.rows]
kind = "csv"
path = "d.csv"
COLUMNS

[splits.h]
kind = "holdout"
input = "rows"
test_fraction = 0.3

[models.m]
estimator = "decision_tree"
input = "h.train"
target = "y"

[evaluations.e]
model = "m"
data = ["h.test"]
metrics = ["accuracy"]
"#;

/// `dagml run` on `csv` (with `columns`, if any): its stderr; it must fail.
fn run_on(csv: &str, columns: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("d.csv"), csv).expect("write");
    std::fs::write(
        dir.path().join("p.toml"),
        PIPELINE.replace("COLUMNS", columns),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["run", "p.toml", "-q", "--in-process"])
        .current_dir(dir.path())
        .output()
        .expect("dagml runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_duplicated_header_name_is_an_error_naming_both_positions() {
    let e = run_on("a,a,c,y\n1,2,3,p\n4,5,6,q\n", "");
    assert!(
        e.contains("d.csv") && e.contains("columns 1 and 2 are both named `a`"),
        "{e}"
    );
}

#[test]
fn an_empty_file_says_it_is_empty() {
    let e = run_on("", "");
    assert!(e.contains("d.csv` is empty"), "{e}");
    assert!(!e.contains("not in the data"), "{e}");
}

#[test]
fn a_header_only_file_says_it_has_no_rows() {
    let e = run_on("a,c,y\n", "");
    assert!(e.contains("d.csv` has a header but no rows"), "{e}");
}

#[test]
fn a_split_that_leaves_no_training_rows_says_which_split_and_why() {
    let e = run_on("a,c,y\n1,2,p\n", "");
    assert!(
        e.contains("holdout split `h` (test_fraction 0.3)")
            && e.contains("`h.train` no rows")
            && e.contains("d.csv"),
        "{e}"
    );
}

#[test]
fn a_missing_target_lists_the_columns_there_are_with_a_guess() {
    let e = run_on("a,c,Y\n1,2,p\n3,4,q\n5,6,p\n7,8,q\n", "");
    assert!(
        e.contains("target `y` of model `m`")
            && e.contains("read from `d.csv`")
            && e.contains("`a`, `c`, `Y`")
            && e.contains("did you mean `Y`?"),
        "{e}"
    );
}

#[test]
fn a_wrong_field_count_says_fields_and_the_line() {
    let e = run_on("a,c,y\n1,2,p\n3,4\n5,6,p\n", "");
    assert!(e.contains("line 3: 2 fields, but the header has 3"), "{e}");
    assert!(!e.contains("records"), "{e}");
}

#[test]
fn a_bad_cell_in_a_declared_column_is_an_error_with_its_line_and_column() {
    let e = run_on(
        "a,c,y\n1,2,p\n3,x,q\n5,6,p\n",
        "columns = { c = \"float\" }",
    );
    assert!(
        e.contains("line 3, column `c`: `x` is not a Float64 value") && e.contains("na_values"),
        "{e}"
    );
}

#[test]
fn a_class_never_seen_in_training_is_scored_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("train.csv"), "a,y\n1,p\n2,p\n8,q\n9,q\n").expect("write");
    std::fs::write(dir.path().join("test.csv"), "a,y\n1,p\n9,q\n5,r\n").expect("write");
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
[pipeline]
name = "unseen"

[sources.train]
kind = "csv"
path = "train.csv"

[sources.test]
kind = "csv"
path = "test.csv"

[models.m]
estimator = "decision_tree"
input = "train"
target = "y"

[evaluations.e]
model = "m"
data = ["test"]
metrics = ["accuracy", "classification_report", "confusion_matrix"]

[outputs.metrics]
kind = "metrics"
path = "metrics.json"
"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["run", "p.toml", "--in-process"])
        .current_dir(dir.path())
        .output()
        .expect("dagml runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning: class `r` is in `test` but never in the training data of `m`"),
        "{text}"
    );
    // Two of three right, as scikit-learn's accuracy_score gives.
    assert!(text.contains("accuracy 0.6667"), "{text}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics.json")).expect("metrics"))
            .expect("json");
    let s = &m["evaluations"][0]["results"][0]["scores"];
    assert_eq!(s["unseen_classes"], serde_json::json!(["r"]), "{s}");
    // `r` has its row (one row, predicted p or q) and a column never predicted.
    let cm = &s["confusion_matrix"];
    assert_eq!(cm[0], serde_json::json!([1, 0, 0]), "{s}");
    assert_eq!(cm[1], serde_json::json!([0, 1, 0]), "{s}");
    assert_eq!(cm[2][2], serde_json::json!(0), "{s}");
    assert_eq!(
        cm[2][0].as_u64().unwrap_or(9) + cm[2][1].as_u64().unwrap_or(9),
        1,
        "{s}"
    );
    assert_eq!(s["per_class"][2]["recall"], serde_json::json!(0.0), "{s}");
}

#[test]
fn a_number_column_with_a_stray_text_cell_is_warned_of_at_run_naming_the_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut csv = String::from("a,b,y\n");
    for i in 0..40 {
        let a = if i == 17 {
            "n/a".to_string()
        } else {
            i.to_string()
        };
        csv.push_str(&format!(
            "{a},{},{}\n",
            i % 7,
            if i % 2 == 0 { "p" } else { "q" }
        ));
    }
    std::fs::write(dir.path().join("d.csv"), csv).expect("write");
    std::fs::write(dir.path().join("p.toml"), PIPELINE.replace("COLUMNS", "")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["run", "p.toml", "-q", "--in-process"])
        .current_dir(dir.path())
        .output()
        .expect("dagml runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("W0401")
            && err.contains("column `a` of `d.csv` is numbers but for 1")
            && err.contains("line 19: `n/a`"),
        "{err}"
    );
}

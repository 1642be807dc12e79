//! `dagml check --data`: missing files and columns that the data does not have.

use std::process::Command;

fn check_data(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["check", "--data"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_column_the_csv_lacks_is_reported_where_it_is_used() {
    let (code, out) = check_data(
        r#"
[sources.houses]
kind = "csv"
path = "data/house_prices/train.csv"
na_values = ["NA"]
[transforms.t]
input = "houses"
steps = [{ op = "derive", column = "age", expr = "2010 - YearBuit" }]
[outputs.o]
kind = "dataset"
data = "t"
path = "out/t"
"#,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error[E0306]: `derive` in transform `t` needs column `YearBuit`"),
        "{out}"
    );
    assert!(out.contains("help: did you mean `YearBuilt`?"), "{out}");
}

#[test]
fn without_data_the_same_pipeline_passes_because_the_columns_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "[sources.h]\nkind = \"csv\"\npath = \"data/house_prices/train.csv\"\n[transforms.t]\ninput = \"h\"\nsteps = [{ op = \"drop\", columns = [\"Nope\"] }]\n[outputs.o]\nkind = \"dataset\"\ndata = \"t\"\npath = \"out/t\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["check", "--data"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn missing_files_are_reported_at_their_path() {
    let (code, out) = check_data(
        "[sources.d]\nkind = \"mnist\"\npath = \"data/nowhere\"\n[sources.c]\nkind = \"csv\"\npath = \"data/missing.csv\"\n[outputs.o]\nkind = \"dataset\"\ndata = \"c\"\npath = \"out/c\"\n[outputs.p]\nkind = \"dataset\"\ndata = \"d\"\npath = \"out/d\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("error[E0401]: `data/nowhere` lacks the MNIST files"),
        "{out}"
    );
    assert!(
        out.contains("error[E0401]: `data/missing.csv` does not exist"),
        "{out}"
    );
}

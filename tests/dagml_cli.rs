//! The commands take .dagml files wherever they take .toml ones, through the
//! binary: `plan` draws the same DOT for a .dagml file as for its .toml twin,
//! `check` on a folder checks the .dagml files in it, and `run` on a .dagml file
//! writes byte for byte what its TOML form writes.

mod common;

use common::{dagml_in as dagml, text};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dagml_pipelines() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("pipelines"))
        .expect("pipelines/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dagml"))
        .collect();
    v.sort();
    v
}

#[test]
fn plan_of_every_dagml_pipeline_is_the_plan_of_its_toml_twin() {
    let files = dagml_pipelines();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for required in ["house_prices_ensemble", "gauss_linreg"] {
        assert!(names.iter().any(|n| n == required), "no {required}.dagml");
    }
    for dsl in files {
        let toml = dsl.with_extension("toml");
        for level in ["physical", "logical"] {
            let a = dagml(&["plan", &dsl.to_string_lossy(), "--level", level], root());
            let b = dagml(&["plan", &toml.to_string_lossy(), "--level", level], root());
            assert!(a.status.success(), "{}: {}", dsl.display(), text(&a));
            assert!(b.status.success(), "{}: {}", toml.display(), text(&b));
            let dot = String::from_utf8_lossy(&a.stdout);
            assert!(dot.starts_with("digraph"), "not DOT: {dot}");
            assert_eq!(
                dot,
                String::from_utf8_lossy(&b.stdout),
                "{level} plan of {} differs from its TOML twin",
                dsl.display()
            );
        }
    }
}

#[test]
fn check_on_a_folder_checks_its_dagml_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dagml_pipelines();
    for p in &files {
        std::fs::copy(p, dir.path().join(p.file_name().expect("a file name"))).expect("copy");
    }
    // Every shipped .dagml file checks clean.
    let o = dagml(&["check", "."], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let summary = format!("checked {} files: 0 errors", files.len());
    // The summary goes to standard error.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&summary),
        "{}",
        text(&o)
    );
    // A broken one in a subfolder is found and reported with its path.
    std::fs::create_dir(dir.path().join("more")).expect("mkdir");
    std::fs::write(
        dir.path().join("more/broken.dagml"),
        "pipeline broken\nrows = load csv(\"x.csv\")\nm = fit random_forest on rowz target y\n",
    )
    .expect("write");
    let o = dagml(&["check", "."], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("broken.dagml:3:"), "{}", text(&o));
    assert!(out.contains("`rowz`"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains(&format!("checked {} files: 1 error", files.len() + 1)),
        "{}",
        text(&o)
    );
}

/// A small classification pipeline in the dagml language, fast in a debug build.
const SMALL: &str = r#"# a forest and a logistic regression on generated rows
pipeline small (seed = 11)

rows = load synthetic(classification, rows = 3000, features = 8, informative = 4, classes = 3, partitions = 3)
holdout = split rows holdout(test_fraction = 0.25, stratify = y)

forest = fit random_forest(n_trees = 6, max_depth = 12) on holdout.train target y
logreg = fit logistic_regression on holdout.train target y preprocess [standard_scale]

evaluate forest on holdout.train, holdout.test [accuracy, classification_report]
evaluate logreg on holdout.test [accuracy, log_loss]

save forest to "out/forest.model"
save metrics to "out/metrics.json"
save predictions of forest on holdout.test to "out/predictions.parquet"
"#;

#[test]
fn run_on_a_dagml_file_writes_what_its_toml_form_writes() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    std::fs::write(a.path().join("small.dagml"), SMALL).expect("write");
    let o = dagml(
        &["convert", "small.dagml", "--to", "toml", "-o", "small.toml"],
        a.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    std::fs::rename(a.path().join("small.toml"), b.path().join("small.toml")).expect("move");

    let o = dagml(&["run", "small.dagml", "-q"], a.path());
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("forest_scores"), "{}", text(&o));
    assert!(out.contains("logreg_scores"), "{}", text(&o));
    let o = dagml(&["run", "small.toml", "-q"], b.path());
    assert!(o.status.success(), "{}", text(&o));

    for f in [
        "out/forest.model",
        "out/metrics.json",
        "out/predictions.parquet",
    ] {
        let x = std::fs::read(a.path().join(f)).unwrap_or_else(|e| panic!("{f} from .dagml: {e}"));
        let y = std::fs::read(b.path().join(f)).unwrap_or_else(|e| panic!("{f} from .toml: {e}"));
        assert!(!x.is_empty(), "{f} is empty");
        assert!(
            x == y,
            "{f} differs between the .dagml run and the .toml run"
        );
    }
}

#[test]
fn run_on_an_invalid_dagml_file_prints_the_check_diagnostics() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.dagml"),
        SMALL.replace("save predictions of forest", "save predictions forest"),
    )
    .expect("write");
    let o = dagml(&["run", "bad.dagml"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains("expected `of` after `predictions`, found `forest`"),
        "{all}"
    );
    assert!(!dir.path().join("out").exists(), "{all}");
}

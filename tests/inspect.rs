//! `dagml inspect` end to end: small pipelines run into a temporary folder make
//! one model file of every estimator kind (linear and ridge regression, logistic
//! regression, a decision tree, a random forest, a per-shard ensemble), and each
//! file's text and JSON are goldens. The goldens hold no path or clock; the
//! dagml version is masked so a release does not rewrite them.

mod common;

use common::{dagml_in as dagml, ran_in_tempdir, text};
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// 240 rows: `a` (float, every 17th missing), `b` (float), `color` (three
/// categories), `y = 2a − b + 3 + color effect + small noise` and `label`, the
/// class of `a + b` (low / mid / high). Made with integer arithmetic only.
fn csv() -> String {
    let mut s = String::from("a,b,color,y,label\n");
    let mut r: u64 = 12345;
    let mut next = || {
        r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (r >> 33) % 1000
    };
    for i in 0..240 {
        let a = next() as f64 / 100.0;
        let b = next() as f64 / 200.0;
        let noise = (next() as f64 - 500.0) / 5000.0;
        let color = ["red", "green", "blue"][i % 3];
        let effect = [0.0, 1.5, -1.0][i % 3];
        let y = 2.0 * a - b + 3.0 + effect + noise;
        let label = match a + b {
            s if s < 5.0 => "low",
            s if s < 9.0 => "mid",
            _ => "high",
        };
        let a_text = if i % 17 == 0 {
            String::new()
        } else {
            format!("{a}")
        };
        s.push_str(&format!("{a_text},{b},{color},{y:.6},{label}\n"));
    }
    s
}

const PIPELINE: &str = r#"
[pipeline]
name = "kinds"
seed = 3

[sources.rows]
kind = "csv"
path = "rows.csv"

[splits.shards]
kind = "shards"
input = "rows"
by = "rows"
names = ["east", "west"]
validation_fraction = 0.25

[models.linreg]
estimator = "linear_regression"
input = "rows"
target = "y"
features = ["a", "b"]
preprocess = [{ op = "impute", strategy = "median" }]

[models.ridge]
estimator = "ridge"
input = "rows"
target = "y"
features = ["a", "b", "color"]
preprocess = [
  { op = "impute", strategy = "mean" },
  { op = "one_hot" },
  { op = "standard_scale" },
]
params = { alpha = 2.0 }

[models.logreg]
estimator = "logistic_regression"
input = "rows"
target = "label"
features = ["a", "b"]
preprocess = [{ op = "impute", strategy = "median" }, { op = "standard_scale" }]

[models.tree]
estimator = "decision_tree"
input = "rows"
target = "label"
features = ["a", "b", "color"]
preprocess = [{ op = "impute", strategy = "median" }, { op = "ordinal" }]
params = { max_depth = 4 }

[models.forest]
estimator = "random_forest"
input = "rows"
target = "label"
features = ["a", "b", "color"]
preprocess = [{ op = "impute", strategy = "median" }, { op = "one_hot" }]
params = { n_trees = 12, max_depth = 5 }

[models.local]
estimator = "decision_tree"
per_shard = true
combine = "average"
input = "shards"
target = "y"
features = ["a", "b"]
preprocess = [{ op = "impute", strategy = "median" }]
params = { max_depth = 3 }

[outputs.linreg_file]
kind = "model"
model = "linreg"
path = "out/linreg.model"

[outputs.ridge_file]
kind = "model"
model = "ridge"
path = "out/ridge.model"

[outputs.logreg_file]
kind = "model"
model = "logreg"
path = "out/logreg.model"

[outputs.tree_file]
kind = "model"
model = "tree"
path = "out/tree.model"

[outputs.forest_file]
kind = "model"
model = "forest"
path = "out/forest.model"

[outputs.local_file]
kind = "model"
model = "local"
path = "out/local.model"
"#;

/// The folder the pipeline ran in (once for every test of this file).
fn models() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        ran_in_tempdir(
            &[
                ("rows.csv", csv().as_bytes()),
                ("kinds.toml", PIPELINE.as_bytes()),
            ],
            &["run", "kinds.toml", "--threads", "2", "--quiet"],
        )
    })
    .path()
}

fn masked(s: String) -> String {
    s.replace(env!("CARGO_PKG_VERSION"), "[version]")
}

fn inspect(model: &str, json: bool) -> String {
    let path = format!("out/{model}.model");
    let mut args = vec!["inspect", path.as_str()];
    if json {
        args.extend(["--format", "json"]);
    }
    masked(ok(&dagml(&args, models())))
}

macro_rules! goldens {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            let text = inspect(stringify!($name), false);
            insta::assert_snapshot!(concat!(stringify!($name), "_text"), text);
            let json = inspect(stringify!($name), true);
            let v: serde_json::Value = serde_json::from_str(&json).expect("inspect --format json is JSON");
            assert_eq!(v["origin"]["model"], stringify!($name));
            insta::assert_snapshot!(concat!(stringify!($name), "_json"), json);
        }
    )*};
}

goldens!(linreg, ridge, logreg, tree, forest, local);

#[test]
fn the_linear_model_learned_the_line() {
    let v: serde_json::Value = serde_json::from_str(&inspect("linreg", true)).unwrap();
    let coef = v["learned"]["coefficients"].as_array().unwrap();
    let get = |f: &str| {
        coef.iter()
            .find(|c| c["feature"] == f)
            .and_then(|c| c["value"].as_f64())
            .unwrap_or_else(|| panic!("a coefficient for {f} in {coef:?}"))
    };
    // Rows with `a` missing were imputed with the median, so the fit is close,
    // not exact.
    assert!((get("a") - 2.0).abs() < 0.1, "a: {}", get("a"));
    assert!((get("b") + 1.0).abs() < 0.1, "b: {}", get("b"));
}

#[test]
fn forest_importances_are_normalised_and_name_the_informative_features() {
    let v: serde_json::Value = serde_json::from_str(&inspect("forest", true)).unwrap();
    let imp = v["learned"]["importances"].as_array().unwrap();
    let sum: f64 = imp.iter().filter_map(|w| w["value"].as_f64()).sum();
    assert!((sum - 1.0).abs() < 1e-9, "{sum}");
    // The label is a function of a + b: color's one-hot columns matter least.
    let value = |f: &str| {
        imp.iter()
            .find(|w| w["feature"] == f)
            .and_then(|w| w["value"].as_f64())
            .unwrap()
    };
    for c in imp.iter().filter_map(|w| w["feature"].as_str()) {
        if c.starts_with("color") {
            assert!(value(c) < value("a") && value(c) < value("b"), "{imp:?}");
        }
    }
}

#[test]
fn a_file_that_is_not_a_model_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.model"), b"not a model").unwrap();
    let o = dagml(&["inspect", "x.model"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a dagml model file"));
    let o = dagml(&["inspect", "missing.model"], dir.path());
    assert_eq!(o.status.code(), Some(2));
}

/// gauss_linreg at 200,000 rows instead of 10^8: the run prints the
/// coefficient and intercept it fitted, and the metrics JSON holds them.
#[test]
fn run_prints_a_linear_models_coefficients_and_the_metrics_json_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/gauss_linreg.toml"),
    )
    .unwrap()
    .replace("rows = 100_000_000", "rows = 200_000")
    .replace("partitions = 100", "partitions = 4");
    assert!(
        text.contains("rows = 200_000"),
        "the pipeline's rows line moved"
    );
    std::fs::write(dir.path().join("gauss_linreg.toml"), text).unwrap();
    let out = ok(&dagml(
        &["run", "gauss_linreg.toml", "--threads", "2", "--quiet"],
        dir.path(),
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with("linreg: intercept "))
        .unwrap_or_else(|| panic!("no coefficients line in\n{out}"));
    let num = |after: &str| -> f64 {
        let rest = &line[line.find(after).unwrap() + after.len()..];
        rest.split([',', ' ']).next().unwrap().parse().unwrap()
    };
    assert!((num("intercept ") - 3.0).abs() < 0.01, "{line}");
    assert!((num("coef a ") - 4.0).abs() < 0.01, "{line}");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/gauss_linreg/metrics.json")).unwrap(),
    )
    .unwrap();
    let learned = &m["evaluations"][0]["learned"];
    assert_eq!(learned["kind"], "linear");
    let intercept = learned["intercept"].as_f64().unwrap();
    let coef = learned["coefficients"][0]["value"].as_f64().unwrap();
    assert_eq!(learned["coefficients"][0]["feature"], "a");
    assert!((intercept - 3.0).abs() < 0.01 && (coef - 4.0).abs() < 0.01);
    // The text shows the JSON's numbers, to six places.
    assert!(line.contains(&format!("intercept {intercept:.6}, coef a {coef:.6}")));
}

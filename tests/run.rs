//! `dagml run` and `dagml predict` end to end, through the binary: a small
//! synthetic pipeline from generated rows to a model file, metrics JSON and
//! predictions; model files byte-identical whatever the thread count; predict
//! gives what the run predicted; broken inputs are errors, not panics.

mod common;

use common::{dagml_in as dagml, text};
use std::path::{Path, PathBuf};

/// A classification pipeline small enough for a debug build: 3,000 generated
/// rows in 3 partitions, a stratified holdout, a forest and a logistic
/// regression, every output kind but the picture.
fn small_pipeline(dir: &Path, n_trees: u32) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[pipeline]
name = "small"
seed = 11

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 3000
features = 8
informative = 4
classes = 3
partitions = 3

[splits.holdout]
kind = "holdout"
input = "rows"
test_fraction = 0.25
stratify = "y"

[models.forest]
estimator = "random_forest"
input = "holdout.train"
target = "y"
params = {{ n_trees = {n_trees}, max_depth = 12 }}

[models.logreg]
estimator = "logistic_regression"
input = "holdout.train"
target = "y"
preprocess = [{{ op = "standard_scale" }}]

[evaluations.scores]
model = "forest"
data = ["holdout.train", "holdout.test"]
metrics = ["accuracy", "classification_report", "confusion_matrix"]

[evaluations.linear]
model = "logreg"
data = ["holdout.test"]
metrics = ["accuracy", "log_loss"]

[outputs.model]
kind = "model"
model = "forest"
path = "out/forest.model"

[outputs.metrics]
kind = "metrics"
path = "out/metrics.json"

[outputs.predictions]
kind = "predictions"
model = "forest"
data = "holdout.test"
path = "out/predictions.parquet"

[outputs.test_rows]
kind = "dataset"
data = "holdout.test"
format = "csv"
path = "out/test_rows"
"#
        ),
    )
    .expect("write the pipeline");
    p
}

fn accuracy(metrics: &serde_json::Value, evaluation: &str, data: &str) -> f64 {
    metrics["evaluations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["evaluation"] == evaluation)
        .flat_map(|e| e["results"].as_array().into_iter().flatten())
        .find(|r| r["data"] == data)
        .and_then(|r| r["scores"]["accuracy"].as_f64())
        .unwrap_or_else(|| panic!("no accuracy for {evaluation} on {data} in {metrics}"))
}

#[test]
fn a_small_pipeline_runs_to_a_model_metrics_and_predictions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = small_pipeline(dir.path(), 12);
    let o = dagml(
        &["run", p.to_str().unwrap_or_default(), "--threads", "2"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // The report is printed like scikit-learn's classification_report.
    assert!(out.contains("macro avg"), "{}", text(&o));
    assert!(out.contains("weighted avg"), "{}", text(&o));
    let metrics: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/metrics.json")).expect("metrics.json written"),
    )
    .expect("metrics.json is JSON");
    // Separable generated classes: both models learn them.
    let forest = accuracy(&metrics, "scores", "holdout.test");
    let logreg = accuracy(&metrics, "linear", "holdout.test");
    assert!(forest > 0.7, "forest test accuracy {forest}");
    assert!(logreg > 0.6, "logistic test accuracy {logreg}");
    assert!(accuracy(&metrics, "scores", "holdout.train") >= forest);
    let model = std::fs::read(dir.path().join("out/forest.model")).expect("model written");
    assert!(model.len() > 100);
    assert!(dir.path().join("out/predictions.parquet").is_file());
}

#[test]
fn model_files_are_byte_identical_with_one_and_two_threads() {
    let mut models = Vec::new();
    for threads in ["1", "2"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = small_pipeline(dir.path(), 6);
        let o = dagml(
            &[
                "run",
                p.to_str().unwrap_or_default(),
                "--threads",
                threads,
                "-q",
            ],
            dir.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        models.push(std::fs::read(dir.path().join("out/forest.model")).expect("model written"));
    }
    assert!(
        models[0] == models[1],
        "the model depends on the thread count"
    );
}

#[test]
fn predict_gives_what_the_run_predicted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = small_pipeline(dir.path(), 6);
    let o = dagml(&["run", p.to_str().unwrap_or_default(), "-q"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<PathBuf> = std::fs::read_dir(dir.path().join("out/test_rows"))
        .expect("dataset folder written")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(rows.len(), 1, "one partition file: {rows:?}");
    let o = dagml(
        &[
            "predict",
            "out/forest.model",
            rows[0].to_str().unwrap_or_default(),
            "-o",
            "again.csv",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    // The run's predictions (Parquet) against predict's (CSV), row by row.
    let run_pred = read_parquet_column(&dir.path().join("out/predictions.parquet"), "prediction");
    let mut rdr = csv::Reader::from_path(dir.path().join("again.csv")).expect("csv written");
    let headers = rdr.headers().expect("header").clone();
    let col = headers
        .iter()
        .position(|h| h == "prediction")
        .expect("a prediction column");
    let again: Vec<String> = rdr
        .records()
        .map(|r| r.expect("a row")[col].to_string())
        .collect();
    assert_eq!(run_pred.len(), 750);
    assert_eq!(run_pred, again);
}

fn read_parquet_column(path: &Path, name: &str) -> Vec<String> {
    use arrow::array::AsArray;
    let f = std::fs::File::open(path).expect("open parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut out = Vec::new();
    for b in reader {
        let b = b.expect("batch");
        let a = b.column_by_name(name).expect("column");
        out.extend(
            a.as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or("").to_string()),
        );
    }
    out
}

#[test]
fn broken_data_is_an_error_with_the_file_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnist = dir.path().join("mnist");
    std::fs::create_dir(&mnist).expect("mkdir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(shipped.join(f), mnist.join(f)).expect("copy");
    }
    // Cut the test images short: decompressed, then truncated, stored raw.
    let raw = {
        use std::io::Read;
        let mut d = flate2::read::GzDecoder::new(
            std::fs::File::open(mnist.join("t10k-images-idx3-ubyte.gz")).expect("open"),
        );
        let mut v = Vec::new();
        d.read_to_end(&mut v).expect("gunzip");
        v
    };
    std::fs::remove_file(mnist.join("t10k-images-idx3-ubyte.gz")).expect("rm");
    std::fs::write(mnist.join("t10k-images-idx3-ubyte"), &raw[..raw.len() / 2]).expect("write");
    let p = dir.path().join("digits.toml");
    std::fs::write(
        &p,
        r#"
[pipeline]
name = "digits"
seed = 1

[sources.digits]
kind = "mnist"
path = "mnist"

[splits.mnist]
kind = "predefined"
input = "digits"

[models.tree]
estimator = "decision_tree"
input = "mnist.train"
target = "label"
params = { max_depth = 2 }

[evaluations.test]
model = "tree"
data = ["mnist.test"]
metrics = ["accuracy"]
"#,
    )
    .expect("write");
    let o = dagml(&["run", p.to_str().unwrap_or_default(), "-q"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("t10k-images-idx3-ubyte"), "{}", text(&o));
    assert!(!err.contains("panicked"), "{}", text(&o));

    // A CSV with a row of the wrong width names its line.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad_csv");
    std::fs::copy(fixture.join("bad.csv"), dir.path().join("bad.csv")).expect("copy");
    let p = dir.path().join("csv.toml");
    std::fs::copy(fixture.join("pipeline.toml"), &p).expect("copy");
    let o = dagml(&["run", p.to_str().unwrap_or_default(), "-q"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv"), "{}", text(&o));
    assert!(err.contains("line 4") || err.contains(":4"), "{}", text(&o));
}

#[test]
fn an_evaluation_over_a_kfold_split_cross_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("cv.toml");
    std::fs::write(
        &p,
        r#"
[pipeline]
name = "cv"
seed = 5

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 1500
features = 6
informative = 4
classes = 3
partitions = 2

[splits.cv]
kind = "kfold"
input = "rows"
k = 3
stratify = "y"

[models.forest]
estimator = "random_forest"
input = "rows"
target = "y"
params = { n_trees = 8, max_depth = 8 }

[evaluations.cross]
model = "forest"
data = "cv"
metrics = ["accuracy", "f1", "confusion_matrix"]

[outputs.metrics]
kind = "metrics"
path = "out/metrics.json"
"#,
    )
    .expect("write");
    let o = dagml(&["run", "cv.toml", "--in-process"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let metrics: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/metrics.json")).expect("metrics.json written"),
    )
    .expect("JSON");
    let results = metrics["evaluations"][0]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // One entry per fold, scored by the model fitted without it, then the mean.
    assert_eq!(results.len(), 4, "{metrics}");
    let mut accs = Vec::new();
    let mut rows = 0;
    for (i, r) in results[..3].iter().enumerate() {
        assert_eq!(r["data"], format!("cv.fold{}", i + 1));
        assert_eq!(r["model"], format!("forest without cv.fold{}", i + 1));
        let a = r["scores"]["accuracy"].as_f64().expect("accuracy");
        assert!(a > 0.6, "fold {} accuracy {a}", i + 1);
        accs.push(a);
        rows += r["scores"]["rows"].as_u64().expect("rows");
    }
    // The folds cover every row once.
    assert_eq!(rows, 1500);
    let mean = &results[3];
    assert_eq!(mean["data"], "cv");
    assert_eq!(mean["scores"]["rows"], 1500);
    let m = accs.iter().sum::<f64>() / 3.0;
    let got = mean["scores"]["accuracy"].as_f64().expect("mean accuracy");
    assert!((got - m).abs() < 1e-12, "{got} vs {m}");
    let sd = mean["std"]["accuracy"].as_f64().expect("std of accuracy");
    let want = (accs.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 3.0).sqrt();
    assert!((sd - want).abs() < 1e-12, "{sd} vs {want}");
    let cm: u64 = mean["scores"]["confusion_matrix"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r.as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(cm, 1500);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("forest (3-fold mean) on cv"), "{}", text(&o));
    assert!(out.contains(" ± "), "{}", text(&o));

    // The same numbers on the embedded cluster: each fold's fit is its own task.
    let again = dagml(&["run", "cv.toml", "--workers", "2"], dir.path());
    assert!(again.status.success(), "{}", text(&again));
    let metrics2: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/metrics.json")).expect("metrics.json written"),
    )
    .expect("JSON");
    assert_eq!(metrics["evaluations"], metrics2["evaluations"]);
}

/// Rows `x,region,y` where `y = slope * x + 1` in each region: a linear model
/// fitted on one region predicts its own rows exactly and the others badly.
fn region_rows(region: &str, slope: f64, n: usize) -> String {
    (0..n)
        .map(|i| {
            let x = i as f64 / 7.0 - 3.0;
            format!("{x},{region},{}\n", slope * x + 1.0)
        })
        .collect()
}

fn metrics_entries(dir: &Path) -> Vec<serde_json::Value> {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("out/metrics.json")).expect("metrics.json written"),
    )
    .expect("JSON");
    m["evaluations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["results"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Each member of a per-shard linear model is exact on its own shard and wrong on
/// the others: the shards are the regions, whatever named them.
fn assert_one_model_per_region(entries: &[serde_json::Value], split: &str) {
    let rmse = |model: &str, data: &str| {
        entries
            .iter()
            .find(|e| e["model"] == model && e["data"] == data)
            .and_then(|e| e["scores"]["rmse"].as_f64())
            .unwrap_or_else(|| panic!("no rmse of {model} on {data} in {entries:?}"))
    };
    for own in ["east", "north", "west"] {
        for other in ["east", "north", "west"] {
            let r = rmse(
                &format!("lines[{own}]"),
                &format!("{split}.{other}.validation"),
            );
            if own == other {
                assert!(r < 1e-6, "lines[{own}] on its own shard: rmse {r}");
            } else {
                assert!(r > 0.5, "lines[{own}] on {other}: rmse {r}");
            }
        }
    }
}

const PER_SHARD_LINES: &str = r#"
[models.lines]
estimator = "linear_regression"
per_shard = true
combine = "average"
input = "regions"
target = "y"
features = ["x"]

[evaluations.matrix]
model = "lines"
data = "regions"
metrics = ["rmse"]

[outputs.metrics]
kind = "metrics"
path = "out/metrics.json"
"#;

#[test]
fn shards_by_file_are_the_files_of_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let regions = dir.path().join("regions");
    std::fs::create_dir(&regions).expect("mkdir");
    for (name, slope, n) in [("east", 2.0, 60), ("north", -3.0, 90), ("west", 0.5, 75)] {
        std::fs::write(
            regions.join(format!("{name}.csv")),
            format!("x,region,y\n{}", region_rows(name, slope, n)),
        )
        .expect("write");
    }
    let pipeline = format!(
        r#"
[pipeline]
name = "files"
seed = 3

[sources.rows]
kind = "csv"
path = "regions"

[splits.regions]
kind = "shards"
input = "rows"
by = "file"
{PER_SHARD_LINES}"#
    );
    std::fs::write(dir.path().join("files.toml"), &pipeline).expect("write");
    for placement in [&["--in-process"][..], &["--workers", "2"][..]] {
        let o = dagml(
            &[&["run", "files.toml"][..], placement].concat(),
            dir.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let entries = metrics_entries(dir.path());
        assert_one_model_per_region(&entries, "regions");
        // Each file's validation part is its own rows.
        for (name, n) in [("east", 60), ("north", 90), ("west", 75)] {
            let rows = entries
                .iter()
                .find(|e| e["data"] == format!("regions.{name}.validation"))
                .and_then(|e| e["scores"]["rows"].as_u64())
                .expect("rows");
            assert!(rows > 0 && rows < n, "{name}: {rows} of {n}");
        }
    }

    // A shard no file gives is an error at its line, and nothing runs.
    std::fs::write(
        dir.path().join("bad.toml"),
        format!(
            "{pipeline}\n[models.one]\nestimator = \"linear_regression\"\ninput = \"regions.south.train\"\ntarget = \"y\"\n"
        ),
    )
    .expect("write");
    let o = dagml(&["run", "bad.toml"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("E0302"), "{err}");
    assert!(err.contains("no file is named `south`"), "{err}");
    assert!(err.contains("east, north, west"), "{err}");
}

#[test]
fn shards_by_the_values_of_a_column_need_no_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = format!(
        "x,region,y\n{}{}{}",
        region_rows("north", -3.0, 90),
        region_rows("west", 0.5, 75),
        region_rows("east", 2.0, 60)
    );
    std::fs::write(dir.path().join("rows.csv"), rows).expect("write");
    let pipeline = format!(
        r#"
[pipeline]
name = "values"
seed = 3

[sources.rows]
kind = "csv"
path = "rows.csv"

[splits.regions]
kind = "shards"
input = "rows"
by = "column"
column = "region"
{PER_SHARD_LINES}"#
    );
    std::fs::write(dir.path().join("values.toml"), pipeline).expect("write");
    for placement in [&["--in-process"][..], &["--workers", "2"][..]] {
        let o = dagml(
            &[&["run", "values.toml"][..], placement].concat(),
            dir.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        assert_one_model_per_region(&metrics_entries(dir.path()), "regions");
    }
}

//! The HTML report end to end: a pipeline with a classifier (holdout and
//! k-fold), a linear regression and a per-shard ensemble writes a `report`
//! output; the page parses as HTML without errors, is self-contained (no
//! script, nothing fetched), holds one figure per item that applies to each
//! evaluation, and its numbers are the metrics JSON's; `dagml report` makes
//! the same page from the metrics JSON afterwards.

mod common;

use common::{dagml_in as dagml, ran_in_tempdir, text};
use scraper::{ElementRef, Html, Selector};
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", text(o));
}

const PIPELINE: &str = r#"[pipeline]
name = "drawn"
seed = 7

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 900
features = 5
informative = 3
classes = 3
partitions = 2

[sources.gauss]
kind = "synthetic"
generator = "gaussian"
columns = ["a", "noise"]
rows = 2000
partitions = 2

[transforms.line]
input = "gauss"
steps = [{ op = "derive", column = "b", expr = "4 * a + 3 + 0.5 * noise" }, { op = "select", columns = ["a", "b"] }]

[splits.holdout]
kind = "holdout"
input = "rows"
test_fraction = 0.3

[splits.cv]
kind = "kfold"
input = "rows"
k = 3

[splits.shards]
kind = "shards"
input = "line"
by = "rows"
names = ["north", "south"]
validation_fraction = 0.25

[models.forest]
estimator = "random_forest"
input = "holdout.train"
target = "y"
params = { n_trees = 10, max_depth = 6 }

[models.linreg]
estimator = "linear_regression"
input = "line"
target = "b"

[models.local]
estimator = "decision_tree"
per_shard = true
combine = "average"
input = "shards"
target = "b"
params = { max_depth = 4 }

[evaluations.forest_test]
model = "forest"
data = ["holdout.test", "cv"]
metrics = ["accuracy", "f1", "classification_report", "confusion_matrix", "log_loss"]

[evaluations.line_fit]
model = "linreg"
data = "line"
metrics = ["rmse", "r2"]

[evaluations.matrix]
model = "local"
data = "shards"
metrics = ["rmse", "r2"]

[outputs.metrics]
kind = "metrics"
path = "out/metrics.json"

[outputs.report]
kind = "report"
path = "out/report.html"

[outputs.forest_file]
kind = "model"
model = "forest"
path = "out/forest.model"
"#;

/// The folder the pipeline ran in, once for the file's tests.
fn ran() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        ran_in_tempdir(
            &[("p.toml", PIPELINE.as_bytes())],
            &["run", "p.toml", "--threads", "2", "--quiet"],
        )
    })
    .path()
}

fn page() -> (String, serde_json::Value) {
    let html = std::fs::read_to_string(ran().join("out/report.html")).unwrap();
    let metrics =
        serde_json::from_slice(&std::fs::read(ran().join("out/metrics.json")).unwrap()).unwrap();
    (html, metrics)
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn f4(v: &serde_json::Value) -> String {
    format!("{:.4}", v.as_f64().expect("a number"))
}

#[test]
fn the_report_is_valid_self_contained_html() {
    let (html, _) = page();
    let doc = Html::parse_document(&html);
    assert!(doc.errors.is_empty(), "HTML parse errors: {:?}", doc.errors);
    assert_eq!(doc.select(&sel("script")).count(), 0);
    assert_eq!(doc.select(&sel("link, img, iframe, object")).count(), 0);
    let refs: Vec<String> = doc
        .select(&sel("[src], [href]"))
        .map(|e| e.html())
        .collect();
    assert!(refs.is_empty(), "references to other files: {refs:?}");
    assert!(doc.select(&sel("figure svg")).count() > 10);
    // The only URL is the SVG namespace.
    for (i, _) in html.match_indices("http") {
        assert!(
            html[i..].starts_with("http://www.w3.org/2000/svg"),
            "{}",
            &html[i..(i + 60).min(html.len())]
        );
    }
}

fn kinds(section: ElementRef) -> Vec<String> {
    section
        .select(&sel("figure"))
        .filter_map(|f| f.value().attr("data-kind").map(str::to_string))
        .collect()
}

fn count(v: &[String], k: &str) -> usize {
    v.iter().filter(|x| *x == k).count()
}

#[test]
fn one_figure_per_item_that_applies() {
    let (html, metrics) = page();
    let doc = Html::parse_document(&html);
    let evals = metrics["evaluations"].as_array().unwrap();
    assert_eq!(evals.len(), 3);
    for e in evals {
        let name = e["evaluation"].as_str().unwrap();
        let section = doc
            .select(&sel(&format!(
                "section.evaluation[data-evaluation=\"{name}\"]"
            )))
            .next()
            .unwrap_or_else(|| panic!("a section for {name}"));
        let got = kinds(section);
        let results = e["results"].as_array().unwrap();
        let with = |key: &str| {
            results
                .iter()
                .filter(|r| !r["scores"][key].is_null())
                .count()
        };
        assert_eq!(count(&got, "confusion"), with("confusion_matrix"), "{name}");
        assert_eq!(count(&got, "roc"), with("curves"), "{name}");
        assert_eq!(count(&got, "pr"), with("curves"), "{name}");
        assert_eq!(count(&got, "predicted-actual"), with("sample"), "{name}");
        assert_eq!(count(&got, "residuals"), with("sample"), "{name}");
        let folds = results.iter().filter(|r| !r["std"].is_null()).count();
        assert_eq!(count(&got, "folds"), folds, "{name}");
        let learned = &e["learned"];
        let trees = match learned["kind"].as_str() {
            Some("trees") => 1,
            Some("ensemble") => learned["members"].as_array().unwrap().len(),
            _ => 0,
        };
        assert_eq!(count(&got, "importances"), trees, "{name}");
        let matrix = usize::from(learned["kind"] == "ensemble");
        assert_eq!(count(&got, "shard-matrix"), matrix, "{name}");
        assert_eq!(count(&got, "importance-image"), 0, "no 28x28 inputs here");
        match name {
            "forest_test" => {
                assert!(with("curves") >= 2 && folds == 1, "{got:?}");
                assert_eq!(results.len(), 5, "holdout.test, 3 folds and their mean");
            }
            "line_fit" => assert_eq!(with("sample"), 1),
            _ => assert!(with("sample") >= 4),
        }
    }
}

#[test]
fn the_numbers_are_the_metrics_jsons() {
    let (html, metrics) = page();
    let doc = Html::parse_document(&html);
    let mut checked = 0;
    for e in metrics["evaluations"].as_array().unwrap() {
        let name = e["evaluation"].as_str().unwrap();
        let section = doc
            .select(&sel(&format!(
                "section.evaluation[data-evaluation=\"{name}\"]"
            )))
            .next()
            .unwrap();
        let entries: Vec<ElementRef> = section.select(&sel("section.entry")).collect();
        let results = e["results"].as_array().unwrap();
        assert_eq!(entries.len(), results.len());
        for (entry, r) in entries.iter().zip(results) {
            assert_eq!(entry.value().attr("data-data"), r["data"].as_str());
            let s = &r["scores"];
            for m in ["accuracy", "log_loss", "rmse", "mae", "r2"] {
                if s[m].is_null() {
                    continue;
                }
                let cell = entry
                    .select(&sel(&format!("table.metrics tr[data-metric=\"{m}\"] td")))
                    .nth(1)
                    .unwrap_or_else(|| panic!("{m} in the table of {}", r["data"]));
                assert_eq!(cell.text().collect::<String>(), f4(&s[m]), "{name} {m}");
                checked += 1;
            }
            for c in s["per_class"].as_array().into_iter().flatten() {
                let class = c["class"].as_str().unwrap();
                let cells: Vec<String> = entry
                    .select(&sel(&format!(
                        "table.classification-report tr[data-class=\"{class}\"] td"
                    )))
                    .map(|td| td.text().collect())
                    .collect();
                assert_eq!(
                    cells,
                    vec![
                        class.to_string(),
                        f4(&c["precision"]),
                        f4(&c["recall"]),
                        f4(&c["f1"]),
                        c["support"].to_string()
                    ]
                );
                checked += 1;
            }
            if let Some(cm) = s["confusion_matrix"].as_array() {
                // Every count is written in its cell of the heatmap.
                let fig = entry
                    .select(&sel("figure[data-kind=confusion] svg"))
                    .next()
                    .unwrap();
                let texts: Vec<String> = fig
                    .select(&sel("text"))
                    .map(|t| t.text().collect::<String>().trim().to_string())
                    .collect();
                for v in cm.iter().flat_map(|row| row.as_array().unwrap()) {
                    assert!(texts.contains(&v.to_string()), "{v} in {texts:?}");
                }
                checked += 1;
            }
            for c in s["curves"].as_array().into_iter().flatten() {
                let cap: String = entry
                    .select(&sel("figure[data-kind=roc] figcaption"))
                    .next()
                    .unwrap()
                    .text()
                    .collect();
                let want = format!("{} {}", c["class"].as_str().unwrap(), f4(&c["auc"]));
                assert!(cap.contains(&want), "{want} in {cap}");
                let auc = c["auc"].as_f64().unwrap();
                assert!((0.5..=1.0).contains(&auc), "a forest beats chance: {auc}");
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "checked {checked} numbers");
}

#[test]
fn dagml_report_makes_the_same_page_afterwards() {
    let dir = ran();
    ok(&dagml(
        &[
            "report",
            "out/metrics.json",
            "out/forest.model",
            "-o",
            "again.html",
        ],
        dir,
    ));
    assert_eq!(
        std::fs::read(dir.join("again.html")).unwrap(),
        std::fs::read(dir.join("out/report.html")).unwrap()
    );
    // A file that is not a metrics document is an error, not a panic.
    std::fs::write(dir.join("junk.json"), "{\"x\": 1}").unwrap();
    let o = dagml(&["report", "junk.json", "-o", "x.html"], dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.join("x.html").exists());
}

#[test]
fn the_report_is_the_same_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
    ok(&dagml(
        &["run", "p.toml", "--threads", "1", "--quiet"],
        dir.path(),
    ));
    assert_eq!(
        std::fs::read(dir.path().join("out/report.html")).unwrap(),
        std::fs::read(ran().join("out/report.html")).unwrap()
    );
}

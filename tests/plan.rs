//! `dagml plan`: golden DOT for every pipeline, the optimizer's explain output, SVG
//! with and without Graphviz, and the same diagnostics as `check` on bad input.

use dagml::plan::{dot, render};
use dagml::workspace::{self, CheckOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn pipelines() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("pipelines")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn golden_dot_for_every_pipeline() {
    for path in pipelines() {
        let (_, planned) =
            workspace::plan_file(&path, &CheckOptions::default()).unwrap_or_else(|r| {
                panic!("{} is invalid: {:?}", path.display(), r.parsed.diagnostics)
            });
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(
            format!("{name}.physical.dot"),
            dot::to_dot(&planned.physical, dot::Level::Physical)
        );
        insta::assert_snapshot!(
            format!("{name}.logical.dot"),
            dot::to_dot(&planned.physical, dot::Level::Logical)
        );
    }
}

#[test]
fn the_same_file_gives_the_same_dot() {
    let p = Path::new("pipelines/house_prices_ensemble.toml");
    let a = dot::to_dot(
        &workspace::plan_file(p, &CheckOptions::default())
            .ok()
            .unwrap()
            .1
            .physical,
        dot::Level::Physical,
    );
    let b = dot::to_dot(
        &workspace::plan_file(p, &CheckOptions::default())
            .ok()
            .unwrap()
            .1
            .physical,
        dot::Level::Physical,
    );
    assert_eq!(a, b);
}

const TWICE: &str = r#"
[pipeline]
name = "twice"

[sources.houses]
kind = "csv"
path = "data/house_prices/train.csv"
columns = { LotArea = "float", YearBuilt = "int", PoolQC = "string", SalePrice = "float" }

[sources.houses_again]          # the same file, loaded a second time
kind = "csv"
path = "data/house_prices/train.csv"
columns = { LotArea = "float", YearBuilt = "int", PoolQC = "string", SalePrice = "float" }

[models.by_area]
estimator = "ridge"
input = "houses"
target = "SalePrice"
features = ["LotArea"]

[models.by_year]
estimator = "ridge"
input = "houses_again"
target = "SalePrice"
features = ["YearBuilt"]

[outputs.a]
kind = "model"
model = "by_area"
path = "out/a.model"

[outputs.b]
kind = "model"
model = "by_year"
path = "out/b.model"
"#;

#[test]
fn explain_shows_the_duplicate_load_merged_and_the_unused_column_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twice.toml");
    std::fs::write(&file, TWICE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["plan", "--explain"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let cse = text
        .split("== after common-subexpression elimination\n")
        .nth(1)
        .expect("CSE changed the plan")
        .split("== ")
        .next()
        .unwrap();
    assert!(!cse.contains("source:houses_again"), "merged:\n{cse}");
    assert!(
        cse.contains("fit:by_year (ridge) <- source:houses"),
        "{cse}"
    );
    let proj = text
        .split("== after projection pushdown\n")
        .nth(1)
        .expect("projection changed the plan")
        .split("== ")
        .next()
        .unwrap();
    assert!(
        proj.contains(
            "source:houses (csv data/house_prices/train.csv; columns LotArea,YearBuilt,SalePrice)"
        ),
        "{proj}"
    );
    assert!(
        !proj.contains("PoolQC"),
        "the unused column is no longer read:\n{proj}"
    );
}

fn check_svg(svg: &[u8], ids: &[String]) {
    let text = std::str::from_utf8(svg).unwrap();
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .unwrap_or_else(|e| panic!("SVG is not XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let all_text: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join(" ");
    for id in ids {
        let name = id.split_once(':').unwrap().1;
        assert!(all_text.contains(name), "SVG does not name {id}");
    }
}

#[test]
fn svg_without_graphviz_is_xml_naming_every_node() {
    let (_, planned) = workspace::plan_file(
        Path::new("pipelines/mnist_rf.toml"),
        &CheckOptions::default(),
    )
    .ok()
    .unwrap();
    let dot_text = dot::to_dot(&planned.physical, dot::Level::Physical);
    let svg = render::layout_svg(&dot_text).expect("layout-rs renders our DOT");
    let ids: Vec<String> = planned
        .physical
        .logical
        .sorted_nodes()
        .iter()
        .map(|n| planned.physical.logical.graph[*n].id())
        .collect();
    check_svg(svg.as_bytes(), &ids);
}

#[test]
fn plan_cli_writes_svg_with_and_without_dot() {
    let dir = tempfile::tempdir().unwrap();
    for (no_dot, name) in [("1", "fallback.svg"), ("0", "graphviz.svg")] {
        if no_dot == "0" && !render::graphviz_available() {
            continue; // Graphviz is not installed here: the fallback case covers this machine.
        }
        let out_path = dir.path().join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_dagml"))
            .args(["plan", "pipelines/mnist_rf.toml", "-o"])
            .arg(&out_path)
            .env("DAGML_NO_GRAPHVIZ", no_dot)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(if no_dot == "1" {
                "layout-rs"
            } else {
                "Graphviz dot"
            }),
            "{said}"
        );
        check_svg(
            &std::fs::read(&out_path).unwrap(),
            &[
                "source:digits".into(),
                "fit:forest".into(),
                "evaluate:test".into(),
            ],
        );
    }
}

#[test]
fn plan_on_an_invalid_pipeline_prints_the_check_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[models.f]\nestimator = \"random_forrest\"\ninput = \"x\"\ntarget = \"y\"\n",
    )
    .unwrap();
    let plan = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .arg("plan")
        .arg(&file)
        .output()
        .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(1));
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&plan.stdout).contains("did you mean `random_forest`?"));
}

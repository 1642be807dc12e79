//! Every pipeline in pipelines/ means the same in both syntaxes:
//! TOML → dagml → TOML and dagml → TOML → dagml give the model the file gives.

use dagml::frontend::{self, Pipeline, Syntax, emit};
use std::path::PathBuf;

fn files(ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("pipelines")
        .expect("pipelines/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Parse `text` as if it were the file `path`; it must be valid.
fn model(path: &str, text: &str) -> Pipeline {
    let parsed = frontend::parse_str(path, text);
    let errors: Vec<String> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.render(&parsed.file))
        .collect();
    assert!(errors.is_empty(), "{path}:\n{}\n{text}", errors.join("\n"));
    parsed.pipeline.expect("a pipeline")
}

fn convert(path: &str, text: &str, to: Syntax) -> String {
    emit::convert(path, text, to).unwrap_or_else(|d| panic!("{path}: {d:?}"))
}

/// The same stem, so a file without a `[pipeline] name` keeps its default name.
fn sibling(path: &str, ext: &str) -> String {
    format!("/tmp/{}.{ext}", frontend::stem(path))
}

#[test]
fn toml_to_dagml_to_toml_keeps_the_model() {
    let fs = files("toml");
    assert!(fs.len() >= 6, "{fs:?}");
    for f in fs {
        let path = f.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let original = model(&path, &text);
        let dagml = convert(&path, &text, Syntax::Dagml);
        let dpath = sibling(&path, "dagml");
        let via_dagml = model(&dpath, &dagml);
        assert!(
            original.same_as(&via_dagml),
            "{path} → dagml differs:\n{dagml}"
        );
        let toml = convert(&dpath, &dagml, Syntax::Toml);
        let back = model(&sibling(&path, "toml"), &toml);
        assert!(
            original.same_as(&back),
            "{path} → dagml → toml differs:\n{toml}"
        );
        // Converting again changes nothing: the emitters are deterministic.
        assert_eq!(
            convert(&sibling(&path, "toml"), &toml, Syntax::Dagml),
            dagml
        );
    }
}

#[test]
fn dagml_to_toml_to_dagml_keeps_the_model() {
    let fs = files("dagml");
    assert!(fs.len() >= 2, "{fs:?}");
    for f in fs {
        let path = f.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let original = model(&path, &text);
        let toml = convert(&path, &text, Syntax::Toml);
        let tpath = sibling(&path, "toml");
        let via_toml = model(&tpath, &toml);
        assert!(
            original.same_as(&via_toml),
            "{path} → toml differs:\n{toml}"
        );
        let dagml = convert(&tpath, &toml, Syntax::Dagml);
        let back = model(&sibling(&path, "dagml"), &dagml);
        assert!(
            original.same_as(&back),
            "{path} → toml → dagml differs:\n{dagml}"
        );
    }
}

#[test]
fn each_dagml_pipeline_means_what_its_toml_twin_means() {
    for f in files("dagml") {
        let twin = f.with_extension("toml");
        if !twin.exists() {
            continue;
        }
        let d = model(&f.to_string_lossy(), &std::fs::read_to_string(&f).unwrap());
        let t = model(
            &twin.to_string_lossy(),
            &std::fs::read_to_string(&twin).unwrap(),
        );
        assert!(
            d.same_as(&t),
            "{} and {} differ",
            f.display(),
            twin.display()
        );
    }
}

#[test]
fn same_as_sees_a_changed_value() {
    let a = model("a.dagml", "pipeline p (seed = 1)\nd = load mnist(\"x\")\n");
    let b = model("b.dagml", "pipeline p (seed = 2)\nd = load mnist(\"x\")\n");
    let c = model(
        "c.toml",
        "[pipeline]\nname = \"p\"\nseed = 1\n[sources.d]\nkind = \"mnist\"\npath = \"x\"\n",
    );
    assert!(!a.same_as(&b));
    assert!(a.same_as(&c));
}

#[test]
fn the_issue_example_parses_and_checks() {
    let text = r#"pipeline mnist_rf (seed = 42)
digits = load mnist("data/mnist")
train, test = split digits predefined
forest = fit random_forest(n_trees = 100, max_features = "sqrt") on train target label
evaluate forest on test [accuracy, classification_report]
save forest to "out/mnist_rf.model"
cluster local(workers = 2)
"#;
    let mut parsed = frontend::parse_str("mnist_rf.dagml", text);
    let checked = dagml::compile::check(&mut parsed);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    assert!(checked.is_some());
    let p = parsed.pipeline.unwrap();
    assert_eq!(p.splits[0].name.value, "train_test");
    assert_eq!(p.models[0].input.value, "train_test.train");
    assert_eq!(p.evaluations[0].name.value, "forest_scores");
    assert_eq!(p.evaluations[0].data[0].value, "train_test.test");
}

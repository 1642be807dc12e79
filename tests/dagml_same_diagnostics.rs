//! A mistake gets the same diagnostic whichever syntax it is written in: the same
//! mistake made in a .dagml file and in its TOML form gives the same codes,
//! messages, help and notes, with the caret on the same word.

use dagml::compile;
use dagml::frontend::{self, Diagnostic, SourceFile};

const DAGML: &str = r#"pipeline p (seed = 1)
digits = load mnist("data/mnist")
m = split digits predefined
forest = fit random_forest(n_trees = 10) on m.train target label
test = evaluate forest on m.test [accuracy]
save forest to "out/f.model"
"#;

const TOML: &str = r#"[pipeline]
name = "p"
seed = 1

[sources.digits]
kind = "mnist"
path = "data/mnist"

[splits.m]
kind = "predefined"
input = "digits"

[models.forest]
estimator = "random_forest"
params = { n_trees = 10 }
input = "m.train"
target = "label"

[evaluations.test]
model = "forest"
data = "m.test"
metrics = ["accuracy"]

[outputs.model]
kind = "model"
model = "forest"
path = "out/f.model"
"#;

/// (what, in the dagml text: from -> to, in the TOML text: from -> to)
type Mistake = (
    &'static str,
    (&'static str, &'static str),
    (&'static str, &'static str),
);

const MISTAKES: &[Mistake] = &[
    (
        "misspelt model in an evaluation",
        ("evaluate forest on", "evaluate forst on"),
        ("model = \"forest\"\ndata", "model = \"forst\"\ndata"),
    ),
    (
        "misspelt model in an output",
        ("save forest to", "save forst to"),
        ("model = \"forest\"\npath", "model = \"forst\"\npath"),
    ),
    (
        "misspelt split part",
        ("on m.train", "on m.trian"),
        ("\"m.train\"", "\"m.trian\""),
    ),
    (
        "misspelt source",
        ("split digits predefined", "split digts predefined"),
        ("input = \"digits\"", "input = \"digts\""),
    ),
    (
        "unknown estimator",
        ("fit random_forest(", "fit random_forrest("),
        ("\"random_forest\"", "\"random_forrest\""),
    ),
    (
        "unknown parameter",
        ("n_trees = 10", "n_tres = 10"),
        ("n_trees = 10", "n_tres = 10"),
    ),
    (
        "unknown metric",
        ("[accuracy]", "[acuracy]"),
        ("[\"accuracy\"]", "[\"acuracy\"]"),
    ),
    (
        "parameter of the wrong type",
        ("n_trees = 10", "n_trees = ten"),
        ("n_trees = 10", "n_trees = \"ten\""),
    ),
];

fn check(path: &str, text: &str) -> (SourceFile, Vec<Diagnostic>) {
    let mut parsed = frontend::parse_str(path, text);
    compile::check(&mut parsed);
    (parsed.file, parsed.diagnostics)
}

/// What a user reads, minus the positions: the caret's word without quotes.
fn shown(file: &SourceFile, diags: &[Diagnostic]) -> Vec<String> {
    let word = |s: frontend::Span| file.slice(s).trim_matches('"').to_string();
    diags
        .iter()
        .map(|d| {
            format!(
                "{:?} {} {} | at {:?} | help {:?} | notes {:?} | related {:?}",
                d.severity,
                d.code.as_str(),
                d.message,
                d.span.map(word),
                d.help,
                d.notes,
                d.related
                    .iter()
                    .map(|(s, n)| (word(*s), n.clone()))
                    .collect::<Vec<_>>()
            )
        })
        .collect()
}

#[test]
fn the_two_forms_are_clean_and_mean_the_same() {
    let a = frontend::parse_str("p.dagml", DAGML);
    let b = frontend::parse_str("p.toml", TOML);
    assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
    assert!(b.diagnostics.is_empty(), "{:?}", b.diagnostics);
    let (Some(x), Some(y)) = (&a.pipeline, &b.pipeline) else {
        panic!("no model");
    };
    assert!(x.same_as(y), "the two forms differ");
}

#[test]
fn the_same_mistake_gets_the_same_diagnostics_in_both_syntaxes() {
    for (what, (df, dt), (tf, tt)) in MISTAKES {
        assert_eq!(DAGML.matches(df).count(), 1, "{what}: `{df}` not unique");
        assert_eq!(TOML.matches(tf).count(), 1, "{what}: `{tf}` not unique");
        let (fa, da) = check("p.dagml", &DAGML.replace(df, dt));
        let (fb, db) = check("p.toml", &TOML.replace(tf, tt));
        assert!(
            da.iter().any(Diagnostic::is_error),
            "{what}: no error in the dagml form"
        );
        assert_eq!(
            shown(&fa, &da),
            shown(&fb, &db),
            "{what}: the dagml and TOML diagnostics differ"
        );
    }
}

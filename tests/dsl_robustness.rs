//! The dagml front end on hostile and broken input: never a panic or a stack
//! overflow, always a clean diagnostic; and `fmt` is idempotent, keeps comments
//! and keeps the meaning.

use dagml::frontend::{self, Code, dsl};
use proptest::prelude::*;

fn pipelines() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir("pipelines")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dagml"))
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p.to_string_lossy().into_owned(), t)
        })
        .collect();
    v.sort();
    v
}

/// Parse and render every diagnostic (rendering must not panic either); the codes.
fn codes(bytes: &[u8]) -> Vec<Code> {
    let parsed = frontend::parse_bytes("t.dagml", bytes);
    for d in &parsed.diagnostics {
        if let Some(s) = d.span {
            assert!(s.start <= s.end, "{d:?}");
        }
        let _ = d.render(&parsed.file);
    }
    parsed.diagnostics.iter().map(|d| d.code).collect()
}

#[test]
fn a_hundred_thousand_nested_brackets_get_the_depth_error() {
    let n = 100_000;
    for (open, close) in [("(", ")"), ("[", "]"), ("{a = ", "}")] {
        let text = format!(
            "pipeline p\nd = load csv(\"x.csv\", na_values = {}1{})\n",
            open.repeat(n),
            close.repeat(n)
        );
        let c = codes(text.as_bytes());
        assert!(!c.is_empty(), "{open}");
        assert!(
            c.contains(&Code::TooDeep) || c.contains(&Code::Syntax),
            "{open}: {c:?}"
        );
    }
    // Lists nest as values: the depth limit has its own message.
    let text = format!(
        "pipeline p\nd = load csv(\"x\", a = {}1{})\n",
        "[".repeat(n),
        "]".repeat(n)
    );
    assert_eq!(codes(text.as_bytes()), vec![Code::TooDeep]);
}

#[test]
fn a_hundred_thousand_parentheses_in_an_expression_are_refused_cleanly() {
    let n = 100_000;
    let text = format!(
        "pipeline p\nh = load csv(\"x.csv\")\nt = transform h [\n    derive y = {}a{}\n]\nsave dataset t to \"o.csv\"\n",
        "(".repeat(n),
        ")".repeat(n)
    );
    let c = codes(text.as_bytes());
    assert!(
        c.contains(&Code::BadExpression) || c.contains(&Code::TooDeep),
        "{c:?}"
    );
    // And at the start of a statement.
    let c = codes("(".repeat(n).as_bytes());
    assert_eq!(c, vec![Code::Syntax]);
}

#[test]
fn every_prefix_of_a_pipeline_parses_without_panic() {
    let (_, text) = &pipelines()[0];
    for end in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
        codes(&text.as_bytes()[..end]);
    }
}

#[test]
fn one_run_reports_every_syntax_error() {
    let text = "pipeline p (seed = )\nd = lod mnist(\"x\")\nf fit ridge on d target y\nevaluate f on [rmse]\n";
    let parsed = frontend::parse_str("t.dagml", text);
    let lines: Vec<usize> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.code == Code::Syntax)
        .map(|d| parsed.file.line_col(d.span.unwrap().start).0)
        .collect();
    assert_eq!(lines, vec![1, 2, 3, 4], "{:?}", parsed.diagnostics);
}

#[test]
fn fmt_is_idempotent_keeps_comments_and_meaning_on_every_pipeline() {
    for (path, text) in pipelines() {
        let once = dsl::format(&text).unwrap();
        assert_eq!(once, text, "{path} is not in canonical layout");
        let twice = dsl::format(&once).unwrap();
        assert_eq!(once, twice, "{path}");
    }
    // A messy layout: spaces, continuation lines, commas, comments everywhere.
    let messy = "# head\npipeline   p(seed=3)   # the seed\n\n\n\nh=load csv( \"x.csv\" ,na_values=[ \"NA\" ,] )\nt = transform h [derive y = a+1, # plus one\n  drop [a]\n  ]\nm = fit ridge(alpha=2)\n    on t target y\n# tail\n";
    let once = dsl::format(messy).unwrap();
    assert_eq!(dsl::format(&once).unwrap(), once);
    assert_eq!(
        once,
        "# head\npipeline p (seed = 3)  # the seed\n\nh = load csv(\"x.csv\", na_values = [\"NA\"])\nt = transform h [\n    derive y = a+1  # plus one\n    drop [a]\n]\nm = fit ridge(alpha = 2) on t target y\n# tail\n"
    );
    let a = frontend::parse_str("p.dagml", messy).pipeline.unwrap();
    let b = frontend::parse_str("p.dagml", &once).pipeline.unwrap();
    assert!(a.same_as(&b));
}

fn mutate(text: &str, ops: &[(u8, usize, char)]) -> String {
    let mut t: Vec<char> = text.chars().collect();
    for &(kind, at, c) in ops {
        if t.is_empty() {
            break;
        }
        let at = at % t.len();
        match kind % 4 {
            0 => {
                t.remove(at);
            }
            1 => t.insert(at, c),
            2 => t.truncate(at),
            _ => {
                let end = (at + 8).min(t.len());
                let chunk: Vec<char> = t[at..end].to_vec();
                for (k, ch) in chunk.into_iter().enumerate() {
                    t.insert(at + k, ch);
                }
            }
        }
    }
    t.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        codes(&bytes);
    }

    #[test]
    fn random_tokens_never_panic(
        toks in proptest::collection::vec(
            prop::sample::select(vec![
                "pipeline", "p", "=", "load", "csv", "(", ")", "[", "]", "{", "}", ",", "\"s\"",
                "\"", "\n", "  ", "#c", "fit", "on", "target", "split", "evaluate", "save",
                "to", "1", "-2.5e3", "derive", "filter", "transform", ".", "x.y", "per_shard",
                "preprocess", "cluster", "\\", "`", "'", "==", "\t",
            ]),
            0..60,
        )
    ) {
        codes(toks.concat().as_bytes());
    }

    #[test]
    fn mutated_pipelines_never_panic_and_fmt_stays_idempotent(
        file in 0usize..6,
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), prop::sample::select(vec!['(', ')', '[', ']', '"', '\n', ' ', '=', ',', '#', 'x', '.', '{', '}'])), 1..4),
    ) {
        let ps = pipelines();
        let (_, text) = &ps[file % ps.len()];
        let m = mutate(text, &ops);
        codes(m.as_bytes());
        if let Ok(once) = dsl::format(&m) {
            prop_assert_eq!(dsl::format(&once).ok(), Some(once.clone()));
            let a = frontend::parse_str("m.dagml", &m);
            let b = frontend::parse_str("m.dagml", &once);
            if let (Some(a), Some(b)) = (a.pipeline, b.pipeline) {
                prop_assert!(a.same_as(&b), "fmt changed the meaning:\n{}\n---\n{}", m, once);
            }
        }
    }
}

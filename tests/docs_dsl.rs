//! docs/dsl.md stays true: its grammar excerpts are quoted verbatim from
//! grammar/dagml.ebnf, its dagml and TOML examples parse, and its `fmt` and
//! `convert` example shows what the code prints.

use dagml::frontend::{Diagnostic, Syntax, dsl, emit, toml_front};

struct Block {
    lang: String,
    body: String,
}

fn blocks() -> Vec<Block> {
    let doc = std::fs::read_to_string("docs/dsl.md").expect("docs/dsl.md");
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for line in doc.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_string(),
                    body: String::new(),
                })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(b), None) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block in docs/dsl.md");
    out
}

/// A block of dagml text (not a shell session, usage lines or diagnostics).
fn is_dagml(b: &Block) -> bool {
    let first = b
        .body
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    b.lang.is_empty()
        && !first.starts_with('$')
        && !first.starts_with("dagml ")
        && !b.body.contains(".dagml:")
}

fn errors(d: &[Diagnostic]) -> Vec<&Diagnostic> {
    d.iter().filter(|d| d.is_error()).collect()
}

#[test]
fn every_grammar_excerpt_is_quoted_from_the_grammar() {
    let grammar = std::fs::read_to_string("grammar/dagml.ebnf").expect("the grammar");
    let excerpts: Vec<Block> = blocks().into_iter().filter(|b| b.lang == "ebnf").collect();
    assert!(excerpts.len() >= 12, "only {} excerpts", excerpts.len());
    let mut rules = 0;
    for b in &excerpts {
        assert!(
            grammar.contains(&b.body),
            "not in grammar/dagml.ebnf:\n{}",
            b.body
        );
        rules += b.body.lines().filter(|l| l.contains(" = ")).count();
    }
    // Every rule of the grammar is quoted somewhere.
    for line in grammar.lines() {
        let Some((name, _)) = line.split_once(" = ") else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.contains(' ') || name.starts_with('(') {
            continue;
        }
        let quoted = excerpts
            .iter()
            .any(|b| b.body.lines().any(|l| l.starts_with(&format!("{name} "))));
        assert!(quoted, "rule `{name}` is not quoted in docs/dsl.md");
    }
    assert!(rules >= 30, "{rules} rules quoted");
}

#[test]
fn every_example_parses() {
    let all = blocks();
    let dagml: Vec<&Block> = all.iter().filter(|b| is_dagml(b)).collect();
    let toml: Vec<&Block> = all.iter().filter(|b| b.lang == "toml").collect();
    assert!(dagml.len() >= 6, "{} dagml examples", dagml.len());
    assert!(toml.len() >= 4, "{} TOML examples", toml.len());
    for b in dagml {
        let (_, d) = dsl::parse(&b.body);
        assert!(errors(&d).is_empty(), "{}\n{:?}", b.body, errors(&d));
    }
    for b in toml {
        let (_, d) = toml_front::parse(&b.body);
        assert!(errors(&d).is_empty(), "{}\n{:?}", b.body, errors(&d));
    }
    // The complete files among them check clean, lowering included.
    let whole = |b: &&Block| b.body.lines().any(|l| l.starts_with("pipeline "));
    for b in all.iter().filter(|b| is_dagml(b)).filter(whole) {
        let parsed = dagml::frontend::parse_str("example.dagml", &b.body);
        assert!(
            errors(&parsed.diagnostics).is_empty(),
            "{}\n{:?}",
            b.body,
            parsed.diagnostics
        );
    }
}

#[test]
fn the_fmt_and_convert_example_is_what_the_code_prints() {
    let all = blocks();
    let at = all
        .iter()
        .position(|b| b.body.starts_with("pipeline   demo"))
        .expect("the fmt example");
    let (messy, formatted, toml) = (&all[at].body, &all[at + 1].body, &all[at + 2].body);
    assert_eq!(dsl::format(messy).ok().as_deref(), Some(formatted.as_str()));
    assert_eq!(
        dsl::format(formatted).ok().as_deref(),
        Some(formatted.as_str())
    );
    let converted = emit::convert("demo.dagml", messy, Syntax::Toml).expect("converts");
    assert_eq!(converted.trim_end(), toml.trim_end());
}

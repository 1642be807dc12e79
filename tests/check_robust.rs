//! `dagml check` never panics and never hangs, whatever the file holds.
//!
//! Property tests feed random bytes, TOML-like noise and mutated valid pipelines
//! (byte flips, truncations, insertions, deletions, repeated lines) through the
//! whole check (parse, lower, resolve, schemas) as a library call, and render every
//! diagnostic as text and JSON. Explicit cases cover the hostile inputs: empty,
//! binary, invalid UTF-8, a 2 MB string, 5,000-deep arrays and inline tables. Two
//! of them also go through the binary.

use dagml::frontend::{self, Diagnostic};
use proptest::prelude::*;
use std::sync::mpsc;
use std::time::Duration;

/// Generous: a check takes milliseconds; only a hang takes this long.
const LIMIT: Duration = Duration::from_secs(20);

const PIPELINES: &[&str] = &[
    include_str!("../pipelines/mnist_rf.toml"),
    include_str!("../pipelines/mnist_logreg.toml"),
    include_str!("../pipelines/csv_rf.toml"),
    include_str!("../pipelines/house_prices_ensemble.toml"),
    include_str!("../pipelines/gauss_linreg.toml"),
    include_str!("../pipelines/synthetic_classification.toml"),
];

/// Check `bytes` as the file `name` on another thread, and plan it when it is
/// valid; fail if it panics or takes longer than [`LIMIT`]. Returns the diagnostics.
fn check_bytes(name: &str, bytes: Vec<u8>) -> Vec<Diagnostic> {
    check_and_maybe_plan(name, bytes, true)
}

fn check_and_maybe_plan(name: &str, bytes: Vec<u8>, plan: bool) -> Vec<Diagnostic> {
    let (tx, rx) = mpsc::channel();
    let name = name.to_string();
    let handle = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let mut parsed = frontend::parse_bytes(&name, &bytes);
            // What `check` accepts, `plan` must handle too.
            if let Some(checked) = dagml::compile::check(&mut parsed).filter(|_| plan) {
                let (optimized, _) = dagml::optimize::optimize(checked.plan);
                dagml::plan::physical(optimized);
            }
            let len = parsed.file.text.len();
            for d in &parsed.diagnostics {
                if let Some(s) = d.span {
                    assert!(
                        s.start <= s.end && s.end <= len.max(s.start + 1),
                        "span {s:?} outside a {len}-byte file: {d:?}"
                    );
                }
                // Rendering must not panic either, and names the place.
                let text = d.render(&parsed.file);
                assert!(text.starts_with(&parsed.file.path), "{text}");
                let json = d.to_json(&parsed.file);
                assert!(json["code"].is_string(), "{json}");
            }
            let _ = tx.send(parsed.diagnostics);
        })
        .expect("spawn a checking thread");
    match rx.recv_timeout(LIMIT) {
        Ok(d) => {
            let _ = handle.join();
            d
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = handle.join().err();
            let msg = panic
                .as_ref()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_default();
            panic!("check panicked: {msg}");
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("check took longer than {LIMIT:?}"),
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    RepeatLine(usize),
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i % b.len();
                b[i] ^= x | 1;
            }
            Mutation::Truncate(i) => b.truncate(i % b.len()),
            Mutation::Insert(i, bytes) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = i % b.len();
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::RepeatLine(i) => {
                let i = i % b.len();
                let start = b[..i]
                    .iter()
                    .rposition(|c| *c == b'\n')
                    .map_or(0, |p| p + 1);
                let end = b[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
                let line = b[start..end].to_vec();
                b.splice(end..end, line);
            }
        }
    }
    b
}

/// Bytes that mean something to TOML or to dagml, to insert where they hurt.
fn toml_noise() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            &b"["[..],
            b"]",
            b"{",
            b"}",
            b"=",
            b"\"",
            b"'",
            b"\"\"\"",
            b"#",
            b"\n",
            b"\r\n",
            b",",
            b".",
            b"\\",
            b"\\u",
            b"x",
            b"0",
            b"-1",
            b"1e999",
            b"nan",
            b"inf",
            b"true",
            b"1979-05-27",
            b"[[a]]",
            b"input = ",
            b"\"holdout.train\"",
            b"(",
            b")",
            b"log(",
            b"\xff",
            b"\xc3",
            b"\x00",
            b"\xe2\x82\xac",
        ]),
        1..8,
    )
    .prop_map(|parts| parts.concat())
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), toml_noise()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::RepeatLine),
    ]
}

/// Values that are valid TOML but often wrong for the key they land on.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "0.5",
    "1.5",
    "-0.0",
    "1e400",
    "nan",
    "inf",
    "9223372036854775807",
    "true",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[1, \"a\"]",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "\"holdout\"",
    "\"holdout.train\"",
    "\"shards.A.train\"",
    "\"cv.fold0\"",
    "\"a.b.c.d\"",
    "\"digits\"",
    "\"forest\"",
    "\"random_forrest\"",
    "\"ridge\"",
    "\"logistic_regression\"",
    "\"data/mnist\"",
    "\"out/x.model\"",
    "\"log(\"",
    "\"4 * (a + \"",
    "\"a ** b ** c\"",
    "[\"accuracy\", \"rmse\"]",
    "[{ op = \"drop\" }]",
    "[{ op = \"select\", columns = [] }]",
    "\"6GB\"",
    "\"remote\"",
    "\"shards\"",
    "\"kfold\"",
    "\"predefined\"",
    "\"gaussian\"",
];

/// Replace the value of the `line`-th `key = value` line by one of [`VALUES`],
/// or drop or repeat the line: mistakes the schema and graph checks must meet.
fn mutate_values(text: &str, edits: &[(usize, usize, u8)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for &(line, value, how) in edits {
        if lines.is_empty() {
            break;
        }
        let i = line % lines.len();
        match how % 4 {
            0 | 1 => {
                if let Some((key, _)) = lines[i].split_once(" = ") {
                    lines[i] = format!("{key} = {}", VALUES[value % VALUES.len()]);
                }
            }
            2 => {
                lines.remove(i);
            }
            _ => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
        }
    }
    lines.join("\n")
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=20000 for a longer hunt.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_bytes("random.toml", bytes);
    }

    #[test]
    fn toml_like_noise_never_panics(parts in prop::collection::vec(toml_noise(), 0..200)) {
        check_bytes("noise.toml", parts.concat());
    }

    #[test]
    fn pipelines_with_wrong_values_never_panic(
        which in 0..PIPELINES.len(),
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..8),
    ) {
        let text = mutate_values(PIPELINES[which], &edits);
        check_bytes("values.toml", text.into_bytes());
    }

    #[test]
    fn mutated_pipelines_never_panic(
        which in 0..PIPELINES.len(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(PIPELINES[which].as_bytes().to_vec(), &muts);
        check_bytes("mutated.toml", bytes);
    }
}

#[test]
fn the_valid_pipelines_really_are_valid_here() {
    // The mutations start from files that check clean: a problem found after a
    // mutation comes from the mutation.
    for p in PIPELINES {
        let d = check_bytes("p.toml", p.as_bytes().to_vec());
        assert!(d.iter().all(|d| !d.is_error()), "{d:?}");
    }
}

#[test]
fn an_empty_file_is_a_pipeline_with_nothing_to_run() {
    // Nothing to run is an error (issue 12), and the only one.
    for (name, text) in [
        ("empty.toml", &b""[..]),
        ("blank.toml", &b"\n\n   \n# only a comment\n"[..]),
        ("empty.dagml", &b""[..]),
    ] {
        let d = check_bytes(name, text.to_vec());
        let codes: Vec<&str> = d.iter().map(|d| d.code.as_str()).collect();
        assert_eq!(codes, vec!["E0310"], "{name}: {d:?}");
    }
}

#[test]
fn binary_and_invalid_utf8_are_not_text() {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend((0..4096u32).map(|i| (i * 7919 % 251) as u8));
    let d = check_bytes("image.toml", png);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code.as_str(), "E0102");

    let d = check_bytes("latin1.toml", b"[pipeline]\nname = \"caf\xe9\"\n".to_vec());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code.as_str(), "E0102");
    assert_eq!(d[0].span.map(|s| s.start), Some(22));

    // NUL bytes are valid UTF-8 but not valid TOML.
    let d = check_bytes("nul.toml", b"[pipeline]\nname = \"a\0b\"\n".to_vec());
    assert!(d.iter().any(|d| d.code.as_str() == "E0101"), "{d:?}");
}

#[test]
fn a_two_megabyte_string_value_is_checked() {
    let big = "x".repeat(2 << 20);
    let text = format!("[pipeline]\nname = \"big\"\ndescription = \"{big}\"\n");
    let d = check_bytes("big.toml", text.into_bytes());
    let codes: Vec<&str> = d.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, vec!["E0310"], "only: nothing to run");
    // And as an unknown choice, so the long value is rendered in a diagnostic.
    let text = format!("[sources.s]\nkind = \"{big}\"\n");
    let d = check_bytes("big_kind.toml", text.into_bytes());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code.as_str(), "E0205");
}

#[test]
fn five_thousand_deep_nesting_is_refused_without_overflowing_the_stack() {
    let arrays = format!("a = {}{}\n", "[".repeat(5000), "]".repeat(5000));
    let tables = format!("a = {}{}\n", "{ b = ".repeat(5000), "}".repeat(5000));
    let mixed = format!("a = {}1{}\n", "[{ b = ".repeat(2500), "}]".repeat(2500));
    let unclosed = format!("a = {}\n", "[".repeat(5000));
    for (name, text) in [
        ("arrays.toml", arrays),
        ("tables.toml", tables),
        ("mixed.toml", mixed),
        ("unclosed.toml", unclosed),
    ] {
        let d = check_bytes(name, text.into_bytes());
        assert_eq!(d.len(), 1, "{name}: {d:?}");
        assert_eq!(d[0].code.as_str(), "E0103", "{name}");
    }
    // Deep nesting inside an expression string, which the TOML scan does not see.
    let expr = format!("{}a{}", "(".repeat(5000), ")".repeat(5000));
    let text = format!(
        "[sources.s]\nkind = \"synthetic\"\ngenerator = \"gaussian\"\ncolumns = [\"a\"]\nrows = 10\n[transforms.t]\ninput = \"s\"\nsteps = [{{ op = \"derive\", column = \"b\", expr = \"{expr}\" }}]\n[outputs.o]\nkind = \"dataset\"\ndata = \"t\"\npath = \"out/t\"\n"
    );
    let d = check_bytes("deep_expr.toml", text.into_bytes());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code.as_str(), "E0103");
}

#[test]
fn many_steps_and_long_chains_are_checked_quickly() {
    // 2,000 transforms in one chain, and a cycle through all of them.
    let mut text =
        String::from("[sources.s]\nkind = \"synthetic\"\ngenerator = \"gaussian\"\nrows = 10\n");
    for i in 0..2000 {
        let input = if i == 0 {
            "t1999".to_string()
        } else {
            format!("t{}", i - 1)
        };
        text.push_str(&format!(
            "[transforms.t{i}]\ninput = \"{input}\"\nsteps = [{{ op = \"standard_scale\" }}]\n"
        ));
    }
    let started = std::time::Instant::now();
    let d = check_and_maybe_plan("cycle.toml", text.clone().into_bytes(), false);
    let cycles = d.iter().filter(|d| d.code.as_str() == "E0303").count();
    assert_eq!(cycles, 1, "one cycle, reported once");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The same chain without the cycle, used by an output: valid, through schemas
    // and the logical plan.
    let mut text = text.replacen("input = \"t1999\"", "input = \"s\"", 1);
    text.push_str("[outputs.o]\nkind = \"dataset\"\ndata = \"t1999\"\npath = \"out/o\"\n");
    let started = std::time::Instant::now();
    // Checked only: optimizing a 2,000-step chain is the optimizer's business.
    let d = check_and_maybe_plan("chain.toml", text.into_bytes(), false);
    assert_eq!(d, vec![]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Through the binary: a hostile file is an ordinary invalid file (exit 1), not a crash.
#[test]
fn the_binary_survives_hostile_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deep = dir.path().join("deep.toml");
    std::fs::write(
        &deep,
        format!("a = {}{}\n", "[".repeat(5000), "]".repeat(5000)),
    )
    .expect("write");
    let binary = dir.path().join("binary.toml");
    std::fs::write(
        &binary,
        (0..65536u32)
            .map(|i| (i * 31 % 256) as u8)
            .collect::<Vec<u8>>(),
    )
    .expect("write");
    for path in [&deep, &binary] {
        for format in ["text", "json"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_dagml"))
                .args(["check", "--format", format])
                .arg(path)
                .output()
                .expect("dagml runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{}: {stdout}", path.display());
            assert!(
                stdout.contains("E0103") || stdout.contains("E0102"),
                "{}: {stdout}",
                path.display()
            );
        }
    }
}

#[test]
fn many_syntax_errors_are_checked_in_linear_time() {
    // One broken line in each of 20,000 sections: one error each, quickly.
    let text: String = (0..20_000).map(|i| format!("[s{i}]\nx\n")).collect();
    let started = std::time::Instant::now();
    let d = check_bytes("sections.toml", text.into_bytes());
    assert_eq!(d.len(), 20_000);
    assert!(d.iter().all(|d| d.code.as_str() == "E0101"));
    // 200,000 broken lines in one section: the first is reported.
    let text: String = (0..200_000).map(|i| format!("x{i}\n")).collect();
    let d = check_bytes("lines.toml", text.into_bytes());
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

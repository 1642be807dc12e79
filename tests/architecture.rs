//! The module graph runs one way (docs/ARCHITECTURE.md): each room imports
//! only rooms of lower layers, and rooms of one layer do not import each other.
//! This test reads every `crate::<room>` path in src/ (comments aside) and
//! fails on an import that runs backwards, naming the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first. Keep in step with the code map in docs/ARCHITECTURE.md.
const LAYERS: &[&[&str]] = &[
    &["frontend"],
    &["data"],
    &["ml"],
    &["compile", "report"],
    &["optimize"],
    &["plan"],
    &["runtime"],
    &["workspace"],
    &["run", "predict", "cluster"],
    &["serve", "dashboard"],
    &["cli"],
];

/// Imports inside one room that are forbidden too: (importer, imported).
const FORBIDDEN_INSIDE: &[(&str, &str)] = &[
    // A production worker knows nothing of the embedded cluster's test hooks.
    ("cluster/worker.rs", "embedded"),
    ("cluster/scheduler.rs", "embedded"),
    ("cluster/driver.rs", "embedded"),
    // The run graph is pure: no executor, kernels or cluster in it.
    ("runtime/graph.rs", "executor"),
    ("runtime/graph.rs", "kernels"),
];

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&room))
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level room of a file under src/ (`src/plan/dot.rs` → `plan`).
fn room_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let room = first.trim_end_matches(".rs").to_string();
    (room != "lib" && room != "main").then_some(room)
}

/// `crate::room` paths in a line of code (after `//` comments are cut).
fn imports(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// `use super::x` / `super::x::` inside a room: the sibling file it names.
fn sibling_imports(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("super::")
        .map(|(i, _)| {
            code[i + "super::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn the_module_graph_runs_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "src/ has too few files: {files:?}");
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap_or(f);
        let Some(room) = room_of(rel) else { continue };
        let Some(own) = layer_of(&room) else {
            wrong.push(format!(
                "{}: room `{room}` is in no layer of this test",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap_or_default();
        // Unit tests may reach anywhere (they build plans, run kernels).
        let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        for (n, line) in code.lines().enumerate() {
            for to in imports(line) {
                *seen.entry(format!("{room} -> {to}")).or_default() += 1;
                if to == room {
                    continue;
                }
                match layer_of(&to) {
                    Some(l) if l < own => {}
                    Some(l) if l == own => wrong.push(format!(
                        "{rel_s}:{}: `{room}` imports `{to}`, a room of its own layer: {}",
                        n + 1,
                        line.trim()
                    )),
                    Some(_) => wrong.push(format!(
                        "{rel_s}:{}: `{room}` imports `{to}`, a room above it: {}",
                        n + 1,
                        line.trim()
                    )),
                    None => {}
                }
            }
            for (importer, forbidden) in FORBIDDEN_INSIDE {
                if rel_s == *importer
                    && (sibling_imports(line).iter().any(|s| s == forbidden)
                        || line.contains(&format!("{room}::{forbidden}")))
                {
                    wrong.push(format!(
                        "{rel_s}:{}: imports `{forbidden}`, which it must not: {}",
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run backwards:\n{}",
        wrong.join("\n")
    );
    // The scan sees the imports it is meant to police.
    assert!(seen.contains_key("runtime -> plan"), "{seen:?}");
    assert!(seen.contains_key("cluster -> runtime"), "{seen:?}");
}

#[test]
fn the_scan_reads_paths_and_skips_comments() {
    assert_eq!(
        imports("use crate::plan::{Task, TaskKind}; // crate::cli"),
        vec!["plan".to_string()]
    );
    assert_eq!(imports("/// See [`crate::run`]."), Vec::<String>::new());
    assert_eq!(
        sibling_imports("    fault: Option<Arc<super::embedded::Fault>>,"),
        vec!["embedded".to_string()]
    );
}

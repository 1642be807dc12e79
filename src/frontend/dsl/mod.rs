//! The dagml language front end: `.dagml` text → the same generic [`Node`] tree
//! the TOML front end builds, so one lowering gives both syntaxes the same model
//! and the same diagnostics. Also the canonical printer (`dagml fmt`) and the
//! conversion of a checked tree to dagml text (`dagml convert --to dagml`).
//!
//! In: the file's text. Out: the tree (best effort) and every syntax error.
//! Must not: interpret keys (that is `lower`), panic, or recurse without bound.
//! The grammar is grammar/dagml.ebnf; the guide is docs/dsl.md.

pub mod ast;
pub mod from_node;
pub mod parser;
pub mod print;
pub mod to_node;

use super::diag::Diagnostic;
use super::node::Node;

pub use parser::MAX_DEPTH;

/// Parse a `.dagml` file into the generic tree, with every syntax error.
/// The tree is built from the statements that parsed (even when some did not).
pub fn parse(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
    let (file, mut diags) = parser::parse_file(text);
    let (node, d) = to_node::to_node(&file, text.len());
    diags.extend(d);
    (Some(node), diags)
}

/// The statements of a `.dagml` file (with comments), or its syntax errors.
pub fn parse_ast(text: &str) -> Result<ast::File, Vec<Diagnostic>> {
    let (file, diags) = parser::parse_file(text);
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        Ok(file)
    }
}

/// `dagml fmt`: the file in canonical layout, comments kept; syntax errors refuse.
pub fn format(text: &str) -> Result<String, Vec<Diagnostic>> {
    parse_ast(text).map(|f| print::print(&f))
}

/// A checked tree (from either syntax) as dagml text.
pub fn emit(root: &Node, default_name: &str) -> String {
    print::print(&from_node::from_node(root, default_name))
}

/// Lowering's help texts show TOML keys (`add \`target = "..."\``); for a missing
/// key that a dagml statement writes as a clause, say it the dagml way.
pub fn adapt_help(diags: &mut [Diagnostic]) {
    for d in diags
        .iter_mut()
        .filter(|d| d.code == super::diag::Code::MissingKey)
    {
        let m = d.message.as_str();
        let new = if m.starts_with("model ") && m.ends_with("has no `input`") {
            "add `on DATASET` to the `fit` statement"
        } else if m.starts_with("model ") && m.ends_with("has no `target`") {
            "add `target COLUMN` to the `fit` statement"
        } else if m.contains(" split ") && m.ends_with("has no `input`") {
            "write the dataset before the kind: `split DATASET holdout`"
        } else if m.contains(" source ") && m.ends_with("has no `path`") {
            "give the path first: `load csv(\"data/file.csv\")`"
        } else if m.contains(" source ") && m.ends_with("has no `generator`") {
            "name the generator first: `load synthetic(classification, rows = 1000)`"
        } else {
            continue;
        };
        d.help = Some(new.to_string());
    }
}

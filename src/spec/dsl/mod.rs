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

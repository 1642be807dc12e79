//! The spec phase: pipeline file bytes → [`Pipeline`] model + diagnostics.
//!
//! In: a file's path (for messages and to pick the syntax) and its bytes.
//! Out: [`Parsed`]: the source text, the model when it could be built, and every
//! syntax and schema diagnostic. Must not: read files, resolve names between steps,
//! or look at the machine (environment, data files): that is `compile`.

pub mod diag;
pub mod dsl;
pub mod emit;
pub mod expr;
pub mod lower;
pub mod pipeline;
pub mod node;
pub mod span;
pub mod toml_front;

pub use diag::{Code, Diagnostic, Severity};
pub use pipeline::Pipeline;
pub use span::{SourceFile, Span, Spanned};

/// The syntaxes a pipeline can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Toml,
    Dagml,
}

impl Syntax {
    pub fn of_path(path: &str) -> Option<Syntax> {
        match path.rsplit_once('.').map(|(_, e)| e) {
            Some("toml") => Some(Syntax::Toml),
            Some("dagml") => Some(Syntax::Dagml),
            _ => None,
        }
    }
}

/// A parsed pipeline file.
#[derive(Debug)]
pub struct Parsed {
    pub file: SourceFile,
    pub pipeline: Option<Pipeline>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Files larger than this are refused before parsing: no pipeline is this large.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Parse and lower one file's bytes.
pub fn parse_bytes(path: &str, bytes: &[u8]) -> Parsed {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(e) => {
            let valid = e.valid_up_to();
            let file = SourceFile::new(path, String::from_utf8_lossy(bytes).into_owned());
            // Offsets in the lossy text equal the original's up to the first bad byte.
            let d = Diagnostic::new(
                Code::NotText,
                Span::new(valid, valid + 1),
                "the file is not UTF-8 text",
            )
            .with_help("pipeline files are UTF-8 text; is this the right file?");
            return Parsed {
                file,
                pipeline: None,
                diagnostics: vec![d],
            };
        }
    };
    if text.len() > MAX_FILE_BYTES {
        let file = SourceFile::new(path, String::new());
        let d = Diagnostic::new(
            Code::TooDeep,
            None,
            format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20),
        );
        return Parsed {
            file,
            pipeline: None,
            diagnostics: vec![d],
        };
    }
    parse_str(path, &text)
}

/// The file name without folder and extension: the pipeline's name when the file gives none.
pub fn stem(path: &str) -> String {
    std::path::Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("pipeline")
        .to_string()
}

/// Parse and lower one file's text; the syntax follows the extension (TOML when unknown).
pub fn parse_str(path: &str, text: &str) -> Parsed {
    let file = SourceFile::new(path, text);
    let stem = stem(path);
    let (node, mut diagnostics) = match Syntax::of_path(path) {
        Some(Syntax::Dagml) => dsl::parse(text),
        _ => toml_front::parse(text),
    };
    let mut pipeline = None;
    if let Some(node) = node {
        let (p, mut d) = lower::lower(&node, text, &stem);
        if Syntax::of_path(path) == Some(Syntax::Dagml) {
            dsl::adapt_help(&mut d);
        }
        diagnostics.extend(d);
        diag::drop_consequences(&mut diagnostics, &file);
        pipeline = p;
    }
    Parsed {
        file,
        pipeline,
        diagnostics,
    }
}

//! Pictures of a plan: DOT as is, SVG and PNG through Graphviz's `dot` when it is
//! installed, SVG through the pure-Rust layout-rs when it is not.
//!
//! In: DOT text and the wanted format. Out: the bytes and which renderer made them.
//! Must not: fail silently: a PNG without `dot` is an error that says what to install.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Dot,
    Svg,
    Png,
}

impl Format {
    pub fn from_path(path: &str) -> Option<Format> {
        match path.rsplit_once('.')?.1.to_ascii_lowercase().as_str() {
            "dot" | "gv" => Some(Format::Dot),
            "svg" => Some(Format::Svg),
            "png" => Some(Format::Png),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renderer {
    /// The DOT text itself.
    None,
    /// Graphviz's `dot` program.
    Graphviz,
    /// layout-rs, built in.
    LayoutRs,
}

impl Renderer {
    pub fn describe(self) -> &'static str {
        match self {
            Renderer::None => "DOT text",
            Renderer::Graphviz => "Graphviz dot",
            Renderer::LayoutRs => {
                "the built-in layout (layout-rs); install Graphviz for a better picture"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("PNG needs Graphviz's `dot` program, which is not on the PATH")]
    NoDotForPng,
    #[error("Graphviz's `dot` failed: {0}")]
    Dot(String),
    #[error("the built-in layout failed: {0}")]
    Layout(String),
}

/// Whether Graphviz's `dot` can be run (honours `DAGML_NO_GRAPHVIZ=1` to force the fallback).
pub fn graphviz_available() -> bool {
    if std::env::var_os("DAGML_NO_GRAPHVIZ").is_some_and(|v| v == "1") {
        return false;
    }
    Command::new("dot")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn render(dot: &str, format: Format) -> Result<(Vec<u8>, Renderer), RenderError> {
    match format {
        Format::Dot => Ok((dot.as_bytes().to_vec(), Renderer::None)),
        Format::Svg if graphviz_available() => {
            run_dot(dot, "-Tsvg").map(|b| (b, Renderer::Graphviz))
        }
        Format::Svg => layout_svg(dot).map(|s| (s.into_bytes(), Renderer::LayoutRs)),
        Format::Png if graphviz_available() => {
            run_dot(dot, "-Tpng").map(|b| (b, Renderer::Graphviz))
        }
        Format::Png => Err(RenderError::NoDotForPng),
    }
}

fn run_dot(dot: &str, arg: &str) -> Result<Vec<u8>, RenderError> {
    let mut child = Command::new("dot")
        .arg(arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RenderError::Dot(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| RenderError::Dot(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RenderError::Dot(e.to_string()))?;
    if !out.status.success() {
        return Err(RenderError::Dot(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(out.stdout)
}

/// SVG from layout-rs. Its DOT parser knows fewer attributes than Graphviz, so the
/// picture is plainer; a panic inside it is caught and reported.
pub fn layout_svg(dot: &str) -> Result<String, RenderError> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};
    let dot = dot.to_string();
    let result = std::panic::catch_unwind(move || {
        let mut parser = DotParser::new(&dot);
        let g = parser
            .process()
            .map_err(|e| RenderError::Layout(e.to_string()))?;
        let mut builder = GraphBuilder::new();
        builder.visit_graph(&g);
        let mut vg = builder.get();
        let mut svg = SVGWriter::new();
        vg.do_it(false, false, false, &mut svg);
        Ok(svg.finalize())
    });
    result.unwrap_or_else(|_| {
        Err(RenderError::Layout(
            "layout-rs panicked on this graph".into(),
        ))
    })
}

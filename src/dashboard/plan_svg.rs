//! The plan's picture for the page: the SVG `dagml plan` draws (Graphviz's
//! `dot` when installed, layout-rs otherwise, `plan::render`), with each step's
//! shape marked `data-node="<step id>"` so the page can colour it by the state
//! of its tasks.
//!
//! In: DOT text (`plan::dot::to_dot_for_picture`). Out: SVG text.
//! Must not: fail silently (a drawing error is returned), or change the
//! picture but for the marks.

use crate::plan::render::{Format, RenderError, render};
use regex::Regex;
use std::sync::LazyLock;

/// A Graphviz node group: `<g id="node3" class="node">\n<title>fit:forest</title>`.
static GV_NODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"<g id="node\d+" class="node">\s*<title>([^<]*)</title>"#)
        .expect("a constant pattern")
});

/// DOT node statements: `"fit:forest" [... label="fit forest\n..." ...]`.
static DOT_NODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?m)^\s*"([a-z]+:[^"]+)"\s*\["#).expect("a constant pattern"));

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draw `dot` and mark its steps.
pub fn draw(dot: &str) -> Result<String, RenderError> {
    let (bytes, _) = render(dot, Format::Svg)?;
    let svg = String::from_utf8_lossy(&bytes).into_owned();
    let ids: Vec<String> = DOT_NODE
        .captures_iter(dot)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
        .collect();
    Ok(mark(&svg, &ids))
}

/// Mark the shape of each step in `ids` (`kind:name`) with `data-node`.
pub fn mark(svg: &str, ids: &[String]) -> String {
    if GV_NODE.is_match(svg) {
        return GV_NODE
            .replace_all(svg, |c: &regex::Captures| {
                let whole = c.get(0).map_or("", |m| m.as_str());
                let title = c.get(1).map_or("", |m| m.as_str());
                whole.replacen(
                    "class=\"node\"",
                    &format!("class=\"node\" data-node=\"{title}\""),
                    1,
                )
            })
            .into_owned();
    }
    // layout-rs: each node is `<g ><rect .../></g>` then its `<text>`, whose
    // first line is the label's first line, `kind name`.
    let mut out = svg.to_string();
    for id in ids {
        let Some((kind, name)) = id.split_once(':') else {
            continue;
        };
        let first = format!(">{}</tspan>", xml_escape(&format!("{kind} {name}")));
        let Some(at) = out.find(&first) else {
            continue;
        };
        let Some(g) = out[..at].rfind("<g ") else {
            continue;
        };
        out.insert_str(
            g + 2,
            &format!(" class=\"node\" data-node=\"{}\"", xml_escape(id)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphviz_nodes_are_marked_by_their_title() {
        let svg = "<g id=\"node1\" class=\"node\">\n<title>fit:forest</title><path/></g>";
        let m = mark(svg, &[]);
        assert!(m.contains("data-node=\"fit:forest\""), "{m}");
    }

    #[test]
    fn layout_rs_nodes_are_marked_before_their_rect() {
        let dot = "digraph \"p\" {\n\"source:iris\" [label=\"source iris\\nrows\"];\n\"fit:forest\" [label=\"fit forest\"];\n\"source:iris\" -> \"fit:forest\";\n}\n";
        let svg = draw(dot).expect("layout-rs draws a small graph");
        for id in ["source:iris", "fit:forest"] {
            assert!(
                svg.contains(&format!("data-node=\"{id}\"")),
                "{id} unmarked: {svg}"
            );
        }
    }
}

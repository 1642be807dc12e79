//! The report's charts, drawn with plotters' SVG backend into strings: a
//! heatmap (confusion matrix, per-shard matrix), curves (ROC, precision-recall),
//! scatter plots (predicted vs actual, residuals), horizontal bars (feature
//! importances), vertical bars (per-fold scores) and a grey-level image (the
//! importances of 28×28 pixel inputs).
//!
//! In: numbers and labels. Out: `<svg>` text. Must not: read fonts or files
//! (text stays SVG `<text>`), or panic on empty or non-finite input.

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the {what}: {message}")]
pub struct DrawError {
    pub what: &'static str,
    pub message: String,
}

fn err(what: &'static str) -> impl Fn(String) -> DrawError {
    move |message| DrawError { what, message }
}

macro_rules! tri {
    ($what:expr, $e:expr) => {
        $e.map_err(|e| err($what)(format!("{e:?}")))?
    };
}

const FONT: &str = "sans-serif";
/// The bars' and the scatter's dots' colour.
const FILL: RGBColor = RGBColor(31, 119, 180);

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// `n` segments `0..n` (plotters' segmented range `0..m` has `m + 1`); a
/// single one keeps an empty second.
fn segments(
    n: u32,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordu32> {
    (0..n.saturating_sub(1).max(1)).into_segmented()
}

/// White (0) to dark blue (1).
fn heat(t: f64) -> RGBColor {
    let t = finite(t).clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

fn label_of(names: &[String], v: &SegmentValue<u32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// An SVG of `size` on a white page, drawn by `body`.
fn svg(
    what: &'static str,
    size: (u32, u32),
    body: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), DrawError>,
) -> Result<String, DrawError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        tri!(what, root.fill(&WHITE));
        body(&root)?;
        tri!(what, root.present());
    }
    Ok(out)
}

/// What every chart starts from: its title, a margin and the (bottom, left)
/// label areas.
fn frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    margin: u32,
    (x_area, y_area): (u32, u32),
) -> ChartBuilder<'a, 'static, DB> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FONT, 16))
        .margin(margin)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    builder
}

/// The axes in the report's font; the caller adds labels and draws.
fn mesh<'a, 'b, DB, X, Y, XT, YT>(
    chart: &'b mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> MeshStyle<'a, 'b, X, Y, DB>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = XT> + ValueFormatter<XT>,
    Y: Ranged<ValueType = YT> + ValueFormatter<YT>,
{
    let mut style = chart.configure_mesh();
    style.label_style((FONT, 12)).axis_desc_style((FONT, 12));
    style
}

/// A heatmap of `values[row][col]` with each cell's text; colours scale
/// between the smallest and largest value.
pub fn heatmap(
    what: &'static str,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
    cell_text: &dyn Fn(f64) -> String,
    (x_desc, y_desc): (&str, &str),
) -> Result<String, DrawError> {
    let (nr, nc) = (rows.len().max(1) as u32, cols.len().max(1) as u32);
    let cell = (480 / nc.max(nr)).clamp(14, 60);
    // Columns wide enough for their labels (about 7 px a character).
    let longest = cols.iter().map(|c| c.chars().count()).max().unwrap_or(1) as u32;
    let cw = cell.max(7 * longest + 12).min(220);
    let w = (160 + cw * nc).max(20 + 8 * title.chars().count() as u32);
    let h = 120 + cell * nr;
    let all: Vec<f64> = values.iter().flatten().copied().map(finite).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    // Row 0 at the top.
    let flipped: Vec<String> = rows.iter().rev().cloned().collect();
    svg(what, (w, h), |root| {
        let mut chart = tri!(
            what,
            frame(root, title, 8, (40, 110)).build_cartesian_2d(segments(nc), segments(nr))
        );
        tri!(
            what,
            mesh(&mut chart)
                .disable_mesh()
                .x_labels(nc as usize)
                .y_labels(nr as usize)
                .x_label_formatter(&|v| label_of(cols, v))
                .y_label_formatter(&|v| label_of(&flipped, v))
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
        );
        for (i, row) in values.iter().enumerate() {
            let y = nr - 1 - i as u32;
            for (j, &v) in row.iter().enumerate() {
                let t = (finite(v) - lo) / span;
                let j = j as u32;
                tri!(
                    what,
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                        ],
                        heat(t).filled(),
                    )))
                );
                let color = if t > 0.55 { WHITE } else { BLACK };
                let size = (cell as f64 * 0.3).clamp(8.0, 13.0);
                tri!(
                    what,
                    chart.draw_series(std::iter::once(Text::new(
                        cell_text(v),
                        (SegmentValue::CenterOf(j), SegmentValue::CenterOf(y)),
                        (FONT, size)
                            .into_font()
                            .color(&color)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )))
                );
            }
        }
        Ok(())
    })
}

/// One named curve: `(x, y)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub fn series(name: String, xs: &[f64], ys: &[f64]) -> Series {
    Series {
        name,
        points: xs
            .iter()
            .zip(ys)
            .map(|(&x, &y)| (finite(x), finite(y)))
            .collect(),
    }
}

/// Curves on the unit square, with the diagonal when `diagonal`.
pub fn curves(
    what: &'static str,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Series],
    diagonal: bool,
) -> Result<String, DrawError> {
    svg(what, (520, 420), |root| {
        let mut chart = tri!(
            what,
            frame(root, title, 10, (36, 44)).build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
        );
        tri!(
            what,
            mesh(&mut chart)
                .x_desc(x_desc)
                .y_desc(y_desc)
                .light_line_style(WHITE.mix(0.0))
                .draw()
        );
        if diagonal {
            tri!(
                what,
                chart.draw_series(LineSeries::new(
                    vec![(0.0, 0.0), (1.0, 1.0)],
                    RGBColor(180, 180, 180).stroke_width(1),
                ))
            );
        }
        for (i, s) in lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            tri!(
                what,
                chart
                    .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
                    .map(|a| {
                        a.label(s.name.clone()).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                        })
                    })
            );
        }
        if lines.len() <= 12 {
            tri!(
                what,
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font((FONT, 11))
                    .draw()
            );
        }
        Ok(())
    })
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .map(finite)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// Points, and a reference line from `line.0` to `line.1` when given.
pub fn scatter(
    what: &'static str,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    points: &[(f64, f64)],
    line: Option<((f64, f64), (f64, f64))>,
) -> Result<String, DrawError> {
    let (x0, x1) = bounds(points.iter().map(|p| p.0));
    let (y0, y1) = bounds(points.iter().map(|p| p.1));
    svg(what, (520, 420), |root| {
        let mut chart = tri!(
            what,
            frame(root, title, 10, (36, 56)).build_cartesian_2d(x0..x1, y0..y1)
        );
        tri!(
            what,
            mesh(&mut chart)
                .x_desc(x_desc)
                .y_desc(y_desc)
                .light_line_style(WHITE.mix(0.0))
                .draw()
        );
        if let Some((a, b)) = line {
            tri!(
                what,
                chart.draw_series(LineSeries::new(vec![a, b], RED.stroke_width(1)))
            );
        }
        let dot = FILL.mix(0.6);
        tri!(
            what,
            chart.draw_series(points.iter().map(|&(x, y)| Circle::new(
                (finite(x), finite(y)),
                2,
                dot.filled()
            )))
        );
        Ok(())
    })
}

/// Horizontal bars, the first at the top.
pub fn hbars(
    what: &'static str,
    title: &str,
    x_desc: &str,
    bars: &[(String, f64)],
) -> Result<String, DrawError> {
    let n = bars.len().max(1) as u32;
    let hi = bars
        .iter()
        .map(|b| finite(b.1))
        .fold(0.0, f64::max)
        .max(1e-12)
        * 1.08;
    let names: Vec<String> = bars.iter().rev().map(|b| b.0.clone()).collect();
    svg(what, (560, 100 + 22 * n.max(3)), |root| {
        let mut chart = tri!(
            what,
            frame(root, title, 10, (36, 130)).build_cartesian_2d(0f64..hi, segments(n))
        );
        tri!(
            what,
            mesh(&mut chart)
                .disable_y_mesh()
                .y_labels(n as usize)
                .y_label_formatter(&|v| label_of(&names, v))
                .x_desc(x_desc)
                .light_line_style(WHITE.mix(0.0))
                .draw()
        );
        tri!(
            what,
            chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
                let y = n - 1 - i as u32;
                let mut r = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(y)),
                        (finite(b.1), SegmentValue::Exact(y + 1)),
                    ],
                    FILL.filled(),
                );
                r.set_margin(2, 2, 0, 0);
                r
            }))
        );
        Ok(())
    })
}

/// Vertical bars with their values written above them.
pub fn vbars(
    what: &'static str,
    title: &str,
    y_desc: &str,
    bars: &[(String, f64)],
) -> Result<String, DrawError> {
    let n = bars.len().max(1) as u32;
    let lo = bars.iter().map(|b| finite(b.1)).fold(0.0, f64::min);
    let hi = bars.iter().map(|b| finite(b.1)).fold(0.0, f64::max);
    let span = (hi - lo).max(1e-12);
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    svg(what, (120 + 70 * n, 360), |root| {
        let mut chart = tri!(
            what,
            frame(root, title, 10, (36, 56)).build_cartesian_2d(segments(n), lo..hi + span * 0.12)
        );
        tri!(
            what,
            mesh(&mut chart)
                .disable_x_mesh()
                .x_labels(n as usize)
                .x_label_formatter(&|v| label_of(&names, v))
                .y_desc(y_desc)
                .light_line_style(WHITE.mix(0.0))
                .draw()
        );
        tri!(
            what,
            chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i as u32), 0.0),
                        (SegmentValue::Exact(i as u32 + 1), finite(b.1)),
                    ],
                    FILL.filled(),
                );
                r.set_margin(0, 0, 8, 8);
                r
            }))
        );
        tri!(
            what,
            chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
                Text::new(
                    format!("{:.4}", b.1),
                    (SegmentValue::CenterOf(i as u32), finite(b.1) + span * 0.02),
                    (FONT, 11)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
        );
        Ok(())
    })
}

/// A `side × side` image of `values` (row-major), darkest at the largest value.
pub fn image(
    what: &'static str,
    title: &str,
    side: usize,
    values: &[f64],
) -> Result<String, DrawError> {
    let hi = values.iter().copied().map(finite).fold(0.0, f64::max);
    let hi = if hi > 0.0 { hi } else { 1.0 };
    svg(what, (360, 390), |root| {
        // No label areas: the pixels speak for themselves.
        let mut chart = tri!(
            what,
            frame(root, title, 10, (0, 0)).build_cartesian_2d(0..side as i32, 0..side as i32)
        );
        tri!(
            what,
            chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
                let (r, c) = ((i / side) as i32, (i % side) as i32);
                let y = side as i32 - 1 - r;
                Rectangle::new([(c, y), (c + 1, y + 1)], heat(finite(v) / hi).filled())
            }))
        );
        Ok(())
    })
}

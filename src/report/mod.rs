//! The HTML report: one self-contained file (inline SVG and CSS, no script,
//! nothing fetched) that draws a metrics document. Per evaluation: what the
//! model learned (a forest's feature-importance bars, and for 28×28 pixel
//! inputs the importances as an image), the per-fold scores of a k-fold
//! evaluation, the per-shard matrix of every model on every shard; per scored
//! dataset: the metrics table, the classification report, the confusion-matrix
//! heatmap, ROC and precision-recall curves (one-vs-rest), and for regressors
//! predicted-vs-actual and residual plots.
//!
//! In: a [`MetricsDoc`] (what a `metrics` output writes, so `dagml report`
//! draws the same file after the fact), and optionally the learned state of
//! model files (importances of a model whose evaluation did not keep them).
//! Out: the HTML text. Every figure is a `<figure data-kind="...">`; every
//! number printed is the document's, to four places. Must not: read files, or
//! put anything in the page that varies between runs (no paths, no clocks).

pub mod charts;

use crate::ml::evaluation::{EvalEntry, EvalResult, MetricsDoc};
use crate::ml::inspect::{Learned, Weight};
use charts::DrawError;
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Draw(#[from] DrawError),
}

/// Importance bars shown (largest first).
pub const TOP_IMPORTANCES: usize = 20;

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A number as the report prints it.
pub fn num(v: f64) -> String {
    format!("{v:.4}")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1200px}\
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
h3{font-size:1.05em;margin-top:1.5em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}th{background:#f3f3f3}\
td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:.5em;vertical-align:top}\
figcaption{font-size:.85em;color:#555;max-width:540px}.note{color:#555;font-size:.9em}";

fn figure(out: &mut String, kind: &str, svg: &str, caption: &str) {
    let _ = writeln!(
        out,
        "<figure data-kind=\"{kind}\">{svg}<figcaption>{}</figcaption></figure>",
        esc(caption)
    );
}

/// The model's learned state: the evaluation's, else a model file's of that name.
fn learned_of<'a>(e: &'a EvalResult, models: &'a [(String, Learned)]) -> Option<&'a Learned> {
    e.learned.as_ref().or_else(|| {
        models
            .iter()
            .find(|(name, _)| *name == e.model)
            .map(|(_, l)| l)
    })
}

/// Names like MNIST's pixels: `pixel0..pixel783`, in order.
fn is_pixel_image(w: &[Weight]) -> bool {
    w.len() == 784
        && w.iter()
            .enumerate()
            .all(|(i, x)| x.feature == format!("pixel{i}"))
}

fn importances(out: &mut String, title: &str, w: &[Weight]) -> Result<(), ReportError> {
    let mut ranked: Vec<&Weight> = w.iter().collect();
    ranked.sort_by(|a, b| b.value.total_cmp(&a.value));
    let bars: Vec<(String, f64)> = ranked
        .iter()
        .take(TOP_IMPORTANCES)
        .map(|x| (x.feature.clone(), x.value))
        .collect();
    let svg = charts::hbars("importances", title, "importance (impurity-based)", &bars)?;
    figure(
        out,
        "importances",
        &svg,
        &format!(
            "{title}: the {} largest of {} features, normalised to sum to 1",
            bars.len(),
            w.len()
        ),
    );
    if is_pixel_image(w) {
        let v: Vec<f64> = w.iter().map(|x| x.value).collect();
        let svg = charts::image("importance image", &format!("{title}: by pixel"), 28, &v)?;
        figure(
            out,
            "importance-image",
            &svg,
            &format!("{title}: each of the 28×28 pixels' importance, darkest the largest"),
        );
    }
    Ok(())
}

fn learned_section(out: &mut String, name: &str, l: &Learned) -> Result<(), ReportError> {
    match l {
        Learned::Linear {
            intercept,
            coefficients,
        } => {
            let _ = write!(
                out,
                "<h3>{} learned</h3>\n<table class=\"coefficients\"><tr><th>feature</th><th>coefficient</th></tr>\
                 <tr><td>intercept</td><td>{}</td></tr>",
                esc(name),
                num(*intercept)
            );
            for c in coefficients {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    esc(&c.feature),
                    num(c.value)
                );
            }
            out.push_str("</table>\n");
        }
        Learned::Trees {
            importances: w,
            trees,
            ..
        } if !w.is_empty() => {
            let title = if *trees == 1 {
                format!("{name} (a tree)")
            } else {
                format!("{name} ({trees} trees)")
            };
            importances(out, &title, w)?;
        }
        Learned::Ensemble { members, .. } => {
            for m in members {
                learned_section(out, &format!("{name}[{}]", m.shard), &m.learned)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The metric a summary chart shows: accuracy for classifiers, r2 (else
/// rmse) for regressors.
fn main_metric(e: &EvalEntry) -> Option<(&'static str, f64)> {
    let s = &e.scores;
    s.accuracy
        .map(|v| ("accuracy", v))
        .or(s.r2.map(|v| ("r2", v)))
        .or(s.rmse.map(|v| ("rmse", v)))
}

/// The entries of the folds of a k-fold mean entry (`{data}.foldN`), in order.
fn folds<'a>(e: &'a EvalResult, mean: &EvalEntry) -> Vec<&'a EvalEntry> {
    let prefix = format!("{}.fold", mean.data);
    e.results
        .iter()
        .filter(|r| {
            r.data
                .strip_prefix(&prefix)
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect()
}

fn fold_chart(out: &mut String, e: &EvalResult, mean: &EvalEntry) -> Result<(), ReportError> {
    let fs = folds(e, mean);
    let Some((metric, _)) = main_metric(mean) else {
        return Ok(());
    };
    let bars: Vec<(String, f64)> = fs
        .iter()
        .filter_map(|f| {
            let (m, v) = main_metric(f)?;
            (m == metric).then(|| (f.data.rsplit('.').next().unwrap_or("").to_string(), v))
        })
        .collect();
    if bars.is_empty() {
        return Ok(());
    }
    let svg = charts::vbars(
        "per-fold scores",
        &format!("{}: {metric} per fold", mean.data),
        metric,
        &bars,
    )?;
    let std = mean
        .std
        .as_ref()
        .and_then(|s| s.get(metric))
        .map(|d| format!(" ± {}", num(*d)))
        .unwrap_or_default();
    let mean_v = main_metric(mean).map(|m| m.1).unwrap_or(0.0);
    figure(
        out,
        "folds",
        &svg,
        &format!(
            "{}: {metric} of each fold's model on the fold it did not see; mean {}{std}",
            mean.model,
            num(mean_v)
        ),
    );
    Ok(())
}

/// Whether an evaluation scored several models on several datasets (a
/// per-shard ensemble's matrix).
fn matrix_chart(out: &mut String, e: &EvalResult) -> Result<(), ReportError> {
    if !matches!(e.learned, Some(Learned::Ensemble { .. }))
        && !e
            .results
            .iter()
            .any(|r| r.model.starts_with(&format!("{}[", e.model)))
    {
        return Ok(());
    }
    let mut models: Vec<String> = Vec::new();
    let mut data: Vec<String> = Vec::new();
    for r in &e.results {
        if !models.contains(&r.model) {
            models.push(r.model.clone());
        }
        if !data.contains(&r.data) {
            data.push(r.data.clone());
        }
    }
    let Some((metric, _)) = e.results.first().and_then(main_metric) else {
        return Ok(());
    };
    let values: Vec<Vec<f64>> = models
        .iter()
        .map(|m| {
            data.iter()
                .map(|d| {
                    e.results
                        .iter()
                        .find(|r| &r.model == m && &r.data == d)
                        .and_then(main_metric)
                        .map_or(f64::NAN, |x| x.1)
                })
                .collect()
        })
        .collect();
    let svg = charts::heatmap(
        "per-shard matrix",
        &format!("{}: {metric} of every model on every shard", e.evaluation),
        &models,
        &data,
        &values,
        &|v| if v.is_finite() { num(v) } else { "–".into() },
        ("dataset", "model"),
    )?;
    figure(
        out,
        "shard-matrix",
        &svg,
        &format!(
            "{}: {metric} per model (rows) and dataset (columns)",
            e.evaluation
        ),
    );
    Ok(())
}

fn metrics_table(out: &mut String, r: &EvalEntry) {
    let s = &r.scores;
    let std = |name: &str| {
        r.std
            .as_ref()
            .and_then(|m| m.get(name))
            .map(|d| num(*d))
            .unwrap_or_default()
    };
    let mut rows: Vec<(&str, f64)> = Vec::new();
    if let Some(v) = s.accuracy {
        rows.push(("accuracy", v));
    }
    if let Some(a) = &s.macro_avg {
        rows.push(("precision", a.precision));
        rows.push(("recall", a.recall));
        rows.push(("f1", a.f1));
    }
    for (n, v) in [
        ("log_loss", s.log_loss),
        ("rmse", s.rmse),
        ("mae", s.mae),
        ("r2", s.r2),
    ] {
        if let Some(v) = v {
            rows.push((n, v));
        }
    }
    let with_std = r.std.is_some();
    out.push_str("<table class=\"metrics\"><tr><th>metric</th><th>value</th>");
    if with_std {
        out.push_str("<th>std over folds</th>");
    }
    out.push_str("</tr>");
    for (n, v) in rows {
        let label = if matches!(n, "precision" | "recall" | "f1") {
            format!("{n} (macro)")
        } else {
            n.to_string()
        };
        let _ = write!(
            out,
            "<tr data-metric=\"{n}\"><td>{label}</td><td>{}</td>",
            num(v)
        );
        if with_std {
            let _ = write!(out, "<td>{}</td>", std(n));
        }
        out.push_str("</tr>");
    }
    let _ = writeln!(out, "<tr><td>rows</td><td>{}</td></tr></table>", s.rows);
}

fn classification_table(out: &mut String, r: &EvalEntry) {
    let s = &r.scores;
    let Some(rows) = &s.per_class else {
        return;
    };
    out.push_str(
        "<table class=\"classification-report\"><tr><th></th><th>precision</th><th>recall</th>\
         <th>f1-score</th><th>support</th></tr>",
    );
    for c in rows {
        let _ = write!(
            out,
            "<tr data-class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.class),
            esc(&c.class),
            num(c.precision),
            num(c.recall),
            num(c.f1),
            c.support
        );
    }
    if let Some(a) = s.accuracy {
        let _ = write!(
            out,
            "<tr><td>accuracy</td><td></td><td></td><td>{}</td><td>{}</td></tr>",
            num(a),
            s.rows
        );
    }
    for (name, a) in [
        ("macro avg", &s.macro_avg),
        ("weighted avg", &s.weighted_avg),
    ] {
        if let Some(a) = a {
            let _ = write!(
                out,
                "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                num(a.precision),
                num(a.recall),
                num(a.f1),
                s.rows
            );
        }
    }
    out.push_str("</table>\n");
}

fn entry_figures(out: &mut String, e: &EvalResult, r: &EvalEntry) -> Result<(), ReportError> {
    let s = &r.scores;
    let what = format!("{} on {}", r.model, r.data);
    if let Some(cm) = &s.confusion_matrix {
        let classes: Vec<String> = if e.classes.len() == cm.len() {
            e.classes.clone()
        } else {
            (0..cm.len()).map(|i| i.to_string()).collect()
        };
        let values: Vec<Vec<f64>> = cm
            .iter()
            .map(|row| row.iter().map(|&v| v as f64).collect())
            .collect();
        let svg = charts::heatmap(
            "confusion matrix",
            &format!("confusion matrix: {what}"),
            &classes,
            &classes,
            &values,
            &|v| format!("{v:.0}"),
            ("predicted", "true"),
        )?;
        figure(
            out,
            "confusion",
            &svg,
            &format!("{what}: rows are the true classes, columns the predicted"),
        );
    }
    if let Some(curves) = s.curves.as_ref().filter(|c| !c.is_empty()) {
        let roc: Vec<_> = curves
            .iter()
            .map(|c| charts::series(format!("{} (AUC {})", c.class, num(c.auc)), &c.fpr, &c.tpr))
            .collect();
        let svg = charts::curves(
            "ROC curve",
            &format!("ROC: {what}"),
            ("false positive rate", "true positive rate"),
            &roc,
            true,
        )?;
        let aucs: Vec<String> = curves
            .iter()
            .map(|c| format!("{} {}", c.class, num(c.auc)))
            .collect();
        figure(
            out,
            "roc",
            &svg,
            &format!(
                "{what}: one-vs-rest ROC per class at {} probability thresholds; AUC {}",
                crate::ml::curves::BINS,
                aucs.join(", ")
            ),
        );
        let pr: Vec<_> = curves
            .iter()
            .map(|c| {
                charts::series(
                    format!("{} (AP {})", c.class, num(c.average_precision)),
                    &c.tpr,
                    &c.precision,
                )
            })
            .collect();
        let svg = charts::curves(
            "precision-recall curve",
            &format!("precision-recall: {what}"),
            ("recall", "precision"),
            &pr,
            false,
        )?;
        let aps: Vec<String> = curves
            .iter()
            .map(|c| format!("{} {}", c.class, num(c.average_precision)))
            .collect();
        figure(
            out,
            "pr",
            &svg,
            &format!("{what}: one-vs-rest; average precision {}", aps.join(", ")),
        );
    }
    if let Some(sample) = s.sample.as_ref().filter(|p| !p.is_empty()) {
        let pts: Vec<(f64, f64)> = sample.iter().map(|p| (p[0], p[1])).collect();
        let (lo, hi) = pts
            .iter()
            .flat_map(|p| [p.0, p.1])
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let diag = (lo.is_finite() && hi.is_finite()).then_some(((lo, lo), (hi, hi)));
        let svg = charts::scatter(
            "predicted vs actual",
            &format!("predicted vs actual: {what}"),
            ("actual", "predicted"),
            &pts,
            diag,
        )?;
        figure(
            out,
            "predicted-actual",
            &svg,
            &format!(
                "{what}: a uniform sample of {} of {} rows; the line is predicted = actual",
                pts.len(),
                s.rows
            ),
        );
        let res: Vec<(f64, f64)> = pts.iter().map(|&(a, p)| (p, a - p)).collect();
        let (x0, x1) = res
            .iter()
            .map(|p| p.0)
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let zero = (x0.is_finite() && x1.is_finite()).then_some(((x0, 0.0), (x1, 0.0)));
        let svg = charts::scatter(
            "residuals",
            &format!("residuals: {what}"),
            ("predicted", "actual − predicted"),
            &res,
            zero,
        )?;
        figure(
            out,
            "residuals",
            &svg,
            &format!("{what}: residual against prediction, same sample"),
        );
    }
    Ok(())
}

/// The report's HTML. `models`: learned states by model name (from model
/// files), used for an evaluation whose document has none.
pub fn render(doc: &MetricsDoc, models: &[(String, Learned)]) -> Result<String, ReportError> {
    let mut out = String::new();
    let title = format!("dagml report: {}", doc.pipeline);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p class=\"note\">pipeline sha256:{}; \
         curves use {} probability bins; regression plots a sample of at most {} rows.</p>\n",
        esc(&title),
        esc(&title),
        esc(&doc.pipeline_hash),
        crate::ml::curves::BINS,
        crate::ml::curves::SAMPLE,
    );
    for e in &doc.evaluations {
        let _ = writeln!(
            out,
            "<section class=\"evaluation\" data-evaluation=\"{}\"><h2>{}: {} ({})</h2>",
            esc(&e.evaluation),
            esc(&e.evaluation),
            esc(&e.model),
            esc(&e.task)
        );
        if let Some(l) = learned_of(e, models) {
            learned_section(&mut out, &e.model, l)?;
        }
        matrix_chart(&mut out, e)?;
        for r in &e.results {
            let _ = writeln!(
                out,
                "<section class=\"entry\" data-model=\"{}\" data-data=\"{}\"><h3>{} on {} ({} rows)</h3>",
                esc(&r.model),
                esc(&r.data),
                esc(&r.model),
                esc(&r.data),
                r.scores.rows
            );
            metrics_table(&mut out, r);
            classification_table(&mut out, r);
            if r.std.is_some() {
                fold_chart(&mut out, e, r)?;
            }
            entry_figures(&mut out, e, r)?;
            out.push_str("</section>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::inspect::Spread;

    fn doc(features: Vec<String>) -> MetricsDoc {
        let n = features.len() as f64;
        let importances = features
            .into_iter()
            .enumerate()
            .map(|(i, feature)| Weight {
                feature,
                value: 2.0 * (i + 1) as f64 / (n * (n + 1.0)),
            })
            .collect();
        MetricsDoc {
            pipeline: "p<&>".into(),
            pipeline_hash: "00".into(),
            evaluations: vec![EvalResult {
                evaluation: "e".into(),
                model: "forest".into(),
                task: "classification".into(),
                classes: vec![],
                metrics: vec![],
                results: vec![],
                learned: Some(Learned::Trees {
                    trees: 3,
                    depth: Spread {
                        min: 1,
                        mean: 1.0,
                        max: 1,
                    },
                    leaves: Spread {
                        min: 2,
                        mean: 2.0,
                        max: 2,
                    },
                    importances,
                }),
            }],
        }
    }

    #[test]
    fn pixel_inputs_get_an_importance_image_and_other_inputs_do_not() {
        let pixels = (0..784).map(|i| format!("pixel{i}")).collect();
        let html = render(&doc(pixels), &[]).unwrap();
        assert_eq!(html.matches("data-kind=\"importance-image\"").count(), 1);
        assert_eq!(html.matches("data-kind=\"importances\"").count(), 1);
        // 784 cells of the image.
        let image = &html[html.find("data-kind=\"importance-image\"").unwrap()..];
        assert!(image.matches("<rect").count() >= 784);
        let other = (0..784).map(|i| format!("f{i}")).collect();
        let html = render(&doc(other), &[]).unwrap();
        assert_eq!(html.matches("data-kind=\"importance-image\"").count(), 0);
        // The largest importance is at the top of the bars; text is escaped.
        assert!(html.contains("f783") && !html.contains("f0<"));
        assert!(html.contains("p&lt;&amp;&gt;"));
    }
}

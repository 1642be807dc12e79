//! A run's report: the evaluations and write receipts among its final values,
//! its task timings, and the text the terminal shows. The same report whichever
//! way the run went (in-process, embedded cluster, remote workers).
//!
//! In: the plan and the run's kept values (by partition name). Out:
//! [`RunReport`] and its text. Must not: print, or look at anything but the
//! values it is given.

use crate::ml::inspect::{Learned, Weight};
use crate::ml::metrics;
use crate::runtime::executor::TaskRecord;
use crate::runtime::kernels::{EvalResult, Receipt};
use crate::runtime::value::Value;
use std::time::Duration;

#[derive(Debug)]
pub struct RunReport {
    pub pipeline: String,
    pub evaluations: Vec<EvalResult>,
    pub receipts: Vec<Receipt>,
    pub records: Vec<TaskRecord>,
    pub wall: Duration,
    pub threads: usize,
    pub tasks: usize,
}

/// The evaluations and write receipts among a run's final values.
pub fn results_of<'a>(
    plan: &crate::plan::PhysicalPlan,
    value: impl Fn(&str) -> Option<&'a Value>,
) -> (Vec<EvalResult>, Vec<Receipt>) {
    let mut evaluations = Vec::new();
    let mut receipts = Vec::new();
    for t in &plan.tasks {
        for o in &t.outputs {
            let Some(Value::Bytes(b)) = value(&o.to_string()) else {
                continue;
            };
            match t.kind {
                crate::plan::TaskKind::Evaluate => {
                    if let Ok(e) = serde_json::from_slice::<EvalResult>(b) {
                        evaluations.push(e);
                    }
                }
                crate::plan::TaskKind::Write => {
                    let Ok(r) = serde_json::from_slice::<Receipt>(b) else {
                        continue;
                    };
                    // A dataset is written by one task per partition: one receipt.
                    match receipts
                        .iter_mut()
                        .find(|x: &&mut Receipt| x.output == r.output)
                    {
                        Some(x) => {
                            x.paths.extend(r.paths);
                            x.staged.extend(r.staged);
                            x.rows = match (x.rows, r.rows) {
                                (Some(a), Some(b)) => Some(a + b),
                                (a, b) => a.or(b),
                            };
                        }
                        None => receipts.push(r),
                    }
                }
                _ => {}
            }
        }
    }
    (evaluations, receipts)
}

/// The results as text: per evaluation and dataset, the metrics asked for.
pub fn render_results(r: &RunReport) -> String {
    let mut out = String::new();
    for e in &r.evaluations {
        out.push_str(&learned_line(e));
        for entry in &e.results {
            out.push_str(&format!(
                "== {} : {} on {} ({} rows)\n",
                e.evaluation, entry.model, entry.data, entry.scores.rows
            ));
            let s = &entry.scores;
            if !s.unseen_classes.is_empty() {
                let list: Vec<String> = s.unseen_classes.iter().map(|c| format!("`{c}`")).collect();
                out.push_str(&format!(
                    "warning: {} {} in `{}` but never in the training data of `{}`: the model never predicts {}, so {} recall is 0 (scored as scikit-learn does)\n",
                    if list.len() == 1 { "class" } else { "classes" },
                    list.join(", ") + if list.len() == 1 { " is" } else { " are" },
                    entry.data,
                    entry.model,
                    if list.len() == 1 { "it" } else { "them" },
                    if list.len() == 1 { "its" } else { "their" },
                ));
            }
            let has = |m: &str| e.metrics.iter().any(|x| x == m);
            // A cross-validation's mean carries the spread over its folds.
            let pm = |name: &str| {
                entry
                    .std
                    .as_ref()
                    .and_then(|m| m.get(name))
                    .map(|d| format!(" ± {d:.4}"))
                    .unwrap_or_default()
            };
            let mut line = Vec::new();
            if let Some(a) = s.accuracy.filter(|_| has("accuracy")) {
                line.push(format!("accuracy {a:.4}{}", pm("accuracy")));
            }
            for (name, avg) in [("precision", 0), ("recall", 1), ("f1", 2)] {
                if let Some(m) = s.macro_avg.as_ref().filter(|_| has(name)) {
                    let v = [m.precision, m.recall, m.f1][avg];
                    line.push(format!("{name} (macro) {v:.4}{}", pm(name)));
                }
            }
            if let Some(v) = s.log_loss.filter(|_| has("log_loss")) {
                line.push(format!("log_loss {v:.4}{}", pm("log_loss")));
            }
            for (name, v) in [("rmse", s.rmse), ("mae", s.mae), ("r2", s.r2)] {
                if let Some(v) = v.filter(|_| has(name)) {
                    line.push(format!("{name} {v:.4}{}", pm(name)));
                }
            }
            if !line.is_empty() {
                out.push_str(&line.join("  "));
                out.push('\n');
            }
            if has("classification_report") {
                out.push('\n');
                out.push_str(&metrics::classification_report(s));
            }
            if has("confusion_matrix") {
                out.push('\n');
                out.push_str(&metrics::confusion_table(s, &e.classes));
            }
            out.push('\n');
        }
    }
    for rc in &r.receipts {
        let rows = rc.rows.map(|n| format!(" ({n} rows)")).unwrap_or_default();
        match rc.paths.as_slice() {
            [one] => out.push_str(&format!("wrote {} -> {one}{rows}\n", rc.output)),
            many => out.push_str(&format!(
                "wrote {} -> {} files{rows}\n",
                rc.output,
                many.len()
            )),
        }
    }
    out
}

/// How many coefficients the run's text shows (largest magnitude first).
const SHOWN_COEFFICIENTS: usize = 10;

/// A linear model's intercept and coefficients, one line (`dagml inspect` has
/// all of them, and every model kind).
fn learned_line(e: &EvalResult) -> String {
    let Some(Learned::Linear {
        intercept,
        coefficients,
    }) = &e.learned
    else {
        return String::new();
    };
    let mut ranked: Vec<&Weight> = coefficients.iter().collect();
    ranked.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    let mut parts: Vec<String> = ranked
        .iter()
        .take(SHOWN_COEFFICIENTS)
        .map(|w| format!("{} {:.6}", w.feature, w.value))
        .collect();
    if ranked.len() > SHOWN_COEFFICIENTS {
        parts.push(format!(
            "... {} more (dagml inspect)",
            ranked.len() - SHOWN_COEFFICIENTS
        ));
    }
    format!(
        "{}: intercept {intercept:.6}, coef {}\n",
        e.model,
        parts.join(", ")
    )
}

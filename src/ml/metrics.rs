//! Metrics: accuracy, per-class precision/recall/F1/support with macro and weighted
//! averages (printed like scikit-learn's `classification_report`), the confusion
//! matrix, log loss; rmse, mae, r2.
//!
//! In: true targets and a [`Prediction`]. Out: [`Scores`], serializable to the
//! metrics JSON and printable. Must not: round anything but the printed text.

use super::curves::{ClassCurve, Sample, ScoreBins};
use super::model::Prediction;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassRow {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Scores {
    pub rows: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_class: Option<Vec<ClassRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_avg: Option<Averages>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weighted_avg: Option<Averages>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// One-vs-rest ROC and precision-recall curves per class, at the
    /// probability bins' thresholds (see `ml::curves`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curves: Option<Vec<ClassCurve>>,
    /// A regressor's sample of `[actual, predicted]` pairs (at most
    /// `curves::SAMPLE`, the same whatever the partitioning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Vec<[f64; 2]>>,
    /// Classes in the scored data that the model never saw in training: scored
    /// as scikit-learn does (rows in the confusion matrix and the per-class
    /// table, never predicted, so recall 0), and reported as a warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen_classes: Vec<String>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// What scores are made of, summed over rows: a tally of one batch merges with
/// the tally of the next, so a dataset is scored partition by partition without
/// gathering it (and the scores are those of the whole).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Tally {
    Classes {
        classes: Vec<String>,
        /// `confusion[true][predicted]`.
        confusion: Vec<Vec<u64>>,
        /// Sum over rows of −ln p(true class), clipped like scikit-learn.
        log_loss_sum: f64,
        rows: usize,
        /// Probability histograms for the curves.
        bins: ScoreBins,
        /// `classes[..known]` are the model's; the rest, in sorted order, were
        /// seen only in the scored data.
        #[serde(default)]
        known: usize,
    },
    Values {
        rows: usize,
        /// Sums of squared and absolute errors.
        sse: f64,
        sae: f64,
        /// Mean of the target and the sum of squared deviations from it
        /// (merged with Chan's formula).
        mean: f64,
        m2: f64,
        /// A bounded sample of (actual, predicted) for the plots.
        sample: Sample,
    },
}

impl Tally {
    /// The tally of a classifier's predictions. `y` holds class indices into the
    /// prediction's classes.
    pub fn classification(y: &[u32], pred: &Prediction) -> Tally {
        let (proba, classes): (&[f32], Vec<String>) = match pred {
            Prediction::Classes { proba, classes } => (proba, classes.clone()),
            Prediction::Values(_) => (&[], vec![]),
        };
        let k = classes.len().max(1);
        let yhat = pred.argmax();
        let mut cm = vec![vec![0u64; k]; k];
        for (&t, &p) in y.iter().zip(&yhat) {
            if (t as usize) < k {
                cm[t as usize][p as usize] += 1;
            }
        }
        // Probabilities clipped like scikit-learn (eps of float64... of f32 here).
        let eps = 1e-7f64;
        let log_loss_sum = y
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let p = proba.get(i * k + t as usize).copied().unwrap_or(0.0) as f64;
                -(p.clamp(eps, 1.0 - eps)).ln()
            })
            .sum::<f64>();
        let bins = ScoreBins::of(y, proba, if proba.is_empty() { 0 } else { k });
        Tally::Classes {
            known: classes.len(),
            classes,
            confusion: cm,
            log_loss_sum,
            rows: y.len(),
            bins,
        }
    }

    /// The tally of a classifier's predictions against true labels, some of
    /// which the model may never have seen: those get their own rows (and
    /// columns) after the model's classes, in sorted order; the model never
    /// predicts them, and their log loss is that of the clipped probability 0.
    pub fn classification_labels(labels: &[String], pred: &Prediction) -> Tally {
        let model: Vec<String> = match pred {
            Prediction::Classes { classes, .. } => classes.clone(),
            Prediction::Values(_) => vec![],
        };
        let mut unseen: Vec<&str> = labels
            .iter()
            .map(String::as_str)
            .filter(|l| !model.iter().any(|c| c == l))
            .collect();
        unseen.sort_unstable();
        unseen.dedup();
        let mut all = model.clone();
        all.extend(unseen.iter().map(|s| s.to_string()));
        let index: std::collections::HashMap<&str, u32> = all
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as u32))
            .collect();
        let y: Vec<u32> = labels.iter().map(|l| index[l.as_str()]).collect();
        let mut t = Tally::classification(&y, pred);
        if let Tally::Classes {
            classes,
            confusion,
            known,
            ..
        } = &mut t
        {
            let k = all.len();
            let mut cm = vec![vec![0u64; k]; k];
            let yhat = pred.argmax();
            for (&t, &p) in y.iter().zip(&yhat) {
                cm[t as usize][p as usize] += 1;
            }
            *confusion = cm;
            *known = model.len();
            *classes = all;
        }
        t
    }

    /// The tally of a regressor's predictions.
    pub fn regression(y: &[f64], pred: &[f64]) -> Tally {
        let n = y.len().max(1) as f64;
        let mean = y.iter().sum::<f64>() / n;
        Tally::Values {
            rows: y.len(),
            sse: y.iter().zip(pred).map(|(a, b)| (a - b) * (a - b)).sum(),
            sae: y.iter().zip(pred).map(|(a, b)| (a - b).abs()).sum(),
            mean,
            m2: y.iter().map(|a| (a - mean) * (a - mean)).sum(),
            sample: Sample::of(y, pred),
        }
    }

    /// Add the rows of `o` (a tally of the same model).
    pub fn merge(&mut self, o: &Tally) -> Result<(), String> {
        if let (
            Tally::Classes { classes, known, .. },
            Tally::Classes {
                classes: c2,
                known: k2,
                ..
            },
        ) = (&*self, o)
            && classes != c2
            && known == k2
            && classes[..*known] == c2[..*k2]
        {
            // Each saw other unseen classes: both onto the union.
            let mut union: Vec<String> = classes[*known..]
                .iter()
                .chain(&c2[*k2..])
                .cloned()
                .collect();
            union.sort_unstable();
            union.dedup();
            let mut all = classes[..*known].to_vec();
            all.extend(union);
            let a = self.widened(&all);
            let b = o.widened(&all);
            *self = a;
            return self.merge(&b);
        }
        match (self, o) {
            (
                Tally::Classes {
                    classes,
                    confusion,
                    log_loss_sum,
                    rows,
                    bins,
                    ..
                },
                Tally::Classes {
                    classes: c2,
                    confusion: m2,
                    log_loss_sum: l2,
                    rows: r2,
                    bins: b2,
                    ..
                },
            ) if classes == c2 => {
                for (a, b) in confusion.iter_mut().zip(m2) {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                }
                *log_loss_sum += l2;
                *rows += r2;
                bins.merge(b2);
                Ok(())
            }
            (
                Tally::Values {
                    rows,
                    sse,
                    sae,
                    mean,
                    m2,
                    sample,
                },
                Tally::Values {
                    rows: nb,
                    sse: sse_b,
                    sae: sae_b,
                    mean: mean_b,
                    m2: m2_b,
                    sample: sample_b,
                },
            ) => {
                let (na, nb) = (*rows as f64, *nb as f64);
                let n = na + nb;
                if n > 0.0 {
                    let delta = mean_b - *mean;
                    *m2 += m2_b + delta * delta * na * nb / n;
                    *mean += delta * nb / n;
                }
                *rows += nb as usize;
                *sse += sse_b;
                *sae += sae_b;
                sample.merge(sample_b);
                Ok(())
            }
            _ => Err("cannot add up scores of different kinds or classes".into()),
        }
    }

    /// This classification tally over `all` classes (a superset in which its
    /// own keep their order).
    fn widened(&self, all: &[String]) -> Tally {
        let Tally::Classes {
            classes,
            confusion,
            log_loss_sum,
            rows,
            known,
            bins,
        } = self
        else {
            return self.clone();
        };
        let at: Vec<usize> = classes
            .iter()
            .map(|c| all.iter().position(|a| a == c).unwrap_or(0))
            .collect();
        let k = all.len();
        let mut cm = vec![vec![0u64; k]; k];
        for (i, row) in confusion.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                cm[at[i]][at[j]] += v;
            }
        }
        Tally::Classes {
            classes: all.to_vec(),
            confusion: cm,
            log_loss_sum: *log_loss_sum,
            rows: *rows,
            known: *known,
            // Over the model's classes, which widening leaves as they are.
            bins: bins.clone(),
        }
    }

    pub fn scores(&self) -> Scores {
        match self {
            Tally::Classes {
                classes,
                confusion: cm,
                log_loss_sum,
                rows: n,
                bins,
                known,
            } => {
                let k = cm.len();
                let correct: u64 = (0..k).map(|i| cm[i][i]).sum();
                let mut rows = Vec::with_capacity(k);
                for (c, name) in classes.iter().enumerate() {
                    let tp = cm[c][c] as f64;
                    let support: u64 = cm[c].iter().sum();
                    let predicted: u64 = (0..k).map(|r| cm[r][c]).sum();
                    let precision = ratio(tp, predicted as f64);
                    let recall = ratio(tp, support as f64);
                    rows.push(ClassRow {
                        class: name.clone(),
                        precision,
                        recall,
                        f1: ratio(2.0 * precision * recall, precision + recall),
                        support: support as usize,
                    });
                }
                let avg = |weighted: bool| {
                    let total: f64 = rows.iter().map(|r| r.support as f64).sum();
                    let w = |r: &ClassRow| {
                        if weighted {
                            ratio(r.support as f64, total)
                        } else {
                            1.0 / rows.len().max(1) as f64
                        }
                    };
                    Averages {
                        precision: rows.iter().map(|r| w(r) * r.precision).sum(),
                        recall: rows.iter().map(|r| w(r) * r.recall).sum(),
                        f1: rows.iter().map(|r| w(r) * r.f1).sum(),
                    }
                };
                Scores {
                    rows: *n,
                    accuracy: Some(ratio(correct as f64, *n as f64)),
                    macro_avg: Some(avg(false)),
                    weighted_avg: Some(avg(true)),
                    per_class: Some(rows),
                    confusion_matrix: Some(cm.clone()),
                    log_loss: Some(log_loss_sum / (*n).max(1) as f64),
                    curves: Some(bins.curves(classes)).filter(|c| !c.is_empty()),
                    unseen_classes: classes.get(*known..).unwrap_or_default().to_vec(),
                    ..Scores::default()
                }
            }
            Tally::Values {
                rows,
                sse,
                sae,
                m2,
                sample,
                ..
            } => {
                let n = (*rows).max(1) as f64;
                Scores {
                    rows: *rows,
                    rmse: Some((sse / n).sqrt()),
                    mae: Some(sae / n),
                    r2: Some(if *m2 > 0.0 { 1.0 - sse / m2 } else { 0.0 }),
                    sample: Some(sample.pairs()),
                    ..Scores::default()
                }
            }
        }
    }
}

/// Scores of a classifier. `y` holds class indices into the prediction's classes.
pub fn classification(y: &[u32], pred: &Prediction) -> Scores {
    if !matches!(pred, Prediction::Classes { .. }) {
        return Scores::default();
    }
    Tally::classification(y, pred).scores()
}

pub fn regression(y: &[f64], pred: &[f64]) -> Scores {
    Tally::regression(y, pred).scores()
}

/// The text scikit-learn's `classification_report(digits=4)` prints.
pub fn classification_report(s: &Scores) -> String {
    let Some(rows) = &s.per_class else {
        return String::new();
    };
    let width = rows
        .iter()
        .map(|r| r.class.chars().count())
        .chain(["weighted avg".len()])
        .max()
        .unwrap_or(12);
    let mut out = format!(
        "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n\n",
        "", "precision", "recall", "f1-score", "support"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>width$}  {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
            r.class, r.precision, r.recall, r.f1, r.support
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{:>width$}  {:>9} {:>9} {:>9.4} {:>9}\n",
        "accuracy",
        "",
        "",
        s.accuracy.unwrap_or(0.0),
        s.rows
    ));
    for (name, a) in [
        ("macro avg", &s.macro_avg),
        ("weighted avg", &s.weighted_avg),
    ] {
        if let Some(a) = a {
            out.push_str(&format!(
                "{:>width$}  {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
                name, a.precision, a.recall, a.f1, s.rows
            ));
        }
    }
    out
}

/// The confusion matrix as a small table, true classes down, predicted across.
pub fn confusion_table(s: &Scores, classes: &[String]) -> String {
    let Some(cm) = &s.confusion_matrix else {
        return String::new();
    };
    // With classes the model never saw, the matrix is wider than its classes.
    let named: Vec<String>;
    let classes = match &s.per_class {
        Some(rows) if rows.len() == cm.len() && classes.len() != cm.len() => {
            named = rows.iter().map(|r| r.class.clone()).collect();
            &named[..]
        }
        _ => classes,
    };
    let w = cm
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .chain(classes.iter().map(|c| c.len()))
        .max()
        .unwrap_or(1)
        + 1;
    let mut out = format!("{:>w$} |", "true\\pred");
    for c in classes {
        out.push_str(&format!("{c:>w$}"));
    }
    out.push('\n');
    for (c, row) in classes.iter().zip(cm) {
        out.push_str(&format!("{c:>9} |"));
        for v in row {
            out.push_str(&format!("{v:>w$}"));
        }
        out.push('\n');
    }
    out
}

/// The scores of a cross-validation: each metric averaged over the folds (per
/// class rows too, when every fold saw the same classes; supports and the
/// confusion matrix are summed, so every row counts once), and the standard
/// deviation over the folds of each scalar metric, by metric name.
pub fn mean_over_folds(folds: &[Scores]) -> (Scores, std::collections::BTreeMap<String, f64>) {
    let mut std = std::collections::BTreeMap::new();
    let n = folds.len();
    if n == 0 {
        return (Scores::default(), std);
    }
    let stats = |v: Vec<f64>| -> (f64, f64) {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
        (m, var.sqrt())
    };
    // The mean of one optional metric, when every fold has it.
    let mut scalar = |name: &str, get: &dyn Fn(&Scores) -> Option<f64>| -> Option<f64> {
        let v: Option<Vec<f64>> = folds.iter().map(get).collect();
        let (m, s) = stats(v?);
        std.insert(name.to_string(), s);
        Some(m)
    };
    let accuracy = scalar("accuracy", &|s| s.accuracy);
    let log_loss = scalar("log_loss", &|s| s.log_loss);
    let rmse = scalar("rmse", &|s| s.rmse);
    let mae = scalar("mae", &|s| s.mae);
    let r2 = scalar("r2", &|s| s.r2);
    let mut avg = |which: &str, get: &dyn Fn(&Scores) -> Option<&Averages>| {
        let v: Option<Vec<&Averages>> = folds.iter().map(get).collect();
        let v = v?;
        let mut field = |f: &str, x: &dyn Fn(&Averages) -> f64| {
            let (m, s) = stats(v.iter().map(|a| x(a)).collect());
            if which == "macro" {
                std.insert(f.to_string(), s);
            }
            m
        };
        Some(Averages {
            precision: field("precision", &|a| a.precision),
            recall: field("recall", &|a| a.recall),
            f1: field("f1", &|a| a.f1),
        })
    };
    let macro_avg = avg("macro", &|s| s.macro_avg.as_ref());
    let weighted_avg = avg("weighted", &|s| s.weighted_avg.as_ref());
    let same_classes = |a: &[ClassRow], b: &[ClassRow]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.class == y.class)
    };
    let per_class = match folds[0].per_class.as_deref() {
        Some(first)
            if folds.iter().all(|f| {
                f.per_class
                    .as_deref()
                    .is_some_and(|rows| same_classes(rows, first))
            }) =>
        {
            let rows = |c: usize| {
                folds
                    .iter()
                    .filter_map(move |f| f.per_class.as_ref().map(|r| &r[c]))
            };
            Some(
                first
                    .iter()
                    .enumerate()
                    .map(|(c, r)| ClassRow {
                        class: r.class.clone(),
                        precision: rows(c).map(|r| r.precision).sum::<f64>() / n as f64,
                        recall: rows(c).map(|r| r.recall).sum::<f64>() / n as f64,
                        f1: rows(c).map(|r| r.f1).sum::<f64>() / n as f64,
                        support: rows(c).map(|r| r.support).sum(),
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    let confusion_matrix = match folds[0].confusion_matrix.as_ref() {
        Some(first)
            if folds.iter().all(|f| {
                f.confusion_matrix.as_ref().is_some_and(|m| {
                    m.len() == first.len() && m.iter().zip(first).all(|(a, b)| a.len() == b.len())
                })
            }) =>
        {
            let mut sum = first.clone();
            for f in &folds[1..] {
                for (row, add) in sum.iter_mut().zip(f.confusion_matrix.iter().flatten()) {
                    for (x, y) in row.iter_mut().zip(add) {
                        *x += y;
                    }
                }
            }
            Some(sum)
        }
        _ => None,
    };
    (
        Scores {
            rows: folds.iter().map(|f| f.rows).sum(),
            accuracy,
            per_class,
            macro_avg,
            weighted_avg,
            confusion_matrix,
            log_loss,
            rmse,
            mae,
            r2,
            // Each fold keeps its own curves and sample; the mean has none.
            curves: None,
            sample: None,
            unseen_classes: {
                let mut u: Vec<String> = folds
                    .iter()
                    .flat_map(|f| f.unseen_classes.iter().cloned())
                    .collect();
                u.sort_unstable();
                u.dedup();
                u
            },
        },
        std,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(rows: &[[f32; 3]]) -> Prediction {
        Prediction::Classes {
            proba: rows.iter().flatten().copied().collect(),
            classes: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    #[test]
    fn fold_means_average_metrics_and_sum_counts() {
        let a = classification(
            &[0, 1, 2, 2],
            &pred(&[
                [0.9, 0.05, 0.05],
                [0.1, 0.8, 0.1],
                [0.0, 0.1, 0.9],
                [0.6, 0.2, 0.2],
            ]),
        );
        let b = classification(&[0, 1], &pred(&[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]));
        // a: 3 of 4 right; b: 2 of 2.
        let (m, std) = mean_over_folds(&[a.clone(), b.clone()]);
        assert!((m.accuracy.unwrap() - 0.875).abs() < 1e-12);
        assert!((std["accuracy"] - 0.125).abs() < 1e-12);
        assert_eq!(m.rows, 6);
        // Every row counted once in the summed confusion matrix.
        let cm = m.confusion_matrix.unwrap();
        assert_eq!(cm.iter().flatten().sum::<u64>(), 6);
        assert_eq!(cm[2], vec![1, 0, 1]);
        let macro_f1 = (a.macro_avg.unwrap().f1 + b.macro_avg.unwrap().f1) / 2.0;
        assert!((m.macro_avg.unwrap().f1 - macro_f1).abs() < 1e-12);
        let r = regression(&[1.0, 2.0], &[1.0, 3.0]);
        let (m, std) = mean_over_folds(&[r.clone(), r]);
        assert_eq!(m.rmse, r_rmse());
        assert_eq!(std["rmse"], 0.0);
        assert!(m.accuracy.is_none() && !std.contains_key("accuracy"));
    }

    #[test]
    fn tallies_of_parts_add_up_to_the_scores_of_the_whole() {
        let y = [0u32, 1, 2, 2, 1];
        let rows = [
            [0.9, 0.05, 0.05],
            [0.1, 0.2, 0.7],
            [0.0, 0.1, 0.9],
            [0.2, 0.2, 0.6],
            [0.1, 0.8, 0.1],
        ];
        let whole = classification(&y, &pred(&rows));
        let mut t = Tally::classification(&y[..2], &pred(&rows[..2]));
        t.merge(&Tally::classification(&y[2..], &pred(&rows[2..])))
            .unwrap();
        let parts = t.scores();
        assert_eq!(parts.confusion_matrix, whole.confusion_matrix);
        assert_eq!(parts.accuracy, whole.accuracy);
        assert_eq!(parts.per_class, whole.per_class);
        assert!((parts.log_loss.unwrap() - whole.log_loss.unwrap()).abs() < 1e-12);

        let y = [3.0, -1.0, 2.5, 7.0, 0.5, 4.0];
        let p = [2.0, 0.0, 2.0, 6.0, 1.5, 4.5];
        let whole = regression(&y, &p);
        let mut t = Tally::regression(&y[..1], &p[..1]);
        for (a, b) in [(1, 4), (4, 6)] {
            t.merge(&Tally::regression(&y[a..b], &p[a..b])).unwrap();
        }
        let parts = t.scores();
        assert_eq!(parts.rows, 6);
        for (a, b) in [
            (parts.rmse, whole.rmse),
            (parts.mae, whole.mae),
            (parts.r2, whole.r2),
        ] {
            assert!((a.unwrap() - b.unwrap()).abs() < 1e-12, "{a:?} vs {b:?}");
        }
        // Tallies of different kinds do not add up.
        assert!(
            t.merge(&Tally::classification(&[0], &pred(&rows[..1])))
                .is_err()
        );
    }

    fn r_rmse() -> Option<f64> {
        regression(&[1.0, 2.0], &[1.0, 3.0]).rmse
    }

    #[test]
    fn matches_scikit_learn_on_a_small_case() {
        // y_true = [0, 1, 2, 2, 1], y_pred = [0, 2, 2, 2, 1]
        // sklearn: precision [1, 1, 0.6667], recall [1, 0.5, 1], accuracy 0.8,
        // macro f1 0.7778 (f1 = [1, 0.6667, 0.8] → 2.4667/3 = 0.8222).
        let p = pred(&[
            [0.9, 0.05, 0.05],
            [0.1, 0.2, 0.7],
            [0.0, 0.1, 0.9],
            [0.2, 0.2, 0.6],
            [0.1, 0.8, 0.1],
        ]);
        let s = classification(&[0, 1, 2, 2, 1], &p);
        assert!((s.accuracy.unwrap() - 0.8).abs() < 1e-12);
        let r = s.per_class.as_ref().unwrap();
        assert!((r[2].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r[1].recall - 0.5).abs() < 1e-12);
        let m = s.macro_avg.as_ref().unwrap();
        assert!((m.f1 - (1.0 + 2.0 / 3.0 + 0.8) / 3.0).abs() < 1e-12);
        assert_eq!(s.confusion_matrix.as_ref().unwrap()[1], vec![0, 1, 1]);
        let text = classification_report(&s);
        // Column for column what scikit-learn prints (width 12 = len("weighted avg")).
        assert!(
            text.contains("\n    accuracy                         0.8000         5\n"),
            "{text}"
        );
        assert!(
            text.contains("\n           c     0.6667    1.0000    0.8000         2\n"),
            "{text}"
        );
        assert!(
            text.starts_with("              precision    recall  f1-score   support\n\n"),
            "{text}"
        );
    }

    #[test]
    fn regression_scores() {
        let s = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert!((s.rmse.unwrap() - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((s.mae.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.r2.unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_class_never_seen_in_training_is_scored_like_scikit_learn() {
        // The model knows a and b; the data also has c (twice), never predicted.
        let pred = Prediction::Classes {
            proba: vec![0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7],
            classes: vec!["a".into(), "b".into()],
        };
        let labels: Vec<String> = ["a", "b", "c", "c"].iter().map(|s| s.to_string()).collect();
        let s = Tally::classification_labels(&labels, &pred).scores();
        assert_eq!(s.unseen_classes, vec!["c".to_string()]);
        assert_eq!(s.accuracy, Some(0.5));
        // sklearn: confusion_matrix(["a","b","c","c"], ["a","b","a","b"])
        assert_eq!(
            s.confusion_matrix,
            Some(vec![vec![1, 0, 0], vec![0, 1, 0], vec![1, 1, 0]])
        );
        let rows = s.per_class.as_ref().unwrap();
        assert_eq!(rows[2].class, "c");
        assert_eq!((rows[2].recall, rows[2].support), (0.0, 2));
        // precision of a: 1 of the 2 rows predicted a.
        assert_eq!(rows[0].precision, 0.5);
        // Partitions that saw different unseen classes add up over their union.
        let mut t = Tally::classification_labels(&labels[..2], &pred);
        let p2 = Prediction::Classes {
            proba: vec![0.6, 0.4, 0.3, 0.7],
            classes: vec!["a".into(), "b".into()],
        };
        t.merge(&Tally::classification_labels(&labels[2..], &p2))
            .unwrap();
        let m = t.scores();
        assert_eq!(m.confusion_matrix, s.confusion_matrix);
        assert_eq!(m.unseen_classes, s.unseen_classes);
        let table = confusion_table(&m, &["a".into(), "b".into()]);
        assert_eq!(table.lines().count(), 4, "{table}");
    }
}

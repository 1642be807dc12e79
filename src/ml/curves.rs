//! What an evaluation keeps for its pictures, in bounded memory and mergeable
//! partition by partition like the rest of a [`super::metrics::Tally`]:
//! per class, histograms of the predicted probability over [`BINS`] equal bins
//! (all rows, and rows of that class), from which one-vs-rest ROC and
//! precision-recall curves are drawn at the bins' thresholds; for regressors, a
//! uniform sample of at most [`SAMPLE`] (actual, predicted) pairs: the pairs of
//! smallest hash, so the sample of a merge is the sample of the whole whatever
//! the partitioning.
//!
//! In: class indices and probabilities, or values and predictions. Out:
//! [`ScoreBins`] / [`Sample`], and curves ([`ClassCurve`]). Must not: grow
//! with the rows (`classes × BINS` counts, `SAMPLE` pairs), or depend on the
//! order partitions are merged in.

use serde::{Deserialize, Serialize};

/// Probability bins of the curves: thresholds at 0, 1/BINS, ..., 1.
pub const BINS: usize = 100;
/// Pairs kept for a regressor's predicted-vs-actual and residual plots.
pub const SAMPLE: usize = 500;

/// Per class `c`: `all[c][b]` rows whose probability of `c` fell in bin `b`;
/// `pos[c][b]` those of them whose true class is `c`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreBins {
    pub all: Vec<Vec<u64>>,
    pub pos: Vec<Vec<u64>>,
}

fn bin(p: f32) -> usize {
    let p = if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((p * BINS as f32) as usize).min(BINS - 1)
}

impl ScoreBins {
    /// The bins of `rows` predictions over `k` classes (`proba` row-major).
    pub fn of(y: &[u32], proba: &[f32], k: usize) -> ScoreBins {
        let mut s = ScoreBins {
            all: vec![vec![0; BINS]; k],
            pos: vec![vec![0; BINS]; k],
        };
        if k == 0 {
            return s;
        }
        for (row, &t) in proba.chunks(k).zip(y) {
            for (c, &p) in row.iter().enumerate() {
                let b = bin(p);
                s.all[c][b] += 1;
                if t as usize == c {
                    s.pos[c][b] += 1;
                }
            }
        }
        s
    }

    pub fn merge(&mut self, o: &ScoreBins) {
        if self.all.is_empty() {
            *self = o.clone();
            return;
        }
        for (a, b) in self.all.iter_mut().zip(&o.all) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        for (a, b) in self.pos.iter_mut().zip(&o.pos) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }

    /// One-vs-rest curves, one per class that has both positives and negatives.
    pub fn curves(&self, classes: &[String]) -> Vec<ClassCurve> {
        classes
            .iter()
            .zip(self.all.iter().zip(&self.pos))
            .filter_map(|(name, (all, pos))| curve(name, all, pos))
            .collect()
    }
}

/// A one-vs-rest ROC and precision-recall curve of one class. Points run from
/// the highest threshold down (the first is (0, 0) on the ROC); `recall` is
/// `tpr`. Points where nothing changes are dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassCurve {
    pub class: String,
    /// Rows of this class, and of the others.
    pub positives: u64,
    pub negatives: u64,
    /// Area under the ROC curve (trapezoids between the points).
    pub auc: f64,
    /// scikit-learn's average precision: Σ (Rₙ − Rₙ₋₁) Pₙ over the points.
    pub average_precision: f64,
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub precision: Vec<f64>,
}

fn curve(class: &str, all: &[u64], pos: &[u64]) -> Option<ClassCurve> {
    let p: u64 = pos.iter().sum();
    let n: u64 = all.iter().sum::<u64>().saturating_sub(p);
    if p == 0 || n == 0 {
        return None;
    }
    let (mut fpr, mut tpr, mut precision) = (vec![0.0], vec![0.0], vec![1.0]);
    let (mut tp, mut fp) = (0u64, 0u64);
    for b in (0..all.len()).rev() {
        let here_pos = pos[b];
        let here_neg = all[b].saturating_sub(pos[b]);
        if here_pos == 0 && here_neg == 0 {
            continue;
        }
        tp += here_pos;
        fp += here_neg;
        fpr.push(fp as f64 / n as f64);
        tpr.push(tp as f64 / p as f64);
        precision.push(tp as f64 / (tp + fp) as f64);
    }
    let mut auc = 0.0;
    let mut ap = 0.0;
    for i in 1..fpr.len() {
        auc += (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2.0;
        ap += (tpr[i] - tpr[i - 1]) * precision[i];
    }
    Some(ClassCurve {
        class: class.to_string(),
        positives: p,
        negatives: n,
        auc,
        average_precision: ap,
        fpr,
        tpr,
        precision,
    })
}

/// At most [`SAMPLE`] `(hash, actual, predicted)`, by hash.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub points: Vec<(u64, f64, f64)>,
}

fn key(p: &(u64, f64, f64)) -> (u64, u64, u64) {
    (p.0, p.1.to_bits(), p.2.to_bits())
}

fn keep_smallest(v: &mut Vec<(u64, f64, f64)>) {
    if v.len() > SAMPLE {
        v.select_nth_unstable_by_key(SAMPLE, key);
        v.truncate(SAMPLE);
    }
    v.sort_unstable_by_key(key);
}

impl Sample {
    /// The sample of a batch, in one pass with at most [`SAMPLE`] pairs held
    /// (a max-heap of the smallest keys seen).
    pub fn of(y: &[f64], pred: &[f64]) -> Sample {
        let mut heap: std::collections::BinaryHeap<(u64, u64, u64)> =
            std::collections::BinaryHeap::with_capacity(SAMPLE + 1);
        for (&a, &p) in y.iter().zip(pred) {
            let k = (
                crate::data::rng::hash(0, &[a.to_bits(), p.to_bits()]),
                a.to_bits(),
                p.to_bits(),
            );
            if heap.len() < SAMPLE {
                heap.push(k);
            } else if heap.peek().is_some_and(|top| k < *top) {
                heap.pop();
                heap.push(k);
            }
        }
        let mut points: Vec<(u64, f64, f64)> = heap
            .into_iter()
            .map(|(h, a, p)| (h, f64::from_bits(a), f64::from_bits(p)))
            .collect();
        keep_smallest(&mut points);
        Sample { points }
    }

    pub fn merge(&mut self, o: &Sample) {
        self.points.extend_from_slice(&o.points);
        keep_smallest(&mut self.points);
    }

    /// The pairs, `[actual, predicted]`.
    pub fn pairs(&self) -> Vec<[f64; 2]> {
        self.points.iter().map(|&(_, a, p)| [a, p]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_ranking_has_auc_one_and_a_random_one_about_half() {
        let y = [0u32, 0, 1, 1];
        // Probabilities of (class 0, class 1) per row.
        let proba = [0.9f32, 0.1, 0.8, 0.2, 0.3, 0.7, 0.1, 0.9];
        let bins = ScoreBins::of(&y, &proba, 2);
        let c = bins.curves(&["a".into(), "b".into()]);
        assert_eq!(c.len(), 2);
        for cc in &c {
            assert_eq!(cc.auc, 1.0, "{cc:?}");
            assert_eq!(cc.average_precision, 1.0);
            assert_eq!((cc.positives, cc.negatives), (2, 2));
            assert_eq!(*cc.fpr.last().unwrap(), 1.0);
            assert_eq!(*cc.tpr.last().unwrap(), 1.0);
        }
        // Every row the same probability: one point after the start, AUC 0.5.
        let flat = ScoreBins::of(&y, &[0.5; 8], 2);
        let c = flat.curves(&["a".into(), "b".into()]);
        assert_eq!(c[0].auc, 0.5);
        assert_eq!(c[0].fpr, vec![0.0, 1.0]);
        assert_eq!(c[0].average_precision, 0.5);
    }

    #[test]
    fn bins_and_samples_of_parts_merge_into_those_of_the_whole() {
        let y: Vec<u32> = (0..300).map(|i| i % 3).collect();
        let proba: Vec<f32> = (0..900).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let whole = ScoreBins::of(&y, &proba, 3);
        let mut a = ScoreBins::default();
        a.merge(&ScoreBins::of(&y[..120], &proba[..360], 3));
        a.merge(&ScoreBins::of(&y[120..], &proba[360..], 3));
        assert_eq!(a, whole);

        let v: Vec<f64> = (0..2000).map(|i| i as f64 * 0.5).collect();
        let p: Vec<f64> = v.iter().map(|x| x + 1.0).collect();
        let whole = Sample::of(&v, &p);
        assert_eq!(whole.points.len(), SAMPLE);
        let mut b = Sample::of(&v[1500..], &p[1500..]);
        b.merge(&Sample::of(&v[..700], &p[..700]));
        b.merge(&Sample::of(&v[700..1500], &p[700..1500]));
        assert_eq!(b, whole, "the order and grouping of merges do not matter");
    }
}

//! Histogram decision trees and random forests (classification: gini, entropy;
//! regression: squared error).
//!
//! In: binned features ([`Binned`], `u8` codes), a target, per-row sample weights
//! (bootstrap counts, class weights) and a seeded random stream. Out: a [`Tree`]
//! of binned thresholds. Must not: depend on anything but its arguments: tree `t`
//! of a forest is a function of (data, params, seed, t), whichever task fits it.
//!
//! Each node draws `max_features` features per split as scikit-learn does
//! (features already known constant in an ancestor count as drawn but cost
//! nothing; the draw goes on past `max_features` only until one non-constant
//! feature is seen), gathers the node's codes of each once, builds a histogram of the node's rows over each feature's codes (or sorts the
//! codes when the node is small), and scans it for the best threshold.

use super::bins::Binned;
use crate::data::rng::SeededRng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Criterion {
    Gini,
    Entropy,
    SquaredError,
}

/// What a tree learns: class indices (`classes` of them) or real values.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Classes(&'a [u32], usize),
    Values(&'a [f64]),
}

impl Target<'_> {
    /// Width of a node's statistics: per-class weights, or (weight, weighted sum,
    /// weighted sum of squares).
    fn width(&self) -> usize {
        match self {
            Target::Classes(_, k) => *k,
            Target::Values(_) => 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeConfig {
    pub criterion: Criterion,
    pub max_depth: Option<u32>,
    pub min_samples_split: u32,
    pub min_samples_leaf: u32,
    /// Features drawn per split (already resolved to a count).
    pub max_features: usize,
}

/// One node: internal when `left != LEAF` (rows with `code[feature] <= bin` go
/// left), else a leaf whose values start at `right * width`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    pub bin: u8,
    pub left: u32,
    pub right: u32,
}

pub const LEAF: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// Leaf values: class probabilities (`width` = classes) or the mean (`width` 1).
    pub values: Vec<f32>,
    pub width: u32,
    /// Impurity-based feature importances of this tree, normalised to sum to 1
    /// (empty for a single leaf): `(feature, importance)`, by feature, only the
    /// features it splits on. scikit-learn's definition: each split adds
    /// `w_node·impurity(node) − w_left·impurity(left) − w_right·impurity(right)`
    /// (weights: the sample weights) to its feature.
    pub importances: Vec<(u32, f64)>,
}

impl Tree {
    /// The leaf values for row `i` of `b`.
    #[inline]
    pub fn leaf(&self, b: &Binned, i: usize) -> &[f32] {
        let mut n = 0usize;
        loop {
            let node = &self.nodes[n];
            if node.left == LEAF {
                let w = self.width as usize;
                let s = node.right as usize * w;
                return &self.values[s..s + w];
            }
            let code = b.codes[node.feature as usize * b.rows + i];
            n = if code <= node.bin {
                node.left as usize
            } else {
                node.right as usize
            };
        }
    }

    pub fn leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.left == LEAF).count()
    }

    pub fn depth(&self) -> usize {
        fn d(t: &Tree, n: usize) -> usize {
            let node = &t.nodes[n];
            if node.left == LEAF {
                0
            } else {
                1 + d(t, node.left as usize).max(d(t, node.right as usize))
            }
        }
        if self.nodes.is_empty() { 0 } else { d(self, 0) }
    }
}

/// A node's total sample weight and impurity from its statistics (gini:
/// `1 − Σ p²`; entropy: `−Σ p ln p`; squared error: the weighted variance).
fn impurity(c: Criterion, s: &[f64]) -> (f64, f64) {
    match c {
        Criterion::Gini | Criterion::Entropy => {
            let w: f64 = s.iter().sum();
            if w <= 0.0 {
                return (0.0, 0.0);
            }
            let imp = match c {
                Criterion::Gini => 1.0 - s.iter().map(|x| (x / w) * (x / w)).sum::<f64>(),
                _ => -s
                    .iter()
                    .filter(|&&x| x > 0.0)
                    .map(|&x| (x / w) * (x / w).ln())
                    .sum::<f64>(),
            };
            (w, imp)
        }
        Criterion::SquaredError => {
            let w = s[0];
            if w <= 0.0 {
                return (0.0, 0.0);
            }
            (w, (s[2] / w - (s[1] / w) * (s[1] / w)).max(0.0))
        }
    }
}

/// The weighted impurity decrease of a split (never negative).
fn decrease(c: Criterion, node: &[f64], left: &[f64], right: &[f64]) -> f64 {
    let (wn, n) = impurity(c, node);
    let (wl, l) = impurity(c, left);
    let (wr, r) = impurity(c, right);
    (wn * n - wl * l - wr * r).max(0.0)
}

/// Sparse, normalised importances from a dense per-feature sum.
fn normalised(dense: &[f64]) -> Vec<(u32, f64)> {
    let total: f64 = dense.iter().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    dense
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0.0)
        .map(|(f, v)| (f as u32, v / total))
        .collect()
}

/// A forest's importances over `features` features, as scikit-learn's
/// `feature_importances_`: the mean of the trees' normalised importances (trees
/// that are a single leaf left out), normalised again. All zeros when no tree
/// splits.
pub fn forest_importances(trees: &[Tree], features: usize) -> Vec<f64> {
    let mut sum = vec![0.0f64; features];
    let mut n = 0usize;
    for t in trees.iter().filter(|t| t.nodes.len() > 1) {
        n += 1;
        for &(f, v) in &t.importances {
            if let Some(x) = sum.get_mut(f as usize) {
                *x += v;
            }
        }
    }
    if n == 0 {
        return sum;
    }
    sum.iter_mut().for_each(|x| *x /= n as f64);
    let total: f64 = sum.iter().sum();
    if total > 0.0 {
        sum.iter_mut().for_each(|x| *x /= total);
    }
    sum
}

/// Why a decoded tree cannot be walked safely.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TreeError {
    #[error("the tree has no nodes")]
    Empty,
    #[error("the tree's leaves hold {got} values each, the model needs {want}")]
    Width { got: u32, want: u32 },
    #[error("node {node} points to node {child}: children must come after their parent and exist")]
    Child { node: usize, child: u32 },
    #[error(
        "node {node}'s children are nodes {left} and {right}: a node's two children are stored side by side, left first"
    )]
    Apart { node: usize, left: u32, right: u32 },
    #[error("node {node} splits on feature {feature}; the model has {features}")]
    Feature {
        node: usize,
        feature: u32,
        features: usize,
    },
    #[error("leaf {node} points past the tree's values")]
    Leaf { node: usize },
    #[error("leaf value {index} is not a finite number")]
    NotFinite { index: usize },
    #[error(
        "importance {index} names feature {feature} or is not a finite number; the model has {features} features"
    )]
    Importance {
        index: usize,
        feature: u32,
        features: usize,
    },
}

impl Tree {
    /// Check a tree read from a file before it is walked: [`Tree::leaf`] then
    /// cannot index out of bounds (children in range, features below
    /// `features`, leaves inside `values`) nor loop (every child comes after its
    /// parent, so a walk ends within `nodes.len()` steps). A node's two
    /// children are side by side (`right == left + 1`), as `fit_tree` stores
    /// them.
    pub fn validate(&self, features: usize, width: u32) -> Result<(), TreeError> {
        if self.nodes.is_empty() {
            return Err(TreeError::Empty);
        }
        if self.width != width || width == 0 {
            return Err(TreeError::Width {
                got: self.width,
                want: width,
            });
        }
        if let Some(index) = self.values.iter().position(|v| !v.is_finite()) {
            return Err(TreeError::NotFinite { index });
        }
        if let Some(index) = self
            .importances
            .iter()
            .position(|&(f, v)| f as usize >= features || !v.is_finite())
        {
            return Err(TreeError::Importance {
                index,
                feature: self.importances[index].0,
                features,
            });
        }
        let len = self.nodes.len();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.left == LEAF {
                let end = (n.right as usize + 1).checked_mul(width as usize);
                if end.is_none_or(|e| e > self.values.len()) {
                    return Err(TreeError::Leaf { node: i });
                }
                continue;
            }
            if n.feature as usize >= features {
                return Err(TreeError::Feature {
                    node: i,
                    feature: n.feature,
                    features,
                });
            }
            for child in [n.left, n.right] {
                if child as usize <= i || child as usize >= len {
                    return Err(TreeError::Child { node: i, child });
                }
            }
            // `fit_tree` pushes both children at once; the prediction layout
            // (`FlatForest`) keeps one index per node and relies on it.
            if n.right != n.left + 1 {
                return Err(TreeError::Apart {
                    node: i,
                    left: n.left,
                    right: n.right,
                });
            }
        }
        Ok(())
    }
}

/// Nodes at most this large are split by sorting codes instead of histograms.
const SMALL_NODE: usize = 96;
// The sort packs a position in the node below a code into one `u16`.
const _: () = assert!(SMALL_NODE <= 256);

/// Impurity proxy of a child from its statistics: larger is purer. The best split
/// maximizes the sum over both children (equivalent to minimizing the weighted
/// impurity).
#[inline]
fn proxy(c: Criterion, s: &[f64]) -> f64 {
    match c {
        Criterion::Gini => {
            let w: f64 = s.iter().sum();
            if w <= 0.0 {
                return 0.0;
            }
            s.iter().map(|x| x * x).sum::<f64>() / w
        }
        Criterion::Entropy => {
            let w: f64 = s.iter().sum();
            if w <= 0.0 {
                return 0.0;
            }
            s.iter()
                .filter(|&&x| x > 0.0)
                .map(|&x| x * (x / w).ln())
                .sum()
        }
        Criterion::SquaredError => {
            if s[0] <= 0.0 {
                return 0.0;
            }
            s[1] * s[1] / s[0]
        }
    }
}

struct Work {
    start: usize,
    end: usize,
    depth: u32,
    node: usize,
    stats: Vec<f64>,
    /// Features known constant in this node: `feats[..n_const]`.
    n_const: usize,
}

struct Best {
    gain: f64,
    feature: usize,
    bin: u8,
    left: Vec<f64>,
}

/// Per-position sample data, permuted together as nodes are partitioned.
struct Samples {
    rows: Vec<u32>,
    w: Vec<f32>,
    /// `w` as whole numbers, when the histograms count (else empty).
    wn: Vec<u32>,
    /// Class index (classification) or unused.
    cls: Vec<u32>,
    /// Value (regression) or unused.
    val: Vec<f64>,
}

impl Samples {
    #[inline]
    fn add(&self, pos: usize, s: &mut [f64], classes: bool) {
        let w = self.w[pos] as f64;
        if classes {
            s[self.cls[pos] as usize] += w;
        } else {
            let v = self.val[pos];
            s[0] += w;
            s[1] += w * v;
            s[2] += w * v * v;
        }
    }
}

/// Nodes with at most this many rows read their codes from the row-major copy
/// (when present): measured on mnist_rf, 512 cut the forest's fit wall time from
/// 10.2-12.9 s to 7.8-9.5 s (256 and 1024 were close; 4096 was worse); on this
/// machine's 2 MB L2, 1024 took ~9% less CPU than 512 for the same trees
/// (6 mnist trees, one thread, docs/benchmarks.md).
const ROW_MAJOR_NODE: usize = 1024;

/// Nodes with at least this many rows count into two pairs of histograms
/// (see [`count_in_two`]).
const TWO_HISTOGRAMS: usize = 1024;

/// Nodes with at least this many rows count no rows per code where they need
/// not (`rows_per_code` in `fit_tree`).
const UNCOUNTED_NODE: usize = 1024;

/// Count a node's rows (their `codes`, classes and whole-number weights) into
/// the class histograms: rows alternate between two pairs (`cnt`/`hist` and
/// `cnt2`/`hist2`), so two rows with the same code (most of MNIST's pixels are
/// 0) do not wait on each other's increment; the second pair is then added
/// into the first over `lo..=hi` and left clear (integer counts: the same
/// sums in any order). `fit_tree` on mnist_rf's trees: 6 % fewer
/// instructions (callgrind) and 5 % less CPU on average over 10 alternating
/// runs than one pair with the weights converted from `f32` row by row.
///
/// `CNT`: also count rows per code in `cnt`/`cnt2`; without it those are not
/// touched (`rows_per_code` in `fit_tree`).
fn count_in_two<const CNT: bool>(
    codes: &[u8],
    cls: &[u32],
    wn: &[u32],
    width: usize,
    (lo, hi): (u8, u8),
    [cnt, cnt2]: [&mut [u32]; 2],
    [hist, hist2]: [&mut [u32]; 2],
) {
    let pairs = codes.chunks_exact(2).zip(cls.chunks_exact(2));
    for ((code, c), w) in pairs.zip(wn.chunks_exact(2)) {
        let (a, b) = (code[0] as usize, code[1] as usize);
        if CNT {
            cnt[a] += 1;
            cnt2[b] += 1;
        }
        hist[a * width + c[0] as usize] += w[0];
        hist2[b * width + c[1] as usize] += w[1];
    }
    if codes.len() % 2 == 1 {
        let k = codes.len() - 1;
        let a = codes[k] as usize;
        if CNT {
            cnt[a] += 1;
        }
        hist[a * width + cls[k] as usize] += wn[k];
    }
    for code in lo as usize..=hi as usize {
        if CNT {
            if cnt2[code] == 0 {
                continue;
            }
            cnt[code] += cnt2[code];
            cnt2[code] = 0;
        }
        let at = code * width..(code + 1) * width;
        for (x, y) in hist[at.clone()].iter_mut().zip(&mut hist2[at]) {
            *x += *y;
            *y = 0;
        }
    }
}

type CountInTwo = fn(&[u8], &[u32], &[u32], usize, (u8, u8), [&mut [u32]; 2], [&mut [u32]; 2]);
type CountInOne = fn(&[u8], &[u32], &[u32], usize, &mut [u32], &mut [u32]);

/// [`count_in_two`] with one pair of histograms.
fn count_in_one<const CNT: bool>(
    codes: &[u8],
    cls: &[u32],
    wn: &[u32],
    width: usize,
    cnt: &mut [u32],
    hist: &mut [u32],
) {
    for ((&code, &wt), &c) in codes.iter().zip(wn).zip(cls) {
        if CNT {
            cnt[code as usize] += 1;
        }
        hist[code as usize * width + c as usize] += wt;
    }
}

/// Fit one tree. `weights[r]` is row `r`'s sample weight; rows of weight 0 are not
/// in the sample.
pub fn fit_tree(
    b: &Binned,
    target: Target,
    weights: &[f32],
    cfg: &TreeConfig,
    rng: &mut SeededRng,
) -> Tree {
    let width = target.width();
    let classes = matches!(target, Target::Classes(..));
    let mut sm = Samples {
        rows: Vec::new(),
        w: Vec::new(),
        wn: Vec::new(),
        cls: Vec::new(),
        val: Vec::new(),
    };
    for (r, &w) in weights.iter().enumerate().take(b.rows) {
        if w > 0.0 {
            sm.rows.push(r as u32);
            sm.w.push(w);
            match target {
                Target::Classes(y, _) => sm.cls.push(y[r]),
                Target::Values(y) => sm.val.push(y[r]),
            }
        }
    }
    let n = sm.rows.len();
    let mut root = vec![0.0; width];
    for p in 0..n {
        sm.add(p, &mut root, classes);
    }
    let mut tree = Tree {
        nodes: vec![Node {
            feature: 0,
            bin: 0,
            left: LEAF,
            right: 0,
        }],
        values: Vec::new(),
        width: if classes { width as u32 } else { 1 },
        importances: Vec::new(),
    };
    let mut importance = vec![0.0f64; b.cols];
    let d = b.cols;
    let mtry = cfg.max_features.clamp(1, d.max(1));
    let mut feats: Vec<u32> = (0..d as u32).collect();
    let mut const_feats: Vec<u32> = feats.clone();
    let mut codes: Vec<u8> = Vec::new();
    let mut best_codes: Vec<u8> = Vec::new();
    // Class histograms count in integers when every weight is a whole number
    // (bootstrap counts, no class weights) and their total is below
    // COUNTS_LIMIT: sums of whole numbers are exact in f64 as well, so the
    // statistics read from the counts are the same bits and the trees the
    // same; the counts take half the cache and an integer add, and gini's
    // sums of squares are summed as integers (in any order, vectorized).
    let counts = classes
        && sm.w.iter().all(|w| w.fract() == 0.0)
        && sm.w.iter().map(|&w| f64::from(w)).sum::<f64>() < COUNTS_LIMIT;
    if counts {
        sm.wn.extend(sm.w.iter().map(|&w| w as u32));
    }
    // Gini on counts scans in integers, with one copy per common class count.
    let gini_counts = counts && cfg.criterion == Criterion::Gini;
    let mut hist = vec![0.0f64; if counts { 0 } else { 256 * width }];
    let mut hist_n = vec![0u32; if counts { 256 * width } else { 0 }];
    let mut cnt = vec![0u32; 256];
    // A second pair of counting histograms for large nodes (`count_in_two`).
    let mut hist_n2 = vec![0u32; if counts { 256 * width } else { 0 }];
    let mut cnt2 = vec![0u32; 256];
    let mut sorted: Vec<u16> = Vec::new();
    let mut tmp_rows = Vec::new();
    let mut tmp_w = Vec::new();
    let mut tmp_wn = Vec::new();
    let mut tmp_c = Vec::new();
    let mut tmp_v = Vec::new();
    let mut left = vec![0.0f64; width];
    // Counts fit `u32` (their total is below COUNTS_LIMIT); their squares
    // are summed in `u64`.
    let mut left_n = vec![0u32; if counts { width } else { 0 }];
    let mut tot_n: Vec<u32> = Vec::new();
    let mut stack = vec![Work {
        start: 0,
        end: n,
        depth: 0,
        node: 0,
        stats: root,
        n_const: 0,
    }];
    let min_leaf = cfg.min_samples_leaf.max(1) as usize;
    while let Some(wk) = stack.pop() {
        let count = wk.end - wk.start;
        if counts {
            tot_n.clear();
            tot_n.extend(wk.stats.iter().map(|&x| x as u32));
        }
        let pure = if classes {
            let tot: f64 = wk.stats.iter().sum();
            wk.stats.iter().any(|&s| s >= tot)
        } else {
            // Zero variance (relative to the values' scale).
            let (w, s, q) = (wk.stats[0], wk.stats[1], wk.stats[2]);
            let var = q / w - (s / w) * (s / w);
            var <= 1e-12 * (q / w).max(1e-300)
        };
        let stop = pure
            || count < (cfg.min_samples_split.max(2) as usize)
            || count < 2 * min_leaf
            || cfg.max_depth.is_some_and(|m| wk.depth >= m);
        let mut best: Option<Best> = None;
        // Rows per code are counted only where needed: the float histograms
        // and every criterion but gini's scan on counts find empty codes by
        // them, `min_samples_leaf` above 1 checks the rows on each side of a
        // threshold by them, and small nodes' scans meet mostly empty codes,
        // where one count is cheaper to test than a row of class counts.
        // Elsewhere the histograms take one increment a row, not two (the
        // row counts' increments of a frequent code wait on each other).
        let rows_per_code = !(gini_counts && min_leaf == 1) || count < UNCOUNTED_NODE;
        let n_known = wk.n_const;
        let mut n_total = n_known;
        if !stop {
            // scikit-learn's draw: `mtry` features are visited (known constants
            // included, they cost nothing), and the search goes on past `mtry`
            // only until one non-constant feature has been seen. Features found
            // constant here stay constant in every descendant, so they move to
            // the known prefix that children never draw again.
            let mut n_drawn_const = 0usize;
            let mut n_found_const = 0usize;
            let mut f_i = d;
            let mut visited = 0usize;
            while f_i > n_total && (visited < mtry || visited <= n_found_const + n_drawn_const) {
                visited += 1;
                let mut f_j = n_drawn_const + rng.below(f_i - n_found_const - n_drawn_const);
                if f_j < n_known {
                    feats.swap(n_drawn_const, f_j);
                    n_drawn_const += 1;
                    continue;
                }
                f_j += n_found_const;
                let f = feats[f_j] as usize;
                let col = b.column(f);
                // One gather of the node's codes, then everything runs on them.
                codes.clear();
                let node_rows = &sm.rows[wk.start..wk.end];
                if count <= ROW_MAJOR_NODE && !b.row_major.is_empty() {
                    let rm = &b.row_major[f..];
                    codes.extend(node_rows.iter().map(|&r| rm[r as usize * d]));
                } else {
                    codes.extend(node_rows.iter().map(|&r| col[r as usize]));
                }
                let (lo, hi) = codes
                    .iter()
                    .fold((u8::MAX, 0u8), |(lo, hi), &c| (lo.min(c), hi.max(c)));
                if lo == hi {
                    feats.swap(f_j, n_total);
                    n_found_const += 1;
                    n_total += 1;
                    continue;
                }
                f_i -= 1;
                feats.swap(f_i, f_j);
                if count <= SMALL_NODE {
                    // Sort the node's positions by code: one `u16` each, the
                    // code above the position in the node (below 256), so
                    // equal codes keep their positions' order.
                    sorted.clear();
                    sorted.extend(
                        codes
                            .iter()
                            .enumerate()
                            .map(|(k, &c)| u16::from(c) << 8 | k as u16),
                    );
                    sorted.sort_unstable();
                    if gini_counts {
                        left_n.iter_mut().for_each(|x| *x = 0);
                    } else {
                        left.iter_mut().for_each(|x| *x = 0.0);
                    }
                    for k in 0..count - 1 {
                        let (code, p) = (
                            (sorted[k] >> 8) as u8,
                            wk.start + (sorted[k] & 0xff) as usize,
                        );
                        if gini_counts {
                            left_n[sm.cls[p] as usize] += sm.wn[p];
                        } else {
                            sm.add(p, &mut left, classes);
                        }
                        if (sorted[k + 1] >> 8) as u8 == code {
                            continue;
                        }
                        let nl = k + 1;
                        if nl < min_leaf || count - nl < min_leaf {
                            continue;
                        }
                        if gini_counts {
                            consider_gini_counts(&tot_n, &left_n, f, code, &mut best);
                        } else {
                            consider(cfg.criterion, &wk.stats, &left, f, code, &mut best);
                        }
                    }
                } else {
                    let node_w = &sm.w[wk.start..wk.end];
                    if counts {
                        let node_c = &sm.cls[wk.start..wk.end];
                        let node_wn = &sm.wn[wk.start..wk.end];
                        if count >= TWO_HISTOGRAMS {
                            let count_rows: CountInTwo = if rows_per_code {
                                count_in_two::<true>
                            } else {
                                count_in_two::<false>
                            };
                            let cs = [&mut cnt[..], &mut cnt2[..]];
                            let hs = [&mut hist_n[..], &mut hist_n2[..]];
                            count_rows(&codes, node_c, node_wn, width, (lo, hi), cs, hs);
                        } else {
                            let count_rows: CountInOne = if rows_per_code {
                                count_in_one::<true>
                            } else {
                                count_in_one::<false>
                            };
                            count_rows(&codes, node_c, node_wn, width, &mut cnt, &mut hist_n);
                        }
                    } else if classes {
                        let node_c = &sm.cls[wk.start..wk.end];
                        for ((&code, &wt), &c) in codes.iter().zip(node_w).zip(node_c) {
                            cnt[code as usize] += 1;
                            hist[code as usize * width + c as usize] += wt as f64;
                        }
                    } else {
                        let node_v = &sm.val[wk.start..wk.end];
                        for ((&code, &wt), &v) in codes.iter().zip(node_w).zip(node_v) {
                            cnt[code as usize] += 1;
                            let wt = wt as f64;
                            let h = &mut hist[code as usize * 3..code as usize * 3 + 3];
                            h[0] += wt;
                            h[1] += wt * v;
                            h[2] += wt * v * v;
                        }
                    }
                    left.iter_mut().for_each(|x| *x = 0.0);
                    left_n.iter_mut().for_each(|x| *x = 0);
                    if gini_counts {
                        let hist = (rows_per_code.then_some(&mut cnt[..]), &mut hist_n[..]);
                        by_class_count!(
                            width,
                            scan_gini_counts(
                                hist,
                                &tot_n,
                                &mut left_n,
                                (lo, hi),
                                (count, min_leaf),
                                f,
                                &mut best
                            )
                        );
                    } else {
                        let mut nl = 0usize;
                        // Each bin read is cleared for the next feature as it is
                        // read (empty bins are clear already), not in a pass
                        // over all of `lo..=hi` afterwards.
                        for code in lo..hi {
                            let c = cnt[code as usize] as usize;
                            if c == 0 {
                                continue;
                            }
                            cnt[code as usize] = 0;
                            nl += c;
                            let at = code as usize * width..(code as usize + 1) * width;
                            if counts {
                                for (l, x) in left_n.iter_mut().zip(&mut hist_n[at]) {
                                    *l += *x;
                                    *x = 0;
                                }
                            } else {
                                for (l, x) in left.iter_mut().zip(&mut hist[at]) {
                                    *l += *x;
                                    *x = 0.0;
                                }
                            }
                            if nl < min_leaf || count - nl < min_leaf {
                                continue;
                            }
                            if counts {
                                for (l, &x) in left.iter_mut().zip(&left_n) {
                                    *l = x as f64;
                                }
                            }
                            consider(cfg.criterion, &wk.stats, &left, f, code, &mut best);
                        }
                    }
                    // The last bin is never a threshold (all rows would go left).
                    let hi = hi as usize;
                    if rows_per_code {
                        cnt[hi] = 0;
                    }
                    if counts {
                        hist_n[hi * width..(hi + 1) * width].fill(0);
                    } else {
                        hist[hi * width..(hi + 1) * width].fill(0.0);
                    }
                }
                // Features are not drawn twice in a node: a best on `f` was
                // found just now. Its codes partition the node's rows.
                if best.as_ref().is_some_and(|b| b.feature == f) {
                    best_codes.clear();
                    best_codes.extend_from_slice(&codes);
                }
            }
            // The known prefix must be the same set for the sibling and every
            // descendant: undo the swaps among known constants, record new ones.
            feats[..n_known].copy_from_slice(&const_feats[..n_known]);
            const_feats[n_known..n_total].copy_from_slice(&feats[n_known..n_total]);
        }
        // Like scikit-learn, any valid split of an impure node is taken, even one
        // that does not lower the impurity by itself (an xor needs two levels).
        let split = best;
        let Some(bst) = split else {
            // A leaf.
            let leaf_id = (tree.values.len() / tree.width as usize) as u32;
            if classes {
                let tot: f64 = wk.stats.iter().sum();
                tree.values.extend(
                    wk.stats
                        .iter()
                        .map(|&s| (s / tot.max(f64::MIN_POSITIVE)) as f32),
                );
            } else {
                tree.values
                    .push((wk.stats[1] / wk.stats[0].max(f64::MIN_POSITIVE)) as f32);
            }
            tree.nodes[wk.node] = Node {
                feature: 0,
                bin: 0,
                left: LEAF,
                right: leaf_id,
            };
            continue;
        };
        // Stable partition of the node's positions: left rows first, by the
        // best feature's codes kept from its scan (not gathered again).
        debug_assert_eq!(best_codes.len(), count);
        tmp_rows.clear();
        tmp_w.clear();
        tmp_wn.clear();
        tmp_c.clear();
        tmp_v.clear();
        let mut write = wk.start;
        for (p, &code) in (wk.start..wk.end).zip(&best_codes) {
            let r = sm.rows[p];
            if code <= bst.bin {
                sm.rows[write] = r;
                sm.w[write] = sm.w[p];
                if counts {
                    sm.wn[write] = sm.wn[p];
                }
                if classes {
                    sm.cls[write] = sm.cls[p];
                } else {
                    sm.val[write] = sm.val[p];
                }
                write += 1;
            } else {
                tmp_rows.push(r);
                tmp_w.push(sm.w[p]);
                if counts {
                    tmp_wn.push(sm.wn[p]);
                }
                if classes {
                    tmp_c.push(sm.cls[p]);
                } else {
                    tmp_v.push(sm.val[p]);
                }
            }
        }
        let mid = write;
        sm.rows[mid..wk.end].copy_from_slice(&tmp_rows);
        sm.w[mid..wk.end].copy_from_slice(&tmp_w);
        if counts {
            sm.wn[mid..wk.end].copy_from_slice(&tmp_wn);
        }
        if classes {
            sm.cls[mid..wk.end].copy_from_slice(&tmp_c);
        } else {
            sm.val[mid..wk.end].copy_from_slice(&tmp_v);
        }
        let right_stats: Vec<f64> = wk.stats.iter().zip(&bst.left).map(|(t, l)| t - l).collect();
        importance[bst.feature] += decrease(cfg.criterion, &wk.stats, &bst.left, &right_stats);
        let li = tree.nodes.len();
        tree.nodes.push(Node {
            feature: 0,
            bin: 0,
            left: LEAF,
            right: 0,
        });
        tree.nodes.push(Node {
            feature: 0,
            bin: 0,
            left: LEAF,
            right: 0,
        });
        tree.nodes[wk.node] = Node {
            feature: bst.feature as u32,
            bin: bst.bin,
            left: li as u32,
            right: li as u32 + 1,
        };
        // Right pushed first so the left subtree is grown first (depth-first).
        stack.push(Work {
            start: mid,
            end: wk.end,
            depth: wk.depth + 1,
            node: li + 1,
            stats: right_stats,
            n_const: n_total,
        });
        stack.push(Work {
            start: wk.start,
            end: mid,
            depth: wk.depth + 1,
            node: li,
            stats: bst.left,
            n_const: n_total,
        });
    }
    tree.importances = normalised(&importance);
    tree
}

/// Call `f::<N>(args)` for `width` classes: its own copy for the common class
/// counts (2-5 and 10), else the copy for any count (`N` = 0). The calls are
/// direct, so each copy can be inlined.
macro_rules! by_class_count {
    ($width:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $width {
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            10 => $f::<10>($($arg),*),
            _ => $f::<0>($($arg),*),
        }
    };
}
use by_class_count;

/// Whole-number weights at most this large in total: each count, each
/// square of a count and each sum of squares is then below 2^52, exact both
/// in `u64` and in `f64`.
const COUNTS_LIMIT: f64 = (1u64 << 26) as f64;

/// Scan a node's class counts by code (`cnt`: rows, `hist`: `N` classes a
/// code; `N` = 0: as many as `total` has) for gini's best threshold between
/// `lo` and `hi`, clearing each code read (all but `hi`'s). `left` starts
/// clear. Without `cnt` (one row a leaf at least: every threshold leaves a
/// row on each side), empty codes are those with no class counts. One copy
/// per common class count, so the per-code loops over the classes are
/// unrolled.
fn scan_gini_counts<const N: usize>(
    (mut cnt, hist): (Option<&mut [u32]>, &mut [u32]),
    total: &[u32],
    left: &mut [u32],
    (lo, hi): (u8, u8),
    (count, min_leaf): (usize, usize),
    f: usize,
    best: &mut Option<Best>,
) {
    let width = if N == 0 { total.len() } else { N };
    let (total, left) = (&total[..width], &mut left[..width]);
    let mut nl = 0usize;
    for code in lo..hi {
        let row = &mut hist[code as usize * width..][..width];
        if let Some(cnt) = cnt.as_deref_mut() {
            let c = cnt[code as usize] as usize;
            if c == 0 {
                continue;
            }
            cnt[code as usize] = 0;
            nl += c;
        } else if row.iter().fold(0, |a, &x| a | x) == 0 {
            // An empty code: every row in the sample weighs at least 1.
            continue;
        }
        for (l, x) in left.iter_mut().zip(row) {
            *l += *x;
            *x = 0;
        }
        if cnt.is_some() && (nl < min_leaf || count - nl < min_leaf) {
            continue;
        }
        let (wl, sl, wr, sr) = gini_sums::<N>(total, left);
        keep_gini(best, (wl, sl, wr, sr), f, code, left);
    }
}

/// [`consider`] for gini on whole-number counts: the sums are exact integers,
/// so `sum of squares / weight` is the same `f64` as the float path's and the
/// same split wins.
#[inline]
fn consider_gini_counts(total: &[u32], left: &[u32], f: usize, code: u8, best: &mut Option<Best>) {
    let sums = by_class_count!(total.len(), gini_sums(total, left));
    keep_gini(best, sums, f, code, left);
}

/// [`keep`] the split of gini sums `(Σl, Σl², Σr, Σr²)`.
#[inline]
fn keep_gini(
    best: &mut Option<Best>,
    (wl, sl, wr, sr): (u64, u64, u64, u64),
    f: usize,
    code: u8,
    left: &[u32],
) {
    // Every sum is below 2^52 (COUNTS_LIMIT): exact as `i64` and as `f64`
    // (a signed conversion is one instruction, an unsigned one is not).
    let pl = if wl == 0 {
        0.0
    } else {
        sl as i64 as f64 / wl as i64 as f64
    };
    let pr = if wr == 0 {
        0.0
    } else {
        sr as i64 as f64 / wr as i64 as f64
    };
    keep(best, pl + pr, f, code, left.iter().map(|&x| f64::from(x)));
}

/// Weight and sum of squared counts on each side: `(Σl, Σl², Σr, Σr²)` with
/// `r = total − left`, over `N` classes (`N` = 0: as many as `total` has).
/// A fixed `N` lets the loop be unrolled: callers pick the copy for their
/// class count with [`by_class_count`].
#[inline]
fn gini_sums<const N: usize>(total: &[u32], left: &[u32]) -> (u64, u64, u64, u64) {
    let n = if N == 0 { total.len() } else { N };
    let (total, left) = (&total[..n], &left[..n]);
    let (mut wl, mut sl, mut wr, mut sr) = (0u64, 0u64, 0u64, 0u64);
    for (&t, &l) in total.iter().zip(left) {
        let (l, r) = (u64::from(l), u64::from(t - l));
        wl += l;
        sl += l * l;
        wr += r;
        sr += r * r;
    }
    (wl, sl, wr, sr)
}

/// Make (`gain`, `f`, `code`, `left`) the node's best split if its gain is
/// greater than the best's so far (the first of equal gains stays), reusing
/// the best's buffer.
#[inline]
fn keep(best: &mut Option<Best>, gain: f64, f: usize, code: u8, left: impl Iterator<Item = f64>) {
    match best {
        Some(b) if gain > b.gain => {
            (b.gain, b.feature, b.bin) = (gain, f, code);
            b.left.clear();
            b.left.extend(left);
        }
        Some(_) => {}
        None => {
            *best = Some(Best {
                gain,
                feature: f,
                bin: code,
                left: left.collect(),
            })
        }
    }
}

#[inline]
fn consider(
    c: Criterion,
    total: &[f64],
    left: &[f64],
    f: usize,
    code: u8,
    best: &mut Option<Best>,
) {
    let pl = proxy(c, left);
    let pr = match c {
        Criterion::SquaredError => {
            let (w, s) = (total[0] - left[0], total[1] - left[1]);
            if w <= 0.0 { 0.0 } else { s * s / w }
        }
        _ => {
            // Right statistics without allocating.
            let mut w = 0.0;
            let mut acc = 0.0;
            for (t, l) in total.iter().zip(left) {
                let x = t - l;
                w += x;
                acc += match c {
                    Criterion::Gini => x * x,
                    _ => 0.0,
                };
            }
            match c {
                Criterion::Gini => {
                    if w <= 0.0 {
                        0.0
                    } else {
                        acc / w
                    }
                }
                _ => total
                    .iter()
                    .zip(left)
                    .map(|(t, l)| t - l)
                    .filter(|&x| x > 0.0)
                    .map(|x| x * (x / w).ln())
                    .sum(),
            }
        }
    };
    keep(best, pl + pr, f, code, left.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binned(cols: Vec<Vec<u8>>) -> Binned {
        let rows = cols[0].len();
        Binned {
            rows,
            cols: cols.len(),
            codes: cols.concat(),
            row_major: Vec::new(),
        }
    }

    fn cfg(c: Criterion) -> TreeConfig {
        TreeConfig {
            criterion: c,
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: 2,
        }
    }

    #[test]
    fn learns_a_threshold_and_an_xor() {
        // y = (x0 > 1) xor (x1 > 1) on a grid.
        let mut x0 = Vec::new();
        let mut x1 = Vec::new();
        let mut y = Vec::new();
        for a in 0..4u8 {
            for c in 0..4u8 {
                for _ in 0..3 {
                    x0.push(a);
                    x1.push(c);
                    y.push(u32::from((a > 1) ^ (c > 1)));
                }
            }
        }
        let b = binned(vec![x0, x1]);
        for crit in [Criterion::Gini, Criterion::Entropy] {
            let t = fit_tree(
                &b,
                Target::Classes(&y, 2),
                &vec![1.0; y.len()],
                &cfg(crit),
                &mut SeededRng::new(1, &[]),
            );
            for (i, &yi) in y.iter().enumerate() {
                let p = t.leaf(&b, i);
                assert_eq!(p[yi as usize], 1.0, "{crit:?} row {i}");
            }
        }
    }

    #[test]
    fn regression_leaves_are_means_and_depth_is_limited() {
        let x: Vec<u8> = (0..200).map(|i| (i % 200) as u8).collect();
        let y: Vec<f64> = x.iter().map(|&v| if v < 100 { 1.0 } else { 5.0 }).collect();
        let b = binned(vec![x]);
        let mut c = cfg(Criterion::SquaredError);
        c.max_depth = Some(1);
        c.max_features = 1;
        let t = fit_tree(
            &b,
            Target::Values(&y),
            &[1.0; 200],
            &c,
            &mut SeededRng::new(1, &[]),
        );
        assert_eq!(t.depth(), 1);
        assert_eq!(t.leaf(&b, 0), &[1.0]);
        assert_eq!(t.leaf(&b, 150), &[5.0]);
    }

    #[test]
    fn min_samples_leaf_is_respected() {
        let x: Vec<u8> = (0..50).collect();
        let y: Vec<u32> = (0..50).map(|i| u32::from(i == 0)).collect();
        let b = binned(vec![x]);
        let mut c = cfg(Criterion::Gini);
        c.min_samples_leaf = 5;
        c.max_features = 1;
        let t = fit_tree(
            &b,
            Target::Classes(&y, 2),
            &[1.0; 50],
            &c,
            &mut SeededRng::new(1, &[]),
        );
        // The lone positive cannot get a leaf of its own.
        assert!(t.leaf(&b, 0)[1] < 1.0);
    }

    #[test]
    fn the_row_major_copy_gives_the_same_tree() {
        // Enough rows that nodes both above and below ROW_MAJOR_NODE are split.
        let n = 3000;
        let mut rng = SeededRng::new(7, &[]);
        let cols: Vec<Vec<u8>> = (0..6)
            .map(|_| (0..n).map(|_| (rng.next_u64() % 32) as u8).collect())
            .collect();
        let y: Vec<u32> = (0..n)
            .map(|i| u32::from(cols[0][i] + cols[1][i] / 2 > 20) + u32::from(cols[2][i] > 28))
            .collect();
        let plain = binned(cols);
        let both = plain.clone().with_row_major();
        assert_eq!(both.row_major.len(), n * 6);
        let mut c = cfg(Criterion::Gini);
        c.max_features = 3;
        let fit = |b: &Binned| {
            fit_tree(
                b,
                Target::Classes(&y, 3),
                &vec![1.0; n],
                &c,
                &mut SeededRng::new(3, &[]),
            )
        };
        assert_eq!(fit(&plain), fit(&both));
    }

    #[test]
    fn whole_number_counts_give_the_trees_of_the_float_histograms() {
        // Bootstrap counts take the integer path; the same weights halved are
        // not whole numbers and take the f64 path. Halving scales every sum by
        // a power of two, so each gain halves exactly, the same splits win, and
        // the leaves (ratios) and importances (normalised) are the same bits.
        // Each class count the gini scan has its own copy for (10) and one it
        // has not (4), with one row a leaf (nodes of 1024 rows and more then
        // count no rows per code) and with three.
        let n = 4000;
        let mut rng = SeededRng::new(21, &[]);
        let cols: Vec<Vec<u8>> = (0..8)
            .map(|_| (0..n).map(|_| (rng.next_u64() % 200) as u8).collect())
            .collect();
        let b = binned(cols.clone()).with_row_major();
        let mut w = vec![0.0f32; n];
        for _ in 0..n {
            w[rng.below(n)] += 1.0;
        }
        assert!(
            w.iter().any(|&x| x % 2.0 == 1.0),
            "some odd count, so halves are fractional"
        );
        let half: Vec<f32> = w.iter().map(|&x| x * 0.5).collect();
        for (k, min_leaf) in [(4, 1), (10, 1), (10, 3)] {
            let y: Vec<u32> = (0..n)
                .map(|i| (u32::from(cols[0][i]) / 20 + u32::from(cols[1][i] > 120)) % k)
                .collect();
            let mut c = cfg(Criterion::Gini);
            c.max_features = 3;
            c.min_samples_leaf = min_leaf;
            let fit = |w: &[f32]| {
                fit_tree(
                    &b,
                    Target::Classes(&y, k as usize),
                    w,
                    &c,
                    &mut SeededRng::new(9, &[]),
                )
            };
            let (a, h) = (fit(&w), fit(&half));
            assert!(
                a.nodes.len() > 100,
                "{k} classes: a tree deep enough to use histograms: {}",
                a.nodes.len()
            );
            assert_eq!(a, h, "{k} classes, {min_leaf} rows a leaf");
        }
    }

    #[test]
    fn importances_rank_the_informative_features_first() {
        // y depends on features 0 (strongly) and 3 (weakly); 1, 2, 4, 5 are noise.
        let n = 2000;
        let mut rng = SeededRng::new(11, &[]);
        let cols: Vec<Vec<u8>> = (0..6)
            .map(|_| (0..n).map(|_| (rng.next_u64() % 16) as u8).collect())
            .collect();
        let y: Vec<u32> = (0..n)
            .map(|i| u32::from(2 * u32::from(cols[0][i]) + u32::from(cols[3][i] / 4) > 17))
            .collect();
        let b = binned(cols);
        let mut c = cfg(Criterion::Gini);
        c.max_features = 2;
        c.max_depth = Some(6);
        let trees: Vec<Tree> = (0..20u64)
            .map(|t| {
                let mut r = SeededRng::new(5, &[t]);
                let mut w = vec![0.0f32; n];
                for _ in 0..n {
                    w[r.below(n)] += 1.0;
                }
                fit_tree(&b, Target::Classes(&y, 2), &w, &c, &mut r)
            })
            .collect();
        for t in &trees {
            let s: f64 = t.importances.iter().map(|x| x.1).sum();
            assert!((s - 1.0).abs() < 1e-9, "a tree's importances sum to 1: {s}");
        }
        let imp = forest_importances(&trees, 6);
        assert!((imp.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&a, &b| imp[b].total_cmp(&imp[a]));
        assert_eq!(&order[..2], &[0, 3], "importances {imp:?}");
        assert!(imp[0] > 0.5, "the strong feature dominates: {imp:?}");
    }

    #[test]
    fn one_perfect_split_gives_its_feature_all_the_importance() {
        // Regression: x0 separates the values, x1 is constant; a stump.
        let x0: Vec<u8> = (0..100).map(|i| u8::from(i >= 50)).collect();
        let x1 = vec![3u8; 100];
        let y: Vec<f64> = x0.iter().map(|&v| f64::from(v) * 2.0).collect();
        let b = binned(vec![x0, x1]);
        let t = fit_tree(
            &b,
            Target::Values(&y),
            &[1.0; 100],
            &cfg(Criterion::SquaredError),
            &mut SeededRng::new(1, &[]),
        );
        assert_eq!(t.importances, vec![(0, 1.0)]);
        assert_eq!(forest_importances(&[t], 2), vec![1.0, 0.0]);
        // A single leaf has none, and a forest of only such trees is all zeros.
        let leaf = fit_tree(
            &b,
            Target::Values(&[1.0; 100]),
            &[1.0; 100],
            &cfg(Criterion::SquaredError),
            &mut SeededRng::new(1, &[]),
        );
        assert!(leaf.importances.is_empty());
        assert_eq!(forest_importances(&[leaf], 2), vec![0.0, 0.0]);
    }

    #[test]
    fn a_tree_whose_child_points_back_up_or_out_is_refused() {
        let leaf = |v: u32| Node {
            feature: 0,
            bin: 0,
            left: LEAF,
            right: v,
        };
        let good = Tree {
            nodes: vec![
                Node {
                    feature: 1,
                    bin: 3,
                    left: 1,
                    right: 2,
                },
                leaf(0),
                leaf(1),
            ],
            values: vec![0.25, 0.75, 1.0, 0.0],
            width: 2,
            importances: Vec::new(),
        };
        assert_eq!(good.validate(2, 2), Ok(()));
        let mut cycle = good.clone();
        cycle.nodes[0].right = 0;
        assert_eq!(
            cycle.validate(2, 2),
            Err(TreeError::Child { node: 0, child: 0 })
        );
        let mut apart = good.clone();
        apart.nodes.push(leaf(1));
        apart.nodes[0].right = 3;
        assert_eq!(
            apart.validate(2, 2),
            Err(TreeError::Apart {
                node: 0,
                left: 1,
                right: 3
            })
        );
        let mut out = good.clone();
        out.nodes[0].left = 9;
        assert!(matches!(out.validate(2, 2), Err(TreeError::Child { .. })));
        assert!(matches!(
            good.validate(1, 2),
            Err(TreeError::Feature { feature: 1, .. })
        ));
        assert!(matches!(good.validate(2, 3), Err(TreeError::Width { .. })));
        let mut nan = good.clone();
        nan.values[3] = f32::NAN;
        assert_eq!(nan.validate(2, 2), Err(TreeError::NotFinite { index: 3 }));
        let mut past = good;
        past.nodes[2].right = 2;
        assert_eq!(past.validate(2, 2), Err(TreeError::Leaf { node: 2 }));
    }
}

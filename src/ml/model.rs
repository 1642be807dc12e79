//! Trained models and the estimators that make them, behind one pair of traits:
//! [`Estimator`] (fit on a batch) and [`Model`] (predict on a batch).
//!
//! In: training batches (after the pipeline's transforms and split), the model
//! spec, a seed. Out: a [`TrainedModel`]: fitted preprocessing, feature list,
//! classes and the estimator's body, serializable into a model file.
//! Must not: read files or know about tasks; tree `t` of a forest depends only on
//! (data, params, seed, model, t), so tree groups can be fitted anywhere.

use super::bins::{self, BinMap};
use super::glm::{self, GlmError, Linear, Logistic, LogisticOptions, PartialStats};
use super::tree::{self, Criterion, Target, Tree, TreeConfig};
use crate::data::ops::{self, Fitted};
use crate::data::rng::{self, SeededRng};
use crate::data::{DataError, matrix};
use crate::frontend::pipeline::{
    Combine, Criterion as SpecCriterion, EstimatorKind, MaxFeatures, ModelSpec, Params, Problem,
    TreeParams,
};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Glm(#[from] GlmError),
    #[error("no rows to train `{0}` on")]
    Empty(String),
    #[error("{0}")]
    Invalid(String),
}

/// What a model predicts for a batch (serialized when one `predict` task
/// shares it with several consumers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Prediction {
    /// Row-major class probabilities, `rows × classes.len()`.
    Classes {
        proba: Vec<f32>,
        classes: Vec<String>,
    },
    Values(Vec<f64>),
}

impl Prediction {
    pub fn rows(&self) -> usize {
        match self {
            Prediction::Classes { proba, classes } => proba.len() / classes.len().max(1),
            Prediction::Values(v) => v.len(),
        }
    }

    /// Predicted class index per row (highest probability, lowest index on ties).
    pub fn argmax(&self) -> Vec<u32> {
        match self {
            Prediction::Classes { proba, classes } => proba
                .chunks(classes.len().max(1))
                .map(|p| {
                    let mut best = 0;
                    for (i, &v) in p.iter().enumerate() {
                        if v > p[best] {
                            best = i;
                        }
                    }
                    best as u32
                })
                .collect(),
            Prediction::Values(_) => Vec::new(),
        }
    }
}

/// A forest: the bins it was trained on and its trees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub bins: BinMap,
    pub trees: Vec<Tree>,
    /// Its layout for prediction, made at the first prediction and kept
    /// (a served model predicts many small batches); not in the model file.
    #[serde(skip)]
    pub flat: FlatCache,
}

/// A forest's [`FlatForest`], once made. Equal to any other (it is derived
/// from the trees); never serialized.
#[derive(Clone, Default)]
pub struct FlatCache(std::sync::OnceLock<Option<Arc<FlatForest>>>);

impl PartialEq for FlatCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for FlatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlatCache")
    }
}

impl Forest {
    /// The prediction layout for `width` values per row: the kept one, or a
    /// new one (kept if none is yet).
    /// `None` for a forest the layout cannot hold (see [`FlatForest::new`]).
    fn flat(&self, width: usize) -> Option<Arc<FlatForest>> {
        let made = self
            .flat
            .0
            .get_or_init(|| FlatForest::new(&self.trees, width).map(Arc::new));
        match made {
            Some(f) if f.width == width => Some(f.clone()),
            _ => FlatForest::new(&self.trees, width).map(Arc::new),
        }
    }
}

/// The mean of the trees' leaf values per row without the prediction layout:
/// the additions [`FlatForest::predict`] makes, in the same order, so the same
/// bits.
fn predict_tree_by_tree(trees: &[Tree], b: &bins::Binned, width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; b.rows * width];
    let inv = 1.0 / trees.len().max(1) as f32;
    for (i, row) in out.chunks_mut(width.max(1)).enumerate() {
        for t in trees {
            for (a, v) in row.iter_mut().zip(t.leaf(b, i)) {
                *a += v;
            }
        }
        row.iter_mut().for_each(|v| *v *= inv);
    }
    out
}

/// Part of a forest fitted by one task: trees `first..first + trees.len()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForestPart {
    pub first: u32,
    pub model: TrainedModel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Forest(Forest),
    Logistic(Logistic),
    Linear(Linear),
    /// One model per shard, combined.
    Ensemble {
        /// Read back with a bound on nesting: a crafted file of ensembles in
        /// ensembles would otherwise recurse until the stack overflows.
        #[serde(deserialize_with = "members_bounded")]
        members: Vec<(String, TrainedModel)>,
        combine: Combine,
    },
}

/// How deep ensembles may nest in a decoded model (dagml writes 1).
pub const MAX_ENSEMBLE_NESTING: u32 = 4;

thread_local! {
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn members_bounded<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, TrainedModel)>, D::Error> {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            NESTING.with(|n| n.set(n.get().saturating_sub(1)));
        }
    }
    let depth = NESTING.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    let _leave = Leave;
    if depth > MAX_ENSEMBLE_NESTING {
        return Err(serde::de::Error::custom(format!(
            "ensembles nested deeper than {MAX_ENSEMBLE_NESTING}"
        )));
    }
    Vec::<(String, TrainedModel)>::deserialize(d)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    pub name: String,
    pub estimator: String,
    pub task: Problem,
    pub target: String,
    /// Columns of the input the model reads (before preprocessing).
    pub inputs: Vec<String>,
    /// Their Arrow types, as text.
    pub input_types: Vec<String>,
    /// Features after preprocessing, in matrix order.
    pub features: Vec<String>,
    pub classes: Vec<String>,
    pub preprocess: Vec<Fitted>,
    pub body: Body,
}

/// Predicts on batches.
pub trait Model {
    fn predict(&self, batch: &RecordBatch) -> Result<Prediction, MlError>;
}

/// Fits models on batches.
pub trait Estimator {
    fn fit(&self, batch: &RecordBatch) -> Result<TrainedModel, MlError>;
}

/// The task of a model: declared, implied by the estimator, or read off the
/// target's type (floating point: regression).
pub fn task_of(spec: &ModelSpec, batch: &RecordBatch) -> Problem {
    if let Some(t) = &spec.task {
        return t.value;
    }
    match spec.estimator.value {
        EstimatorKind::LogisticRegression => Problem::Classification,
        EstimatorKind::LinearRegression | EstimatorKind::Ridge => Problem::Regression,
        _ => match batch.schema().field_with_name(&spec.target.value) {
            Ok(f) if f.data_type().is_floating() => Problem::Regression,
            _ => Problem::Classification,
        },
    }
}

/// Trees drawn per split for `d` features.
pub fn resolve_max_features(m: Option<MaxFeatures>, d: usize, forest_classifier: bool) -> usize {
    let d = d.max(1);
    let m = m.unwrap_or(if forest_classifier {
        MaxFeatures::Sqrt
    } else {
        MaxFeatures::All
    });
    match m {
        MaxFeatures::Sqrt => (d as f64).sqrt() as usize,
        MaxFeatures::Log2 => (d as f64).log2() as usize,
        MaxFeatures::All => d,
        MaxFeatures::Fraction(f) => (f * d as f64) as usize,
        MaxFeatures::Count(c) => c as usize,
    }
    .clamp(1, d)
}

/// Preprocessed training data: everything a fit needs.
pub struct Prepared {
    pub task: Problem,
    pub inputs: Vec<String>,
    pub input_types: Vec<String>,
    pub features: Vec<String>,
    pub classes: Vec<String>,
    pub preprocess: Vec<Fitted>,
    pub batch: RecordBatch,
    /// Class indices (classification).
    pub y_class: Vec<u32>,
    /// Values (regression).
    pub y_value: Vec<f64>,
}

/// Fit the spec's preprocessing on `batch` and extract features and target.
pub fn prepare(spec: &ModelSpec, batch: &RecordBatch) -> Result<Prepared, MlError> {
    if batch.num_rows() == 0 {
        return Err(MlError::Empty(spec.name.value.clone()));
    }
    let target = spec.target.value.clone();
    let task = task_of(spec, batch);
    let listed: Option<Vec<String>> = spec
        .features
        .as_ref()
        .map(|f| f.iter().map(|n| n.value.clone()).collect());
    let inputs = matrix::feature_names(batch, &target, listed.as_deref());
    let mut cols = inputs.clone();
    cols.push(target.clone());
    let batch = crate::data::source::project(batch, &cols)?;
    let input_types: Vec<String> = inputs
        .iter()
        .map(|c| {
            batch
                .schema()
                .field_with_name(c)
                .map(|f| f.data_type().to_string())
                .unwrap_or_default()
        })
        .collect();
    let ops_list: Vec<_> = spec.preprocess.iter().map(|o| o.value.clone()).collect();
    let (preprocess, batch) = ops::fit_all(&ops_list, &batch, std::slice::from_ref(&target))?;
    let features = matrix::feature_names(&batch, &target, None);
    let (classes, y_class, y_value) = match task {
        Problem::Classification => {
            let labels = matrix::labels(&batch, &target)?;
            let classes = matrix::class_names(&labels);
            let y = matrix::class_indices(&labels, &classes, &target)?;
            (classes, y, Vec::new())
        }
        Problem::Regression => (
            Vec::new(),
            Vec::new(),
            matrix::float_target(&batch, &target)?,
        ),
    };
    Ok(Prepared {
        task,
        inputs,
        input_types,
        features,
        classes,
        preprocess,
        batch,
        y_class,
        y_value,
    })
}

fn shell(spec: &ModelSpec, p: &Prepared, body: Body) -> TrainedModel {
    TrainedModel {
        name: spec.name.value.clone(),
        estimator: spec.estimator.value.name().to_string(),
        task: p.task,
        target: spec.target.value.clone(),
        inputs: p.inputs.clone(),
        input_types: p.input_types.clone(),
        features: p.features.clone(),
        classes: p.classes.clone(),
        preprocess: p.preprocess.clone(),
        body,
    }
}

fn tree_params(spec: &ModelSpec) -> TreeParams {
    match &spec.params {
        Params::Tree(t) => t.clone(),
        Params::Linear(_) => TreeParams {
            n_trees: 100,
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: None,
            bootstrap: true,
            criterion: None,
            class_weight_balanced: false,
            max_bins: 256,
        },
    }
}

/// A forest's training data, prepared and binned once: every group of trees of
/// the forest reads it, so a process that fits several groups prepares it once.
pub struct ForestData {
    prepared: Prepared,
    map: bins::BinMap,
    binned: bins::Binned,
    cfg: TreeConfig,
    /// Per-class sample weights (all 1 unless class_weight is balanced).
    class_w: Vec<f32>,
    forest: bool,
    bootstrap: bool,
}

/// Prepare and bin a forest's (or a single tree's) training rows.
pub fn forest_data(spec: &ModelSpec, batch: &RecordBatch) -> Result<ForestData, MlError> {
    let p = prepare(spec, batch)?;
    let tp = tree_params(spec);
    let forest = spec.estimator.value == EstimatorKind::RandomForest;
    let (map, binned) = bins::fit(&p.batch, &p.features, tp.max_bins as usize)?;
    let binned = binned.with_row_major();
    let criterion = match (p.task, tp.criterion) {
        (Problem::Regression, _) => Criterion::SquaredError,
        (_, Some(SpecCriterion::Entropy)) => Criterion::Entropy,
        _ => Criterion::Gini,
    };
    let cfg = TreeConfig {
        criterion,
        max_depth: tp.max_depth,
        min_samples_split: tp.min_samples_split,
        min_samples_leaf: tp.min_samples_leaf,
        max_features: resolve_max_features(
            tp.max_features,
            p.features.len(),
            forest && p.task == Problem::Classification,
        ),
    };
    let n = binned.rows;
    // Class weights ("balanced": n / (classes * count of the class)).
    let class_w: Vec<f32> = if tp.class_weight_balanced && p.task == Problem::Classification {
        let k = p.classes.len();
        let mut counts = vec![0usize; k];
        for &c in &p.y_class {
            counts[c as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| n as f32 / (k as f32 * c.max(1) as f32))
            .collect()
    } else {
        vec![1.0; p.classes.len().max(1)]
    };
    Ok(ForestData {
        prepared: p,
        map,
        binned,
        cfg,
        class_w,
        forest,
        bootstrap: tp.bootstrap,
    })
}

/// Fit trees `first..first + count` of the spec's forest (or its single tree).
pub fn fit_trees(
    spec: &ModelSpec,
    batch: &RecordBatch,
    seed: u64,
    first: u32,
    count: u32,
    progress: &(dyn Fn(u32) + Sync),
) -> Result<ForestPart, MlError> {
    fit_tree_range(
        spec,
        &forest_data(spec, batch)?,
        seed,
        first,
        count,
        progress,
    )
}

/// Fit trees `first..first + count` from prepared data. Tree `t` depends only on
/// (data, params, seed, model name, t).
pub fn fit_tree_range(
    spec: &ModelSpec,
    d: &ForestData,
    seed: u64,
    first: u32,
    count: u32,
    progress: &(dyn Fn(u32) + Sync),
) -> Result<ForestPart, MlError> {
    let p = &d.prepared;
    let (binned, cfg, class_w) = (&d.binned, &d.cfg, &d.class_w);
    let (forest, bootstrap) = (d.forest, d.bootstrap);
    let n = binned.rows;
    let model_id = rng::str_id(&spec.name.value);
    let target = match p.task {
        Problem::Classification => Target::Classes(&p.y_class, p.classes.len().max(1)),
        Problem::Regression => Target::Values(&p.y_value),
    };
    let done = std::sync::atomic::AtomicU32::new(0);
    let trees: Vec<Tree> = (first..first + count)
        .into_par_iter()
        .map(|t| {
            let mut r = SeededRng::new(seed, &[model_id, t as u64]);
            let mut w = vec![0.0f32; n];
            if forest && bootstrap {
                for _ in 0..n {
                    w[r.below(n)] += 1.0;
                }
            } else {
                w.iter_mut().for_each(|x| *x = 1.0);
            }
            if p.task == Problem::Classification {
                for (wi, &c) in w.iter_mut().zip(&p.y_class) {
                    *wi *= class_w[c as usize];
                }
            }
            let tree = tree::fit_tree(binned, target, &w, cfg, &mut r);
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            tree
        })
        .collect();
    Ok(ForestPart {
        first,
        model: shell(
            spec,
            p,
            Body::Forest(Forest {
                bins: d.map.clone(),
                trees,
                flat: FlatCache::default(),
            }),
        ),
    })
}

/// Join forest parts (in any order) into one model, trees in index order.
pub fn combine_forest(mut parts: Vec<ForestPart>) -> Result<TrainedModel, MlError> {
    parts.sort_by_key(|p| p.first);
    let mut it = parts.into_iter();
    let Some(first) = it.next() else {
        return Err(MlError::Invalid("a forest with no fitted parts".into()));
    };
    let mut model = first.model;
    for p in it {
        match (&mut model.body, p.model.body) {
            (Body::Forest(f), Body::Forest(g)) => {
                f.trees.extend(g.trees);
                // A layout made before would lack the new trees.
                f.flat = FlatCache::default();
            }
            _ => return Err(MlError::Invalid("forest parts of different kinds".into())),
        }
    }
    Ok(model)
}

fn column_major(p: &Prepared) -> Result<matrix::Matrix, MlError> {
    Ok(matrix::matrix(&p.batch, &p.features)?)
}

/// Fit a logistic regression.
pub fn fit_logistic(spec: &ModelSpec, batch: &RecordBatch) -> Result<TrainedModel, MlError> {
    let p = prepare(spec, batch)?;
    let m = column_major(&p)?;
    let lp = match &spec.params {
        Params::Linear(l) => l.clone(),
        Params::Tree(_) => {
            return Err(MlError::Invalid("tree parameters on a linear model".into()));
        }
    };
    let model = glm::fit_logistic(
        &m.values,
        &p.y_class,
        m.rows,
        p.classes.len(),
        &LogisticOptions {
            c: lp.c,
            max_iter: lp.max_iter,
            tol: lp.tol,
            fit_intercept: lp.fit_intercept,
        },
    )?;
    Ok(shell(spec, &p, Body::Logistic(model)))
}

/// Least-squares statistics of one partition, with the model they will make
/// (its body a placeholder until [`solve_linear`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearPart {
    pub stats: PartialStats,
    pub model: TrainedModel,
}

pub fn partial_stats(spec: &ModelSpec, batch: &RecordBatch) -> Result<LinearPart, MlError> {
    let p = prepare(spec, batch)?;
    let m = column_major(&p)?;
    let stats = PartialStats::of(&m.values, &p.y_value, m.rows);
    let placeholder = Linear {
        coef: Vec::new(),
        intercept: 0.0,
    };
    Ok(LinearPart {
        stats,
        model: shell(spec, &p, Body::Linear(placeholder)),
    })
}

/// Sum the parts' statistics and solve linear or ridge regression.
pub fn solve_linear(spec: &ModelSpec, parts: Vec<LinearPart>) -> Result<TrainedModel, MlError> {
    let mut it = parts.into_iter();
    let Some(first) = it.next() else {
        return Err(MlError::Empty(spec.name.value.clone()));
    };
    let mut stats = first.stats;
    for p in it {
        stats.merge(&p.stats)?;
    }
    let (alpha, fit_intercept) = match (&spec.estimator.value, &spec.params) {
        (EstimatorKind::Ridge, Params::Linear(l)) => (l.alpha, l.fit_intercept),
        (_, Params::Linear(l)) => (0.0, l.fit_intercept),
        _ => (0.0, true),
    };
    let lin = glm::solve_linear(&stats, alpha, fit_intercept)?;
    let mut model = first.model;
    model.body = Body::Linear(lin);
    Ok(model)
}

/// Fit any single (not per-shard, not grouped) model in one go.
pub fn fit_single(
    spec: &ModelSpec,
    batch: &RecordBatch,
    seed: u64,
) -> Result<TrainedModel, MlError> {
    match spec.estimator.value {
        EstimatorKind::RandomForest => {
            let n = tree_params(spec).n_trees;
            combine_forest(vec![fit_trees(spec, batch, seed, 0, n, &|_| {})?])
        }
        EstimatorKind::DecisionTree => {
            combine_forest(vec![fit_trees(spec, batch, seed, 0, 1, &|_| {})?])
        }
        EstimatorKind::LogisticRegression => fit_logistic(spec, batch),
        EstimatorKind::LinearRegression | EstimatorKind::Ridge => {
            solve_linear(spec, vec![partial_stats(spec, batch)?])
        }
    }
}

/// An estimator: a model spec with the pipeline seed.
pub struct SpecEstimator<'a> {
    pub spec: &'a ModelSpec,
    pub seed: u64,
}

impl Estimator for SpecEstimator<'_> {
    fn fit(&self, batch: &RecordBatch) -> Result<TrainedModel, MlError> {
        fit_single(self.spec, batch, self.seed)
    }
}

impl TrainedModel {
    /// The input batch after the model's preprocessing, with its features.
    fn features_of(&self, batch: &RecordBatch) -> Result<RecordBatch, MlError> {
        let cols: Vec<String> = self.inputs.clone();
        let b = crate::data::source::project(batch, &cols)?;
        Ok(ops::apply_all(&self.preprocess, &b)?)
    }
}

impl Model for TrainedModel {
    fn predict(&self, batch: &RecordBatch) -> Result<Prediction, MlError> {
        if let Body::Ensemble { members, combine } = &self.body {
            return predict_ensemble(self, members, *combine, batch);
        }
        let b = self.features_of(batch)?;
        let rows = b.num_rows();
        match &self.body {
            Body::Forest(f) => {
                let binned = bins::apply(&f.bins, &b, &self.features)?;
                let width = match self.task {
                    Problem::Classification => self.classes.len().max(1),
                    Problem::Regression => 1,
                };
                let out = match f.flat(width) {
                    Some(flat) => flat.predict(&binned),
                    None => predict_tree_by_tree(&f.trees, &binned, width),
                };
                Ok(match self.task {
                    Problem::Classification => Prediction::Classes {
                        proba: out,
                        classes: self.classes.clone(),
                    },
                    Problem::Regression => {
                        Prediction::Values(out.into_iter().map(f64::from).collect())
                    }
                })
            }
            Body::Logistic(l) => {
                let m = matrix::matrix(&b, &self.features)?;
                Ok(Prediction::Classes {
                    proba: l.predict_proba(&m.values, rows)?,
                    classes: self.classes.clone(),
                })
            }
            Body::Linear(l) => {
                let m = matrix::matrix(&b, &self.features)?;
                Ok(Prediction::Values(l.predict(&m.values, rows)?))
            }
            Body::Ensemble { .. } => unreachable!("handled above"),
        }
    }
}

/// Rows per block of a forest's prediction: their codes (row-major, 784 bytes a
/// row for MNIST: 800 KB) stay in L2 while every tree walks them, and the more
/// rows walk a tree in turn, the more of its nodes they find cached: 512 took
/// 12-18% less CPU than 64 for the same bits (60,000 mnist rows, 30 trees);
/// `dagml predict` of the 60,000 training rows through mnist_rf's 100 trees
/// took 1.65-1.94 s of CPU with 1024 against 1.88-2.11 s with 512 (2048 was
/// as good as 1024, 4096 and 8192 worse; docs/benchmarks.md).
const PREDICT_BLOCK: usize = 1024;

/// Rows of a block that walk a tree side by side.
const LANES: usize = 8;

/// A forest laid out for prediction, built from the stored trees when it
/// predicts (the model file is unchanged): every tree's nodes in one array, a
/// leaf pointing straight at its values in one array of all the leaf values.
pub struct FlatForest {
    /// 8 bytes a node (was 16), so a walk's two candidate children share a
    /// cache line and twice the nodes fit in cache.
    nodes: Vec<FlatNode>,
    /// Per node: where a leaf's values start in `values` (0 for an internal
    /// node); read once per row and tree, after the walk.
    leaf_values: Vec<u32>,
    roots: Vec<u32>,
    /// Values per leaf of each tree (`Tree::width`).
    widths: Vec<usize>,
    values: Vec<f32>,
    width: usize,
}

/// An internal node: `key` is `feature << 8 | bin` and the children are
/// `next` (left: code <= bin) and `next + 1` (right), absolute indices (a
/// stored tree's children are side by side and after their parent:
/// `Tree::validate`). A leaf is [`FlatNode::LEAF_KEY`] (feature 0, bin 255:
/// every code goes "left") with `next` its own index, so a walk that reached
/// it stays there: rows walk without asking whether they are at a leaf.
#[derive(Clone, Copy)]
struct FlatNode {
    key: u32,
    next: u32,
}

impl FlatNode {
    const LEAF_KEY: u32 = 0xff;
}

/// Features a [`FlatNode`]'s key can name.
const FLAT_FEATURES: u32 = 1 << 24;

impl FlatForest {
    /// `None` when a tree does not fit the layout: a feature index beyond a
    /// node's key (2^24 features or more), or children not side by side and
    /// after their parent (what `Tree::validate` requires of a file and
    /// `fit_tree` always makes; the walk relies on it to end). Such a forest
    /// predicts tree by tree.
    fn new(trees: &[Tree], width: usize) -> Option<FlatForest> {
        let fits = trees.iter().all(|t| {
            (0u32..).zip(&t.nodes).all(|(i, n)| {
                n.left == tree::LEAF
                    || (n.feature < FLAT_FEATURES && n.left > i && n.right == n.left + 1)
            })
        });
        if !fits {
            return None;
        }
        let mut nodes = Vec::with_capacity(trees.iter().map(|t| t.nodes.len()).sum());
        let mut leaf_values = Vec::with_capacity(nodes.capacity());
        let mut values = Vec::with_capacity(trees.iter().map(|t| t.values.len()).sum());
        let mut roots = Vec::with_capacity(trees.len());
        let mut widths = Vec::with_capacity(trees.len());
        for t in trees {
            let base = nodes.len() as u32;
            let vbase = values.len() as u32;
            let w = t.width as usize;
            roots.push(base);
            widths.push(w);
            for (i, n) in (0u32..).zip(&t.nodes) {
                if n.left == tree::LEAF {
                    nodes.push(FlatNode {
                        key: FlatNode::LEAF_KEY,
                        next: base + i,
                    });
                    leaf_values.push(vbase + n.right * w as u32);
                } else {
                    nodes.push(FlatNode {
                        key: n.feature << 8 | u32::from(n.bin),
                        next: base + n.left,
                    });
                    leaf_values.push(0);
                }
            }
            // A tree narrower than the forest (it never saw the last classes)
            // adds only its own values, as `Tree::leaf` zipped them.
            values.extend_from_slice(&t.values);
        }
        Some(FlatForest {
            nodes,
            leaf_values,
            roots,
            widths,
            values,
            width,
        })
    }

    /// The mean of the trees' leaf values per row, `rows × width`, row-major.
    /// Rows go in blocks of [`PREDICT_BLOCK`], the blocks in parallel on the
    /// current pool; within a row the trees add up in their order, so the
    /// result is the same bits on any number of threads.
    fn predict(&self, b: &bins::Binned) -> Vec<f32> {
        let (rows, cols, width) = (b.rows, b.cols, self.width);
        // A leaf reads feature 0 of its row: a row has at least one code.
        let stride = cols.max(1);
        let mut out = vec![0.0f32; rows * width];
        let inv = 1.0 / self.roots.len().max(1) as f32;
        out.par_chunks_mut(width * PREDICT_BLOCK)
            .enumerate()
            .for_each(|(chunk, o)| {
                let start = chunk * PREDICT_BLOCK;
                let n = o.len() / width.max(1);
                // This block's codes, row-major.
                let mut rm = vec![0u8; n * stride];
                for j in 0..cols {
                    let col = &b.codes[j * rows + start..j * rows + start + n];
                    for (r, &c) in col.iter().enumerate() {
                        rm[r * stride + j] = c;
                    }
                }
                for (&root, &w) in self.roots.iter().zip(&self.widths) {
                    // LANES rows walk the tree together, one level per round
                    // and without a branch per row: their node loads are
                    // independent, so their cache misses overlap, and no
                    // mispredicted "is it a leaf" empties the pipeline. A
                    // row at its leaf stays there (see `FlatNode`) until
                    // a round moves no row.
                    for k0 in (0..n).step_by(LANES) {
                        let lanes = LANES.min(n - k0);
                        let mut at = [root as usize; LANES];
                        loop {
                            let mut moved = false;
                            for (l, a) in at.iter_mut().enumerate().take(lanes) {
                                let node = self.nodes[*a];
                                let code = rm[(k0 + l) * stride + (node.key >> 8) as usize];
                                let right = u32::from(code) > (node.key & 0xff);
                                let next = node.next as usize + usize::from(right);
                                moved |= next != *a;
                                *a = next;
                            }
                            if !moved {
                                break;
                            }
                        }
                        for (l, &leaf) in at.iter().enumerate().take(lanes) {
                            let s = self.leaf_values[leaf] as usize;
                            let acc = &mut o[(k0 + l) * width..(k0 + l + 1) * width];
                            for (a, v) in acc.iter_mut().zip(&self.values[s..s + w]) {
                                *a += v;
                            }
                        }
                    }
                }
                o.iter_mut().for_each(|v| *v *= inv);
            });
        out
    }
}

fn predict_ensemble(
    model: &TrainedModel,
    members: &[(String, TrainedModel)],
    combine: Combine,
    batch: &RecordBatch,
) -> Result<Prediction, MlError> {
    let preds = members
        .iter()
        .map(|(_, m)| m.predict(batch))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(combine_predictions(
        model.task,
        &model.classes,
        combine,
        &preds,
        batch.num_rows(),
    ))
}

/// The ensemble's answer from its members' answers on the same `rows` rows,
/// in member order: their mean (regression), or for classifiers the mean of
/// their probabilities or their votes, over `classes` (the union of the
/// members' classes, as [`ensemble_classes`] orders it). Serving combines the
/// answers of shard models held on other workers with it, so a served
/// ensemble answers what its model file does.
pub fn combine_predictions(
    task: Problem,
    classes: &[String],
    combine: Combine,
    preds: &[Prediction],
    rows: usize,
) -> Prediction {
    match task {
        Problem::Regression => {
            let mut out = vec![0.0; rows];
            for p in preds {
                if let Prediction::Values(v) = p {
                    for (o, x) in out.iter_mut().zip(v) {
                        *o += x / preds.len() as f64;
                    }
                }
            }
            Prediction::Values(out)
        }
        Problem::Classification => {
            // Members may have seen different classes: map onto the union.
            let k = classes.len();
            let mut out = vec![0.0f32; rows * k];
            for p in preds {
                let Prediction::Classes {
                    proba,
                    classes: theirs,
                } = p
                else {
                    continue;
                };
                let map: Vec<Option<usize>> = theirs
                    .iter()
                    .map(|c| classes.iter().position(|x| x == c))
                    .collect();
                let w = theirs.len().max(1);
                for i in 0..rows {
                    let Some(row) = proba.get(i * w..(i + 1) * w) else {
                        break;
                    };
                    match combine {
                        Combine::Average => {
                            for (j, &v) in row.iter().enumerate() {
                                if let Some(Some(t)) = map.get(j) {
                                    out[i * k + t] += v / preds.len() as f32;
                                }
                            }
                        }
                        Combine::Vote => {
                            let best = (0..w).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                            if let Some(Some(t)) = map.get(best) {
                                out[i * k + t] += 1.0 / preds.len() as f32;
                            }
                        }
                    }
                }
            }
            Prediction::Classes {
                proba: out,
                classes: classes.to_vec(),
            }
        }
    }
}

/// The classes of an ensemble of members that saw these classes.
pub fn ensemble_classes<'a>(members: impl IntoIterator<Item = &'a [String]>) -> Vec<String> {
    let all: Vec<String> = members.into_iter().flatten().cloned().collect();
    matrix::class_names(&all)
}

/// Combine per-shard models into one ensemble model.
pub fn ensemble(
    spec: &ModelSpec,
    members: Vec<(String, TrainedModel)>,
) -> Result<TrainedModel, MlError> {
    let Some((_, first)) = members.first() else {
        return Err(MlError::Invalid("an ensemble with no shard models".into()));
    };
    let classes = ensemble_classes(members.iter().map(|(_, m)| m.classes.as_slice()));
    Ok(TrainedModel {
        name: spec.name.value.clone(),
        estimator: format!("per_shard {}", spec.estimator.value.name()),
        task: first.task,
        target: first.target.clone(),
        inputs: first.inputs.clone(),
        input_types: first.input_types.clone(),
        features: first.features.clone(),
        classes,
        preprocess: Vec::new(),
        body: Body::Ensemble {
            members,
            combine: spec.combine,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree the flat layout cannot hold (a feature index beyond its keys,
    /// children apart or not after their parent): no layout, and the forest
    /// predicts tree by tree (see `predict_tree_by_tree`).
    #[test]
    fn a_forest_of_too_many_features_has_no_flat_layout() {
        let node = |feature: u32, left: u32| tree::Node {
            feature,
            bin: 0,
            left,
            right: left + 1,
        };
        let leaf = |v: u32| tree::Node {
            feature: 0,
            bin: 0,
            left: tree::LEAF,
            right: v,
        };
        let t = |feature: u32| Tree {
            nodes: vec![node(feature, 1), leaf(0), leaf(1)],
            values: vec![1.0, 0.0],
            width: 1,
            importances: Vec::new(),
        };
        assert!(FlatForest::new(&[t(FLAT_FEATURES - 1)], 1).is_some());
        // A forest of one leaf over rows of no feature: the walk reads no code.
        let lone = Tree {
            nodes: vec![leaf(0)],
            values: vec![0.5],
            width: 1,
            importances: Vec::new(),
        };
        let none = bins::Binned {
            rows: 3,
            cols: 0,
            codes: Vec::new(),
            row_major: Vec::new(),
        };
        let flat = FlatForest::new(std::slice::from_ref(&lone), 1).expect("a layout");
        assert_eq!(flat.predict(&none), vec![0.5; 3]);
        assert!(FlatForest::new(&[t(FLAT_FEATURES)], 1).is_none());
        // Children apart, or not after their parent: no layout either.
        let mut apart = t(0);
        apart.nodes.push(leaf(1));
        apart.nodes[0].right = 3;
        assert!(FlatForest::new(&[apart], 1).is_none());
        let mut back = t(0);
        back.nodes[0].left = 0;
        back.nodes[0].right = 1;
        assert!(FlatForest::new(&[back], 1).is_none());
    }

    /// The flat, blocked forest predicts the same bits as adding up
    /// `Tree::leaf` tree after tree, on one thread or four, for a row count
    /// that is not a multiple of the block (two blocks and a part).
    #[test]
    fn the_flat_forest_predicts_the_bits_the_trees_do() {
        let (rows, cols, classes) = (2500usize, 7usize, 3usize);
        let mut rng = SeededRng::new(7, &[]);
        let codes: Vec<u8> = (0..rows * cols).map(|_| rng.below(8) as u8).collect();
        let b = bins::Binned {
            rows,
            cols,
            codes,
            row_major: Vec::new(),
        };
        let y: Vec<u32> = (0..rows)
            .map(|i| u32::from(b.codes[i] > 3) + u32::from(b.codes[rows + i] > 5))
            .collect();
        let cfg = TreeConfig {
            criterion: Criterion::Gini,
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: 3,
        };
        let trees: Vec<Tree> = (0..9)
            .map(|t| {
                let w: Vec<f32> = (0..rows).map(|_| rng.below(3) as f32).collect();
                tree::fit_tree(
                    &b,
                    Target::Classes(&y, classes),
                    &w,
                    &cfg,
                    &mut SeededRng::new(t, &[]),
                )
            })
            .collect();
        let want = predict_tree_by_tree(&trees, &b, classes);
        let flat = FlatForest::new(&trees, classes).expect("7 features fit the layout");
        for threads in [1, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let got = pool.install(|| flat.predict(&b));
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{threads} threads"
            );
        }
    }
    use crate::frontend::pipeline::Combine;

    fn linear(name: &str) -> TrainedModel {
        TrainedModel {
            name: name.into(),
            estimator: "linear_regression".into(),
            task: Problem::Regression,
            target: "y".into(),
            inputs: vec!["a".into()],
            input_types: vec!["Float64".into()],
            features: vec!["a".into()],
            classes: vec![],
            preprocess: vec![],
            body: Body::Linear(Linear {
                coef: vec![1.0],
                intercept: 0.0,
            }),
        }
    }

    fn nested(levels: u32) -> TrainedModel {
        let mut m = linear("leaf");
        for i in 0..levels {
            let mut outer = linear(&format!("e{i}"));
            outer.body = Body::Ensemble {
                members: vec![("s".into(), m)],
                combine: Combine::Average,
            };
            m = outer;
        }
        m
    }

    #[test]
    fn ensembles_nested_past_the_bound_are_refused_when_read() {
        let ok = postcard::to_allocvec(&nested(MAX_ENSEMBLE_NESTING)).unwrap();
        let back: TrainedModel = postcard::from_bytes(&ok).unwrap();
        assert_eq!(back, nested(MAX_ENSEMBLE_NESTING));
        let deep = postcard::to_allocvec(&nested(MAX_ENSEMBLE_NESTING + 1)).unwrap();
        assert!(postcard::from_bytes::<TrainedModel>(&deep).is_err());
        // The bound is per decode: the next one starts from zero.
        let again: TrainedModel = postcard::from_bytes(&ok).unwrap();
        assert_eq!(again, back);
    }
}

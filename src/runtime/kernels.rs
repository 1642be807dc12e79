//! The pipeline's task kernels: what each task of a physical plan computes, as a
//! function of the task and its input partitions.
//!
//! In: a [`Task`], its inputs ([`Value`]s in `task.inputs` order) and the
//! [`RunContext`] (the logical plan's operations, the seed, the base folder).
//! Out: one [`Value`] per `task.outputs`: record batches for data, bytes for models
//! and shared predictions (postcard), metrics (JSON; a `report` sink draws them as HTML) and write
//! receipts. Must not: keep state between
//! tasks or read anything but the files a source or output names: any worker can
//! run any task and get the same bytes; nor parse an id's text: which partition,
//! shard, fold or model an input is comes from the typed fields of
//! [`crate::plan::TaskId`] and [`crate::plan::PartitionId`].

use super::executor::Kernels;
use super::failure::{FailureKind, TaskError};
use super::value::Value;
use crate::compile::logical::{Fanout, LOp};
use crate::data::split::Part;
use crate::data::{self, split, write};
use crate::frontend::pipeline::{EstimatorKind, OutputKind, Params, Problem, SplitKind};
use crate::ml::metrics::{self, Scores};
use crate::ml::model::{self, ForestPart, LinearPart, Model, Prediction, TrainedModel};
use crate::ml::model_file;
use crate::plan::{DatasetId, PartitionId, PhysicalPlan, Task, TaskId, TaskKind, TaskPart};
use arrow::array::{ArrayRef, Float32Array, Float64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the kernels need besides a task's inputs. Cheap to share.
pub struct RunContext {
    pub pipeline: String,
    pub pipeline_hash: String,
    pub seed: u64,
    /// Folder that relative paths in the pipeline are resolved against.
    pub base: PathBuf,
    /// A worker's `--data-root`, where the sources of shards by worker are
    /// read; `None` elsewhere.
    pub data_root: Option<PathBuf>,
    /// Logical operation per node id.
    pub ops: BTreeMap<String, LOp>,
    /// Pre-rendered plan pictures, per output name.
    pub pictures: BTreeMap<String, Vec<u8>>,
    /// Trees fitted so far (for progress).
    pub trees_done: AtomicU64,
    /// Prepared forest data per (fit node, inputs), shared by the node's tree
    /// groups that run in this process, dropped after the last of them.
    forests: Mutex<BTreeMap<(String, Vec<PartitionId>), ForestSlot>>,
    /// Tree-group tasks per fit node.
    groups: BTreeMap<String, usize>,
}

/// A forest's prepared data (made by the first group that needs it) and how many
/// of the node's groups have not used it yet.
struct ForestSlot {
    data: Arc<OnceLock<Result<Arc<model::ForestData>, String>>>,
    left: usize,
}

impl RunContext {
    pub fn new(
        pipeline: &crate::frontend::Pipeline,
        text: &str,
        plan: &PhysicalPlan,
        base: PathBuf,
    ) -> Self {
        let g = &plan.logical.graph;
        let ops = g
            .node_indices()
            .map(|n| (g[n].id(), g[n].op.clone()))
            .collect();
        RunContext {
            pipeline: pipeline.name.value.clone(),
            pipeline_hash: model_file::hash_hex(text.as_bytes()),
            seed: pipeline.seed,
            base,
            data_root: None,
            ops,
            pictures: BTreeMap::new(),
            trees_done: AtomicU64::new(0),
            forests: Mutex::new(BTreeMap::new()),
            groups: plan
                .tasks
                .iter()
                .filter(|t| matches!(t.kind, TaskKind::FitTrees { .. }))
                .fold(BTreeMap::new(), |mut m, t| {
                    *m.entry(t.node.clone()).or_default() += 1;
                    m
                }),
        }
    }

    /// The prepared data of a forest for `task` (one of its tree groups):
    /// computed by the first group, reused by the others, released after the last.
    fn forest_data(
        &self,
        task: &Task,
        make: impl FnOnce() -> Result<model::ForestData, String>,
    ) -> Result<Arc<model::ForestData>, String> {
        let key = (task.node.clone(), task.inputs.clone());
        let groups = self.groups.get(&task.node).copied().unwrap_or(1);
        let slot = {
            let mut m = self.forests.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(key.clone()).or_insert_with(|| ForestSlot {
                data: Arc::new(OnceLock::new()),
                left: groups,
            });
            e.left = e.left.saturating_sub(1);
            let data = e.data.clone();
            if e.left == 0 {
                m.remove(&key);
            }
            data
        };
        slot.get_or_init(|| make().map(Arc::new)).clone()
    }
}

pub use crate::ml::evaluation::{EvalEntry, EvalResult, MetricsDoc, kept_learned};

/// A written file, reported back to the runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub output: String,
    /// Where the files go (`paths[i]`), as the pipeline names them under the
    /// run's base folder.
    pub paths: Vec<String>,
    pub rows: Option<u64>,
    /// The staged twin of each of `paths`, to be put in place when the run
    /// succeeds (`runtime::outputs::commit`); empty when the files were put in
    /// place at once (an output a later source reads back with `after`).
    #[serde(default)]
    pub staged: Vec<String>,
}

/// Writes a sink's files: staged for the run's commit, or (an output read back
/// by a later source) in place at once.
struct Put {
    stage: bool,
    staged: Vec<String>,
}

impl Put {
    fn bytes(&mut self, path: &std::path::Path, b: &[u8]) -> Result<(), data::DataError> {
        if self.stage {
            let s = write::stage_bytes(path, b)?;
            self.staged.push(s.display().to_string());
            Ok(())
        } else {
            write::write_bytes(path, b)
        }
    }

    fn batch(
        &mut self,
        path: &std::path::Path,
        b: &RecordBatch,
        f: crate::frontend::pipeline::FileFormat,
    ) -> Result<(), data::DataError> {
        if self.stage {
            let s = write::stage_batch(path, b, f)?;
            self.staged.push(s.display().to_string());
            Ok(())
        } else {
            write::write_batch(path, b, f)
        }
    }
}

pub struct PipelineKernels {
    pub cx: Arc<RunContext>,
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn batch_of(v: &Value) -> Result<&RecordBatch, TaskError> {
    match v {
        Value::Batch(b) => Ok(b),
        Value::Bytes(_) => Err(TaskError::internal("expected a data partition, got bytes")),
    }
}

fn bytes_of(v: &Value) -> Result<&[u8], TaskError> {
    match v {
        Value::Bytes(b) => Ok(b),
        Value::Batch(_) => Err(TaskError::internal(
            "expected a model or metrics, got a data partition",
        )),
    }
}

fn concat(parts: &[&RecordBatch]) -> Result<RecordBatch, String> {
    let Some(first) = parts.first() else {
        return Err("no input data".into());
    };
    let owned: Vec<RecordBatch> = parts.iter().map(|b| (*b).clone()).collect();
    concat_batches(&first.schema(), &owned).map_err(fail)
}

fn encode<T: Serialize>(v: &T) -> Result<Value, String> {
    postcard::to_allocvec(v).map(Value::Bytes).map_err(fail)
}

fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, TaskError> {
    postcard::from_bytes(b).map_err(|e| {
        TaskError::new(
            FailureKind::CorruptPartition,
            format!("corrupt intermediate value: {e}"),
        )
    })
}

/// A task's data inputs grouped by dataset (input order) and its byte inputs.
type SplitInputs<'a> = (
    Vec<(&'a DatasetId, Vec<&'a RecordBatch>)>,
    Vec<(&'a PartitionId, &'a [u8])>,
);

/// Data inputs grouped by dataset, in input order; and the byte inputs.
fn split_inputs<'a>(task: &'a Task, inputs: &'a [Arc<Value>]) -> Result<SplitInputs<'a>, String> {
    let mut data: Vec<(&DatasetId, Vec<&RecordBatch>)> = Vec::new();
    let mut bytes = Vec::new();
    for (id, v) in task.inputs.iter().zip(inputs) {
        match v.as_ref() {
            Value::Batch(b) => {
                let d = id
                    .dataset()
                    .ok_or_else(|| format!("input `{id}` is a task's output, not data"))?;
                match data.iter_mut().find(|(n, _)| *n == d) {
                    Some((_, v)) => v.push(b),
                    None => data.push((d, vec![b])),
                }
            }
            Value::Bytes(b) => bytes.push((id, b.as_slice())),
        }
    }
    Ok((data, bytes))
}

/// The batch of predictions: the input rows plus `prediction` (and, for
/// classifiers, `probability` of the predicted class).
pub fn predictions_batch(batch: &RecordBatch, pred: &Prediction) -> Result<RecordBatch, String> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    for (f, c) in prediction_columns(pred) {
        fields.push(f);
        cols.push(c);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(fail)
}

/// The columns a prediction adds: `prediction` (the label, or the value) and,
/// for classifiers, `probability` of the predicted class. `dagml predict`'s
/// file and the model server's answers are both made of these.
pub fn prediction_columns(pred: &Prediction) -> Vec<(Field, ArrayRef)> {
    match pred {
        Prediction::Classes { proba, classes } => {
            let k = classes.len().max(1);
            let idx = pred.argmax();
            let labels: StringArray = idx
                .iter()
                .map(|&i| classes.get(i as usize).map(String::as_str))
                .collect();
            let p: Float32Array = idx
                .iter()
                .enumerate()
                .map(|(r, &i)| proba.get(r * k + i as usize).copied())
                .collect();
            vec![
                (
                    Field::new("prediction", DataType::Utf8, false),
                    Arc::new(labels) as ArrayRef,
                ),
                (
                    Field::new("probability", DataType::Float32, false),
                    Arc::new(p) as ArrayRef,
                ),
            ]
        }
        Prediction::Values(v) => vec![(
            Field::new("prediction", DataType::Float64, false),
            Arc::new(Float64Array::from(v.clone())) as ArrayRef,
        )],
    }
}

/// Score `model` on `batch`.
pub fn score(model: &TrainedModel, batch: &RecordBatch) -> Result<Scores, String> {
    Ok(tally(model, batch)?.scores())
}

/// The scores of a dataset in partitions, tallied one partition at a time: the
/// rows are never gathered into one batch.
pub fn score_parts(model: &TrainedModel, parts: &[&RecordBatch]) -> Result<Scores, String> {
    let mut total: Option<metrics::Tally> = None;
    for b in parts {
        let t = tally(model, b)?;
        match &mut total {
            Some(x) => x.merge(&t)?,
            None => total = Some(t),
        }
    }
    match total {
        Some(t) => Ok(t.scores()),
        None => Err("no rows to score".into()),
    }
}

fn tally(model: &TrainedModel, batch: &RecordBatch) -> Result<metrics::Tally, String> {
    let pred = model.predict(batch).map_err(fail)?;
    tally_of(model, batch, pred)
}

/// The tally of `pred`, the predictions of `model` on `batch`.
fn tally_of(
    model: &TrainedModel,
    batch: &RecordBatch,
    pred: Prediction,
) -> Result<metrics::Tally, String> {
    if pred.rows() != batch.num_rows() {
        return Err(format!(
            "{} predictions for {} rows",
            pred.rows(),
            batch.num_rows()
        ));
    }
    Ok(match model.task {
        Problem::Classification => {
            // A class the model never saw is scored (never predicted), as
            // scikit-learn does, and named in the scores' `unseen_classes`.
            let labels = data::matrix::labels(batch, &model.target).map_err(fail)?;
            metrics::Tally::classification_labels(&labels, &pred)
        }
        Problem::Regression => {
            let y = data::matrix::float_target(batch, &model.target).map_err(fail)?;
            let Prediction::Values(p) = pred else {
                return Err("a regressor predicted classes".into());
            };
            metrics::Tally::regression(&y, &p)
        }
    })
}

/// The shared predictions (a `predict` task's output) on dataset `data`
/// among a task's byte inputs, if the plan made them.
fn shared_predictions(
    cx: &RunContext,
    bytes: &[(&PartitionId, &[u8])],
    data: &str,
) -> Result<Option<Prediction>, TaskError> {
    let found = bytes.iter().find(|(id, _)| {
        id.task().is_some_and(
            |t| matches!(cx.ops.get(&t.node), Some(LOp::Predict { data: d, .. }) if d == data),
        )
    });
    found.map(|(_, b)| decode(b)).transpose()
}

/// An evaluation's model: the one output of a fit (not a fit per fold).
fn model_input(
    cx: &RunContext,
    bytes: &[(&PartitionId, &[u8])],
) -> Result<TrainedModel, TaskError> {
    let (_, mb) = bytes
        .iter()
        .find(|(id, _)| {
            id.task().is_some_and(|t| {
                t.part == TaskPart::Out && matches!(cx.ops.get(&t.node), Some(LOp::Fit { .. }))
            })
        })
        .ok_or("the evaluation has no model input")?;
    decode(mb)
}

/// A shard model a per-shard fit produced, as serving keeps it on the worker
/// that fitted it.
pub struct ShardModel {
    /// The pipeline's model (`ensemble`), not the member's own name.
    pub model: String,
    pub shard: String,
    /// The shard's place in the split's list (members combine in this order);
    /// shards found only in the data come after the listed ones.
    pub index: u32,
    pub combine: crate::frontend::pipeline::Combine,
    pub trained: TrainedModel,
    /// The member as a model file (its header describes its inputs).
    pub file: Vec<u8>,
}

/// The shard models in the output of a per-shard fit (`FitShard`); an empty
/// list for any other task.
pub fn shard_models(
    cx: &RunContext,
    task: &Task,
    output: &Value,
) -> Result<Vec<ShardModel>, String> {
    let TaskKind::FitShard { shard } = &task.kind else {
        return Ok(Vec::new());
    };
    let Some(LOp::Fit { model: spec, .. }) = cx.ops.get(&task.node) else {
        return Err(format!("`{}` is not a fit", task.node));
    };
    // The names the split lists, in order.
    let names: Vec<String> = cx
        .ops
        .values()
        .find_map(|o| match o {
            LOp::Split { split } if split.name.value == spec.input.value => match &split.kind {
                SplitKind::Shards { by, .. } => Some(match by {
                    crate::frontend::pipeline::ShardBy::Rows { names }
                    | crate::frontend::pipeline::ShardBy::Column { names, .. }
                    | crate::frontend::pipeline::ShardBy::File { names }
                    | crate::frontend::pipeline::ShardBy::Worker { names } => {
                        names.iter().map(|n| n.value.clone()).collect()
                    }
                }),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default();
    let bytes = bytes_of(output).map_err(|e| e.message)?;
    let members: Vec<(String, TrainedModel)> = if shard == split::ANY_SHARD {
        decode(bytes).map_err(|e| e.message)?
    } else {
        vec![(shard.clone(), decode(bytes).map_err(|e| e.message)?)]
    };
    let mut extra = names.len() as u32;
    members
        .into_iter()
        .map(|(shard, trained)| {
            let index = match names.iter().position(|n| *n == shard) {
                Some(i) => i as u32,
                None => {
                    extra += 1;
                    extra - 1
                }
            };
            let params = match &spec.params {
                Params::Tree(t) => serde_json::to_value(t).unwrap_or_default(),
                Params::Linear(l) => serde_json::to_value(l).unwrap_or_default(),
            };
            let file = model_file_bytes(cx, &trained, params)?;
            Ok(ShardModel {
                model: spec.name.value.clone(),
                shard,
                index,
                combine: spec.combine,
                trained,
                file,
            })
        })
        .collect()
}

/// The model file's bytes: header and postcard payload.
pub fn model_file_bytes(
    cx: &RunContext,
    model: &TrainedModel,
    params: serde_json::Value,
) -> Result<Vec<u8>, String> {
    let header = model_file::ModelHeader {
        format_version: model_file::FORMAT_VERSION,
        dagml_version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: cx.pipeline.clone(),
        pipeline_hash: cx.pipeline_hash.clone(),
        model: model.name.clone(),
        estimator: model.estimator.clone(),
        task: model.task.name().to_string(),
        target: model.target.clone(),
        features: model
            .inputs
            .iter()
            .zip(&model.input_types)
            .map(|(n, t)| model_file::FeatureInfo {
                name: n.clone(),
                dtype: t.clone(),
            })
            .collect(),
        classes: model.classes.clone(),
        preprocess: serde_json::to_value(&model.preprocess).unwrap_or_default(),
        params,
    };
    let payload = postcard::to_allocvec(model).map_err(fail)?;
    Ok(model_file::encode(&header, &payload))
}

/// Where a dataset's rows come from, for messages: ` (read from `d.csv`)`.
fn origin(cx: &RunContext, dataset: &str) -> String {
    let mut name = dataset.split('.').next().unwrap_or(dataset).to_string();
    // Back through splits to the source (a transform's input is not in its
    // operation: the trail ends there), a bounded number of steps.
    for _ in 0..32 {
        let next = cx.ops.values().find_map(|o| match o {
            LOp::Source { source, .. } if source.name.value == name => Some(Err(source
                .file_path()
                .map(|(p, _)| format!(" (read from `{}`)", p.value))
                .unwrap_or_default())),
            LOp::Split { split } if split.name.value == name => match &split.kind {
                SplitKind::Holdout { input, .. }
                | SplitKind::KFold { input, .. }
                | SplitKind::Shards { input, .. } => Some(Ok(input.value.clone())),
                SplitKind::Predefined { .. } => None,
            },
            _ => None,
        });
        match next {
            Some(Ok(n)) => name = n.split('.').next().unwrap_or(&n).to_string(),
            Some(Err(file)) => return file,
            None => return String::new(),
        }
    }
    String::new()
}

/// Why a split's part is empty, in the split's own terms.
fn empty_part_reason(cx: &RunContext, split: &str, part: &str) -> String {
    let found = cx.ops.values().find_map(|o| match o {
        LOp::Split { split: s } if s.name.value == split => Some(s),
        _ => None,
    });
    match found.map(|s| &s.kind) {
        Some(SplitKind::Holdout {
            input,
            test_fraction,
            ..
        }) => format!(
            "the holdout split `{split}` (test_fraction {}) left `{split}.{part}` no rows: `{}` has too few rows{}; add rows or change test_fraction",
            test_fraction.value,
            input.value,
            origin(cx, &input.value)
        ),
        Some(SplitKind::KFold { input, k, .. }) => format!(
            "the k-fold split `{split}` (k = {}) left `{split}.{part}` no rows: `{}` has fewer rows than folds{}; add rows or lower k",
            k.value,
            input.value,
            origin(cx, &input.value)
        ),
        Some(SplitKind::Shards {
            validation_fraction,
            ..
        }) => format!(
            "the shard split `{split}` (validation_fraction {}) left `{split}.{part}` no rows",
            validation_fraction.value
        ),
        _ => format!("`{split}.{part}` has no rows"),
    }
}

/// Before a fit: the target is a column of its input, and (for a task that
/// sees all of them) there are rows; with messages that name the data, where it
/// comes from, and what to change.
fn check_fit_inputs(
    cx: &RunContext,
    task: &Task,
    spec: &crate::frontend::pipeline::ModelSpec,
    inputs: &[Arc<Value>],
) -> Result<(), TaskError> {
    let (data, _) = split_inputs(task, inputs)?;
    let Some((dataset, batches)) = data.first() else {
        return Ok(());
    };
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let ds = dataset.to_string();
    let target = &spec.target.value;
    let schema = first.schema();
    if schema.field_with_name(target).is_err() {
        let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let guess = crate::frontend::diag::did_you_mean(target, cols.iter().copied())
            .map(|g| format!("; did you mean `{g}`?"))
            .unwrap_or_default();
        let list = if cols.is_empty() {
            "it has none".to_string()
        } else {
            format!(
                "its columns are {}",
                cols.iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(TaskError::bad_data(format!(
            "the target `{target}` of model `{}` is not a column of `{ds}`{}: {list}{guess}",
            spec.name.value,
            origin(cx, &ds)
        )));
    }
    let sees_all = matches!(
        task.kind,
        TaskKind::Fit | TaskKind::FitTrees { .. } | TaskKind::FitShard { .. }
    );
    let rows: usize = data
        .iter()
        .flat_map(|(_, b)| b.iter())
        .map(|b| b.num_rows())
        .sum();
    if sees_all && rows == 0 {
        let why = match dataset {
            DatasetId::Part { split, part } => empty_part_reason(cx, split, part.label().as_ref()),
            DatasetId::Whole(_) => format!("`{ds}` has no rows{}", origin(cx, &ds)),
        };
        return Err(TaskError::bad_data(format!(
            "no rows to train `{}` on: {why}",
            spec.name.value
        )));
    }
    Ok(())
}

impl PipelineKernels {
    fn op(&self, task: &Task) -> Result<&LOp, String> {
        self.cx
            .ops
            .get(&task.node)
            .ok_or_else(|| format!("no step `{}` in the plan", task.node))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.cx.base.join(p)
    }

    fn run_task(&self, task: &Task, inputs: &[Arc<Value>]) -> Result<Vec<Value>, TaskError> {
        let op = self.op(task)?;
        let cx = &self.cx;
        if let LOp::Fit { model: spec, .. } = op {
            check_fit_inputs(cx, task, spec, inputs)?;
        }
        match (&task.kind, op) {
            (
                TaskKind::Read,
                LOp::Source {
                    source,
                    columns,
                    files,
                    on_workers,
                },
            ) => {
                let p = task.partition().unwrap_or(0);
                // A shard by worker is read from this worker's data root.
                let base = match (on_workers, &cx.data_root) {
                    (None, _) => &cx.base,
                    (Some(_), Some(root)) => root,
                    (Some(w), None) => {
                        return Err(TaskError::new(
                            FailureKind::BadData,
                            format!(
                                "source `{}` is read on each of the workers {} from its own --data-root; this process has none: run on a cluster of workers started with `--name NAME --data-root DIR`",
                                source.name.value,
                                w.join(", ")
                            ),
                        ));
                    }
                };
                let b = match files {
                    Some(f) => data::source::read_listed(source, f, p, columns.as_deref(), base),
                    None => data::source::read(source, p, cx.seed, columns.as_deref(), &cx.base),
                }?;
                Ok(vec![Value::Batch(b)])
            }
            (TaskKind::Transform, LOp::Transform { steps, .. }) => {
                let mut b = batch_of(inputs.first().ok_or("no input")?)?.clone();
                for s in steps {
                    b = if s.value.is_fitted() {
                        // In a transform (before any split) statistics come from the
                        // partition itself; use a model's `preprocess` to learn them
                        // on training rows only.
                        let f = data::ops::fit_op(&s.value, &b, &[]).map_err(fail)?;
                        data::ops::apply_fitted(&f, &b).map_err(fail)?
                    } else {
                        data::ops::apply_row_op(&s.value, &b).map_err(fail)?
                    };
                }
                Ok(vec![Value::Batch(b)])
            }
            (TaskKind::Split, LOp::Split { split: sp }) => {
                let ins: Vec<(String, RecordBatch)> = task
                    .inputs
                    .iter()
                    .zip(inputs)
                    .map(|(id, v)| {
                        let d = id
                            .dataset()
                            .ok_or_else(|| format!("the split's input `{id}` is not data"))?;
                        Ok((d.to_string(), batch_of(v)?.clone()))
                    })
                    .collect::<Result<_, TaskError>>()?;
                // A split by worker runs once per worker, on that worker's
                // shard alone.
                let one;
                let sp = match &sp.kind {
                    SplitKind::Shards {
                        by: crate::frontend::pipeline::ShardBy::Worker { names },
                        ..
                    } => {
                        let p = task.partition().unwrap_or(0) as usize;
                        let name = names.get(p).ok_or_else(|| {
                            format!("split by worker: no worker for partition {p}")
                        })?;
                        let mut s = sp.clone();
                        if let SplitKind::Shards { by, .. } = &mut s.kind {
                            *by = crate::frontend::pipeline::ShardBy::Worker {
                                names: vec![name.clone()],
                            };
                        }
                        one = s;
                        &one
                    }
                    _ => sp,
                };
                let mut parts = split::split(sp, cx.seed, &ins).map_err(fail)?;
                task.outputs
                    .iter()
                    .map(|o| {
                        let part = o
                            .dataset()
                            .and_then(DatasetId::split_part)
                            .map(|(_, part)| part)
                            .ok_or_else(|| format!("the split's output `{o}` is not a part"))?;
                        parts.remove(part).map(Value::Batch).ok_or_else(|| {
                            TaskError::internal(format!(
                                "the split made no part `{}`",
                                part.label()
                            ))
                        })
                    })
                    .collect()
            }
            (TaskKind::FitTrees { first, count }, LOp::Fit { model: spec, .. }) => {
                let d = cx.forest_data(task, || {
                    let (data, _) = split_inputs(task, inputs)?;
                    let all: Vec<&RecordBatch> = data.iter().flat_map(|(_, b)| b.clone()).collect();
                    model::forest_data(spec, &concat(&all)?).map_err(fail)
                })?;
                let done = &cx.trees_done;
                let part = model::fit_tree_range(spec, &d, cx.seed, *first, *count, &|_| {
                    done.fetch_add(1, Ordering::Relaxed);
                })
                .map_err(fail)?;
                Ok(vec![encode(&part)?])
            }
            (
                TaskKind::Combine,
                LOp::Fit {
                    model: spec,
                    fanout,
                },
            ) => {
                let model = match fanout {
                    Fanout::PerShard => {
                        let members = task
                            .inputs
                            .iter()
                            .zip(inputs)
                            .map(|(id, v)| {
                                let Some(TaskPart::Shard(shard)) = id.task().map(|t| &t.part)
                                else {
                                    return Err(TaskError::internal(format!(
                                        "input `{id}` is not a shard's fit"
                                    )));
                                };
                                if shard == split::ANY_SHARD {
                                    // Every shard found in the data, fitted by one task.
                                    return decode::<Vec<(String, TrainedModel)>>(bytes_of(v)?);
                                }
                                Ok(vec![(shard.clone(), decode::<TrainedModel>(bytes_of(v)?)?)])
                            })
                            .collect::<Result<Vec<_>, TaskError>>()?
                            .into_iter()
                            .flatten()
                            .collect();
                        model::ensemble(spec, members).map_err(fail)?
                    }
                    _ => {
                        let parts = inputs
                            .iter()
                            .map(|v| decode::<ForestPart>(bytes_of(v)?))
                            .collect::<Result<Vec<_>, TaskError>>()?;
                        model::combine_forest(parts).map_err(fail)?
                    }
                };
                Ok(vec![encode(&model)?])
            }
            (TaskKind::FitShard { shard }, LOp::Fit { model: spec, .. }) => {
                let (data, _) = split_inputs(task, inputs)?;
                let all: Vec<&RecordBatch> = data.iter().flat_map(|(_, b)| b.clone()).collect();
                let b = concat(&all)?;
                // Each shard's model gets its own seed identity.
                let fit_shard = |shard: &str, b: &RecordBatch| {
                    let seed = data::rng::hash(cx.seed, &[data::rng::str_id(shard)]);
                    let mut m = model::fit_single(spec, b, seed).map_err(fail)?;
                    m.name = format!("{}[{shard}]", spec.name.value);
                    Ok::<_, String>(m)
                };
                if shard == split::ANY_SHARD {
                    let shards = split::untag_shards(&b)
                        .map_err(fail)?
                        .ok_or("the shards found in the data did not reach the fit")?;
                    let models = shards
                        .iter()
                        .map(|(s, b)| Ok((s.clone(), fit_shard(s, b)?)))
                        .collect::<Result<Vec<_>, String>>()?;
                    return Ok(vec![encode(&models)?]);
                }
                Ok(vec![encode(&fit_shard(shard, &b)?)?])
            }
            (TaskKind::PartialStats, LOp::Fit { model: spec, .. }) => {
                let b = batch_of(inputs.first().ok_or("no input")?)?;
                Ok(vec![encode(&model::partial_stats(spec, b).map_err(fail)?)?])
            }
            (TaskKind::Reduce, LOp::Fit { model: spec, .. }) => {
                let parts = inputs
                    .iter()
                    .map(|v| decode::<LinearPart>(bytes_of(v)?))
                    .collect::<Result<Vec<_>, TaskError>>()?;
                Ok(vec![encode(
                    &model::solve_linear(spec, parts).map_err(fail)?,
                )?])
            }
            (TaskKind::Fit, LOp::Fit { model: spec, .. }) => {
                let (data, _) = split_inputs(task, inputs)?;
                let all: Vec<&RecordBatch> = data.iter().flat_map(|(_, b)| b.clone()).collect();
                let b = concat(&all)?;
                Ok(vec![encode(
                    &model::fit_single(spec, &b, cx.seed).map_err(fail)?,
                )?])
            }
            (TaskKind::FitFold { split, fold }, LOp::Fit { model: spec, .. }) => {
                let (data, _) = split_inputs(task, inputs)?;
                let all: Vec<&RecordBatch> = data.iter().flat_map(|(_, b)| b.clone()).collect();
                let b = concat(&all)?;
                // Each fold's model gets its own seed identity.
                let seed = data::rng::hash(cx.seed, &[data::rng::str_id(split), u64::from(*fold)]);
                let mut m = model::fit_single(spec, &b, seed).map_err(fail)?;
                m.name = format!("{} without {split}.fold{fold}", spec.name.value);
                Ok(vec![encode(&m)?])
            }
            (TaskKind::Predict, LOp::Predict { .. }) => {
                let (data, bytes) = split_inputs(task, inputs)?;
                let model = model_input(cx, &bytes)?;
                let all: Vec<&RecordBatch> = data.iter().flat_map(|(_, b)| b.clone()).collect();
                let b = concat(&all)?;
                let pred = model.predict(&b).map_err(fail)?;
                Ok(vec![encode(&pred)?])
            }
            (TaskKind::ScorePartition, LOp::Evaluate { .. }) => {
                let (data, bytes) = split_inputs(task, inputs)?;
                let model = model_input(cx, &bytes)?;
                let (d, b) = data
                    .first()
                    .and_then(|(d, ps)| ps.first().map(|b| (d, b)))
                    .ok_or_else(|| TaskError::internal("no partition to score"))?;
                // A shard's validation part (a split by worker): the matrix's
                // cells of that shard, every member and the ensemble.
                if matches!(d.split_part(), Some((_, Part::ShardValidation(_)))) {
                    let mut cells: Vec<(String, Scores)> = Vec::new();
                    if let model::Body::Ensemble { members, .. } = &model.body {
                        for (shard, m) in members {
                            cells.push((format!("{}[{shard}]", model.name), score(m, b)?));
                        }
                    }
                    cells.push((model.name.clone(), score(&model, b)?));
                    // JSON: scores skip absent fields, which postcard cannot.
                    return Ok(vec![Value::Bytes(
                        serde_json::to_vec(&cells).map_err(fail)?,
                    )]);
                }
                Ok(vec![encode(&tally(&model, b)?)?])
            }
            (TaskKind::RereadScore { source }, LOp::Evaluate { .. }) => {
                let (_, bytes) = split_inputs(task, inputs)?;
                let model = model_input(cx, &bytes)?;
                let TaskPart::Score { index, .. } = &task.id.part else {
                    return Err(TaskError::internal(format!(
                        "`{}` names no partition to read again",
                        task.id
                    )));
                };
                // The source's own read of that partition, run here.
                let read = Task {
                    id: TaskId::new(source, TaskPart::Partition(*index)),
                    node: source.clone(),
                    kind: TaskKind::Read,
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    est_rows: None,
                    est_bytes: None,
                    worker: None,
                };
                let read = self.run_task(&read, &[])?;
                let b = match read.first() {
                    Some(Value::Batch(b)) => b,
                    _ => return Err(TaskError::internal(format!("`{source}` read no rows"))),
                };
                Ok(vec![encode(&tally(&model, b)?)?])
            }
            (TaskKind::Evaluate, LOp::Evaluate { evaluation }) => {
                let (data, bytes) = split_inputs(task, inputs)?;
                let model = model_input(cx, &bytes)?;
                let mut results = Vec::new();
                for r in &evaluation.data {
                    let want = r.value.as_str();
                    // A dataset scored partition by partition: its tallies, in
                    // partition order, merged as `score_parts` merges them.
                    let tallies = bytes
                        .iter()
                        .filter(|(id, _)| {
                            matches!(id.task().map(|t| &t.part),
                                Some(TaskPart::Score { data, .. }) if data == want)
                        })
                        .map(|(_, b)| decode::<metrics::Tally>(b))
                        .collect::<Result<Vec<_>, TaskError>>()?;
                    if let Some((first, rest)) = tallies.split_first() {
                        let mut total = first.clone();
                        for t in rest {
                            total.merge(t)?;
                        }
                        results.push(EvalEntry {
                            data: want.to_string(),
                            model: model.name.clone(),
                            scores: total.scores(),
                            std: None,
                        });
                        continue;
                    }
                    // The reference names a dataset as its id shows it.
                    let exact: Vec<&(&DatasetId, Vec<&RecordBatch>)> =
                        data.iter().filter(|(d, _)| d.to_string() == want).collect();
                    if let Some((d, parts)) = exact.first() {
                        // Predictions the plan shares with other consumers
                        // (one partition: the rows they were made on).
                        let shared = match parts.as_slice() {
                            [one] => shared_predictions(cx, &bytes, want)?.map(|p| (one, p)),
                            _ => None,
                        };
                        let scores = match shared {
                            Some((b, pred)) => tally_of(&model, b, pred)?.scores(),
                            None => score_parts(&model, parts)?,
                        };
                        results.push(EvalEntry {
                            data: d.to_string(),
                            model: model.name.clone(),
                            scores,
                            std: None,
                        });
                        continue;
                    }
                    // A whole k-fold split: each fold scored by the model fitted
                    // without it, then the mean over the folds.
                    let held_out = |i: u32| {
                        bytes.iter().find(|(id, _)| {
                            id.task().is_some_and(|t| {
                                matches!(&t.part, TaskPart::WithoutFold { split, fold }
                                    if split == want && *fold == i)
                            })
                        })
                    };
                    if held_out(1).is_some() {
                        let mut folds = Vec::new();
                        for i in 1.. {
                            let Some((_, fb)) = held_out(i) else {
                                break;
                            };
                            let m: TrainedModel = decode(fb)?;
                            let fold = Part::Fold(i);
                            let d = DatasetId::Part {
                                split: want.to_string(),
                                part: fold.clone(),
                            };
                            let parts = data
                                .iter()
                                .find(|(n, _)| n.split_part() == Some((want, &fold)))
                                .map(|(_, p)| p.clone())
                                .ok_or_else(|| format!("fold `{d}` is missing"))?;
                            let scores = score_parts(&m, &parts)?;
                            results.push(EvalEntry {
                                data: d.to_string(),
                                model: m.name.clone(),
                                scores: scores.clone(),
                                std: None,
                            });
                            folds.push(scores);
                        }
                        let (mean, std) = metrics::mean_over_folds(&folds);
                        results.push(EvalEntry {
                            data: want.to_string(),
                            model: format!("{} ({}-fold mean)", model.name, folds.len()),
                            scores: mean,
                            std: Some(std),
                        });
                        continue;
                    }
                    // A split by worker: each shard's cells, scored where its
                    // rows are, in the order the tasks list them.
                    let cells: Vec<(String, Vec<(String, Scores)>)> = bytes
                        .iter()
                        .filter_map(|(id, b)| match id.task().map(|t| &t.part) {
                            Some(TaskPart::Score { data, .. })
                                if data.starts_with(&format!("{want}.")) =>
                            {
                                Some((data.clone(), *b))
                            }
                            _ => None,
                        })
                        .map(|(d, b)| {
                            serde_json::from_slice(b).map(|c| (d, c)).map_err(|e| {
                                TaskError::new(
                                    FailureKind::CorruptPartition,
                                    format!("corrupt scores of a shard: {e}"),
                                )
                            })
                        })
                        .collect::<Result<_, TaskError>>()?;
                    if !cells.is_empty() {
                        for (d, list) in cells {
                            for (m, scores) in list {
                                results.push(EvalEntry {
                                    data: d.clone(),
                                    model: m,
                                    scores,
                                    std: None,
                                });
                            }
                        }
                        continue;
                    }
                    // A whole shards split: every validation part.
                    let mut parts: Vec<(String, RecordBatch)> = Vec::new();
                    for (d, ps) in data.iter().filter(|(d, _)| {
                        matches!(d.split_part(), Some((s, Part::ShardValidation(_))) if s == want)
                    }) {
                        let b = concat(ps)?;
                        match split::untag_shards(&b).map_err(fail)? {
                            Some(shards) => parts.extend(shards.into_iter().map(|(s, b)| {
                                let d = DatasetId::Part {
                                    split: want.to_string(),
                                    part: Part::ShardValidation(s),
                                };
                                (d.to_string(), b)
                            })),
                            None => parts.push((d.to_string(), b)),
                        }
                    }
                    if parts.is_empty() {
                        return Err(TaskError::internal(format!(
                            "no data for `{want}` reached the evaluation"
                        )));
                    }
                    for (d, b) in parts {
                        if let model::Body::Ensemble { members, .. } = &model.body {
                            for (shard, m) in members {
                                results.push(EvalEntry {
                                    data: d.to_string(),
                                    model: format!("{}[{shard}]", model.name),
                                    scores: score(m, &b)?,
                                    std: None,
                                });
                            }
                        }
                        results.push(EvalEntry {
                            data: d.to_string(),
                            model: model.name.clone(),
                            scores: score(&model, &b)?,
                            std: None,
                        });
                    }
                }
                let res = EvalResult {
                    evaluation: evaluation.name.value.clone(),
                    model: model.name.clone(),
                    task: model.task.name().to_string(),
                    classes: model.classes.clone(),
                    metrics: evaluation
                        .metrics
                        .iter()
                        .map(|m| m.value.name().to_string())
                        .collect(),
                    results,
                    learned: kept_learned(&model),
                };
                Ok(vec![Value::Bytes(serde_json::to_vec(&res).map_err(fail)?)])
            }
            (TaskKind::Write, LOp::Sink { output }) => {
                let path = self.path(&output.path.value);
                let (data, bytes) = split_inputs(task, inputs)?;
                let mut receipt = Receipt {
                    output: output.name.value.clone(),
                    paths: vec![path.display().to_string()],
                    rows: None,
                    staged: Vec::new(),
                };
                let read_back = cx.ops.values().any(|o| {
                    matches!(o, LOp::Source { source, .. }
                        if source.after.as_ref().is_some_and(|a| a.value == output.name.value))
                });
                let mut put = Put {
                    stage: !read_back,
                    staged: Vec::new(),
                };
                match &output.kind {
                    OutputKind::Model { .. } => {
                        let (_, mb) = bytes.first().ok_or("no model to write")?;
                        let model: TrainedModel = decode(mb)?;
                        let spec_params = self
                            .cx
                            .ops
                            .values()
                            .find_map(|o| match o {
                                LOp::Fit { model: s, .. } if s.name.value == model.name => {
                                    Some(match &s.params {
                                        Params::Tree(t) => {
                                            serde_json::to_value(t).unwrap_or_default()
                                        }
                                        Params::Linear(l) => {
                                            serde_json::to_value(l).unwrap_or_default()
                                        }
                                    })
                                }
                                _ => None,
                            })
                            .unwrap_or_default();
                        let file = model_file_bytes(cx, &model, spec_params)?;
                        put.bytes(&path, &file)?;
                    }
                    OutputKind::Metrics { .. } | OutputKind::Report { .. } => {
                        let evaluations = bytes
                            .iter()
                            .map(|(_, b)| serde_json::from_slice::<EvalResult>(b).map_err(fail))
                            .collect::<Result<Vec<_>, String>>()?;
                        let doc = MetricsDoc {
                            pipeline: cx.pipeline.clone(),
                            pipeline_hash: cx.pipeline_hash.clone(),
                            evaluations,
                        };
                        let text = if matches!(output.kind, OutputKind::Report { .. }) {
                            crate::report::render(&doc, &[]).map_err(fail)?.into_bytes()
                        } else {
                            // Keys sorted, as the metrics JSON always had them.
                            let mut t = serde_json::to_vec_pretty(
                                &serde_json::to_value(&doc).map_err(fail)?,
                            )
                            .map_err(fail)?;
                            t.push(b'\n');
                            t
                        };
                        put.bytes(&path, &text)?;
                    }
                    OutputKind::Predictions { format, .. } => {
                        let all: Vec<&RecordBatch> =
                            data.iter().flat_map(|(_, b)| b.clone()).collect();
                        let b = concat(&all)?;
                        let shared = match data.as_slice() {
                            [(d, _)] => shared_predictions(cx, &bytes, &d.to_string())?,
                            _ => None,
                        };
                        let pred = match shared {
                            Some(p) if p.rows() == b.num_rows() => p,
                            Some(p) => {
                                return Err(TaskError::internal(format!(
                                    "{} shared predictions for {} rows",
                                    p.rows(),
                                    b.num_rows()
                                )));
                            }
                            None => {
                                let model = model_input(cx, &bytes)?;
                                model.predict(&b).map_err(fail)?
                            }
                        };
                        let out = predictions_batch(&b, &pred)?;
                        receipt.rows = Some(out.num_rows() as u64);
                        let f = write::format_of(&path, format.value);
                        put.batch(&path, &out, f)?;
                    }
                    OutputKind::Dataset { format, .. } => {
                        receipt.paths.clear();
                        let mut rows = 0;
                        // Task `…/pN` writes partition N's file.
                        let mut i = task.partition().unwrap_or(0) as usize;
                        for (_, parts) in &data {
                            for b in parts {
                                let p = path.join(write::part_file_name(i, format.value));
                                put.batch(&p, b, format.value)?;
                                rows += b.num_rows() as u64;
                                receipt.paths.push(p.display().to_string());
                                i += 1;
                            }
                        }
                        receipt.rows = Some(rows);
                    }
                    OutputKind::Plan { .. } => {
                        let pic = cx
                            .pictures
                            .get(&output.name.value)
                            .ok_or("the plan picture was not rendered")?;
                        put.bytes(&path, pic)?;
                    }
                }
                receipt.staged = put.staged;
                Ok(vec![Value::Bytes(
                    serde_json::to_vec(&receipt).map_err(fail)?,
                )])
            }
            (kind, op) => Err(TaskError::internal(format!(
                "task kind {kind:?} does not apply to a {} step",
                op.kind()
            ))),
        }
    }
}

impl Kernels for PipelineKernels {
    type Value = Value;

    fn run(&self, task: &Task, inputs: Vec<Arc<Value>>) -> Result<Vec<Value>, TaskError> {
        self.run_task(task, &inputs)
    }
}

/// Whether an estimator is one whose fit is long enough for a tree counter.
pub fn counts_trees(kind: EstimatorKind) -> bool {
    matches!(
        kind,
        EstimatorKind::RandomForest | EstimatorKind::DecisionTree
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::executor::{self, Options, Quiet};

    /// Every kind of task whose kernel once parsed ids: per-partition reads,
    /// holdout, k-fold and shard splits, tree groups and their combine, per-shard
    /// fits and their combine, cross-validation fits, evaluations of parts, of a
    /// whole k-fold split and of a whole shards split, and a dataset written one
    /// file per partition.
    const PIPELINE: &str = r#"
[pipeline]
name = "ids"
seed = 5

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 600
features = 4
classes = 2
partitions = 3

[splits.holdout]
kind = "holdout"
input = "rows"
test_fraction = 0.25

[splits.cv]
kind = "kfold"
input = "rows"
k = 3

[splits.regions]
kind = "shards"
input = "rows"
by = "rows"
names = ["north", "south"]
validation_fraction = 0.2

[models.forest]
estimator = "random_forest"
input = "holdout.train"
target = "y"
params = { n_trees = 20, max_depth = 4 }

[models.local]
estimator = "decision_tree"
per_shard = true
combine = "vote"
input = "regions"
target = "y"
params = { max_depth = 4 }

[evaluations.held_out]
model = "forest"
data = ["holdout.test", "cv"]
metrics = ["accuracy"]

[evaluations.matrix]
model = "local"
data = "regions"
metrics = ["accuracy"]

[outputs.metrics]
kind = "metrics"
path = "metrics.json"

[outputs.copy]
kind = "dataset"
data = "rows"
format = "csv"
path = "copy"
"#;

    /// Plan `PIPELINE`, send every task through JSON as a worker receives it,
    /// run the plan in-process, and give the evaluations (as JSON) and the rows
    /// written.
    fn run_as_workers_do(base: &std::path::Path) -> (serde_json::Value, u64, Vec<String>) {
        let prepared =
            crate::workspace::prepare_bytes("ids.toml", PIPELINE.as_bytes(), base.into())
                .unwrap_or_else(|e| panic!("the test pipeline plans: {e}"));
        let mut plan = prepared.plan;
        plan.tasks = plan
            .tasks
            .iter()
            .map(|t| serde_json::from_str(&serde_json::to_string(t).unwrap()).unwrap())
            .collect();
        let ids: Vec<String> = plan.tasks.iter().map(|t| t.id.to_string()).collect();
        let kernels = PipelineKernels {
            cx: Arc::new(prepared.cx),
        };
        let keep = plan
            .tasks
            .iter()
            .filter(|t| matches!(t.kind, TaskKind::Evaluate | TaskKind::Write))
            .flat_map(|t| t.outputs.iter().map(ToString::to_string))
            .collect();
        let opts = Options {
            threads: 2,
            keep,
            ..Options::default()
        };
        let out = executor::run(&plan, &kernels, &Quiet, &opts)
            .unwrap_or_else(|e| panic!("the test pipeline runs: {e}"));
        let (evals, receipts) =
            crate::runtime::report::results_of(&plan, |id| out.values.get(id).map(|v| &**v));
        let rows = receipts.iter().filter_map(|r| r.rows).sum();
        (serde_json::to_value(&evals).unwrap(), rows, ids)
    }

    #[test]
    fn kernels_read_typed_ids_so_renaming_their_text_changes_no_result() {
        let dir = tempfile::tempdir().unwrap();
        let (evals, rows, ids) = run_as_workers_do(dir.path());
        if crate::plan::ids::renamed() {
            // The child below: the same run with every id shown differently.
            assert!(
                ids.iter().all(|i| !i.contains('/')),
                "ids are not renamed: {ids:?}"
            );
            let out = std::env::var_os("DAGML_TEST_RENAMED_OUT").expect("where to answer");
            std::fs::write(out, serde_json::to_vec(&(evals, rows)).unwrap()).unwrap();
            return;
        }
        // Every kernel that once parsed an id ran.
        for want in ["/g1", "/shard-north", "/without-cv.fold3", "sink:copy/p2"] {
            assert!(ids.iter().any(|i| i.contains(want)), "{want} in {ids:?}");
        }
        let data: Vec<&str> = evals
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["results"].as_array().into_iter().flatten())
            .filter_map(|r| r["data"].as_str())
            .collect();
        for want in ["holdout.test", "cv.fold3", "cv", "regions.south.validation"] {
            assert!(data.contains(&want), "{want} in {data:?}");
        }
        assert_eq!(rows, 600);
        // The same test in a process where every id shows with other
        // separators and suffixes (`/p0` → `#0`, `/out` → `::result`, ...).
        let answer = dir.path().join("renamed.json");
        let exe = std::env::current_exe().unwrap();
        let child = std::process::Command::new(exe)
            .args([
                "runtime::kernels::tests::kernels_read_typed_ids_so_renaming_their_text_changes_no_result",
                "--exact",
                "--test-threads=1",
            ])
            .env("DAGML_TEST_RENAME_IDS", "1")
            .env("DAGML_TEST_RENAMED_OUT", &answer)
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "the renamed run failed:\n{}{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        let renamed: (serde_json::Value, u64) =
            serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
        assert_eq!(renamed, (evals, rows));
    }
}

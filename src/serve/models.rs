//! What is served: a [`Backend`] names its models, describes them and answers
//! a batch of rows. [`LocalModels`] holds model files in this process; a
//! cluster backend (broadcast to the workers that hold shard models) is
//! another implementation of the same trait.
//!
//! In: model files; a request's named columns. Out: the batch the model reads
//! (columns checked against its features and cast without loss) and its
//! prediction columns, with the version that answered.
//! Must not: accept a column the model does not read, or a cast that changes a value.

use super::protocol::{Datatype, ModelMetadata, TensorMetadata};
use super::{ServeError, StartError};
use crate::ml::model::Model;
use crate::ml::model::TrainedModel;
use crate::ml::model_file;
use crate::ml::model_file::{FeatureInfo, ModelHeader};
use crate::runtime::kernels::prediction_columns;
use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// What a client needs to know of a model to call it.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub features: Vec<FeatureInfo>,
    pub task: String,
    pub estimator: String,
    pub classes: Vec<String>,
    /// Versions, oldest first; the last one answers.
    pub versions: Vec<String>,
    pub parameters: Map<String, Value>,
}

impl ModelInfo {
    pub fn of_header(h: &ModelHeader, version: String) -> ModelInfo {
        let mut parameters = Map::new();
        parameters.insert("pipeline".into(), Value::from(h.pipeline.clone()));
        parameters.insert("pipeline_hash".into(), Value::from(h.pipeline_hash.clone()));
        parameters.insert("estimator".into(), Value::from(h.estimator.clone()));
        parameters.insert("task".into(), Value::from(h.task.clone()));
        parameters.insert("target".into(), Value::from(h.target.clone()));
        if !h.classes.is_empty() {
            parameters.insert("classes".into(), Value::from(h.classes.clone()));
        }
        ModelInfo {
            name: h.model.clone(),
            features: h.features.clone(),
            task: h.task.clone(),
            estimator: h.estimator.clone(),
            classes: h.classes.clone(),
            versions: vec![version],
            parameters,
        }
    }

    pub fn classifier(&self) -> bool {
        self.task == "classification"
    }

    /// The protocol's model metadata: one input per feature column, outputs
    /// `prediction` (and `probability` for classifiers).
    pub fn metadata(&self) -> ModelMetadata {
        let inputs = self
            .features
            .iter()
            .map(|f| TensorMetadata {
                name: f.name.clone(),
                datatype: DataType::from_str(&f.dtype)
                    .ok()
                    .and_then(|t| Datatype::of_arrow(&t))
                    .map_or("BYTES", |d| d.name())
                    .to_string(),
                shape: vec![-1],
            })
            .collect();
        let mut outputs = vec![TensorMetadata {
            name: "prediction".into(),
            datatype: if self.classifier() { "BYTES" } else { "FP64" }.into(),
            shape: vec![-1],
        }];
        if self.classifier() {
            outputs.push(TensorMetadata {
                name: "probability".into(),
                datatype: "FP32".into(),
                shape: vec![-1],
            });
        }
        ModelMetadata {
            name: self.name.clone(),
            versions: self.versions.clone(),
            platform: "dagml".into(),
            inputs,
            outputs,
            parameters: self.parameters.clone(),
        }
    }

    /// The batch the model reads, from a request's columns: every feature
    /// present, no other column, each one cast to the feature's type when
    /// that changes no value. A column the model does not read, and text for
    /// a number, are refused here; a feature missing or given twice, and the
    /// casts, are `model_file::conform`'s, as for `dagml predict`.
    pub fn conform(&self, columns: Vec<(String, ArrayRef)>) -> Result<RecordBatch, ServeError> {
        let is_feature = |n: &str| self.features.iter().any(|f| f.name == n);
        let extra: std::collections::BTreeSet<&str> = columns
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !is_feature(n))
            .collect();
        if !extra.is_empty() {
            return Err(ServeError::BadRequest(format!(
                "model `{}` has no input {}; its inputs are {}",
                self.name,
                quoted(&extra.into_iter().collect::<Vec<_>>()),
                quoted(
                    &self
                        .features
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                )
            )));
        }
        // Text for a number is a wrong datatype here (a CSV cell may be text
        // that parses; a tensor has a type).
        for f in &self.features {
            if let Some((_, col)) = columns.iter().find(|(n, _)| *n == f.name)
                && matches!(col.data_type(), DataType::Utf8)
                && f.dtype != "Utf8"
            {
                return Err(ServeError::BadRequest(format!(
                    "input `{}` is BYTES but the model reads it as {}: send the numbers as numbers",
                    f.name,
                    DataType::from_str(&f.dtype)
                        .ok()
                        .as_ref()
                        .map_or_else(|| f.dtype.clone(), proto_name)
                )));
            }
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
            .collect();
        let cols: Vec<ArrayRef> = columns.into_iter().map(|(_, c)| c).collect();
        let rows = cols.first().map_or(0, |c| c.len());
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            cols,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| ServeError::BadRequest(format!("the inputs do not make one batch: {e}")))?;
        // Missing and duplicated inputs, and the casts `dagml predict` makes,
        // so the answers are its answers.
        let batch = model_file::conform(&self.features, &batch)
            .map_err(|e| ServeError::BadRequest(format!("model `{}`: {e}", self.name)))?;
        // In the features' order (conform checked each is there once).
        let order: Vec<usize> = self
            .features
            .iter()
            .filter_map(|f| batch.schema().index_of(&f.name).ok())
            .collect();
        batch
            .project(&order)
            .map_err(|e| ServeError::BadRequest(format!("the inputs do not make one batch: {e}")))
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn proto_name(t: &DataType) -> String {
    Datatype::of_arrow(t).map_or_else(|| t.to_string(), |d| d.name().to_string())
}

/// A backend's answer: the prediction columns, the version that answered,
/// and parameters for the response (for an ensemble, the shard versions).
pub struct Answer {
    pub columns: Vec<(Field, ArrayRef)>,
    pub version: String,
    pub parameters: Map<String, Value>,
}

/// Where models live and how they answer.
pub trait Backend: Send + Sync + 'static {
    /// Every model served, by name.
    fn models(&self) -> Vec<ModelInfo>;
    fn model(&self, name: &str) -> Option<ModelInfo>;
    /// Whether `name` can answer now.
    fn ready(&self, name: &str) -> bool;
    /// Predict on a batch already conformed to the model's features.
    fn infer(
        &self,
        name: &str,
        batch: RecordBatch,
    ) -> BoxFuture<'static, Result<Answer, ServeError>>;
}

/// Model files served from this process.
pub struct LocalModels {
    models: BTreeMap<String, Arc<Local>>,
}

struct Local {
    info: ModelInfo,
    model: TrainedModel,
}

/// Rows below which a request is predicted on the async thread itself: a
/// hand-off to a blocking thread costs more than the prediction.
const INLINE_ROWS: usize = 64;

/// A model file's version: the first 12 hex digits of the SHA-256 of its bytes.
pub fn version_of(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl LocalModels {
    /// Load model files, given as `PATH` (served under the model's own name)
    /// or `NAME=PATH`.
    pub fn load(specs: &[String]) -> Result<LocalModels, StartError> {
        let mut models: BTreeMap<String, Arc<Local>> = BTreeMap::new();
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        for spec in specs {
            let (rename, path) = match spec.split_once('=') {
                Some((n, p)) if !n.is_empty() && !Path::new(spec).exists() => (Some(n), p),
                _ => (None, spec.as_str()),
            };
            let bytes = std::fs::read(path).map_err(|e| StartError::Read(path.into(), e))?;
            let (header, model) = model_file::read(&bytes)
                .map_err(|e| StartError::Model(path.into(), e.to_string()))?;
            let mut info = ModelInfo::of_header(&header, version_of(&bytes));
            if let Some(n) = rename {
                info.name = n.to_string();
            }
            if let Some(first) = paths.get(&info.name) {
                return Err(StartError::Duplicate(
                    info.name.clone(),
                    first.clone(),
                    path.into(),
                ));
            }
            paths.insert(info.name.clone(), path.into());
            models.insert(info.name.clone(), Arc::new(Local { info, model }));
        }
        if models.is_empty() {
            return Err(StartError::Other("no model files to serve".into()));
        }
        Ok(LocalModels { models })
    }
}

fn predict(local: &Local, batch: &RecordBatch) -> Result<Answer, ServeError> {
    let pred = local
        .model
        .predict(batch)
        .map_err(|e| ServeError::BadRequest(format!("model `{}`: {e}", local.info.name)))?;
    Ok(Answer {
        columns: prediction_columns(&pred),
        version: local.info.versions.last().cloned().unwrap_or_default(),
        parameters: Map::new(),
    })
}

impl Backend for LocalModels {
    fn models(&self) -> Vec<ModelInfo> {
        self.models.values().map(|m| m.info.clone()).collect()
    }

    fn model(&self, name: &str) -> Option<ModelInfo> {
        self.models.get(name).map(|m| m.info.clone())
    }

    fn ready(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    fn infer(
        &self,
        name: &str,
        batch: RecordBatch,
    ) -> BoxFuture<'static, Result<Answer, ServeError>> {
        let local = self.models.get(name).cloned();
        Box::pin(async move {
            let local = local.ok_or_else(|| ServeError::NotFound("no such model".into()))?;
            if batch.num_rows() <= INLINE_ROWS {
                predict(&local, &batch)
            } else {
                tokio::task::spawn_blocking(move || predict(&local, &batch))
                    .await
                    .map_err(|e| ServeError::Internal(format!("the prediction stopped: {e}")))?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};

    fn info() -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            features: vec![
                FeatureInfo {
                    name: "x".into(),
                    dtype: "Float64".into(),
                },
                FeatureInfo {
                    name: "n".into(),
                    dtype: "Int64".into(),
                },
            ],
            task: "regression".into(),
            estimator: "linear".into(),
            classes: vec![],
            versions: vec!["v".into()],
            parameters: Map::new(),
        }
    }

    fn col(a: impl Array + 'static) -> ArrayRef {
        Arc::new(a)
    }

    #[test]
    fn integers_widen_to_a_float_feature_and_text_is_refused() {
        let b = info()
            .conform(vec![
                ("x".into(), col(Int64Array::from(vec![1, 2]))),
                ("n".into(), col(Int64Array::from(vec![3, 4]))),
            ])
            .unwrap();
        assert_eq!(b.column(0).data_type(), &DataType::Float64);
        let e = info()
            .conform(vec![
                ("x".into(), col(StringArray::from(vec!["1", "a"]))),
                ("n".into(), col(Int64Array::from(vec![3, 4]))),
            ])
            .unwrap_err();
        assert!(e.to_string().contains("`x` is BYTES"), "{e}");
    }

    #[test]
    fn a_fraction_does_not_become_an_integer() {
        let e = info()
            .conform(vec![
                ("x".into(), col(Float64Array::from(vec![1.0]))),
                ("n".into(), col(Float64Array::from(vec![2.5]))),
            ])
            .unwrap_err();
        assert!(e.to_string().contains("row 1: 2.5 does not convert"), "{e}");
        // A whole number does.
        info()
            .conform(vec![
                ("x".into(), col(Float64Array::from(vec![1.0]))),
                ("n".into(), col(Float64Array::from(vec![2.0]))),
            ])
            .unwrap();
    }

    #[test]
    fn missing_and_extra_inputs_are_named() {
        let e = info()
            .conform(vec![("x".into(), col(Float64Array::from(vec![1.0])))])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("the input has no column `n`, which the model reads"),
            "{e}"
        );
        // Given twice: refused by the same check `dagml predict` makes.
        let e = info()
            .conform(vec![
                ("x".into(), col(Float64Array::from(vec![1.0]))),
                ("x".into(), col(Float64Array::from(vec![2.0]))),
                ("n".into(), col(Int64Array::from(vec![1]))),
            ])
            .unwrap_err();
        assert!(e.to_string().contains("2 columns named `x`"), "{e}");
        let e = info()
            .conform(vec![
                ("x".into(), col(Float64Array::from(vec![1.0]))),
                ("n".into(), col(Int64Array::from(vec![1]))),
                ("zz".into(), col(Int64Array::from(vec![1]))),
            ])
            .unwrap_err();
        assert!(e.to_string().contains("no input `zz`"), "{e}");
    }
}

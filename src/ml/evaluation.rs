//! An evaluation's results as the metrics JSON holds them, and the document
//! a `metrics` (or `report`) output writes: what `dagml report` reads back.
//!
//! In: scores per dataset and the evaluated model. Out: serde types. Must not:
//! hold anything but results (no paths, no clocks).

use super::inspect::{self, Learned};
use super::metrics::Scores;
use super::model::TrainedModel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A metrics JSON file: `{ pipeline, pipeline_hash, evaluations }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsDoc {
    pub pipeline: String,
    pub pipeline_hash: String,
    pub evaluations: Vec<EvalResult>,
}

/// One evaluation's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub evaluation: String,
    pub model: String,
    pub task: String,
    pub classes: Vec<String>,
    pub metrics: Vec<String>,
    pub results: Vec<EvalEntry>,
    /// What the evaluated model learned, when it is small enough to keep here:
    /// a linear model's coefficients and intercept, a forest's shape and feature
    /// importances (a per-shard ensemble: each member's). Logistic regressions
    /// are left out (classes × features numbers; `dagml inspect` shows them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<Learned>,
}

/// The learned state an evaluation keeps (see [`EvalResult::learned`]).
pub fn kept_learned(model: &TrainedModel) -> Option<Learned> {
    fn small(l: &Learned) -> bool {
        match l {
            Learned::Logistic { .. } => false,
            Learned::Ensemble { members, .. } => members.iter().all(|m| small(&m.learned)),
            _ => true,
        }
    }
    Some(inspect::learned(model)).filter(small)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalEntry {
    /// The dataset scored.
    pub data: String,
    /// The model that scored it: the whole model, or one shard's member.
    pub model: String,
    pub scores: Scores,
    /// For the mean over the folds of a cross-validation: the standard deviation
    /// of each scalar metric over the folds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<BTreeMap<String, f64>>,
}

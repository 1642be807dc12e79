//! What a fitted model learned, as data: the model file's header, the features
//! and their types, the fitted preprocessing, and the estimator's learned state
//! (coefficients and intercepts, tree shapes and feature importances, the members
//! of a per-shard ensemble); and that as text (`dagml inspect`).
//!
//! In: a model file's bytes, or a [`TrainedModel`]. Out: an [`Inspection`] or a
//! [`Learned`] (serde, for `--format json` and the metrics JSON), and its text.
//! Must not: print, read files, or put anything in the text that varies between
//! runs of the same pipeline (no paths, no clocks).

use super::model::{Body, TrainedModel};
use super::model_file::{self, FeatureInfo, ModelFileError};
use super::tree::{self, Tree};
use crate::data::ops::{Fill, Fitted};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    File(#[from] ModelFileError),
    #[error("the model payload is corrupt: {0}")]
    Payload(String),
}

/// Where a model comes from: the model file's header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub pipeline: String,
    pub pipeline_hash: String,
    pub dagml_version: String,
    pub format_version: u32,
    pub model: String,
    pub estimator: String,
    pub task: String,
    pub target: String,
    pub classes: Vec<String>,
    /// The estimator's parameters as the pipeline set them.
    pub params: serde_json::Value,
}

/// A model file, opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    pub origin: Origin,
    /// The columns the model reads, with their types.
    pub inputs: Vec<FeatureInfo>,
    /// The features after preprocessing, in the estimator's order.
    pub features: Vec<String>,
    pub preprocessing: Vec<Preprocessing>,
    pub learned: Learned,
}

/// One fitted preprocessing step and what it learned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Preprocessing {
    /// A row operation (learns nothing).
    Row { name: String },
    /// The value each column's missing entries are filled with.
    Impute { fills: Vec<(String, String)> },
    /// The categories kept per column, in output order.
    OneHot {
        categories: Vec<(String, Vec<String>)>,
    },
    Ordinal {
        categories: Vec<(String, Vec<String>)>,
    },
    /// `(x - shift) / scale` per column.
    Scale { columns: Vec<ScaleColumn> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleColumn {
    pub column: String,
    pub shift: f64,
    pub scale: f64,
}

/// A feature and a number learned for it (a coefficient, an importance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    pub feature: String,
    pub value: f64,
}

/// Minimum, mean and maximum of a count over trees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: usize,
    pub mean: f64,
    pub max: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassWeights {
    pub class: String,
    pub intercept: f64,
    /// Largest magnitude first.
    pub coefficients: Vec<Weight>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub shard: String,
    pub estimator: String,
    pub learned: Learned,
}

/// The estimator's learned state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Learned {
    /// Linear or ridge regression: one coefficient per feature, in feature order.
    Linear {
        intercept: f64,
        coefficients: Vec<Weight>,
    },
    /// Multinomial logistic regression: per class, coefficients largest first.
    Logistic {
        iterations: u32,
        converged: bool,
        classes: Vec<ClassWeights>,
    },
    /// A decision tree or a random forest.
    Trees {
        trees: usize,
        depth: Spread,
        leaves: Spread,
        /// Impurity-based, normalised, in feature order (see `ml::tree`).
        importances: Vec<Weight>,
    },
    /// One model per shard, combined by `combine` (`vote` or `average`).
    Ensemble {
        combine: String,
        members: Vec<Member>,
    },
}

fn spread(v: impl Iterator<Item = usize>) -> Spread {
    let v: Vec<usize> = v.collect();
    let n = v.len().max(1) as f64;
    Spread {
        min: v.iter().copied().min().unwrap_or(0),
        mean: v.iter().sum::<usize>() as f64 / n,
        max: v.iter().copied().max().unwrap_or(0),
    }
}

fn weights(features: &[String], values: impl Iterator<Item = f64>) -> Vec<Weight> {
    features
        .iter()
        .zip(values)
        .map(|(f, value)| Weight {
            feature: f.clone(),
            value,
        })
        .collect()
}

/// Forest importances, in feature order.
pub fn importances(features: &[String], trees: &[Tree]) -> Vec<Weight> {
    weights(
        features,
        tree::forest_importances(trees, features.len()).into_iter(),
    )
}

/// The learned state of a fitted model.
pub fn learned(m: &TrainedModel) -> Learned {
    match &m.body {
        Body::Linear(l) => Learned::Linear {
            intercept: l.intercept,
            coefficients: weights(&m.features, l.coef.iter().copied()),
        },
        Body::Logistic(l) => {
            let k = l.classes.max(1);
            let classes = (0..l.classes)
                .map(|c| {
                    let mut coefficients = weights(
                        &m.features,
                        (0..l.features)
                            .map(|j| f64::from(l.w.get(j * k + c).copied().unwrap_or(0.0))),
                    );
                    // Largest magnitude first; ties in feature order.
                    coefficients.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
                    ClassWeights {
                        class: m.classes.get(c).cloned().unwrap_or_else(|| c.to_string()),
                        intercept: f64::from(l.b.get(c).copied().unwrap_or(0.0)),
                        coefficients,
                    }
                })
                .collect();
            Learned::Logistic {
                iterations: l.iterations,
                converged: l.converged,
                classes,
            }
        }
        Body::Forest(f) => Learned::Trees {
            trees: f.trees.len(),
            depth: spread(f.trees.iter().map(Tree::depth)),
            leaves: spread(f.trees.iter().map(Tree::leaves)),
            importances: importances(&m.features, &f.trees),
        },
        Body::Ensemble { members, combine } => Learned::Ensemble {
            combine: match combine {
                crate::frontend::pipeline::Combine::Vote => "vote",
                crate::frontend::pipeline::Combine::Average => "average",
            }
            .to_string(),
            members: members
                .iter()
                .map(|(shard, mm)| Member {
                    shard: shard.clone(),
                    estimator: mm.estimator.clone(),
                    learned: learned(mm),
                })
                .collect(),
        },
    }
}

fn fill_text(f: &Fill) -> String {
    match f {
        Fill::Num(v) => format!("{v}"),
        Fill::Text(t) => format!("{t:?}"),
        Fill::Bool(b) => b.to_string(),
    }
}

/// The fitted preprocessing of a model, described.
pub fn preprocessing(fitted: &[Fitted]) -> Vec<Preprocessing> {
    fitted
        .iter()
        .map(|f| match f {
            Fitted::Row(op) => Preprocessing::Row {
                name: op.name().to_string(),
            },
            Fitted::Impute(v) => Preprocessing::Impute {
                fills: v.iter().map(|(c, f)| (c.clone(), fill_text(f))).collect(),
            },
            Fitted::OneHot(v) => Preprocessing::OneHot {
                categories: v.clone(),
            },
            Fitted::Ordinal(v) => Preprocessing::Ordinal {
                categories: v.clone(),
            },
            Fitted::Scale(v) => Preprocessing::Scale {
                columns: v
                    .iter()
                    .map(|(c, shift, scale)| ScaleColumn {
                        column: c.clone(),
                        shift: *shift,
                        scale: *scale,
                    })
                    .collect(),
            },
        })
        .collect()
}

/// Open a model file's bytes.
pub fn inspect_bytes(bytes: &[u8]) -> Result<Inspection, InspectError> {
    let (h, payload) = model_file::decode(bytes)?;
    let m: TrainedModel =
        postcard::from_bytes(payload).map_err(|e| InspectError::Payload(e.to_string()))?;
    Ok(Inspection {
        origin: Origin {
            pipeline: h.pipeline,
            pipeline_hash: h.pipeline_hash,
            dagml_version: h.dagml_version,
            format_version: h.format_version,
            model: h.model,
            estimator: h.estimator,
            task: h.task,
            target: h.target,
            classes: h.classes,
            params: h.params,
        },
        inputs: h.features,
        features: m.features.clone(),
        preprocessing: preprocessing(&m.preprocess),
        learned: learned(&m),
    })
}

/// How many coefficients per class and importances the text shows.
pub const TEXT_TOP: usize = 20;

fn more(out: &mut String, indent: &str, left: usize) {
    if left > 0 {
        let _ = writeln!(out, "{indent}... {left} more (--format json has all)");
    }
}

fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(0).clamp(9, 40)
}

/// The learned state as text, each line starting with `indent`.
pub fn learned_text(l: &Learned, indent: &str) -> String {
    let mut out = String::new();
    match l {
        Learned::Linear {
            intercept,
            coefficients,
        } => {
            let w = name_width(coefficients.iter().map(|c| c.feature.as_str()));
            let _ = writeln!(out, "{indent}{:<w$}  {intercept:>12.6}", "intercept");
            for c in coefficients {
                let _ = writeln!(out, "{indent}{:<w$}  {:>12.6}", c.feature, c.value);
            }
        }
        Learned::Logistic {
            iterations,
            converged,
            classes,
        } => {
            let state = if *converged {
                "converged"
            } else {
                "not converged"
            };
            let _ = writeln!(out, "{indent}L-BFGS: {iterations} iterations, {state}");
            for c in classes {
                let _ = writeln!(
                    out,
                    "{indent}class {}: intercept {:.6}, largest coefficients:",
                    c.class, c.intercept
                );
                let shown = &c.coefficients[..c.coefficients.len().min(TEXT_TOP)];
                let w = name_width(shown.iter().map(|c| c.feature.as_str()));
                for x in shown {
                    let _ = writeln!(out, "{indent}  {:<w$}  {:>12.6}", x.feature, x.value);
                }
                more(
                    &mut out,
                    &format!("{indent}  "),
                    c.coefficients.len() - shown.len(),
                );
            }
        }
        Learned::Trees {
            trees,
            depth,
            leaves,
            importances,
        } => {
            let _ = writeln!(out, "{indent}trees   {trees}");
            let _ = writeln!(
                out,
                "{indent}depth   min {} mean {:.1} max {}",
                depth.min, depth.mean, depth.max
            );
            let _ = writeln!(
                out,
                "{indent}leaves  min {} mean {:.1} max {}",
                leaves.min, leaves.mean, leaves.max
            );
            let mut ranked: Vec<&Weight> = importances.iter().filter(|w| w.value > 0.0).collect();
            ranked.sort_by(|a, b| b.value.total_cmp(&a.value));
            let _ = writeln!(
                out,
                "{indent}feature importances (impurity-based, normalised), largest first:"
            );
            let shown = &ranked[..ranked.len().min(TEXT_TOP)];
            let w = name_width(shown.iter().map(|c| c.feature.as_str()));
            for x in shown {
                let _ = writeln!(out, "{indent}  {:<w$}  {:.6}", x.feature, x.value);
            }
            more(&mut out, &format!("{indent}  "), ranked.len() - shown.len());
            let unused = importances.len() - ranked.len();
            if unused > 0 {
                let _ = writeln!(out, "{indent}  ({unused} features never split on)");
            }
        }
        Learned::Ensemble { combine, members } => {
            let _ = writeln!(
                out,
                "{indent}{} shard models, combined by {combine}",
                members.len()
            );
            for m in members {
                let _ = writeln!(out, "{indent}shard {} ({}):", m.shard, m.estimator);
                out.push_str(&learned_text(&m.learned, &format!("{indent}  ")));
            }
        }
    }
    out
}

/// `dagml inspect`'s text.
pub fn render_text(i: &Inspection) -> String {
    let o = &i.origin;
    let mut out = String::new();
    let _ = writeln!(out, "model      {} ({}, {})", o.model, o.estimator, o.task);
    let _ = writeln!(out, "pipeline   {}", o.pipeline);
    let _ = writeln!(out, "hash       sha256:{}", o.pipeline_hash);
    let _ = writeln!(
        out,
        "dagml      {} (model file format {})",
        o.dagml_version, o.format_version
    );
    let _ = writeln!(out, "target     {}", o.target);
    if !o.classes.is_empty() {
        let _ = writeln!(out, "classes    {}", o.classes.join(", "));
    }
    if let Some(p) = o.params.as_object().filter(|p| !p.is_empty()) {
        let text: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "params     {}", text.join(" "));
    }
    let _ = writeln!(out, "\ninputs ({})", i.inputs.len());
    let shown = &i.inputs[..i.inputs.len().min(TEXT_TOP * 2)];
    let w = name_width(shown.iter().map(|f| f.name.as_str()));
    for f in shown {
        let _ = writeln!(out, "  {:<w$}  {}", f.name, f.dtype);
    }
    more(&mut out, "  ", i.inputs.len() - shown.len());
    if i.features != i.inputs.iter().map(|f| f.name.clone()).collect::<Vec<_>>() {
        let _ = writeln!(out, "features after preprocessing ({})", i.features.len());
    }
    if !i.preprocessing.is_empty() {
        let _ = writeln!(out, "\npreprocessing");
        for p in &i.preprocessing {
            match p {
                Preprocessing::Row { name } => {
                    let _ = writeln!(out, "  {name}");
                }
                Preprocessing::Impute { fills } => {
                    for (c, v) in fills {
                        let _ = writeln!(out, "  impute   {c} <- {v}");
                    }
                }
                Preprocessing::OneHot { categories } | Preprocessing::Ordinal { categories } => {
                    let op = if matches!(p, Preprocessing::OneHot { .. }) {
                        "one_hot"
                    } else {
                        "ordinal"
                    };
                    for (c, cats) in categories {
                        let _ = writeln!(out, "  {op:<8} {c}: {}", cats.join(", "));
                    }
                }
                Preprocessing::Scale { columns } => {
                    for c in columns {
                        let _ = writeln!(
                            out,
                            "  scale    {}: (x - {:.6}) / {:.6}",
                            c.column, c.shift, c.scale
                        );
                    }
                }
            }
        }
    }
    let kind = match &i.learned {
        Learned::Linear { .. } => "linear model",
        Learned::Logistic { .. } => "logistic regression",
        Learned::Trees { trees: 1, .. } => "decision tree",
        Learned::Trees { .. } => "forest",
        Learned::Ensemble { .. } => "per-shard ensemble",
    };
    let _ = writeln!(out, "\nlearned: {kind}");
    out.push_str(&learned_text(&i.learned, "  "));
    out
}

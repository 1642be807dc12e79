//! The pipeline model: what a pipeline file means, whichever syntax it was written in.
//!
//! In: built by `lower` from a [`super::node::Node`] tree (TOML or dagml language).
//! Out: [`Pipeline`], checked for keys, types and ranges; names are not resolved yet
//! (that is `compile`). Every value a diagnostic may point at keeps its span.
//! Must not: do I/O, or hold anything that depends on the environment (tokens,
//! absolute paths): the runtime never sees TOML, and the spec never sees the machine.

use super::expr::Expr;
use super::span::{Span, Spanned};

pub type Name = Spanned<String>;

/// A reference to a dataset: a source or transform (`houses`), a part of a split
/// (`holdout.train`, `shards.A`), or a split as a whole (`shards`).
pub type DataRef = Spanned<String>;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pipeline {
    pub name: Name,
    pub description: Option<String>,
    pub seed: u64,
    pub sources: Vec<Source>,
    pub transforms: Vec<Transform>,
    pub splits: Vec<Split>,
    pub models: Vec<ModelSpec>,
    pub evaluations: Vec<Evaluation>,
    pub outputs: Vec<Output>,
    pub cluster: Option<Cluster>,
    /// Steps written in the file that could not be lowered (an unknown estimator, a
    /// missing key...), with the names they refer to. Checking uses them so that a
    /// broken step is reported once, not again at every reference to it, and what
    /// it reads is not called unused. Empty for a valid pipeline; not part of what
    /// the pipeline means, so never serialized.
    #[serde(skip)]
    pub broken: Vec<BrokenStep>,
}

/// A step that is in the file but not in the model: see [`Pipeline::broken`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokenStep {
    pub name: Name,
    /// Names it refers to (`input`, `data`, `model`, ...), as written; `*` for a
    /// reference that is not a string (it could mean any step).
    pub refs: Vec<Name>,
}

pub const DEFAULT_SEED: u64 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ColumnType {
    Int,
    Float,
    Bool,
    String,
}

impl ColumnType {
    pub const NAMES: &'static [&'static str] = &["int", "float", "bool", "string"];
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Bool => "bool",
            ColumnType::String => "string",
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    pub name: Name,
    pub span: Span,
    pub kind: SourceKind,
    /// A dataset output of this pipeline that this source reads back: the source
    /// runs after that output is written (and may share its path).
    pub after: Option<Name>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MnistSubset {
    Train,
    Test,
    /// Both files, with the predefined train/test membership kept for a `predefined` split.
    All,
}

impl Source {
    /// The file, folder or glob the source reads; none for generated data.
    pub fn path(&self) -> Option<&Spanned<String>> {
        match &self.kind {
            SourceKind::Mnist { path, .. }
            | SourceKind::Parquet { path }
            | SourceKind::Arrow { path } => Some(path),
            SourceKind::Csv(c) => Some(&c.path),
            SourceKind::Synthetic(_) => None,
        }
    }

    /// The path of a source read from CSV, Parquet or Arrow files (a file, a
    /// folder of them or a glob) and their format; none for MNIST and generators.
    pub fn file_path(&self) -> Option<(&Spanned<String>, FileFormat)> {
        match &self.kind {
            SourceKind::Csv(c) => Some((&c.path, FileFormat::Csv)),
            SourceKind::Parquet { path } => Some((path, FileFormat::Parquet)),
            SourceKind::Arrow { path } => Some((path, FileFormat::Arrow)),
            SourceKind::Mnist { .. } | SourceKind::Synthetic(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SourceKind {
    /// MNIST IDX files (gzipped or raw) in a directory.
    Mnist {
        path: Spanned<String>,
        subset: MnistSubset,
    },
    Csv(CsvSource),
    /// One Parquet file, or a directory / glob of them (one partition each).
    Parquet {
        path: Spanned<String>,
    },
    /// One Arrow IPC file, or a directory / glob of them.
    Arrow {
        path: Spanned<String>,
    },
    Synthetic(Synthetic),
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CsvSource {
    /// A file, or a directory / glob of files (one partition each).
    pub path: Spanned<String>,
    pub header: bool,
    pub delimiter: char,
    pub na_values: Vec<String>,
    /// Declared column types; other columns are inferred.
    pub columns: Vec<(Name, Spanned<ColumnType>)>,
}

pub const DEFAULT_NA_VALUES: &[&str] = &["", "NA", "N/A", "NaN", "null"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Generator {
    /// Like scikit-learn's make_classification: informative features around class
    /// centroids, redundant combinations, noise features.
    Classification,
    /// Linear target over informative features plus Gaussian noise.
    Regression,
    /// Isotropic Gaussian clusters, one per class.
    Blobs,
    /// Independent standard-normal columns, named by `columns`.
    Gaussian,
}

impl Generator {
    pub const NAMES: &'static [&'static str] =
        &["classification", "regression", "blobs", "gaussian"];
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Synthetic {
    pub generator: Generator,
    pub rows: Spanned<u64>,
    pub features: Spanned<u32>,
    pub informative: Option<Spanned<u32>>,
    pub classes: Spanned<u32>,
    pub noise: f64,
    pub partitions: Spanned<u32>,
    /// Column names for `gaussian` (defaults x0, x1, ...).
    pub columns: Vec<Name>,
    /// Name of the generated target column (`y`); none for `gaussian`.
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transform {
    pub name: Name,
    pub span: Span,
    pub input: DataRef,
    pub steps: Vec<Spanned<Op>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ImputeStrategy {
    Mean,
    Median,
    MostFrequent,
    Constant,
}

impl ImputeStrategy {
    pub const NAMES: &'static [&'static str] = &["mean", "median", "most_frequent", "constant"];
}

/// A literal fill value for `impute` with the `constant` strategy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// One preprocessing operation. `columns: None` means every column it applies to
/// (numeric ones for scaling and numeric imputing, text ones for encoding).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Select {
        columns: Vec<Name>,
    },
    Drop {
        columns: Vec<Name>,
    },
    Derive {
        column: Name,
        expr: Spanned<Expr>,
    },
    Filter {
        expr: Spanned<Expr>,
    },
    Cast {
        column: Name,
        to: Spanned<ColumnType>,
    },
    Impute {
        columns: Option<Vec<Name>>,
        strategy: ImputeStrategy,
        value: Option<Literal>,
    },
    OneHot {
        columns: Option<Vec<Name>>,
        max_categories: Option<Spanned<u32>>,
    },
    Ordinal {
        columns: Option<Vec<Name>>,
    },
    StandardScale {
        columns: Option<Vec<Name>>,
    },
    MinMaxScale {
        columns: Option<Vec<Name>>,
    },
}

impl Op {
    pub const NAMES: &'static [&'static str] = &[
        "select",
        "drop",
        "derive",
        "filter",
        "cast",
        "impute",
        "one_hot",
        "ordinal",
        "standard_scale",
        "min_max_scale",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Op::Select { .. } => "select",
            Op::Drop { .. } => "drop",
            Op::Derive { .. } => "derive",
            Op::Filter { .. } => "filter",
            Op::Cast { .. } => "cast",
            Op::Impute { .. } => "impute",
            Op::OneHot { .. } => "one_hot",
            Op::Ordinal { .. } => "ordinal",
            Op::StandardScale { .. } => "standard_scale",
            Op::MinMaxScale { .. } => "min_max_scale",
        }
    }

    /// Whether the op learns statistics from data (and so must be fitted on the
    /// training part only, then applied to others).
    pub fn is_fitted(&self) -> bool {
        matches!(
            self,
            Op::Impute { .. }
                | Op::OneHot { .. }
                | Op::Ordinal { .. }
                | Op::StandardScale { .. }
                | Op::MinMaxScale { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    pub name: Name,
    pub span: Span,
    pub kind: SplitKind,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SplitKind {
    /// Parts `train` and `test`.
    Holdout {
        input: DataRef,
        test_fraction: Spanned<f64>,
        stratify: Option<Name>,
        seed: Option<u64>,
    },
    /// Parts `train` and `test`, from a source that carries them (MNIST) or from two sources.
    Predefined { from: PredefinedFrom },
    /// Parts `fold1` .. `foldK`; an evaluation on the split cross-validates.
    KFold {
        input: DataRef,
        k: Spanned<u32>,
        stratify: Option<Name>,
        shuffle: bool,
        seed: Option<u64>,
    },
    /// One part per shard, each with `train` and `validation` sub-parts.
    Shards {
        input: DataRef,
        by: ShardBy,
        validation_fraction: Spanned<f64>,
        seed: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PredefinedFrom {
    Source(DataRef),
    Pair { train: DataRef, test: DataRef },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ShardBy {
    /// Contiguous, equal row ranges, one per name, in row order.
    Rows { names: Vec<Name> },
    /// One shard per value of a column; `names` lists the values expected, if known.
    Column { column: Name, names: Vec<Name> },
    /// One shard per file of a multi-file source, named by the file stem.
    /// `names` is empty in a parsed pipeline: the planner fills it from the files
    /// the source lists (see `compile::shard_files`).
    File { names: Vec<Name> },
    /// One shard per worker, named by the workers' `--name`s: shard `w` is the
    /// file at the source's path under worker `w`'s `--data-root`, read there;
    /// its rows never leave it (only models travel). Needs a cluster of
    /// workers with those names.
    Worker { names: Vec<Name> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EstimatorKind {
    RandomForest,
    DecisionTree,
    LogisticRegression,
    LinearRegression,
    Ridge,
}

impl EstimatorKind {
    pub const NAMES: &'static [&'static str] = &[
        "random_forest",
        "decision_tree",
        "logistic_regression",
        "linear_regression",
        "ridge",
    ];

    pub fn name(self) -> &'static str {
        match self {
            EstimatorKind::RandomForest => "random_forest",
            EstimatorKind::DecisionTree => "decision_tree",
            EstimatorKind::LogisticRegression => "logistic_regression",
            EstimatorKind::LinearRegression => "linear_regression",
            EstimatorKind::Ridge => "ridge",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "random_forest" => EstimatorKind::RandomForest,
            "decision_tree" => EstimatorKind::DecisionTree,
            "logistic_regression" => EstimatorKind::LogisticRegression,
            "linear_regression" => EstimatorKind::LinearRegression,
            "ridge" => EstimatorKind::Ridge,
            _ => return None,
        })
    }

    /// The tasks the estimator can do.
    pub fn tasks(self) -> &'static [Problem] {
        match self {
            EstimatorKind::RandomForest | EstimatorKind::DecisionTree => {
                &[Problem::Classification, Problem::Regression]
            }
            EstimatorKind::LogisticRegression => &[Problem::Classification],
            EstimatorKind::LinearRegression | EstimatorKind::Ridge => &[Problem::Regression],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Problem {
    Classification,
    Regression,
}

impl Problem {
    pub fn name(self) -> &'static str {
        match self {
            Problem::Classification => "classification",
            Problem::Regression => "regression",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Criterion {
    Gini,
    Entropy,
    SquaredError,
}

impl Criterion {
    pub const NAMES: &'static [&'static str] = &["gini", "entropy", "squared_error"];
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MaxFeatures {
    Sqrt,
    Log2,
    All,
    /// A fraction of the features, in (0, 1].
    Fraction(f64),
    /// A number of features, at least 1.
    Count(u32),
}

/// Parameters of random_forest and decision_tree (a tree ignores `n_trees` and
/// `bootstrap`, which lowering refuses for it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TreeParams {
    pub n_trees: u32,
    pub max_depth: Option<u32>,
    pub min_samples_split: u32,
    pub min_samples_leaf: u32,
    /// `None`: sqrt of the features for a forest classifier, all otherwise.
    pub max_features: Option<MaxFeatures>,
    pub bootstrap: bool,
    pub criterion: Option<Criterion>,
    pub class_weight_balanced: bool,
    pub max_bins: u32,
}

/// Parameters of the linear models, as written: `c` is logistic regression's
/// inverse L2 strength (scikit-learn's `C`), `alpha` ridge's L2 strength.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearParams {
    pub c: f64,
    pub alpha: f64,
    pub fit_intercept: bool,
    pub max_iter: u32,
    pub tol: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Params {
    Tree(TreeParams),
    Linear(LinearParams),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Combine {
    /// Majority vote of the shard models' predicted classes.
    Vote,
    /// Average of class probabilities (classifiers) or of predictions (regressors).
    Average,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub name: Name,
    pub span: Span,
    pub estimator: Spanned<EstimatorKind>,
    /// Declared task; otherwise inferred from the target's type.
    pub task: Option<Spanned<Problem>>,
    pub input: DataRef,
    pub target: Name,
    /// Feature columns; `None` = every column but the target.
    pub features: Option<Vec<Name>>,
    pub params: Params,
    /// Fitted preprocessing that becomes part of the model (fitted on the training data only).
    pub preprocess: Vec<Spanned<Op>>,
    /// Fit one model per shard of `input` (a shards split), combined by `combine`.
    pub per_shard: bool,
    pub combine: Combine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    Accuracy,
    Precision,
    Recall,
    F1,
    ClassificationReport,
    ConfusionMatrix,
    LogLoss,
    Rmse,
    Mae,
    R2,
}

impl Metric {
    pub const NAMES: &'static [&'static str] = &[
        "accuracy",
        "precision",
        "recall",
        "f1",
        "classification_report",
        "confusion_matrix",
        "log_loss",
        "rmse",
        "mae",
        "r2",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn from_name(s: &str) -> Option<Self> {
        use Metric::*;
        const ALL: [Metric; 10] = [
            Accuracy,
            Precision,
            Recall,
            F1,
            ClassificationReport,
            ConfusionMatrix,
            LogLoss,
            Rmse,
            Mae,
            R2,
        ];
        Self::NAMES.iter().position(|n| *n == s).map(|i| ALL[i])
    }

    pub fn task(self) -> Problem {
        match self {
            Metric::Rmse | Metric::Mae | Metric::R2 => Problem::Regression,
            _ => Problem::Classification,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub name: Name,
    pub span: Span,
    pub model: Name,
    /// Datasets to score on. A k-fold split cross-validates; a shards split with
    /// a per-shard model gives the matrix of every shard model on every shard's
    /// validation part.
    pub data: Vec<DataRef>,
    pub metrics: Vec<Spanned<Metric>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileFormat {
    Csv,
    Parquet,
    Arrow,
    Json,
    Svg,
    Dot,
    Png,
    Model,
}

impl FileFormat {
    pub const NAMES: &'static [&'static str] = &[
        "csv", "parquet", "arrow", "json", "svg", "dot", "png", "model",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn from_name(s: &str) -> Option<Self> {
        use FileFormat::*;
        const ALL: [FileFormat; 8] = [Csv, Parquet, Arrow, Json, Svg, Dot, Png, Model];
        Self::NAMES.iter().position(|n| *n == s).map(|i| ALL[i])
    }

    /// The format a path's extension implies.
    pub fn from_path(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "ipc" | "feather" => Some(FileFormat::Arrow),
            "dagml" => None,
            e => Self::from_name(e),
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    pub name: Name,
    pub span: Span,
    pub path: Spanned<String>,
    pub kind: OutputKind,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OutputKind {
    /// The fitted model file.
    Model { model: Name },
    /// Metrics of the named evaluations (all when empty) as JSON.
    Metrics { evaluations: Vec<Name> },
    /// The same evaluations drawn: one self-contained HTML file (`src/report`).
    Report { evaluations: Vec<Name> },
    /// The input rows with a prediction column.
    Predictions {
        model: Name,
        data: DataRef,
        format: Spanned<FileFormat>,
    },
    /// The task graph picture (svg, dot or png).
    Plan { format: Spanned<FileFormat> },
    /// A dataset written as files, one per partition, into a directory.
    Dataset {
        data: DataRef,
        format: Spanned<FileFormat>,
    },
}

impl OutputKind {
    pub const NAMES: &'static [&'static str] = &[
        "model",
        "metrics",
        "predictions",
        "plan",
        "dataset",
        "report",
    ];
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Cluster {
    /// An embedded cluster in this process, on loopback.
    Local {
        span: Span,
        /// Default: one per core.
        workers: Option<Spanned<u32>>,
        threads: Spanned<u32>,
        memory_limit: Option<Spanned<u64>>,
    },
    /// A running `dagml scheduler`.
    Remote {
        span: Span,
        scheduler: Spanned<String>,
        /// Name of the environment variable that holds the token (default DAGML_TOKEN).
        token_env: Option<Spanned<String>>,
    },
}

pub const DEFAULT_TOKEN_ENV: &str = "DAGML_TOKEN";

impl Pipeline {
    /// Whether two pipelines mean the same, wherever their parts were written:
    /// `==` also compares the spans of whole steps, this ignores every span.
    pub fn same_as(&self, other: &Pipeline) -> bool {
        fn strip(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    m.remove("span");
                    m.values_mut().for_each(strip);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let json = |p: &Pipeline| {
            let mut v = serde_json::to_value(p).unwrap_or(serde_json::Value::Null);
            strip(&mut v);
            v
        };
        json(self) == json(other)
    }

    /// Every named step, in file order: (section, name).
    pub fn step_names(&self) -> Vec<(&'static str, &Name)> {
        let mut v: Vec<(&'static str, &Name)> = Vec::new();
        v.extend(self.sources.iter().map(|s| ("source", &s.name)));
        v.extend(self.transforms.iter().map(|s| ("transform", &s.name)));
        v.extend(self.splits.iter().map(|s| ("split", &s.name)));
        v.extend(self.models.iter().map(|s| ("model", &s.name)));
        v.extend(self.evaluations.iter().map(|s| ("evaluation", &s.name)));
        v.extend(self.outputs.iter().map(|s| ("output", &s.name)));
        v
    }
}

/// Parse a byte size like `6GB`, `512MiB`, `1.5 GB` or `1000000`.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && (0.0..1.8e19).contains(&v)).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("6GB"), Some(6_000_000_000));
        assert_eq!(parse_bytes("512 MiB"), Some(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5gb"), Some(1_500_000_000));
        assert_eq!(parse_bytes("12"), Some(12));
        assert_eq!(parse_bytes("six"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
    }

    #[test]
    fn metric_names_round_trip() {
        for n in Metric::NAMES {
            assert_eq!(Metric::from_name(n).map(Metric::name), Some(*n));
        }
        for n in FileFormat::NAMES {
            assert_eq!(FileFormat::from_name(n).map(FileFormat::name), Some(*n));
        }
    }
}

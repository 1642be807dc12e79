//! Errors of the data layer: each names the file (and row, where known) and what
//! was wrong, so a user can fix the input.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a valid IDX file: {reason}")]
    Idx { path: PathBuf, reason: String },
    #[error("`{path}`: {reason}")]
    Csv { path: PathBuf, reason: String },
    #[error("`{path}`: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("`{}` is empty: a CSV source needs a header line and rows", .0.display())]
    EmptyFile(PathBuf),
    #[error("`{}` has a header but no rows", .0.display())]
    NoRows(PathBuf),
    #[error("`{}`: columns {first} and {second} are both named `{name}`: rename one (dagml would read only one of them)", path.display())]
    DuplicateColumn {
        path: PathBuf,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("no files match `{0}`")]
    NoFiles(String),
    #[error("column `{0}` is not in the data")]
    MissingColumn(String),
    #[error("column `{column}`: {reason}")]
    Column { column: String, reason: String },
    #[error("expression: {0}")]
    Expr(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

//! `dagml predict`: a model file and a data file in, the same rows with a
//! prediction column out.
//!
//! In: paths. Out: the number of rows written, or a [`PredictError`] naming the
//! file (and, for a bad cell, its column and row). The model file is checked
//! ([`model_file::read`]: checksum, structure) and the input's columns are
//! checked against the model's features and converted without loss
//! ([`model_file::conform`]) before anything is predicted.
//! Must not: write the output unless every row was predicted; predict from a
//! column whose values the model would read differently than it was fitted on.

use crate::data::{DataError, source, write};
use crate::frontend::pipeline::{CsvSource, DEFAULT_NA_VALUES, FileFormat, Source, SourceKind};
use crate::frontend::span::{Span, Spanned};
use crate::ml::model::Model;
use crate::ml::model_file::{self, InputError, ModelFileError};
use crate::runtime::kernels::predictions_batch;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("cannot read `{}`: {source}", path.display())]
    ReadModel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}`: {source}", path.display())]
    Model {
        path: PathBuf,
        source: ModelFileError,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    /// `line` is the file's line for a CSV with a header, else absent.
    #[error("`{}`{}: {source}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Input {
        path: PathBuf,
        line: Option<usize>,
        source: InputError,
    },
    #[error("`{}`: {reason}", path.display())]
    Predict { reason: String, path: PathBuf },
}

pub fn predict_file(model: &Path, input: &Path, output: &Path) -> Result<usize, PredictError> {
    let bytes = std::fs::read(model).map_err(|source| PredictError::ReadModel {
        path: model.into(),
        source,
    })?;
    let (header, m) = model_file::read(&bytes).map_err(|source| PredictError::Model {
        path: model.into(),
        source,
    })?;
    let sp = |s: &str| Spanned::new(s.to_string(), Span::new(0, 0));
    let path = input.to_string_lossy().into_owned();
    let input_format = write::format_of(input, FileFormat::Csv);
    let kind = match input_format {
        FileFormat::Parquet => SourceKind::Parquet { path: sp(&path) },
        FileFormat::Arrow => SourceKind::Arrow { path: sp(&path) },
        _ => SourceKind::Csv(CsvSource {
            path: sp(&path),
            header: true,
            delimiter: ',',
            na_values: DEFAULT_NA_VALUES.iter().map(|s| s.to_string()).collect(),
            columns: Vec::new(),
        }),
    };
    let src = Source {
        name: sp("input"),
        span: Span::new(0, 0),
        kind,
        after: None,
    };
    let batch = source::read(&src, 0, 0, None, Path::new("."))?;
    let batch = model_file::conform(&header.features, &batch).map_err(|source| {
        let row = match &source {
            InputError::Unparsable { row, .. } | InputError::Lossy { row, .. } => Some(*row),
            _ => None,
        };
        PredictError::Input {
            path: input.into(),
            // A CSV's row 1 is its line 2, under the header.
            line: row
                .filter(|_| matches!(input_format, FileFormat::Csv))
                .map(|r| r + 1),
            source,
        }
    })?;
    let pred = m.predict(&batch).map_err(|e| PredictError::Predict {
        reason: e.to_string(),
        path: input.into(),
    })?;
    let out = predictions_batch(&batch, &pred).map_err(|reason| PredictError::Predict {
        reason,
        path: input.into(),
    })?;
    let f = write::format_of(output, FileFormat::Parquet);
    write::write_batch(output, &out, f)?;
    Ok(out.num_rows())
}

//! `dagml predict`: a model file and a data file in, the same rows with a
//! prediction column out.
//!
//! In: paths. Out: the number of rows written, or an error naming the file.
//! Must not: write the output unless every row was predicted.

use crate::data::{source, write};
use crate::ml::model::Model;
use crate::runtime::kernels::{predictions_batch, read_model_file};
use crate::frontend::pipeline::{CsvSource, DEFAULT_NA_VALUES, FileFormat, Source, SourceKind};
use crate::frontend::span::{Span, Spanned};
use std::path::Path;

pub fn predict_file(model: &Path, input: &Path, output: &Path) -> Result<usize, String> {
    let bytes =
        std::fs::read(model).map_err(|e| format!("cannot read `{}`: {e}", model.display()))?;
    let (_, m) = read_model_file(&bytes).map_err(|e| format!("`{}`: {e}", model.display()))?;
    let sp = |s: &str| Spanned::new(s.to_string(), Span::new(0, 0));
    let path = input.to_string_lossy().into_owned();
    let kind = match write::format_of(input, FileFormat::Csv) {
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
    let batch = source::read(&src, 0, 0, None, Path::new(".")).map_err(|e| e.to_string())?;
    let pred = m.predict(&batch).map_err(|e| e.to_string())?;
    let out = predictions_batch(&batch, &pred)?;
    let f = write::format_of(output, FileFormat::Parquet);
    write::write_batch(output, &out, f).map_err(|e| e.to_string())?;
    Ok(out.num_rows())
}

//! Writers: a batch to Parquet, CSV or Arrow IPC, written to a temporary file in
//! the same folder and renamed into place, so a failed run never leaves half a
//! file where a good one was.
//!
//! In: a path, a batch, a format. Out: the file. Must not: write anywhere but the
//! path given (and its temporary sibling).

use super::DataError;
use crate::frontend::pipeline::FileFormat;
use arrow::record_batch::RecordBatch;
use std::path::Path;

/// The format a path's extension names, else `default`.
/// The name of partition `i`'s file in a dataset written in `format` (CSV,
/// Arrow, else Parquet): `part-00007.parquet`.
pub fn part_file_name(i: usize, format: FileFormat) -> String {
    let ext = match format {
        FileFormat::Csv => "csv",
        FileFormat::Arrow => "arrow",
        _ => "parquet",
    };
    format!("part-{i:05}.{ext}")
}

pub fn format_of(path: &Path, default: FileFormat) -> FileFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => FileFormat::Parquet,
        Some("csv") => FileFormat::Csv,
        Some("arrow") | Some("ipc") | Some("feather") => FileFormat::Arrow,
        _ => default,
    }
}

/// Write bytes atomically (temporary file, then rename).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_with(path, |f| {
        use std::io::Write;
        f.write_all(bytes).map_err(|e| DataError::io(path, e))
    })
}

fn write_with(
    path: &Path,
    body: impl FnOnce(&mut std::fs::File) -> Result<(), DataError>,
) -> Result<(), DataError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let res = body(&mut f).and_then(|_| f.sync_all().map_err(|e| DataError::io(&tmp, e)));
    drop(f);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

/// Write one batch.
pub fn write_batch(path: &Path, batch: &RecordBatch, format: FileFormat) -> Result<(), DataError> {
    write_with(path, |f| {
        match format {
            FileFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props))?;
                w.write(batch)?;
                w.close()?;
            }
            FileFormat::Csv => {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(f);
                w.write(batch)?;
            }
            FileFormat::Arrow => {
                let mut w = arrow::ipc::writer::FileWriter::try_new(f, &batch.schema())?;
                w.write(batch)?;
                w.finish()?;
            }
            other => {
                return Err(DataError::Unsupported(format!(
                    "data cannot be written as {other:?}; use parquet, csv or arrow"
                )));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn every_format_round_trips_through_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        for (name, f) in [
            ("x.parquet", FileFormat::Parquet),
            ("x.arrow", FileFormat::Arrow),
            ("x.csv", FileFormat::Csv),
        ] {
            let p = dir.path().join("sub").join(name);
            write_batch(&p, &b, f).unwrap();
            assert!(p.is_file());
            assert_eq!(format_of(&p, FileFormat::Csv), f);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}

//! Sources: files and generators to record batches, one per partition.
//!
//! In: a [`Source`] from the pipeline, a partition index, the pipeline seed and the
//! columns projection pushdown kept. Out: one [`RecordBatch`].
//! Must not: depend on anything but the arguments and the files named: partition
//! `p` of a synthetic source is generated from (seed, source, p) alone.

use super::{DataError, idx, synthetic};
use crate::frontend::pipeline::{ColumnType, CsvSource, MnistSubset, Source, SourceKind};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How many partitions a source yields: MNIST's two files (train, test) when both
/// are read, the generator's `partitions`, else one.
pub fn num_partitions(kind: &SourceKind) -> u32 {
    match kind {
        SourceKind::Mnist {
            subset: MnistSubset::All,
            ..
        } => 2,
        SourceKind::Synthetic(g) => g.partitions.value.max(1),
        _ => 1,
    }
}

/// Read partition `p` of a source. Paths are relative to `base`.
pub fn read(
    source: &Source,
    p: u32,
    seed: u64,
    columns: Option<&[String]>,
    base: &Path,
) -> Result<RecordBatch, DataError> {
    let batch = match &source.kind {
        SourceKind::Mnist { path, subset } => {
            let part = match (subset, p) {
                (MnistSubset::Train, _) | (MnistSubset::All, 0) => idx::Part::Train,
                _ => idx::Part::Test,
            };
            idx::read(&base.join(&path.value), part)?
        }
        SourceKind::Csv(c) => read_csv(c, base)?,
        SourceKind::Parquet { path } => read_files(&path.value, base, "parquet", read_parquet)?,
        SourceKind::Arrow { path } => read_files(&path.value, base, "arrow", read_ipc)?,
        SourceKind::Synthetic(g) => {
            synthetic::generate(g, seed, super::rng::str_id(&source.name.value), p)?
        }
    };
    match columns {
        Some(cols) => project(&batch, cols),
        None => Ok(batch),
    }
}

/// Keep `cols`, in the batch's order.
pub fn project(batch: &RecordBatch, cols: &[String]) -> Result<RecordBatch, DataError> {
    let schema = batch.schema();
    let idx: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| cols.iter().any(|c| c == f.name()))
        .map(|(i, _)| i)
        .collect();
    if let Some(c) = cols
        .iter()
        .find(|c| schema.fields().iter().all(|f| f.name() != *c))
    {
        return Err(DataError::MissingColumn(c.clone()));
    }
    Ok(batch.project(&idx)?)
}

/// The files a path names: a file, a folder (its files with extension `ext`,
/// sorted), or a glob pattern.
pub fn files(path: &str, base: &Path, ext: &str) -> Result<Vec<PathBuf>, DataError> {
    let full = base.join(path);
    if path.contains(['*', '?', '[']) {
        let pattern = full.to_string_lossy().into_owned();
        let mut out: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|e| DataError::File {
                path: full.clone(),
                reason: e.to_string(),
            })?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(DataError::NoFiles(path.into()));
        }
        return Ok(out);
    }
    if full.is_dir() {
        let rd = std::fs::read_dir(&full).map_err(|e| DataError::io(&full, e))?;
        let mut out: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(DataError::NoFiles(format!("{path}/*.{ext}")));
        }
        return Ok(out);
    }
    if !full.is_file() {
        return Err(DataError::io(
            &full,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    Ok(vec![full])
}

fn read_files(
    path: &str,
    base: &Path,
    ext: &str,
    one: fn(&Path) -> Result<RecordBatch, DataError>,
) -> Result<RecordBatch, DataError> {
    let files = files(path, base, ext)?;
    let batches = files
        .iter()
        .map(|f| one(f))
        .collect::<Result<Vec<_>, _>>()?;
    concat(&batches, &files[0])
}

fn concat(batches: &[RecordBatch], first: &Path) -> Result<RecordBatch, DataError> {
    let Some(b0) = batches.first() else {
        return Err(DataError::NoFiles(first.display().to_string()));
    };
    let schema = b0.schema();
    for b in batches {
        if b.schema().fields() != schema.fields() {
            return Err(DataError::File {
                path: first.to_path_buf(),
                reason: "the files of this source have different columns".into(),
            });
        }
    }
    Ok(concat_batches(&schema, batches)?)
}

fn read_parquet(path: &Path) -> Result<RecordBatch, DataError> {
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| DataError::File {
            path: path.into(),
            reason: e.to_string(),
        })?
        .with_batch_size(65_536)
        .build()?;
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

fn read_ipc(path: &Path) -> Result<RecordBatch, DataError> {
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = arrow::ipc::reader::FileReader::try_new(f, None).map_err(|e| DataError::File {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::String => DataType::Utf8,
    }
}

fn na_regex(na: &[String]) -> Result<regex::Regex, DataError> {
    let alts: Vec<String> = na.iter().map(|s| regex::escape(s)).collect();
    regex::Regex::new(&format!("^({})$", alts.join("|")))
        .map_err(|e| DataError::Unsupported(format!("NA markers: {e}")))
}

/// Read a CSV file (or folder / glob of them): header, delimiter, NA markers,
/// declared types over inferred ones. The types are inferred from the first file.
fn read_csv(c: &CsvSource, base: &Path) -> Result<RecordBatch, DataError> {
    let files = files(&c.path.value, base, "csv")?;
    let first = files
        .first()
        .ok_or_else(|| DataError::NoFiles(c.path.value.clone()))?;
    let schema = csv_schema(c, first)?;
    let mut batches = Vec::new();
    for path in &files {
        read_csv_file(c, &schema, path, &mut batches)?;
    }
    let b = concat_batches(&schema, &batches)?;
    if b.num_rows() == 0 {
        return Err(DataError::NoRows(first.clone()));
    }
    Ok(b)
}

fn csv_format(c: &CsvSource) -> Result<arrow::csv::reader::Format, DataError> {
    let mut format = arrow::csv::reader::Format::default()
        .with_header(c.header)
        .with_delimiter(c.delimiter as u8);
    if !c.na_values.is_empty() {
        format = format.with_null_regex(na_regex(&c.na_values)?);
    }
    Ok(format)
}

/// The columns of a CSV source: inferred from `path`, declared types first.
fn csv_schema(c: &CsvSource, path: &Path) -> Result<SchemaRef, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.len() == 0 {
        return Err(DataError::EmptyFile(path.into()));
    }
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let (inferred, _) = csv_format(c)?
        .infer_schema(&mut f, None)
        .map_err(|e| DataError::Csv {
            path: path.into(),
            reason: csv_reason(&e.to_string(), &Arc::new(Schema::empty()), c.header),
        })?;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            let declared = c.columns.iter().find(|(n, _)| n.value == *f.name());
            let t = match declared {
                Some((_, t)) => arrow_type(t.value),
                None => match f.data_type() {
                    DataType::Int64 | DataType::Float64 | DataType::Boolean => {
                        f.data_type().clone()
                    }
                    _ => DataType::Utf8,
                },
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    if let Some((first, second, name)) = duplicate(fields.iter().map(|f| f.name().as_str())) {
        return Err(DataError::DuplicateColumn {
            path: path.into(),
            name,
            first,
            second,
        });
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The first name seen twice: its two positions (from 1) and the name.
pub fn duplicate<'a>(names: impl Iterator<Item = &'a str>) -> Option<(usize, usize, String)> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, n) in names.enumerate() {
        if let Some(&j) = seen.get(n) {
            return Some((j + 1, i + 1, n.to_string()));
        }
        seen.insert(n, i);
    }
    None
}

/// The CSV reader's messages in the user's terms: fields (not "records"),
/// the file's own line numbers, the column by name.
fn csv_reason(reason: &str, schema: &SchemaRef, header: bool) -> String {
    static FIELDS: OnceLock<Option<regex::Regex>> = OnceLock::new();
    static PARSE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let fields = FIELDS.get_or_init(|| {
        regex::Regex::new(r"Expected (\d+) records, found (\d+) records at line (\d+)").ok()
    });
    let parse = PARSE.get_or_init(|| {
        regex::Regex::new(
            r"Error while parsing value '(.*)' as type '(\w+)' for column (\d+) at line (\d+)",
        )
        .ok()
    });
    if let Some(c) = fields.as_ref().and_then(|r| r.captures(reason)) {
        return format!(
            "line {}: {} fields, but the {} has {}; quote a field that holds the delimiter",
            &c[3],
            &c[2],
            if header { "header" } else { "first line" },
            &c[1]
        );
    }
    if let Some(c) = parse.as_ref().and_then(|r| r.captures(reason)) {
        let col: usize = c[3].parse().unwrap_or(0);
        let name = schema
            .fields()
            .get(col)
            .map(|f| f.name().clone())
            .unwrap_or_else(|| format!("#{}", col + 1));
        // The reader counts data lines from the first after the header.
        let line: usize = c[4].parse::<usize>().unwrap_or(0) + usize::from(header);
        return format!(
            "line {line}, column `{name}`: `{}` is not a {} value; fix the cell, add it to `na_values`, or declare the column's type in `columns`",
            &c[1], &c[2]
        );
    }
    reason.to_string()
}

fn read_csv_file(
    c: &CsvSource,
    schema: &SchemaRef,
    path: &Path,
    out: &mut Vec<RecordBatch>,
) -> Result<(), DataError> {
    let err = |reason: String| DataError::Csv {
        path: path.into(),
        reason: csv_reason(&reason, schema, c.header),
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_format(csv_format(c)?)
        .with_batch_size(65_536)
        .build(file)
        .map_err(|e| err(e.to_string()))?;
    for b in reader {
        out.push(b.map_err(|e| err(e.to_string()))?);
    }
    Ok(())
}

/// The files of a file source, as its partitions will read them: paths relative
/// to `base` when they are under it. For a split that shards by file.
pub fn list(source: &Source, base: &Path) -> Result<Vec<String>, DataError> {
    let Some((path, format)) = source.file_path() else {
        return Err(DataError::Unsupported(format!(
            "source `{}` is not read from files",
            source.name.value
        )));
    };
    Ok(files(&path.value, base, format.name())?
        .into_iter()
        .map(|f| {
            f.strip_prefix(base)
                .unwrap_or(&f)
                .to_string_lossy()
                .into_owned()
        })
        .collect())
}

/// Read partition `p` of a source whose files were listed: file `p` alone (a
/// CSV's types inferred from the first file, as for the whole source).
pub fn read_listed(
    source: &Source,
    files: &[String],
    p: u32,
    columns: Option<&[String]>,
    base: &Path,
) -> Result<RecordBatch, DataError> {
    let file = files
        .get(p as usize)
        .map(|f| base.join(f))
        .ok_or_else(|| DataError::NoFiles(format!("file {p} of source `{}`", source.name.value)))?;
    let batch = match &source.kind {
        SourceKind::Csv(c) => {
            let first = base.join(&files[0]);
            let schema = csv_schema(c, &first)?;
            let mut batches = Vec::new();
            read_csv_file(c, &schema, &file, &mut batches)?;
            concat_batches(&schema, &batches)?
        }
        SourceKind::Parquet { .. } => read_parquet(&file)?,
        SourceKind::Arrow { .. } => read_ipc(&file)?,
        _ => {
            return Err(DataError::Unsupported(format!(
                "source `{}` is not read from files",
                source.name.value
            )));
        }
    };
    match columns {
        Some(cols) => project(&batch, cols),
        None => Ok(batch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::span::{Span, Spanned};

    fn csv_source(path: &str) -> Source {
        Source {
            name: Spanned::new("t".to_string(), Span::new(0, 0)),
            span: Span::new(0, 0),
            kind: SourceKind::Csv(CsvSource {
                path: Spanned::new(path.to_string(), Span::new(0, 0)),
                header: true,
                delimiter: ',',
                na_values: vec!["NA".into(), "".into()],
                columns: vec![],
            }),
            after: None,
        }
    }

    #[test]
    fn house_prices_csv_infers_types_and_nulls() {
        let b = read(
            &csv_source("data/house_prices/train.csv"),
            0,
            1,
            None,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(b.num_rows(), 1460);
        let s = b.schema();
        assert_eq!(
            s.field_with_name("SalePrice").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(
            s.field_with_name("MSZoning").unwrap().data_type(),
            &DataType::Utf8
        );
        let lot = b.column_by_name("LotFrontage").unwrap();
        assert!(lot.null_count() > 0, "NA became null");
    }

    #[test]
    fn a_malformed_row_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "a,b\n1,2\n3,4,5\n\"x,y\",6\n").unwrap();
        let e = read(&csv_source(p.to_str().unwrap()), 0, 1, None, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn quoted_fields_keep_their_commas() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.csv");
        std::fs::write(&p, "a,b\n\"x,y\",6\nz,NA\n").unwrap();
        let b = read(&csv_source(p.to_str().unwrap()), 0, 1, None, Path::new(".")).unwrap();
        let a = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(a.value(0), "x,y");
        assert_eq!(b.column(1).null_count(), 1);
    }
}

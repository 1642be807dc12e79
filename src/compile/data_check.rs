//! `check --data`: the data files a pipeline names exist, and their columns are
//! the ones it uses.
//!
//! In: a lowered pipeline. Out: diagnostics for missing files and declared columns
//! that are not in the data, and the schema read from each CSV's header and first
//! rows (handed to schema inference as a closed schema, so every later step's
//! columns are checked against the real file).
//! Must not: read more than the header and a sample of rows.

use super::schema::{DType, Schema};
use crate::frontend::diag::{Code, Diagnostic, suggest};
use crate::frontend::pipeline::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Rows read to infer CSV column types.
pub const SAMPLE_ROWS: usize = 1000;

pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

pub fn check_data(p: &Pipeline, base: &Path) -> (BTreeMap<usize, Schema>, Vec<Diagnostic>) {
    let mut schemas = BTreeMap::new();
    let mut diags = Vec::new();
    for (i, s) in p.sources.iter().enumerate() {
        if s.after.is_some() {
            continue; // written by this pipeline before it is read
        }
        match &s.kind {
            SourceKind::Mnist { path, subset } => {
                let dir = base.join(&path.value);
                let wanted: Vec<&str> = match subset {
                    MnistSubset::Train => MNIST_FILES[..2].to_vec(),
                    MnistSubset::Test => MNIST_FILES[2..].to_vec(),
                    MnistSubset::All => MNIST_FILES.to_vec(),
                };
                let missing: Vec<&str> = wanted
                    .into_iter()
                    .filter(|f| !dir.join(f).is_file() && !dir.join(format!("{f}.gz")).is_file())
                    .collect();
                if !missing.is_empty() {
                    diags.push(
                        Diagnostic::new(Code::MissingFile, path.span, format!("`{}` lacks the MNIST file{} {}", path.value, if missing.len() > 1 { "s" } else { "" }, missing.join(", ")))
                            .with_help("the folder needs the four IDX files, gzipped (.gz) or raw; paths are relative to the current directory"),
                    );
                }
            }
            SourceKind::Csv(c) => {
                // A file, a folder or a glob: the run infers types from the first file.
                let Some(file) = crate::data::source::files(&c.path.value, base, "csv")
                    .ok()
                    .and_then(|f| f.into_iter().next())
                else {
                    diags.push(missing_file(&c.path.value, c.path.span));
                    continue;
                };
                match read_csv_schema(&file, c) {
                    Ok(schema) => {
                        for (name, _) in &c.columns {
                            if schema.get(&name.value).is_none() {
                                diags.push(
                                    Diagnostic::new(
                                        Code::ColumnNotInData,
                                        name.span,
                                        format!(
                                            "column `{}` is not in `{}`",
                                            name.value, c.path.value
                                        ),
                                    )
                                    .with_help(suggest(
                                        &name.value,
                                        &schema.names(),
                                        "column",
                                    )),
                                );
                            }
                        }
                        schemas.insert(i, schema);
                    }
                    Err(e) => diags.push(Diagnostic::new(
                        Code::MissingFile,
                        c.path.span,
                        format!("cannot read `{}`: {e}", c.path.value),
                    )),
                }
            }
            SourceKind::Parquet { path } | SourceKind::Arrow { path } => {
                let ext = s.file_path().map_or("parquet", |(_, f)| f.name());
                if crate::data::source::files(&path.value, base, ext).is_err() {
                    diags.push(missing_file(&path.value, path.span));
                }
            }
            SourceKind::Synthetic(_) => {}
        }
    }
    (schemas, diags)
}

fn missing_file(path: &str, span: crate::frontend::Span) -> Diagnostic {
    Diagnostic::new(Code::MissingFile, span, format!("`{path}` does not exist"))
        .with_help("paths in a pipeline are relative to the directory dagml runs in")
}

/// The header, with each column's type inferred from the first rows; declared
/// types win.
pub fn read_csv_schema(file: &Path, c: &CsvSource) -> Result<Schema, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(c.header)
        .delimiter(c.delimiter as u8)
        .flexible(true)
        .from_path(file)
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = if c.header {
        rdr.headers()
            .map_err(|e| e.to_string())?
            .iter()
            .map(String::from)
            .collect()
    } else {
        let first = rdr
            .records()
            .next()
            .transpose()
            .map_err(|e| e.to_string())?;
        (0..first.map(|r| r.len()).unwrap_or(0))
            .map(|i| format!("c{i}"))
            .collect()
    };
    let mut types: Vec<Option<DType>> = vec![None; names.len()];
    for rec in rdr.records().take(SAMPLE_ROWS) {
        let rec = rec.map_err(|e| e.to_string())?;
        for (i, v) in rec.iter().enumerate().take(names.len()) {
            if c.na_values.iter().any(|na| na == v) {
                continue;
            }
            let t = if v.parse::<i64>().is_ok() {
                DType::Int
            } else if v.parse::<f64>().is_ok() {
                DType::Float
            } else if matches!(v.to_ascii_lowercase().as_str(), "true" | "false") {
                DType::Bool
            } else {
                DType::String
            };
            types[i] = Some(match (types[i], t) {
                (None, t) => t,
                (Some(a), b) if a == b => a,
                (Some(DType::Int), DType::Float) | (Some(DType::Float), DType::Int) => DType::Float,
                _ => DType::String,
            });
        }
    }
    let declared: BTreeMap<&str, DType> = c
        .columns
        .iter()
        .map(|(n, t)| (n.value.as_str(), DType::of(t.value)))
        .collect();
    let columns = names
        .into_iter()
        .zip(types)
        .map(|(n, t)| {
            let t = declared
                .get(n.as_str())
                .copied()
                .or(t)
                .unwrap_or(DType::Unknown);
            (n, t)
        })
        .collect();
    Ok(Schema {
        columns,
        open: false,
        rows: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn house_prices_header_and_types() {
        let c = CsvSource {
            path: crate::frontend::Spanned::new(
                "data/house_prices/train.csv".into(),
                Default::default(),
            ),
            header: true,
            delimiter: ',',
            na_values: vec!["NA".into()],
            columns: vec![],
        };
        let s = read_csv_schema(Path::new("data/house_prices/train.csv"), &c).unwrap();
        assert_eq!(s.columns.len(), 81);
        assert_eq!(s.get("SalePrice"), Some(DType::Int));
        assert_eq!(s.get("MSZoning"), Some(DType::String));
        assert_eq!(s.get("LotFrontage"), Some(DType::Int));
    }
}

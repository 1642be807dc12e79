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
                match sample_csv(&file, c) {
                    Ok((found, schema)) => {
                        diags.extend(found.into_iter().map(|f| f.diagnostic(c)));
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

/// What a CSV's header and sample show that the run would trip on or
/// silently get wrong.
#[derive(Debug, PartialEq)]
enum Finding {
    Empty,
    HeaderOnly,
    Duplicate {
        name: String,
        first: usize,
        second: usize,
    },
    /// A column read as text whose sampled cells are numbers but for a few.
    MostlyNumeric {
        column: String,
        numbers: usize,
        others: usize,
        line: u64,
        value: String,
    },
}

impl Finding {
    fn diagnostic(self, c: &CsvSource) -> Diagnostic {
        let (path, span) = (&c.path.value, c.path.span);
        match self {
            Finding::Empty => Diagnostic::new(Code::EmptyData, span, format!("`{path}` is empty"))
                .with_help("a CSV source needs a header line and rows"),
            Finding::HeaderOnly => Diagnostic::new(
                Code::EmptyData,
                span,
                format!("`{path}` has a header but no rows"),
            )
            .with_help("there is nothing to train or score on; add rows"),
            Finding::Duplicate {
                name,
                first,
                second,
            } => Diagnostic::new(
                Code::DuplicateColumnInData,
                span,
                format!("columns {first} and {second} of `{path}` are both named `{name}`"),
            )
            .with_help("rename one in the file's header: only one of them would be read"),
            Finding::MostlyNumeric {
                column,
                numbers,
                others,
                line,
                value,
            } => Diagnostic::new(
                Code::MostlyNumeric,
                span,
                format!(
                    "column `{column}` of `{path}` is numbers but for {others} of {} sampled cells (first at line {line}: `{value}`), so it is read as text",
                    numbers + others
                ),
            )
            .with_help(format!(
                "add `{value}` to `na_values` if it means a missing value, or declare `columns = {{ {column} = \"float\" }}` to have a bad cell reported with its line"
            )),
        }
    }
}

/// At most this fraction of a column's sampled cells may be text for it to be
/// called numeric but for a few.
const FEW: f64 = 0.05;

/// One read of a CSV's header and first rows: what they show that the run
/// would trip on or silently get wrong, and the schema (each column's type
/// inferred from those rows; declared types win).
fn sample_csv(file: &Path, c: &CsvSource) -> Result<(Vec<Finding>, Schema), String> {
    let mut out = Vec::new();
    let empty = std::fs::metadata(file).map_err(|e| e.to_string())?.len() == 0;
    if empty {
        out.push(Finding::Empty);
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(c.header)
        .delimiter(c.delimiter as u8)
        .flexible(true)
        .from_path(file)
        .map_err(|e| e.to_string())?;
    let mut names: Vec<String> = if c.header {
        rdr.headers()
            .map_err(|e| e.to_string())?
            .iter()
            .map(String::from)
            .collect()
    } else {
        Vec::new()
    };
    if let Some((first, second, name)) =
        crate::data::source::duplicate(names.iter().map(String::as_str))
    {
        out.push(Finding::Duplicate {
            name,
            first,
            second,
        });
    }
    // Per column: numeric cells, other cells, the first other cell.
    type Tally = (usize, usize, Option<(u64, String)>);
    let mut tally: Vec<Tally> = Vec::new();
    let mut types: Vec<Option<DType>> = vec![None; names.len()];
    let mut rows = 0;
    for rec in rdr.records().take(SAMPLE_ROWS) {
        let rec = rec.map_err(|e| e.to_string())?;
        if rows == 0 && !c.header {
            // Without a header, the first record says how many columns there are.
            names = (0..rec.len()).map(|i| format!("c{i}")).collect();
            types = vec![None; names.len()];
        }
        rows += 1;
        let line = rec.position().map_or(0, |p| p.line());
        for (i, v) in rec.iter().enumerate() {
            if i < types.len() && !c.na_values.iter().any(|na| na == v) {
                types[i] = Some(merge(types[i], cell_type(v)));
            }
            if tally.len() <= i {
                tally.resize(i + 1, (0, 0, None));
            }
            let v = v.trim();
            if c.na_values.iter().any(|na| na == v) {
                continue;
            }
            let t = &mut tally[i];
            if v.parse::<f64>().is_ok() {
                t.0 += 1;
            } else {
                t.1 += 1;
                if t.2.is_none() {
                    t.2 = Some((line, v.to_string()));
                }
            }
        }
    }
    if rows == 0 && c.header && !empty {
        out.push(Finding::HeaderOnly);
    }
    for (i, (numbers, others, first)) in tally.into_iter().enumerate() {
        let column = names.get(i).cloned().unwrap_or_else(|| format!("c{i}"));
        if c.columns.iter().any(|(n, _)| n.value == column) {
            continue; // declared: the run reports a bad cell with its line
        }
        if let Some((line, value)) = first
            && numbers > 0
            && (others as f64) <= FEW * (numbers + others) as f64
        {
            out.push(Finding::MostlyNumeric {
                column,
                numbers,
                others,
                line,
                value,
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
    let schema = Schema {
        columns,
        open: false,
        rows: None,
    };
    Ok((out, schema))
}

/// The type a cell reads as.
fn cell_type(v: &str) -> DType {
    if v.parse::<i64>().is_ok() {
        DType::Int
    } else if v.parse::<f64>().is_ok() {
        DType::Float
    } else if matches!(v.to_ascii_lowercase().as_str(), "true" | "false") {
        DType::Bool
    } else {
        DType::String
    }
}

/// A column's type so far, with one more cell's.
fn merge(so_far: Option<DType>, t: DType) -> DType {
    match (so_far, t) {
        (None, t) => t,
        (Some(a), b) if a == b => a,
        (Some(DType::Int), DType::Float) | (Some(DType::Float), DType::Int) => DType::Float,
        _ => DType::String,
    }
}

fn missing_file(path: &str, span: crate::frontend::Span) -> Diagnostic {
    Diagnostic::new(Code::MissingFile, span, format!("`{path}` does not exist"))
        .with_help("paths in a pipeline are relative to the directory dagml runs in")
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
        let (_, s) = sample_csv(Path::new("data/house_prices/train.csv"), &c).unwrap();
        assert_eq!(s.columns.len(), 81);
        assert_eq!(s.get("SalePrice"), Some(DType::Int));
        assert_eq!(s.get("MSZoning"), Some(DType::String));
        assert_eq!(s.get("LotFrontage"), Some(DType::Int));
    }

    fn csv(path: &Path) -> CsvSource {
        CsvSource {
            path: crate::frontend::Spanned::new(path.display().to_string(), Default::default()),
            header: true,
            delimiter: ',',
            na_values: vec!["NA".into()],
            columns: vec![],
        }
    }

    #[test]
    fn a_duplicated_header_an_empty_file_and_a_stray_text_cell_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "a,a,c,y\n1,2,3,p\n").unwrap();
        assert_eq!(
            sample_csv(&p, &csv(&p)).unwrap().0,
            vec![Finding::Duplicate {
                name: "a".into(),
                first: 1,
                second: 2
            }]
        );
        std::fs::write(&p, "").unwrap();
        assert_eq!(sample_csv(&p, &csv(&p)).unwrap().0, vec![Finding::Empty]);
        std::fs::write(&p, "a,y\n").unwrap();
        assert_eq!(
            sample_csv(&p, &csv(&p)).unwrap().0,
            vec![Finding::HeaderOnly]
        );
        let mut text = String::from("a,y\n");
        for i in 0..40 {
            text.push_str(&format!(
                "{},p\n",
                if i == 17 {
                    "n/a".to_string()
                } else {
                    i.to_string()
                }
            ));
        }
        std::fs::write(&p, &text).unwrap();
        assert_eq!(
            sample_csv(&p, &csv(&p)).unwrap().0,
            vec![Finding::MostlyNumeric {
                column: "a".into(),
                numbers: 39,
                others: 1,
                line: 19,
                value: "n/a".into()
            }]
        );
        // Declared, or a marker of missing values: nothing to say.
        let mut declared = csv(&p);
        declared.na_values.push("n/a".into());
        assert_eq!(sample_csv(&p, &declared).unwrap().0, vec![]);
    }
}

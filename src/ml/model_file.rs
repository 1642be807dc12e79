//! The model file: a versioned, self-describing container for a fitted model.
//!
//! Layout (all integers little-endian):
//! ```text
//! 8 bytes   magic "DAGMLMDL"
//! u32       format version (FORMAT_VERSION)
//! u32       header length H
//! H bytes   header, JSON (ModelHeader): pipeline name and hash, model name,
//!           estimator, task, target, feature names and types, class labels,
//!           fitted preprocessing, parameters
//! u64       payload length P
//! P bytes   payload: the estimator's own encoding (postcard of its serde form)
//! 32 bytes  SHA-256 of every byte before it (format 2 on; format 1 files end
//!           after the payload and are read without it)
//! ```
//! In: a header and payload bytes. Out: bytes, and back ([`read`]: a checked
//! [`TrainedModel`]), with typed errors for a file that is not a model, is
//! truncated, damaged (checksum), structurally unsound (a child index that
//! points back up a tree, a feature the model does not have, a leaf value that
//! is not finite, class counts that disagree) or comes from a newer format.
//! [`conform`] checks a batch's columns against the header's features (missing,
//! wrong type, unparsable cell with its row) and applies lossless casts, for
//! `dagml predict` and anything else that feeds rows to a model read from a file.
//! Must not: contain anything that varies between runs (no timestamps, no host
//! names): the same pipeline and seed give byte-identical files; read files
//! itself; panic or loop on any bytes.

use super::model::{Body, TrainedModel};
use crate::frontend::pipeline::Problem;
use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const MAGIC: &[u8; 8] = b"DAGMLMDL";
/// 2: a SHA-256 trailer over header and payload, and trees carry their
/// feature importances (a version-1 payload has none and cannot be read as
/// version 2: such a file is refused with "re-run the pipeline").
pub const FORMAT_VERSION: u32 = 2;
const CHECKSUM_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureInfo {
    pub name: String,
    /// Arrow-style type name of the column the model reads.
    pub dtype: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    pub format_version: u32,
    pub dagml_version: String,
    pub pipeline: String,
    /// SHA-256 of the pipeline file's text, hex.
    pub pipeline_hash: String,
    pub model: String,
    pub estimator: String,
    pub task: String,
    pub target: String,
    pub features: Vec<FeatureInfo>,
    /// Class labels in index order (classification), as text.
    pub classes: Vec<String>,
    /// Fitted preprocessing applied before the estimator (serde JSON of the data layer's form).
    pub preprocess: serde_json::Value,
    /// The estimator's parameters, for reference.
    pub params: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("not a dagml model file (bad magic)")]
    NotAModel,
    #[error("the model file is truncated: {0}")]
    Truncated(&'static str),
    #[error(
        "the model file has format version {0}; this dagml reads up to {FORMAT_VERSION}: upgrade dagml"
    )]
    TooNew(u32),
    #[error(
        "the model file has format version {0}, older than this dagml's {FORMAT_VERSION} (trees now store feature importances): re-run the pipeline to rewrite it"
    )]
    TooOld(u32),
    #[error("the model header is not valid: {0}")]
    Header(String),
    #[error("the model payload is not valid: {0}")]
    Payload(String),
    #[error(
        "the model file is damaged: its checksum does not match its contents (re-create it with `dagml run`, or copy it again)"
    )]
    Checksum,
    #[error("the model file has {0} bytes after its end")]
    Trailing(usize),
    #[error("the model in the file is not sound: {0}")]
    Invalid(String),
}

pub fn encode(header: &ModelHeader, payload: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(24 + h.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = sha256(&out);
    out.extend_from_slice(&sum);
    out
}

fn sha256(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

fn take<'a>(b: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], ModelFileError> {
    if b.len() < n {
        return Err(ModelFileError::Truncated(what));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

/// Header and payload of a model file's bytes, its checksum checked.
pub fn decode(bytes: &[u8]) -> Result<(ModelHeader, &[u8]), ModelFileError> {
    let mut b = bytes;
    if take(&mut b, 8, "magic").map_err(|_| ModelFileError::NotAModel)? != MAGIC {
        return Err(ModelFileError::NotAModel);
    }
    let v = u32::from_le_bytes(
        take(&mut b, 4, "version")?
            .try_into()
            .map_err(|_| ModelFileError::Truncated("version"))?,
    );
    if v > FORMAT_VERSION {
        return Err(ModelFileError::TooNew(v));
    }
    if v < FORMAT_VERSION {
        return Err(ModelFileError::TooOld(v));
    }
    {
        // Checked before anything else is believed: a damaged length or header
        // is reported as damage, not as whatever it happens to decode to.
        let Some(body_len) = bytes.len().checked_sub(CHECKSUM_LEN) else {
            return Err(ModelFileError::Truncated("checksum"));
        };
        if body_len < 8 + 4 {
            return Err(ModelFileError::Truncated("checksum"));
        }
        let (body, sum) = bytes.split_at(body_len);
        if sha256(body)[..] != sum[..] {
            return Err(ModelFileError::Checksum);
        }
        b = &body[12..];
    }
    let hl = u32::from_le_bytes(
        take(&mut b, 4, "header length")?
            .try_into()
            .map_err(|_| ModelFileError::Truncated("header length"))?,
    ) as usize;
    let header: ModelHeader = serde_json::from_slice(take(&mut b, hl, "header")?)
        .map_err(|e| ModelFileError::Header(e.to_string()))?;
    let pl = u64::from_le_bytes(
        take(&mut b, 8, "payload length")?
            .try_into()
            .map_err(|_| ModelFileError::Truncated("payload length"))?,
    );
    let payload = take(
        &mut b,
        usize::try_from(pl).map_err(|_| ModelFileError::Truncated("payload"))?,
        "payload",
    )?;
    if !b.is_empty() {
        return Err(ModelFileError::Trailing(b.len()));
    }
    Ok((header, payload))
}

/// A model file's header and model: checksum, then decoding, then
/// [`validate`]. What `predict` (and anything serving a model) should call.
pub fn read(bytes: &[u8]) -> Result<(ModelHeader, TrainedModel), ModelFileError> {
    let (header, payload) = decode(bytes)?;
    let model: TrainedModel =
        postcard::from_bytes(payload).map_err(|e| ModelFileError::Payload(e.to_string()))?;
    validate(&header, &model)?;
    Ok((header, model))
}

/// Check that a decoded model agrees with its header and can be evaluated
/// without indexing out of bounds or looping: the checksum catches damage, this
/// catches a file written wrong (or damaged before its checksum was taken).
pub fn validate(header: &ModelHeader, model: &TrainedModel) -> Result<(), ModelFileError> {
    let bad = |m: String| Err(ModelFileError::Invalid(m));
    let header_features: Vec<(&str, &str)> = header
        .features
        .iter()
        .map(|f| (f.name.as_str(), f.dtype.as_str()))
        .collect();
    let model_features: Vec<(&str, &str)> = model
        .inputs
        .iter()
        .map(String::as_str)
        .zip(model.input_types.iter().map(String::as_str))
        .collect();
    if model.inputs.len() != model.input_types.len() || header_features != model_features {
        return bad("the header's features are not the model's inputs".into());
    }
    if header.classes != model.classes {
        return bad("the header's classes are not the model's".into());
    }
    if header.target != model.target || header.task != model.task.name() {
        return bad("the header's target or task is not the model's".into());
    }
    validate_model(model, 0)
}

/// Ensembles nest one level in files dagml writes; a few more are allowed.
const MAX_NESTING: usize = 4;

fn validate_model(m: &TrainedModel, depth: usize) -> Result<(), ModelFileError> {
    let bad = |s: String| Err(ModelFileError::Invalid(format!("model `{}`: {s}", m.name)));
    if depth > MAX_NESTING {
        return bad("ensembles nested too deep".into());
    }
    let k = m.classes.len();
    let d = m.features.len();
    match m.task {
        Problem::Classification if k == 0 => return bad("a classifier with no classes".into()),
        Problem::Regression if k != 0 => return bad("a regressor with classes".into()),
        _ => {}
    }
    match &m.body {
        Body::Forest(f) => {
            if f.trees.is_empty() {
                return bad("a forest with no trees".into());
            }
            if f.bins.edges.len() != d {
                return bad(format!("{} bin maps for {d} features", f.bins.edges.len()));
            }
            for (j, e) in f.bins.edges.iter().enumerate() {
                if e.len() > 255 || e.iter().any(|x| x.is_nan()) || !e.is_sorted() {
                    return bad(format!("the bin edges of feature {j} are not sound"));
                }
            }
            let width = match m.task {
                Problem::Classification => k,
                Problem::Regression => 1,
            };
            let width = u32::try_from(width).map_err(|_| {
                ModelFileError::Invalid(format!("model `{}`: too many classes", m.name))
            })?;
            for (t, tree) in f.trees.iter().enumerate() {
                if let Err(e) = tree.validate(d, width) {
                    return bad(format!("tree {t}: {e}"));
                }
            }
        }
        Body::Logistic(l) => {
            if l.features != d
                || l.classes != k
                || Some(l.w.len()) != d.checked_mul(k)
                || l.b.len() != k
            {
                return bad(format!(
                    "logistic weights for {} features × {} classes; the model has {d} × {k}",
                    l.features, l.classes
                ));
            }
            if l.w.iter().chain(&l.b).any(|x| !x.is_finite()) {
                return bad("a logistic weight is not a finite number".into());
            }
        }
        Body::Linear(l) => {
            if l.coef.len() != d {
                return bad(format!("{} coefficients for {d} features", l.coef.len()));
            }
            if l.coef.iter().chain([&l.intercept]).any(|x| !x.is_finite()) {
                return bad("a coefficient is not a finite number".into());
            }
        }
        Body::Ensemble { members, .. } => {
            if members.is_empty() {
                return bad("an ensemble with no members".into());
            }
            for (_, member) in members {
                if member.task != m.task {
                    return bad(format!("member `{}` has another task", member.name));
                }
                validate_model(member, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Why a batch cannot be fed to a model: what [`conform`] reports. Rows are
/// counted from 1 over the batch's rows (a CSV's header is not a row).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error(
        "the input has no column `{column}`, which the model reads{hint}; its columns are: {available}"
    )]
    Missing {
        column: String,
        hint: String,
        available: String,
    },
    #[error("the input has {count} columns named `{column}`: the model reads one")]
    Duplicate { column: String, count: usize },
    #[error(
        "column `{column}` is {got}; the model reads it as {want}, and {got} does not convert to {want}"
    )]
    WrongType {
        column: String,
        got: String,
        want: String,
    },
    #[error(
        "column `{column}`, row {row}: `{value}` is not a {want} value (the model reads `{column}` as {want})"
    )]
    Unparsable {
        column: String,
        row: usize,
        value: String,
        want: String,
    },
    #[error(
        "column `{column}`, row {row}: {value} does not convert to {want} without loss (the model reads `{column}` as {want})"
    )]
    Lossy {
        column: String,
        row: usize,
        value: String,
        want: String,
    },
    #[error("the converted input is not a valid batch: {0}")]
    Batch(String),
}

/// The Arrow type a header's type name stands for, for the types dagml's
/// readers produce.
fn data_type(name: &str) -> Option<DataType> {
    Some(match name {
        "Boolean" => DataType::Boolean,
        "Int8" => DataType::Int8,
        "Int16" => DataType::Int16,
        "Int32" => DataType::Int32,
        "Int64" => DataType::Int64,
        "UInt8" => DataType::UInt8,
        "UInt16" => DataType::UInt16,
        "UInt32" => DataType::UInt32,
        "UInt64" => DataType::UInt64,
        "Float32" => DataType::Float32,
        "Float64" => DataType::Float64,
        "Utf8" => DataType::Utf8,
        "LargeUtf8" => DataType::LargeUtf8,
        _ => return None,
    })
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_plain(t: &DataType) -> bool {
    is_text(t) || t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null)
}

/// `batch` with the model's feature columns in the types the model was fitted
/// on: a column of the right type is kept; one that converts without loss
/// (integers to floats that hold them, text that parses, numbers written as
/// text categories) is cast; anything else is an [`InputError`] naming the
/// column (and the first row that does not convert). Columns the model does
/// not read are kept as they are. Independent of files: `predict` and a model
/// server call it the same way.
pub fn conform(features: &[FeatureInfo], batch: &RecordBatch) -> Result<RecordBatch, InputError> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    for feature in features {
        let found: Vec<usize> = fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() == &feature.name)
            .map(|(i, _)| i)
            .collect();
        let i = match found.as_slice() {
            [i] => *i,
            [] => {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                let hint =
                    crate::frontend::diag::did_you_mean(&feature.name, names.iter().copied())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                let available = if names.is_empty() {
                    "none".to_string()
                } else {
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(InputError::Missing {
                    column: feature.name.clone(),
                    hint,
                    available,
                });
            }
            many => {
                return Err(InputError::Duplicate {
                    column: feature.name.clone(),
                    count: many.len(),
                });
            }
        };
        let got = cols[i].data_type().clone();
        if got.to_string() == feature.dtype {
            continue;
        }
        let wrong = || InputError::WrongType {
            column: feature.name.clone(),
            got: got.to_string(),
            want: feature.dtype.clone(),
        };
        let want = data_type(&feature.dtype).ok_or_else(wrong)?;
        if !is_plain(&got) || !is_plain(&want) {
            return Err(wrong());
        }
        let cast = conform_column(&feature.name, &cols[i], &want)?;
        fields[i] = Field::new(feature.name.clone(), want, true);
        cols[i] = cast;
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| InputError::Batch(e.to_string()))
}

/// Cast one column, checking every value survives: a value the cast drops
/// (unparsable text, an overflow) or changes (a fraction cut off, a float
/// rounded) is an error at its row.
fn conform_column(name: &str, a: &ArrayRef, want: &DataType) -> Result<ArrayRef, InputError> {
    let got = a.data_type();
    let wrong = || InputError::WrongType {
        column: name.to_string(),
        got: got.to_string(),
        want: want.to_string(),
    };
    let opts = CastOptions {
        safe: true,
        ..Default::default()
    };
    let text_in = is_text(got);
    // Text to numbers: trim as the CSV reader does.
    let source: ArrayRef = if text_in && !is_text(want) {
        let s = cast_with_options(a, &DataType::Utf8, &opts).map_err(|_| wrong())?;
        let s = s.as_string::<i32>();
        Arc::new(s.iter().map(|v| v.map(str::trim)).collect::<StringArray>())
    } else {
        a.clone()
    };
    let out = cast_with_options(&source, want, &opts).map_err(|_| wrong())?;
    // Text parsed into a number prints back differently ("1.50" → 1.5): it is
    // checked by whether it parsed; everything else by a round trip.
    let back = if text_in {
        None
    } else {
        Some(cast_with_options(&out, got, &opts).map_err(|_| wrong())?)
    };
    let differs = match &back {
        Some(b) => Some(distinct(a, b).map_err(|_| wrong())?),
        None => None,
    };
    for row in 0..a.len() {
        if a.is_null(row) {
            continue;
        }
        let lost = out.is_null(row) || differs.as_ref().is_some_and(|d| d.value(row));
        if !lost {
            continue;
        }
        let value = array_value_to_string(a, row).unwrap_or_default();
        return Err(if text_in {
            InputError::Unparsable {
                column: name.to_string(),
                row: row + 1,
                value,
                want: want.to_string(),
            }
        } else {
            InputError::Lossy {
                column: name.to_string(),
                row: row + 1,
                value,
                want: want.to_string(),
            }
        });
    }
    Ok(out)
}

/// SHA-256 of text, as lowercase hex.
pub fn hash_hex(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ModelHeader {
        ModelHeader {
            format_version: FORMAT_VERSION,
            dagml_version: "0.1.0".into(),
            pipeline: "p".into(),
            pipeline_hash: hash_hex(b"text"),
            model: "m".into(),
            estimator: "ridge".into(),
            task: "regression".into(),
            target: "y".into(),
            features: vec![FeatureInfo {
                name: "a".into(),
                dtype: "Float64".into(),
            }],
            classes: vec![],
            preprocess: serde_json::Value::Null,
            params: serde_json::json!({"alpha": 1.0}),
        }
    }

    #[test]
    fn round_trip_and_errors() {
        let bytes = encode(&header(), b"payload");
        let (h, p) = decode(&bytes).unwrap();
        assert_eq!((h, p), (header(), &b"payload"[..]));
        assert!(matches!(
            decode(b"PK\x03\x04zip"),
            Err(ModelFileError::NotAModel)
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3]),
            Err(ModelFileError::Checksum)
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() / 2]),
            Err(ModelFileError::Checksum)
        ));
        assert!(matches!(
            decode(&bytes[..12]),
            Err(ModelFileError::Truncated("checksum"))
        ));
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert!(matches!(decode(&newer), Err(ModelFileError::TooNew(9))));
        let mut older = bytes.clone();
        older[8] = 1;
        let e = decode(&older).unwrap_err();
        assert!(matches!(e, ModelFileError::TooOld(1)));
        assert!(e.to_string().contains("re-run the pipeline"), "{e}");
        assert_eq!(
            hash_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    fn two_features() -> ModelHeader {
        let mut h = header();
        h.features = vec![
            FeatureInfo {
                name: "a".into(),
                dtype: "Float64".into(),
            },
            FeatureInfo {
                name: "city".into(),
                dtype: "Utf8".into(),
            },
        ];
        h
    }

    #[test]
    fn text_in_a_float_column_is_an_error_naming_its_row() {
        use arrow::array::StringArray;
        let b = batch(vec![
            (
                "a",
                Arc::new(StringArray::from(vec!["1.5", " 2", "abc"])) as ArrayRef,
            ),
            ("city", Arc::new(StringArray::from(vec!["x", "y", "z"]))),
        ]);
        let e = conform(&two_features().features, &b).unwrap_err();
        assert_eq!(
            e,
            InputError::Unparsable {
                column: "a".into(),
                row: 3,
                value: "abc".into(),
                want: "Float64".into()
            }
        );
        assert!(e.to_string().contains("row 3"), "{e}");
    }

    #[test]
    fn lossless_casts_are_applied_and_lossy_ones_refused() {
        use arrow::array::{Float64Array, Int64Array, StringArray};
        // Integers read as Float64, numbers as text categories, text that parses.
        let b = batch(vec![
            (
                "a",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
            ),
            ("city", Arc::new(Int64Array::from(vec![10, 20, 30]))),
            ("extra", Arc::new(StringArray::from(vec!["k", "k", "k"]))),
        ]);
        let out = conform(&two_features().features, &b).unwrap();
        assert_eq!(out.column(0).data_type(), &DataType::Float64);
        assert_eq!(out.column(0).null_count(), 1);
        assert_eq!(out.column(1).as_string::<i32>().value(2), "30");
        assert_eq!(out.column(2).data_type(), &DataType::Utf8, "kept as it was");
        // 2^53 + 1 has no Float64.
        let big = batch(vec![
            (
                "a",
                Arc::new(Int64Array::from(vec![1, (1 << 53) + 1])) as ArrayRef,
            ),
            ("city", Arc::new(StringArray::from(vec!["x", "y"]))),
        ]);
        assert!(matches!(
            conform(&two_features().features, &big),
            Err(InputError::Lossy { row: 2, .. })
        ));
        // A model that reads integers is not fed fractions.
        let mut h = two_features();
        h.features[0].dtype = "Int64".into();
        let frac = batch(vec![
            (
                "a",
                Arc::new(Float64Array::from(vec![2.0, 2.5])) as ArrayRef,
            ),
            ("city", Arc::new(StringArray::from(vec!["x", "y"]))),
        ]);
        assert!(matches!(
            conform(&h.features, &frac),
            Err(InputError::Lossy { row: 2, .. })
        ));
    }

    #[test]
    fn a_missing_column_lists_the_columns_there_are_with_a_guess() {
        use arrow::array::Float64Array;
        let b = batch(vec![
            ("A", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("town", Arc::new(Float64Array::from(vec![1.0]))),
        ]);
        let e = conform(&two_features().features, &b)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column `a`") && e.contains("did you mean `A`"),
            "{e}"
        );
        assert!(e.contains("`A`, `town`"), "{e}");
        let dup = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("a", DataType::Float64, true),
                Field::new("a", DataType::Float64, true),
                Field::new("city", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Float64Array::from(vec![1.0])),
                Arc::new(Float64Array::from(vec![1.0])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .unwrap();
        assert!(matches!(
            conform(&two_features().features, &dup),
            Err(InputError::Duplicate { count: 2, .. })
        ));
    }
}

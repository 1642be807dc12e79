//! Record batches to the numbers estimators read: a column-major `f32` feature
//! matrix, class indices or float targets.
//!
//! In: a batch, the feature names, the target name. Out: [`Matrix`], targets.
//! Must not: reorder rows or features: row `i` of the matrix is row `i` of the batch
//! and feature `j` is `features[j]`.

use super::DataError;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::record_batch::RecordBatch;

/// A dense feature matrix, column-major: `values[j * rows + i]` is row `i`,
/// feature `j`. Missing values are NaN.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub values: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl Matrix {
    pub fn column(&self, j: usize) -> &[f32] {
        &self.values[j * self.rows..(j + 1) * self.rows]
    }
}

fn numeric_column(a: &ArrayRef, name: &str) -> Result<Vec<f32>, DataError> {
    let bad = || DataError::Column {
        column: name.into(),
        reason: format!(
            "is {} where a number was expected; add an `ordinal` or `one_hot` step to `preprocess`",
            a.data_type()
        ),
    };
    match a.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => return Err(bad()),
        DataType::Float32 => {
            let p = a.as_primitive::<Float32Type>();
            return Ok(p.iter().map(|v| v.unwrap_or(f32::NAN)).collect());
        }
        DataType::UInt8 => {
            let p = a.as_primitive::<arrow::datatypes::UInt8Type>();
            return Ok(p
                .iter()
                .map(|v| v.map(f32::from).unwrap_or(f32::NAN))
                .collect());
        }
        _ => {}
    }
    let c = cast(a, &DataType::Float64).map_err(|_| bad())?;
    Ok(c.as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.map(|x| x as f32).unwrap_or(f32::NAN))
        .collect())
}

/// The features of `batch`: `features` if given, else every column but `target`.
pub fn feature_names(
    batch: &RecordBatch,
    target: &str,
    features: Option<&[String]>,
) -> Vec<String> {
    match features {
        Some(f) => f.to_vec(),
        None => batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != target)
            .collect(),
    }
}

pub fn matrix(batch: &RecordBatch, features: &[String]) -> Result<Matrix, DataError> {
    let rows = batch.num_rows();
    let mut values = Vec::with_capacity(rows * features.len());
    for f in features {
        let a = batch
            .column_by_name(f)
            .ok_or_else(|| DataError::MissingColumn(f.clone()))?;
        values.extend(numeric_column(a, f)?);
    }
    Ok(Matrix {
        values,
        rows,
        cols: features.len(),
    })
}

/// A column's values as text labels (nulls are an error: a target must be known).
pub fn labels(batch: &RecordBatch, target: &str) -> Result<Vec<String>, DataError> {
    let a = batch
        .column_by_name(target)
        .ok_or_else(|| DataError::MissingColumn(target.into()))?;
    if a.null_count() > 0 {
        return Err(DataError::Column {
            column: target.into(),
            reason: format!("{} rows have no target value", a.null_count()),
        });
    }
    let s = cast(a, &DataType::Utf8)?;
    Ok(s.as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or("").to_string())
        .collect())
}

/// The class names of a target, sorted numerically when they are numbers.
pub fn class_names(labels: &[String]) -> Vec<String> {
    let mut set: Vec<String> = labels.to_vec();
    set.sort();
    set.dedup();
    if set.iter().all(|s| s.parse::<f64>().is_ok()) {
        set.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap_or(0.0)
                .total_cmp(&b.parse::<f64>().unwrap_or(0.0))
        });
    }
    set
}

/// Class indices of `labels` in `classes`; a label not among them is an error.
pub fn class_indices(
    labels: &[String],
    classes: &[String],
    target: &str,
) -> Result<Vec<u32>, DataError> {
    let index: std::collections::HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    labels
        .iter()
        .map(|l| {
            index
                .get(l.as_str())
                .copied()
                .ok_or_else(|| DataError::Column {
                    column: target.into(),
                    reason: format!("class `{l}` was not seen in training"),
                })
        })
        .collect()
}

/// A numeric target.
pub fn float_target(batch: &RecordBatch, target: &str) -> Result<Vec<f64>, DataError> {
    let a = batch
        .column_by_name(target)
        .ok_or_else(|| DataError::MissingColumn(target.into()))?;
    if a.null_count() > 0 {
        return Err(DataError::Column {
            column: target.into(),
            reason: format!("{} rows have no target value", a.null_count()),
        });
    }
    let c = cast(a, &DataType::Float64).map_err(|_| DataError::Column {
        column: target.into(),
        reason: format!("is {}, not a number", a.data_type()),
    })?;
    Ok(c.as_primitive::<Float64Type>().values().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_sort_as_numbers() {
        let l: Vec<String> = ["10", "9", "2", "9"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = class_names(&l);
        assert_eq!(c, vec!["2", "9", "10"]);
        assert_eq!(class_indices(&l, &c, "y").unwrap(), vec![2, 1, 0, 1]);
        assert!(class_indices(&["3".into()], &c, "y").is_err());
    }
}

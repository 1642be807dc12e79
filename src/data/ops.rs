//! Transforms over record batches: row operations (select, drop, derive, filter,
//! cast) and fitted preprocessing (impute, one-hot, ordinal, scaling) whose
//! statistics are learned from training rows and kept in the model.
//!
//! In: the pipeline's [`Op`]s and batches. Out: batches, and [`Fitted`] ops that
//! apply the same statistics to any later batch. Must not: look at the target
//! column when fitting preprocessing (it is excluded by the caller's `except`).

use super::{DataError, expr_eval};
use crate::frontend::pipeline::{ColumnType, ImputeStrategy, Literal, Op};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, StringArray,
};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A fill value learned by `impute`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fill {
    Num(f64),
    Text(String),
    Bool(bool),
}

/// One op with what it learned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fitted {
    /// An op that learns nothing.
    Row(Op),
    Impute(Vec<(String, Fill)>),
    /// Column and its kept categories, in output order.
    OneHot(Vec<(String, Vec<String>)>),
    Ordinal(Vec<(String, Vec<String>)>),
    /// Column, shift and scale: `(x - shift) / scale`.
    Scale(Vec<(String, f64, f64)>),
}

fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::String => DataType::Utf8,
    }
}

fn with_column(batch: &RecordBatch, name: &str, array: ArrayRef) -> Result<RecordBatch, DataError> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    let field = Field::new(name, array.data_type().clone(), true);
    match fields.iter().position(|f| f.name() == name) {
        Some(i) => {
            fields[i] = field;
            cols[i] = array;
        }
        None => {
            fields.push(field);
            cols.push(array);
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn keep(batch: &RecordBatch, pred: impl Fn(&str) -> bool) -> Result<RecordBatch, DataError> {
    let idx: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| pred(f.name()))
        .map(|(i, _)| i)
        .collect();
    Ok(batch.project(&idx)?)
}

/// Apply one op that learns nothing.
pub fn apply_row_op(op: &Op, batch: &RecordBatch) -> Result<RecordBatch, DataError> {
    let has = |c: &str| batch.schema().fields().iter().any(|f| f.name() == c);
    match op {
        Op::Select { columns } => {
            if let Some(c) = columns.iter().find(|c| !has(&c.value)) {
                return Err(DataError::MissingColumn(c.value.clone()));
            }
            // In the order listed.
            let schema = batch.schema();
            let idx: Vec<usize> = columns
                .iter()
                .filter_map(|c| schema.index_of(&c.value).ok())
                .collect();
            Ok(batch.project(&idx)?)
        }
        Op::Drop { columns } => keep(batch, |n| columns.iter().all(|c| c.value != n)),
        Op::Derive { column, expr } => {
            let a = expr_eval::eval(&expr.value, batch)?;
            with_column(batch, &column.value, a)
        }
        Op::Filter { expr } => {
            let a = expr_eval::eval(&expr.value, batch)?;
            let mask = cast(&a, &DataType::Boolean)?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataError::Expr("a filter must be a condition".into()))?;
            Ok(filter_record_batch(batch, mask)?)
        }
        Op::Cast { column, to } => {
            let a = batch
                .column_by_name(&column.value)
                .ok_or_else(|| DataError::MissingColumn(column.value.clone()))?;
            let c = arrow::compute::cast_with_options(
                a,
                &arrow_type(to.value),
                &arrow::compute::CastOptions {
                    safe: true,
                    ..Default::default()
                },
            )?;
            with_column(batch, &column.value, c)
        }
        other => Err(DataError::Unsupported(format!(
            "`{}` must be fitted first",
            other.name()
        ))),
    }
}

fn targets(
    batch: &RecordBatch,
    listed: &Option<Vec<crate::frontend::pipeline::Name>>,
    except: &[String],
    want: impl Fn(&DataType) -> bool,
) -> Result<Vec<String>, DataError> {
    match listed {
        Some(cols) => {
            for c in cols {
                if batch.column_by_name(&c.value).is_none() {
                    return Err(DataError::MissingColumn(c.value.clone()));
                }
            }
            Ok(cols.iter().map(|c| c.value.clone()).collect())
        }
        None => Ok(batch
            .schema()
            .fields()
            .iter()
            .filter(|f| !except.contains(f.name()) && want(f.data_type()))
            .map(|f| f.name().clone())
            .collect()),
    }
}

fn is_num(t: &DataType) -> bool {
    t.is_numeric()
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8)
}

fn f64_values(a: &ArrayRef) -> Result<Vec<f64>, DataError> {
    let c = cast(a, &DataType::Float64)?;
    Ok(c.as_primitive::<arrow::datatypes::Float64Type>()
        .iter()
        .flatten()
        .filter(|v| !v.is_nan())
        .collect())
}

fn text_counts(a: &ArrayRef) -> Result<BTreeMap<String, usize>, DataError> {
    let c = cast(a, &DataType::Utf8)?;
    let mut m = BTreeMap::new();
    for v in c.as_string::<i32>().iter().flatten() {
        *m.entry(v.to_string()).or_insert(0) += 1;
    }
    Ok(m)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Learn one fitted op from `batch`.
pub fn fit_op(op: &Op, batch: &RecordBatch, except: &[String]) -> Result<Fitted, DataError> {
    Ok(match op {
        Op::Impute {
            columns,
            strategy,
            value,
        } => {
            let any = |_: &DataType| true;
            let cols = match strategy {
                ImputeStrategy::Mean | ImputeStrategy::Median => {
                    targets(batch, columns, except, is_num)?
                }
                _ => targets(batch, columns, except, any)?,
            };
            let mut fills = Vec::new();
            for c in cols {
                let a = batch
                    .column_by_name(&c)
                    .ok_or_else(|| DataError::MissingColumn(c.clone()))?;
                let fill = match strategy {
                    ImputeStrategy::Mean => {
                        let v = f64_values(a)?;
                        Fill::Num(if v.is_empty() {
                            0.0
                        } else {
                            v.iter().sum::<f64>() / v.len() as f64
                        })
                    }
                    ImputeStrategy::Median => Fill::Num(median(f64_values(a)?)),
                    ImputeStrategy::MostFrequent => {
                        if is_num(a.data_type()) {
                            let mut counts: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
                            for v in f64_values(a)? {
                                counts.entry(v.to_bits()).or_insert((v, 0)).1 += 1;
                            }
                            // Most frequent, smallest value on ties (scikit-learn's rule).
                            let best =
                                counts
                                    .values()
                                    .fold(None::<(f64, usize)>, |b, &(v, n)| match b {
                                        Some((bv, bn)) if bn > n || (bn == n && bv <= v) => b,
                                        _ => Some((v, n)),
                                    });
                            Fill::Num(best.map(|b| b.0).unwrap_or(0.0))
                        } else if a.data_type() == &DataType::Boolean {
                            let b = a.as_boolean();
                            Fill::Bool(b.true_count() * 2 > b.len() - b.null_count())
                        } else {
                            let counts = text_counts(a)?;
                            let best = counts.iter().fold(
                                None::<(&String, usize)>,
                                |b, (k, &n)| match b {
                                    Some((_, bn)) if bn >= n => b,
                                    _ => Some((k, n)),
                                },
                            );
                            Fill::Text(best.map(|b| b.0.clone()).unwrap_or_default())
                        }
                    }
                    ImputeStrategy::Constant => match value {
                        Some(Literal::Int(i)) => Fill::Num(*i as f64),
                        Some(Literal::Float(f)) => Fill::Num(*f),
                        Some(Literal::Bool(b)) => Fill::Bool(*b),
                        Some(Literal::Str(s)) => Fill::Text(s.clone()),
                        None => Fill::Num(0.0),
                    },
                };
                fills.push((c, fill));
            }
            Fitted::Impute(fills)
        }
        Op::OneHot {
            columns,
            max_categories,
        } => {
            let mut out = Vec::new();
            for c in targets(batch, columns, except, is_text)? {
                let a = batch
                    .column_by_name(&c)
                    .ok_or_else(|| DataError::MissingColumn(c.clone()))?;
                let mut cats: Vec<(String, usize)> = text_counts(a)?.into_iter().collect();
                // Most frequent first, then by name: stable and independent of row order.
                cats.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                if let Some(m) = max_categories {
                    cats.truncate(m.value as usize);
                }
                let mut names: Vec<String> = cats.into_iter().map(|c| c.0).collect();
                names.sort();
                out.push((c, names));
            }
            Fitted::OneHot(out)
        }
        Op::Ordinal { columns } => {
            let mut out = Vec::new();
            for c in targets(batch, columns, except, is_text)? {
                let a = batch
                    .column_by_name(&c)
                    .ok_or_else(|| DataError::MissingColumn(c.clone()))?;
                out.push((c, text_counts(a)?.into_keys().collect()));
            }
            Fitted::Ordinal(out)
        }
        Op::StandardScale { columns } | Op::MinMaxScale { columns } => {
            let standard = matches!(op, Op::StandardScale { .. });
            let mut out = Vec::new();
            for c in targets(batch, columns, except, is_num)? {
                let a = batch
                    .column_by_name(&c)
                    .ok_or_else(|| DataError::MissingColumn(c.clone()))?;
                let v = f64_values(a)?;
                let (shift, scale) = if v.is_empty() {
                    (0.0, 1.0)
                } else if standard {
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let var =
                        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64;
                    (mean, var.sqrt())
                } else {
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (lo, hi - lo)
                };
                // A constant column is left centred, not divided by zero (scikit-learn).
                out.push((c, shift, if scale > 0.0 { scale } else { 1.0 }));
            }
            Fitted::Scale(out)
        }
        row => Fitted::Row(row.clone()),
    })
}

/// Apply a fitted op.
pub fn apply_fitted(f: &Fitted, batch: &RecordBatch) -> Result<RecordBatch, DataError> {
    let col = |c: &str| {
        batch
            .column_by_name(c)
            .cloned()
            .ok_or_else(|| DataError::MissingColumn(c.to_string()))
    };
    match f {
        Fitted::Row(op) => apply_row_op(op, batch),
        Fitted::Impute(fills) => {
            let mut b = batch.clone();
            for (c, fill) in fills {
                let a = col(c)?;
                if a.null_count() == 0 && !matches!(fill, Fill::Num(_)) {
                    continue;
                }
                let filled: ArrayRef = match fill {
                    Fill::Num(v) => {
                        let x = cast(&a, &DataType::Float64)?;
                        let x = x.as_primitive::<arrow::datatypes::Float64Type>();
                        if x.null_count() == 0
                            && !x.values().iter().any(|v| v.is_nan())
                            && (a.data_type().is_integer() || a.data_type().is_floating())
                        {
                            continue;
                        }
                        Arc::new(
                            x.iter()
                                .map(|o| Some(o.filter(|v| !v.is_nan()).unwrap_or(*v)))
                                .collect::<Float64Array>(),
                        )
                    }
                    Fill::Text(s) => {
                        let x = cast(&a, &DataType::Utf8)?;
                        Arc::new(
                            x.as_string::<i32>()
                                .iter()
                                .map(|o| Some(o.unwrap_or(s)))
                                .collect::<StringArray>(),
                        )
                    }
                    Fill::Bool(v) => {
                        let x = cast(&a, &DataType::Boolean)?;
                        Arc::new(
                            x.as_boolean()
                                .iter()
                                .map(|o| Some(o.unwrap_or(*v)))
                                .collect::<BooleanArray>(),
                        )
                    }
                };
                b = with_column(&b, c, filled)?;
            }
            Ok(b)
        }
        Fitted::OneHot(cols) => {
            let mut b = batch.clone();
            for (c, cats) in cols {
                let a = cast(&col(c)?, &DataType::Utf8)?;
                let s = a.as_string::<i32>();
                b = keep(&b, |n| n != c)?;
                for cat in cats {
                    let v: Float32Array = s
                        .iter()
                        .map(|o| Some(if o == Some(cat.as_str()) { 1.0 } else { 0.0 }))
                        .collect();
                    b = with_column(&b, &format!("{c}={cat}"), Arc::new(v))?;
                }
            }
            Ok(b)
        }
        Fitted::Ordinal(cols) => {
            let mut b = batch.clone();
            for (c, cats) in cols {
                let a = cast(&col(c)?, &DataType::Utf8)?;
                let v: Float32Array = a
                    .as_string::<i32>()
                    .iter()
                    .map(|o| {
                        Some(match o {
                            None => f32::NAN,
                            Some(x) => cats
                                .binary_search_by(|k| k.as_str().cmp(x))
                                .map(|i| i as f32)
                                .unwrap_or(-1.0),
                        })
                    })
                    .collect();
                b = with_column(&b, c, Arc::new(v))?;
            }
            Ok(b)
        }
        Fitted::Scale(cols) => {
            let mut b = batch.clone();
            for (c, shift, scale) in cols {
                let a = col(c)?;
                let small = matches!(
                    a.data_type(),
                    DataType::UInt8
                        | DataType::Int8
                        | DataType::UInt16
                        | DataType::Int16
                        | DataType::Float32
                );
                let x = cast(&a, &DataType::Float64)?;
                let x = x.as_primitive::<arrow::datatypes::Float64Type>();
                let out: ArrayRef = if small {
                    Arc::new(
                        x.iter()
                            .map(|o| o.map(|v| ((v - shift) / scale) as f32))
                            .collect::<Float32Array>(),
                    )
                } else {
                    Arc::new(
                        x.iter()
                            .map(|o| o.map(|v| (v - shift) / scale))
                            .collect::<Float64Array>(),
                    )
                };
                b = with_column(&b, c, out)?;
            }
            Ok(b)
        }
    }
}

/// Fit `ops` in order on `batch` (each on the output of the ones before), and
/// return them with the transformed batch.
pub fn fit_all(
    ops: &[Op],
    batch: &RecordBatch,
    except: &[String],
) -> Result<(Vec<Fitted>, RecordBatch), DataError> {
    let mut b = batch.clone();
    let mut fitted = Vec::with_capacity(ops.len());
    for op in ops {
        let f = fit_op(op, &b, except)?;
        b = apply_fitted(&f, &b)?;
        fitted.push(f);
    }
    Ok((fitted, b))
}

pub fn apply_all(fitted: &[Fitted], batch: &RecordBatch) -> Result<RecordBatch, DataError> {
    let mut b = batch.clone();
    for f in fitted {
        b = apply_fitted(f, &b)?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::span::{Span, Spanned};
    use arrow::array::Int64Array;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
                Field::new("y", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(10)])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("a"),
                ])),
                Arc::new(Int64Array::from(vec![None, Some(1), Some(0), Some(1)])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn impute_median_and_most_frequent_leave_the_target_alone() {
        let ops = vec![
            Op::Impute {
                columns: None,
                strategy: ImputeStrategy::Median,
                value: None,
            },
            Op::Impute {
                columns: None,
                strategy: ImputeStrategy::MostFrequent,
                value: None,
            },
        ];
        let (fitted, out) = fit_all(&ops, &batch(), &["y".into()]).unwrap();
        let n = out
            .column_by_name("n")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(n.value(1), 3.0);
        let s = out.column_by_name("s").unwrap().as_string::<i32>();
        assert_eq!(s.value(2), "a");
        assert_eq!(out.column_by_name("y").unwrap().null_count(), 1);
        // The same statistics apply to new rows.
        let again = apply_all(&fitted, &batch()).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn one_hot_and_scaling() {
        let ops = vec![
            Op::OneHot {
                columns: None,
                max_categories: Some(Spanned::new(1, Span::new(0, 0))),
            },
            Op::MinMaxScale {
                columns: Some(vec![Spanned::new("n".into(), Span::new(0, 0))]),
            },
        ];
        let (_, out) = fit_all(&ops, &batch(), &["y".into()]).unwrap();
        let names: Vec<String> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, vec!["n", "y", "s=a"]);
        let n = out
            .column_by_name("n")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(n.value(3), 1.0);
        assert!(n.is_null(1));
    }
}

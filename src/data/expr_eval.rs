//! Evaluate a checked expression over a record batch with Arrow compute kernels.
//!
//! In: an [`Expr`] (already type-checked by `compile::schema`) and a batch.
//! Out: one array of the batch's length. Must not: panic on any data: division by
//! zero gives null (integers) or infinity (floats), like SQL engines and NumPy.

use super::DataError;
use crate::frontend::expr::{BinOp, Expr, ExprKind, UnOp};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, new_null_array,
};
use arrow::compute::kernels::{boolean, cmp, numeric};
use arrow::compute::{cast, is_not_null, is_null};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

fn err(e: impl std::fmt::Display) -> DataError {
    DataError::Expr(e.to_string())
}

fn f64s(a: &ArrayRef) -> Result<Float64Array, DataError> {
    let c = cast(a, &DataType::Float64).map_err(err)?;
    Ok(c.as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| err("not numeric"))?
        .clone())
}

fn strings(a: &ArrayRef) -> Result<StringArray, DataError> {
    let c = cast(a, &DataType::Utf8).map_err(err)?;
    Ok(c.as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| err("not text"))?
        .clone())
}

fn bools(a: &ArrayRef) -> Result<BooleanArray, DataError> {
    let c = cast(a, &DataType::Boolean).map_err(err)?;
    Ok(c.as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| err("not a condition"))?
        .clone())
}

fn is_int(a: &ArrayRef) -> bool {
    a.data_type().is_integer()
}

fn unary_f(a: &ArrayRef, f: impl Fn(f64) -> f64) -> Result<ArrayRef, DataError> {
    let x = f64s(a)?;
    Ok(Arc::new(arrow::compute::unary::<
        _,
        _,
        arrow::datatypes::Float64Type,
    >(&x, f)))
}

fn binary_f(
    a: &ArrayRef,
    b: &ArrayRef,
    f: impl Fn(f64, f64) -> f64,
) -> Result<ArrayRef, DataError> {
    let (x, y) = (f64s(a)?, f64s(b)?);
    let out: Float64Array = arrow::compute::binary(&x, &y, f).map_err(err)?;
    Ok(Arc::new(out))
}

/// Evaluate `e` over `batch`.
pub fn eval(e: &Expr, batch: &RecordBatch) -> Result<ArrayRef, DataError> {
    let n = batch.num_rows();
    Ok(match &e.kind {
        ExprKind::Column(c) => batch
            .column_by_name(c)
            .cloned()
            .ok_or_else(|| DataError::MissingColumn(c.clone()))?,
        ExprKind::Int(v) => Arc::new(Int64Array::from(vec![*v; n])),
        ExprKind::Float(v) => Arc::new(Float64Array::from(vec![*v; n])),
        ExprKind::Str(s) => Arc::new(StringArray::from(vec![s.as_str(); n])),
        ExprKind::Bool(b) => Arc::new(BooleanArray::from(vec![*b; n])),
        ExprKind::Null => new_null_array(&DataType::Float64, n),
        ExprKind::Unary(UnOp::Neg, a) => {
            let a = eval(a, batch)?;
            if is_int(&a) {
                numeric::neg(&cast(&a, &DataType::Int64).map_err(err)?).map_err(err)?
            } else {
                numeric::neg(&f64s(&a)?).map_err(err)?
            }
        }
        ExprKind::Unary(UnOp::Not, a) => {
            Arc::new(boolean::not(&bools(&eval(a, batch)?)?).map_err(err)?)
        }
        ExprKind::Binary(op, a, b) => {
            let (a, b) = (eval(a, batch)?, eval(b, batch)?);
            binary(*op, &a, &b)?
        }
        ExprKind::Call(name, args) => {
            let args = args
                .iter()
                .map(|a| eval(a, batch))
                .collect::<Result<Vec<_>, _>>()?;
            call(&name.value, &args)?
        }
    })
}

fn binary(op: BinOp, a: &ArrayRef, b: &ArrayRef) -> Result<ArrayRef, DataError> {
    use BinOp::*;
    let both_int = is_int(a) && is_int(b);
    let text = matches!(a.data_type(), DataType::Utf8) || matches!(b.data_type(), DataType::Utf8);
    let num = |x: &ArrayRef| -> Result<ArrayRef, DataError> {
        if both_int {
            cast(x, &DataType::Int64).map_err(err)
        } else {
            Ok(Arc::new(f64s(x)?) as ArrayRef)
        }
    };
    Ok(match op {
        Or => Arc::new(boolean::or_kleene(&bools(a)?, &bools(b)?).map_err(err)?),
        And => Arc::new(boolean::and_kleene(&bools(a)?, &bools(b)?).map_err(err)?),
        Eq | Ne | Lt | Le | Gt | Ge => {
            let (x, y): (ArrayRef, ArrayRef) = if text {
                (Arc::new(strings(a)?), Arc::new(strings(b)?))
            } else if a.data_type() == &DataType::Boolean && b.data_type() == &DataType::Boolean {
                (a.clone(), b.clone())
            } else {
                (num(a)?, num(b)?)
            };
            let r = match op {
                Eq => cmp::eq(&x, &y),
                Ne => cmp::neq(&x, &y),
                Lt => cmp::lt(&x, &y),
                Le => cmp::lt_eq(&x, &y),
                Gt => cmp::gt(&x, &y),
                _ => cmp::gt_eq(&x, &y),
            };
            Arc::new(r.map_err(err)?)
        }
        Add | Sub | Mul => {
            let (x, y) = (num(a)?, num(b)?);
            let r = match op {
                Add => numeric::add_wrapping(&x, &y),
                Sub => numeric::sub_wrapping(&x, &y),
                _ => numeric::mul_wrapping(&x, &y),
            };
            r.map_err(err)?
        }
        Div => binary_f(a, b, |x, y| x / y)?,
        Rem => {
            if both_int {
                let (x, y) = (num(a)?, num(b)?);
                let xi = x
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| err("int"))?;
                let yi = y
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| err("int"))?;
                let out: Int64Array = xi
                    .iter()
                    .zip(yi.iter())
                    .map(|(p, q)| match (p, q) {
                        (Some(p), Some(q)) if q != 0 => Some(p.wrapping_rem(q)),
                        _ => None,
                    })
                    .collect();
                Arc::new(out)
            } else {
                binary_f(a, b, |x, y| x % y)?
            }
        }
        Pow => binary_f(a, b, f64::powf)?,
    })
}

fn string_map(a: &ArrayRef, f: impl Fn(&str) -> String) -> Result<ArrayRef, DataError> {
    let s = strings(a)?;
    Ok(Arc::new(
        s.iter().map(|v| v.map(&f)).collect::<StringArray>(),
    ))
}

fn call(name: &str, args: &[ArrayRef]) -> Result<ArrayRef, DataError> {
    let arg = |i: usize| {
        args.get(i)
            .ok_or_else(|| err(format!("`{name}` is missing argument {}", i + 1)))
    };
    Ok(match name {
        "log" => unary_f(arg(0)?, f64::ln)?,
        "log10" => unary_f(arg(0)?, f64::log10)?,
        "exp" => unary_f(arg(0)?, f64::exp)?,
        "sqrt" => unary_f(arg(0)?, f64::sqrt)?,
        "abs" => unary_f(arg(0)?, f64::abs)?,
        "round" => unary_f(arg(0)?, f64::round)?,
        "floor" => unary_f(arg(0)?, f64::floor)?,
        "ceil" => unary_f(arg(0)?, f64::ceil)?,
        "pow" => binary_f(arg(0)?, arg(1)?, f64::powf)?,
        "min" => binary_f(arg(0)?, arg(1)?, f64::min)?,
        "max" => binary_f(arg(0)?, arg(1)?, f64::max)?,
        "contains" | "starts_with" | "ends_with" => {
            let (s, p) = (strings(arg(0)?)?, strings(arg(1)?)?);
            let out: BooleanArray = s
                .iter()
                .zip(p.iter())
                .map(|(s, p)| match (s, p) {
                    (Some(s), Some(p)) => Some(match name {
                        "contains" => s.contains(p),
                        "starts_with" => s.starts_with(p),
                        _ => s.ends_with(p),
                    }),
                    _ => None,
                })
                .collect();
            Arc::new(out)
        }
        "lower" => string_map(arg(0)?, str::to_lowercase)?,
        "upper" => string_map(arg(0)?, str::to_uppercase)?,
        "len" => {
            let s = strings(arg(0)?)?;
            Arc::new(
                s.iter()
                    .map(|v| v.map(|v| v.chars().count() as i64))
                    .collect::<Int64Array>(),
            )
        }
        "is_null" => Arc::new(is_null(arg(0)?).map_err(err)?),
        "coalesce" => {
            let (a, b) = (arg(0)?, arg(1)?);
            let b = cast(b, a.data_type()).map_err(err)?;
            let mask = is_not_null(a).map_err(err)?;
            arrow::compute::kernels::zip::zip(&mask, a, &b).map_err(err)?
        }
        other => return Err(err(format!("unknown function `{other}`"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
                Arc::new(StringArray::from(vec!["God", "dog", "x"])),
            ],
        )
        .unwrap()
    }

    fn run(src: &str) -> ArrayRef {
        let e = crate::frontend::expr::parse(src, 0).expect("parses");
        eval(&e, &batch()).unwrap()
    }

    #[test]
    fn arithmetic_keeps_integers_and_nulls() {
        let r = run("4 * a + 3");
        let r = r.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![Some(7), Some(11), None]);
        let d = run("a / 0");
        let d = d.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(d.value(0).is_infinite());
    }

    #[test]
    fn functions_and_conditions() {
        let r = run("contains(s, \"God\") or a > 1");
        let r = r.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(true), None],
            "false or null is null (SQL)"
        );
        let l = run("log(a)");
        let l = l.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(l.value(0), 0.0);
    }
}

//! The Open Inference Protocol's REST messages (KServe v2 / Triton) and its
//! tensors: JSON bodies, the binary tensor data extension, and their Arrow form.
//!
//! In: a request body (JSON, or JSON followed by binary tensors whose header
//! length `Inference-Header-Content-Length` gives). Out: the request's inputs
//! as named Arrow columns; a response's outputs as JSON or JSON + binary.
//! Must not: know models, or panic on any body (every length, shape and
//! element is checked before it is used).

use super::ServeError;
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, StringArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The header naming the length of the JSON part of a body with binary tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A tensor's element type, as the protocol names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
    Bytes,
}

impl Datatype {
    pub const ALL: [Datatype; 12] = [
        Datatype::Bool,
        Datatype::U8,
        Datatype::U16,
        Datatype::U32,
        Datatype::U64,
        Datatype::I8,
        Datatype::I16,
        Datatype::I32,
        Datatype::I64,
        Datatype::F32,
        Datatype::F64,
        Datatype::Bytes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::U8 => "UINT8",
            Datatype::U16 => "UINT16",
            Datatype::U32 => "UINT32",
            Datatype::U64 => "UINT64",
            Datatype::I8 => "INT8",
            Datatype::I16 => "INT16",
            Datatype::I32 => "INT32",
            Datatype::I64 => "INT64",
            Datatype::F32 => "FP32",
            Datatype::F64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    pub fn parse(s: &str) -> Option<Datatype> {
        Datatype::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The protocol's name for an Arrow type; `None` for one it has no name for.
    pub fn of_arrow(t: &DataType) -> Option<Datatype> {
        Some(match t {
            DataType::Boolean => Datatype::Bool,
            DataType::UInt8 => Datatype::U8,
            DataType::UInt16 => Datatype::U16,
            DataType::UInt32 => Datatype::U32,
            DataType::UInt64 => Datatype::U64,
            DataType::Int8 => Datatype::I8,
            DataType::Int16 => Datatype::I16,
            DataType::Int32 => Datatype::I32,
            DataType::Int64 => Datatype::I64,
            DataType::Float32 => Datatype::F32,
            DataType::Float64 => Datatype::F64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Datatype::Bytes,
            _ => return None,
        })
    }

    /// Bytes per element in the binary form (`None`: BYTES, length-prefixed).
    fn width(self) -> Option<usize> {
        Some(match self {
            Datatype::Bool | Datatype::U8 | Datatype::I8 => 1,
            Datatype::U16 | Datatype::I16 => 2,
            Datatype::U32 | Datatype::I32 | Datatype::F32 => 4,
            Datatype::U64 | Datatype::I64 | Datatype::F64 => 8,
            Datatype::Bytes => return None,
        })
    }
}

/// Server metadata (`GET /v2`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

/// A tensor's name, type and shape in model metadata (`-1`: any length).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// Model metadata (`GET /v2/models/NAME`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    /// Kept as text until its datatype is known: it then parses straight
    /// into a typed vector (no tree of JSON values for a 1,000-row column).
    pub data: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    pub outputs: Vec<ResponseOutput>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseOutput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

fn bad(msg: impl Into<String>) -> ServeError {
    ServeError::BadRequest(msg.into())
}

/// A parsed request: its JSON part, and the binary tail its inputs point into.
pub struct Parsed<'a> {
    pub request: InferRequest,
    binary: &'a [u8],
}

/// Split and parse a body. `header_length` is the value of
/// `Inference-Header-Content-Length`, when the request has one.
pub fn parse<'a>(body: &'a [u8], header_length: Option<&str>) -> Result<Parsed<'a>, ServeError> {
    let (json, binary) = match header_length {
        None => (body, &body[body.len()..]),
        Some(h) => {
            let n: usize = h.trim().parse().map_err(|_| {
                bad(format!(
                    "the Inference-Header-Content-Length header `{h}` is not a byte count"
                ))
            })?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            body.split_at(n)
        }
    };
    let request: InferRequest = serde_json::from_slice(json)
        .map_err(|e| bad(format!("the request is not a valid inference request: {e}")))?;
    Ok(Parsed { request, binary })
}

impl Parsed<'_> {
    /// Every input as a named Arrow column of `rows` elements, in request
    /// order. Missing values: NaN in FP32/FP64, an empty BYTES element (as an
    /// empty CSV cell), and JSON `null` in any datatype.
    pub fn columns(&self) -> Result<Vec<(String, ArrayRef)>, ServeError> {
        let mut offset = 0usize;
        let mut rows: Option<(usize, &str)> = None;
        let mut out = Vec::with_capacity(self.request.inputs.len());
        for input in &self.request.inputs {
            let dt = Datatype::parse(&input.datatype).ok_or_else(|| {
                bad(format!(
                    "input `{}` has datatype `{}`; the datatypes are {}",
                    input.name,
                    input.datatype,
                    Datatype::ALL.map(|d| d.name()).join(", ")
                ))
            })?;
            let n = elements(&input.name, &input.shape)?;
            match rows {
                None => rows = Some((n, &input.name)),
                Some((r, first)) if r != n => {
                    return Err(bad(format!(
                        "input `{}` has {n} elements but `{first}` has {r}: every input is one column of the same rows",
                        input.name
                    )));
                }
                _ => {}
            }
            let size = input
                .parameters
                .as_ref()
                .and_then(|p| p.get("binary_data_size"));
            let array = match (size, &input.data) {
                (Some(size), None) => {
                    let size = size.as_u64().ok_or_else(|| {
                        bad(format!(
                            "input `{}`: binary_data_size is not a byte count",
                            input.name
                        ))
                    })? as usize;
                    let end = offset.checked_add(size).filter(|&e| e <= self.binary.len());
                    let Some(end) = end else {
                        return Err(bad(format!(
                            "input `{}` says it has {size} bytes of binary data but the body has {} after the JSON",
                            input.name,
                            self.binary.len().saturating_sub(offset)
                        )));
                    };
                    let bytes = &self.binary[offset..end];
                    offset = end;
                    from_binary(&input.name, dt, n, bytes)?
                }
                (None, Some(data)) => from_raw_json(&input.name, dt, n, data)?,
                (Some(_), Some(_)) => {
                    return Err(bad(format!(
                        "input `{}` has both `data` and binary_data_size: give one",
                        input.name
                    )));
                }
                (None, None) => {
                    return Err(bad(format!(
                        "input `{}` has no `data` and no binary_data_size",
                        input.name
                    )));
                }
            };
            out.push((input.name.clone(), array));
        }
        if offset != self.binary.len() {
            return Err(bad(format!(
                "the body has {} bytes of binary data that no input claims",
                self.binary.len() - offset
            )));
        }
        Ok(out)
    }

    /// Whether output `name` goes back as binary data (the request's
    /// `binary_data_output`, overridden by the output's own `binary_data`).
    pub fn binary_output(&self, name: &str) -> bool {
        let flag = |p: &Option<Map<String, Value>>, k: &str| {
            p.as_ref().and_then(|m| m.get(k)).and_then(Value::as_bool)
        };
        let own = self
            .request
            .outputs
            .as_ref()
            .and_then(|o| o.iter().find(|o| o.name == name))
            .and_then(|o| flag(&o.parameters, "binary_data"));
        own.or_else(|| flag(&self.request.parameters, "binary_data_output"))
            .unwrap_or(false)
    }
}

/// The element count of a column-shaped tensor: `[n]` or `[n, 1]`.
fn elements(name: &str, shape: &[i64]) -> Result<usize, ServeError> {
    let n = match shape {
        [n] | [n, 1] => *n,
        _ => {
            return Err(bad(format!(
                "input `{name}` has shape {shape:?}; each input is one feature column, of shape [n] (or [n, 1])"
            )));
        }
    };
    usize::try_from(n).map_err(|_| bad(format!("input `{name}` has a negative shape {shape:?}")))
}

fn from_binary(name: &str, dt: Datatype, n: usize, b: &[u8]) -> Result<ArrayRef, ServeError> {
    if let Some(w) = dt.width()
        && n.checked_mul(w) != Some(b.len())
    {
        return Err(bad(format!(
            "input `{name}`: {n} elements of {} take {} bytes, the request has {}",
            dt.name(),
            n.saturating_mul(w),
            b.len()
        )));
    }
    macro_rules! fixed {
        ($arr:ty, $t:ty, $w:expr) => {{
            let v: Vec<$t> = b
                .chunks_exact($w)
                .map(|c| {
                    let mut a = [0u8; $w];
                    a.copy_from_slice(c);
                    <$t>::from_le_bytes(a)
                })
                .collect();
            Arc::new(<$arr>::from(v)) as ArrayRef
        }};
    }
    Ok(match dt {
        Datatype::Bool => {
            let mut v = Vec::with_capacity(n);
            for &x in b {
                v.push(match x {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(bad(format!(
                            "input `{name}`: a BOOL element is byte {x}; it must be 0 or 1"
                        )));
                    }
                });
            }
            Arc::new(BooleanArray::from(v))
        }
        Datatype::U8 => Arc::new(UInt8Array::from(b.to_vec())),
        Datatype::I8 => Arc::new(Int8Array::from(
            b.iter().map(|&x| x as i8).collect::<Vec<_>>(),
        )),
        Datatype::U16 => fixed!(UInt16Array, u16, 2),
        Datatype::I16 => fixed!(Int16Array, i16, 2),
        Datatype::U32 => fixed!(UInt32Array, u32, 4),
        Datatype::I32 => fixed!(Int32Array, i32, 4),
        Datatype::U64 => fixed!(UInt64Array, u64, 8),
        Datatype::I64 => fixed!(Int64Array, i64, 8),
        Datatype::F32 => {
            let a = fixed!(Float32Array, f32, 4);
            nan_to_null(a)
        }
        Datatype::F64 => {
            let a = fixed!(Float64Array, f64, 8);
            nan_to_null(a)
        }
        Datatype::Bytes => {
            let mut v: Vec<Option<String>> = Vec::with_capacity(n.min(b.len() / 4));
            let mut rest = b;
            while rest.len() >= 4 {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                rest = &rest[4..];
                if len > rest.len() {
                    return Err(bad(format!(
                        "input `{name}`: element {} says it has {len} bytes, {} are left",
                        v.len(),
                        rest.len()
                    )));
                }
                let s = std::str::from_utf8(&rest[..len]).map_err(|_| {
                    bad(format!("input `{name}`: element {} is not UTF-8", v.len()))
                })?;
                // An empty element is a missing value, as an empty CSV cell is.
                v.push((!s.is_empty()).then(|| s.to_string()));
                rest = &rest[len..];
            }
            if !rest.is_empty() || v.len() != n {
                return Err(bad(format!(
                    "input `{name}`: its binary data holds {} BYTES elements (and {} stray bytes), the shape says {n}",
                    v.len(),
                    rest.len()
                )));
            }
            Arc::new(StringArray::from(v))
        }
    })
}

/// NaN is how the binary form (and numpy) marks a missing value.
fn nan_to_null(a: ArrayRef) -> ArrayRef {
    let nulls: Option<Vec<bool>> = if let Some(f) = a.as_any().downcast_ref::<Float64Array>() {
        f.values()
            .iter()
            .any(|v| v.is_nan())
            .then(|| f.values().iter().map(|v| !v.is_nan()).collect())
    } else if let Some(f) = a.as_any().downcast_ref::<Float32Array>() {
        f.values()
            .iter()
            .any(|v| v.is_nan())
            .then(|| f.values().iter().map(|v| !v.is_nan()).collect())
    } else {
        None
    };
    match nulls {
        None => a,
        Some(valid) => {
            let data = a.to_data();
            let buffer = arrow::buffer::NullBuffer::from(valid);
            match data.into_builder().nulls(Some(buffer)).build() {
                Ok(d) => arrow::array::make_array(d),
                Err(_) => a,
            }
        }
    }
}

/// A JSON `data` field: a flat array, or nested arrays in row-major order.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> Result<(), String> {
    match v {
        Value::Array(items) if depth < 4 => {
            for i in items {
                flatten(i, out, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(_) => Err("data is nested deeper than the shape allows".into()),
        x => {
            out.push(x);
            Ok(())
        }
    }
}

/// A flat `data` array parses straight into its type; anything else (nested
/// arrays, a wrong element) goes the general way, which also words the error.
fn from_raw_json(
    name: &str,
    dt: Datatype,
    n: usize,
    raw: &serde_json::value::RawValue,
) -> Result<ArrayRef, ServeError> {
    let text = raw.get();
    let fast: Option<ArrayRef> = match dt {
        Datatype::F64 => serde_json::from_str::<Vec<Option<f64>>>(text)
            .ok()
            .filter(|v| v.len() == n)
            .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef),
        Datatype::F32 => serde_json::from_str::<Vec<Option<f64>>>(text)
            .ok()
            .filter(|v| v.len() == n)
            .map(|v| {
                Arc::new(Float32Array::from(
                    v.into_iter()
                        .map(|x| x.map(|y| y as f32))
                        .collect::<Vec<_>>(),
                )) as ArrayRef
            }),
        Datatype::I64 => serde_json::from_str::<Vec<Option<i64>>>(text)
            .ok()
            .filter(|v| v.len() == n)
            .map(|v| Arc::new(Int64Array::from(v)) as ArrayRef),
        _ => None,
    };
    if let Some(a) = fast {
        return Ok(a);
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("input `{name}`: `data` is not JSON: {e}")))?;
    from_json(name, dt, n, &value)
}

fn from_json(name: &str, dt: Datatype, n: usize, data: &Value) -> Result<ArrayRef, ServeError> {
    let mut items = Vec::with_capacity(n);
    flatten(data, &mut items, 0).map_err(|e| bad(format!("input `{name}`: {e}")))?;
    if items.len() != n {
        return Err(bad(format!(
            "input `{name}` has {} elements in `data`, its shape says {n}",
            items.len()
        )));
    }
    let wrong = |i: usize, v: &Value| {
        bad(format!(
            "input `{name}`: element {i} is `{v}`, which is not {}",
            dt.name()
        ))
    };
    macro_rules! ints {
        ($arr:ty, $t:ty) => {{
            let mut v: Vec<Option<$t>> = Vec::with_capacity(n);
            for (i, x) in items.iter().enumerate() {
                v.push(match x {
                    Value::Null => None,
                    _ => Some(
                        x.as_i64()
                            .and_then(|y| <$t>::try_from(y).ok())
                            .or_else(|| x.as_u64().and_then(|y| <$t>::try_from(y).ok()))
                            .ok_or_else(|| wrong(i, x))?,
                    ),
                });
            }
            Arc::new(<$arr>::from(v)) as ArrayRef
        }};
    }
    Ok(match dt {
        Datatype::Bool => {
            let mut v = Vec::with_capacity(n);
            for (i, x) in items.iter().enumerate() {
                v.push(match x {
                    Value::Null => None,
                    Value::Bool(b) => Some(*b),
                    _ => return Err(wrong(i, x)),
                });
            }
            Arc::new(BooleanArray::from(v))
        }
        Datatype::U8 => ints!(UInt8Array, u8),
        Datatype::U16 => ints!(UInt16Array, u16),
        Datatype::U32 => ints!(UInt32Array, u32),
        Datatype::U64 => ints!(UInt64Array, u64),
        Datatype::I8 => ints!(Int8Array, i8),
        Datatype::I16 => ints!(Int16Array, i16),
        Datatype::I32 => ints!(Int32Array, i32),
        Datatype::I64 => ints!(Int64Array, i64),
        Datatype::F32 | Datatype::F64 => {
            let mut v: Vec<Option<f64>> = Vec::with_capacity(n);
            for (i, x) in items.iter().enumerate() {
                v.push(match x {
                    Value::Null => None,
                    _ => Some(x.as_f64().ok_or_else(|| wrong(i, x))?),
                });
            }
            if dt == Datatype::F32 {
                Arc::new(Float32Array::from(
                    v.into_iter()
                        .map(|x| x.map(|y| y as f32))
                        .collect::<Vec<_>>(),
                )) as ArrayRef
            } else {
                Arc::new(Float64Array::from(v))
            }
        }
        Datatype::Bytes => {
            let mut v: Vec<Option<&str>> = Vec::with_capacity(n);
            for (i, x) in items.iter().enumerate() {
                v.push(match x {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    Value::String(s) => Some(s.as_str()),
                    _ => return Err(wrong(i, x)),
                });
            }
            Arc::new(StringArray::from(v))
        }
    })
}

/// One output tensor: its JSON description, and its bytes when it goes as binary.
pub fn output(
    name: &str,
    column: &dyn Array,
    binary: bool,
) -> Result<(ResponseOutput, Option<Vec<u8>>), ServeError> {
    let dt = Datatype::of_arrow(column.data_type()).ok_or_else(|| {
        ServeError::Internal(format!(
            "output `{name}` has type {} which the protocol cannot carry",
            column.data_type()
        ))
    })?;
    let n = column.len();
    let mut meta = ResponseOutput {
        name: name.to_string(),
        datatype: dt.name().to_string(),
        shape: vec![n as i64],
        parameters: None,
        data: None,
    };
    let any = column.as_any();
    if binary {
        let mut bytes = Vec::new();
        if let Some(a) = any.downcast_ref::<StringArray>() {
            for i in 0..n {
                let s = if a.is_null(i) { "" } else { a.value(i) };
                bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
        } else if let Some(a) = any.downcast_ref::<Float32Array>() {
            for i in 0..n {
                let v = if a.is_null(i) { f32::NAN } else { a.value(i) };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        } else if let Some(a) = any.downcast_ref::<Float64Array>() {
            for i in 0..n {
                let v = if a.is_null(i) { f64::NAN } else { a.value(i) };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        } else {
            return Err(ServeError::Internal(format!(
                "output `{name}` of type {} has no binary form here",
                column.data_type()
            )));
        }
        let mut p = Map::new();
        p.insert("binary_data_size".into(), Value::from(bytes.len()));
        meta.parameters = Some(p);
        Ok((meta, Some(bytes)))
    } else {
        let data: Vec<Value> = if let Some(a) = any.downcast_ref::<StringArray>() {
            (0..n)
                .map(|i| Value::from((!a.is_null(i)).then(|| a.value(i))))
                .collect()
        } else if let Some(a) = any.downcast_ref::<Float32Array>() {
            (0..n)
                .map(|i| json_number(f64::from(a.value(i)), a.is_null(i)))
                .collect()
        } else if let Some(a) = any.downcast_ref::<Float64Array>() {
            (0..n)
                .map(|i| json_number(a.value(i), a.is_null(i)))
                .collect()
        } else {
            return Err(ServeError::Internal(format!(
                "output `{name}` of type {} has no JSON form here",
                column.data_type()
            )));
        };
        meta.data = Some(Value::Array(data));
        Ok((meta, None))
    }
}

/// A float as JSON: a non-finite value (which JSON cannot hold) is `null`.
fn json_number(v: f64, null: bool) -> Value {
    if null {
        return Value::Null;
    }
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str, bin: &[u8]) -> (Vec<u8>, String) {
        let mut b = json.as_bytes().to_vec();
        b.extend_from_slice(bin);
        (b, json.len().to_string())
    }

    #[test]
    fn json_inputs_become_columns() {
        let j = r#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP64","data":[1.5,null]},
                   {"name":"b","shape":[2,1],"datatype":"BYTES","data":[["x"],["y"]]}]}"#;
        let p = parse(j.as_bytes(), None).unwrap();
        let cols = p.columns().unwrap();
        assert_eq!(cols[0].1.len(), 2);
        assert_eq!(cols[0].1.null_count(), 1);
        let b = cols[1].1.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(b.value(1), "y");
    }

    #[test]
    fn binary_inputs_become_columns_and_nan_is_missing() {
        let mut bin = Vec::new();
        for v in [1.0f32, f32::NAN, 3.0] {
            bin.extend_from_slice(&v.to_le_bytes());
        }
        for s in ["ab", "", "c"] {
            bin.extend_from_slice(&(s.len() as u32).to_le_bytes());
            bin.extend_from_slice(s.as_bytes());
        }
        let j = r#"{"inputs":[{"name":"a","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":12}},
                   {"name":"s","shape":[3],"datatype":"BYTES","parameters":{"binary_data_size":15}}],
                   "parameters":{"binary_data_output":true}}"#;
        let (b, h) = body(j, &bin);
        let p = parse(&b, Some(&h)).unwrap();
        let cols = p.columns().unwrap();
        assert_eq!(cols[0].1.null_count(), 1);
        let s = cols[1].1.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((s.value(0), s.value(2)), ("ab", "c"));
        assert!(s.is_null(1), "an empty BYTES element is missing");
        assert!(p.binary_output("prediction"));
    }

    #[test]
    fn broken_bodies_are_bad_requests_not_panics() {
        let cases: Vec<(Vec<u8>, Option<String>)> = vec![
            (b"{".to_vec(), None),
            (b"{}".to_vec(), None),
            (
                br#"{"inputs":[{"name":"a","shape":[-1],"datatype":"FP64","data":[]}]}"#.to_vec(),
                None,
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP64","data":[1]}]}"#.to_vec(),
                None,
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP99","data":[1]}]}"#.to_vec(),
                None,
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":[300]}]}"#.to_vec(),
                None,
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#.to_vec(),
                Some("999".into()),
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}ZZZZZZ"#.to_vec(),
                Some("92".into()),
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP64","data":[1]},{"name":"b","shape":[2],"datatype":"FP64","data":[1,2]}]}"#.to_vec(),
                None,
            ),
        ];
        for (b, h) in cases {
            let r = parse(&b, h.as_deref()).and_then(|p| p.columns());
            assert!(
                matches!(r, Err(ServeError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn outputs_round_trip_in_both_forms() {
        let a = Float64Array::from(vec![1.25, 2.0]);
        let (m, bytes) = output("prediction", &a, false).unwrap();
        assert_eq!(m.data, Some(serde_json::json!([1.25, 2.0])));
        assert!(bytes.is_none());
        let (m, bytes) = output("prediction", &a, true).unwrap();
        assert_eq!(bytes.as_ref().map(Vec::len), Some(16));
        assert_eq!(
            m.parameters.unwrap()["binary_data_size"],
            serde_json::json!(16)
        );
    }
}

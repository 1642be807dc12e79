//! The values tasks exchange: Arrow record batches (data partitions) and opaque
//! bytes (serialized models, metrics JSON, write receipts).
//!
//! In/out: [`Value`], convertible to and from a single `RecordBatch` so that
//! everything moves over Arrow Flight the same way.
//! Must not: interpret the bytes (kernels do).

use arrow::array::{Array, BinaryArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use std::collections::HashMap;
use std::sync::Arc;

/// Schema metadata key that marks a batch carrying a [`Value::Bytes`].
pub const BYTES_MARKER: &str = "dagml.value";

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Batch(RecordBatch),
    Bytes(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("a bytes value must be one row of one binary column")]
    BadBytesBatch,
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl Value {
    /// Approximate memory held, for memory limits and summaries.
    pub fn size_bytes(&self) -> usize {
        match self {
            Value::Batch(b) => b.get_array_memory_size(),
            Value::Bytes(b) => b.len(),
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Value::Batch(b) => b.num_rows(),
            Value::Bytes(_) => 0,
        }
    }

    /// As one record batch (bytes become one row of one binary column, marked in
    /// the schema metadata).
    pub fn to_batch(&self) -> Result<RecordBatch, ValueError> {
        match self {
            Value::Batch(b) => Ok(b.clone()),
            Value::Bytes(bytes) => {
                let meta = HashMap::from([(BYTES_MARKER.to_string(), "bytes".to_string())]);
                let schema = Schema::new(vec![Field::new("bytes", DataType::Binary, false)])
                    .with_metadata(meta);
                let arr = BinaryArray::from_vec(vec![bytes.as_slice()]);
                Ok(RecordBatch::try_new(Arc::new(schema), vec![Arc::new(arr)])?)
            }
        }
    }

    pub fn from_batch(b: RecordBatch) -> Result<Value, ValueError> {
        if b.schema().metadata().get(BYTES_MARKER).is_none() {
            return Ok(Value::Batch(b));
        }
        let col = b.columns().first().ok_or(ValueError::BadBytesBatch)?;
        let arr = col
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or(ValueError::BadBytesBatch)?;
        if arr.len() != 1 {
            return Err(ValueError::BadBytesBatch);
        }
        Ok(Value::Bytes(arr.value(0).to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn bytes_and_batches_round_trip_through_record_batches() {
        let bytes = Value::Bytes(b"model".to_vec());
        assert_eq!(Value::from_batch(bytes.to_batch().unwrap()).unwrap(), bytes);
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        assert_eq!(Value::from_batch(b.clone()).unwrap(), Value::Batch(b));
    }
}

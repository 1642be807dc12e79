//! Feature binning for the histogram trees: each feature's values mapped once to at
//! most 256 ordered levels (`u8` codes), so that finding a split is a pass over a
//! small histogram instead of a sort.
//!
//! In: record batch columns (numbers; `UInt8` takes a fast path). Out: [`Binned`]
//! codes, column-major, and per-feature [`Edges`]. Must not: lose a split that
//! matters: with at most 256 distinct values every value gets its own level, so a
//! split on codes equals a split on values.
//!
//! Invariant: `code(x) = #{e in edges : e < x}`, so `code(x) <= b` exactly when
//! `x <= edges[b]`; NaN gets the highest code and goes right at every split.

use crate::data::DataError;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, UInt8Type};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// Thresholds of one feature, increasing.
pub type Edges = Vec<f32>;

/// Binned features, column-major: `codes[j * rows + i]`.
#[derive(Clone, Debug)]
pub struct Binned {
    pub rows: usize,
    pub cols: usize,
    /// Column-major codes: feature `j` is `codes[j * rows..(j + 1) * rows]`.
    pub codes: Vec<u8>,
    /// The same codes row-major (`row_major[r * cols + j]`), or empty. Trees read
    /// small nodes from it: a small subtree's rows then fit in L2 whole and stay
    /// there while its nodes try feature after feature, where column-major reads
    /// miss once per (row, feature).
    pub row_major: Vec<u8>,
}

impl Binned {
    pub fn column(&self, j: usize) -> &[u8] {
        &self.codes[j * self.rows..(j + 1) * self.rows]
    }

    /// Add the row-major copy (`rows * cols` more bytes).
    pub fn with_row_major(mut self) -> Self {
        let (n, d) = (self.rows, self.cols);
        let mut rm = vec![0u8; n * d];
        // Blocks of rows keep both sides of the transpose in cache.
        const BLOCK: usize = 64;
        for r0 in (0..n).step_by(BLOCK) {
            let r1 = (r0 + BLOCK).min(n);
            for j in 0..d {
                let col = &self.codes[j * n..(j + 1) * n];
                for r in r0..r1 {
                    rm[r * d + j] = col[r];
                }
            }
        }
        self.row_major = rm;
        self
    }
}

/// Per-feature thresholds, kept in the model to bin new rows the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinMap {
    pub edges: Vec<Edges>,
}

fn column_values(a: &ArrayRef, name: &str) -> Result<Vec<f32>, DataError> {
    let m = crate::data::matrix::matrix(
        &RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new(name, a.data_type().clone(), true),
            ])),
            vec![a.clone()],
        )?,
        &[name.to_string()],
    )?;
    Ok(m.values)
}

/// Edges from a column's values.
fn edges_of(values: &[f32], max_bins: usize) -> Edges {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_unstable_by(f32::total_cmp);
    v.dedup();
    // One level is kept for NaN.
    let levels = max_bins.clamp(2, 256) - 1;
    if v.len() <= levels {
        return v.windows(2).map(|w| midpoint(w[0], w[1])).collect();
    }
    // Quantiles of the distinct values' positions among all values.
    let mut all: Vec<f32> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    all.sort_unstable_by(f32::total_cmp);
    let n = all.len();
    let mut e: Edges = (1..levels)
        .map(|i| {
            let k = (i * n / levels).min(n - 1);
            let (a, b) = (all[k.saturating_sub(1)], all[k]);
            if a < b { midpoint(a, b) } else { a }
        })
        .collect();
    e.dedup();
    e
}

fn midpoint(a: f32, b: f32) -> f32 {
    let m = a + (b - a) / 2.0;
    // Rounding can land on `b`; the threshold must stay below it.
    if m >= b { a } else { m }
}

fn code_of(edges: &[f32], x: f32) -> u8 {
    if x.is_nan() {
        return edges.len() as u8;
    }
    edges.partition_point(|&e| e < x) as u8
}

/// A 256-entry lookup from byte values to codes.
fn byte_table(edges: &[f32]) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (v, c) in t.iter_mut().enumerate() {
        *c = code_of(edges, v as f32);
    }
    t
}

/// Bin `features` of `batch`, learning the edges.
pub fn fit(
    batch: &RecordBatch,
    features: &[String],
    max_bins: usize,
) -> Result<(BinMap, Binned), DataError> {
    let mut edges = Vec::with_capacity(features.len());
    for f in features {
        let a = batch
            .column_by_name(f)
            .ok_or_else(|| DataError::MissingColumn(f.clone()))?;
        let e = if a.data_type() == &DataType::UInt8 && a.null_count() == 0 {
            let mut seen = [false; 256];
            for &v in a.as_primitive::<UInt8Type>().values().iter() {
                seen[v as usize] = true;
            }
            let present: Vec<f32> = (0..256).filter(|&v| seen[v]).map(|v| v as f32).collect();
            edges_of(&present, max_bins)
        } else {
            edges_of(&column_values(a, f)?, max_bins)
        };
        edges.push(e);
    }
    let map = BinMap { edges };
    let binned = apply(&map, batch, features)?;
    Ok((map, binned))
}

/// Bin `features` of `batch` with known edges.
pub fn apply(map: &BinMap, batch: &RecordBatch, features: &[String]) -> Result<Binned, DataError> {
    let rows = batch.num_rows();
    let mut codes = vec![0u8; rows * features.len()];
    for (j, f) in features.iter().enumerate() {
        let a = batch
            .column_by_name(f)
            .ok_or_else(|| DataError::MissingColumn(f.clone()))?;
        let out = &mut codes[j * rows..(j + 1) * rows];
        let e = &map.edges[j];
        if a.data_type() == &DataType::UInt8 && a.null_count() == 0 {
            let t = byte_table(e);
            for (o, &v) in out
                .iter_mut()
                .zip(a.as_primitive::<UInt8Type>().values().iter())
            {
                *o = t[v as usize];
            }
        } else {
            for (o, v) in out.iter_mut().zip(column_values(a, f)?) {
                *o = code_of(e, v);
            }
        }
    }
    Ok(Binned {
        row_major: Vec::new(),
        rows,
        cols: features.len(),
        codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_values_get_one_level_each_and_codes_follow_thresholds() {
        let v = [3.0, 1.0, 2.0, 2.0, f32::NAN];
        let e = edges_of(&v, 256);
        assert_eq!(e, vec![1.5, 2.5]);
        assert_eq!(code_of(&e, 1.0), 0);
        assert_eq!(code_of(&e, 2.0), 1);
        assert_eq!(code_of(&e, 3.0), 2);
        assert_eq!(code_of(&e, f32::NAN), 2);
        for x in [0.0f32, 1.5, 1.6, 2.5, 9.0] {
            for b in 0..e.len() {
                assert_eq!(code_of(&e, x) as usize <= b, x <= e[b]);
            }
        }
    }

    #[test]
    fn many_values_are_cut_at_quantiles() {
        let v: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let e = edges_of(&v, 256);
        assert!(e.len() <= 255 && e.len() > 200);
        assert!(e.windows(2).all(|w| w[0] < w[1]));
    }
}

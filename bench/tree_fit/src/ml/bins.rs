//! The part of dagml's `ml::bins` that `ml::tree` reads: binned codes,
//! column-major, and their row-major copy. In: codes. Out: [`Binned`]. Must
//! not: differ from `src/ml/bins.rs`'s layout.

#[derive(Clone, Debug)]
pub struct Binned {
    pub rows: usize,
    pub cols: usize,
    pub codes: Vec<u8>,
    pub row_major: Vec<u8>,
}

impl Binned {
    pub fn column(&self, j: usize) -> &[u8] {
        &self.codes[j * self.rows..(j + 1) * self.rows]
    }

    pub fn with_row_major(mut self) -> Self {
        let (n, d) = (self.rows, self.cols);
        let mut rm = vec![0u8; n * d];
        for j in 0..d {
            for r in 0..n {
                rm[r * d + j] = self.codes[j * n + r];
            }
        }
        self.row_major = rm;
        self
    }
}

//! MNIST's IDX format (gzipped or raw): magic number, dimensions, then bytes.
//!
//! In: a folder with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally `.gz`.
//! Out: a record batch of 784 `UInt8` pixel columns `pixel0..pixel783` and a `UInt8`
//! `label`. Must not: panic or allocate from unchecked header sizes: a truncated or
//! corrupt file is an error naming the file.

use super::DataError;
use arrow::array::{ArrayRef, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which of the two file pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

impl Part {
    fn stem(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Test => "t10k",
        }
    }
}

/// The largest IDX payload accepted (MNIST's training images are 47 MB).
const MAX_BYTES: u64 = 1 << 30;

fn open(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    let (path, gzipped) = if raw.is_file() {
        (raw, false)
    } else if gz.is_file() {
        (gz, true)
    } else {
        return Err(DataError::io(
            dir.join(name),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file (raw or .gz) in the MNIST folder",
            ),
        ));
    };
    let file = std::fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
    let mut bytes = Vec::new();
    let res = if gzipped {
        flate2::read::GzDecoder::new(file)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        file.take(MAX_BYTES + 1).read_to_end(&mut bytes)
    };
    res.map_err(|e| DataError::io(&path, e))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(DataError::Idx {
            path,
            reason: "larger than 1 GiB".into(),
        });
    }
    Ok((path, bytes))
}

/// Parse an IDX file of unsigned bytes with `dims` dimensions; returns the sizes
/// and the payload.
pub fn parse(path: &Path, bytes: &[u8], dims: u8) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bad = |reason: String| DataError::Idx {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(bad("shorter than its 4-byte magic number".into()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x}",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    if bytes[3] != dims {
        return Err(bad(format!(
            "{} dimensions where {dims} were expected",
            bytes[3]
        )));
    }
    let header = 4 + 4 * dims as usize;
    if bytes.len() < header {
        return Err(bad("truncated header".into()));
    }
    let sizes: Vec<usize> = (0..dims as usize)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let want = sizes
        .iter()
        .try_fold(1u64, |acc, &s| acc.checked_mul(s as u64))
        .ok_or_else(|| bad("sizes overflow".into()))?;
    let have = (bytes.len() - header) as u64;
    if have < want {
        return Err(bad(format!(
            "truncated: the header promises {want} bytes of data, the file has {have}"
        )));
    }
    if have > want {
        return Err(bad(format!(
            "{} bytes of trailing data after the {want} the header promises",
            have - want
        )));
    }
    Ok((sizes, bytes[header..].to_vec()))
}

/// The schema of an MNIST batch.
pub fn schema() -> Arc<Schema> {
    let mut fields: Vec<Field> = (0..784)
        .map(|i| Field::new(format!("pixel{i}"), DataType::UInt8, false))
        .collect();
    fields.push(Field::new("label", DataType::UInt8, false));
    Arc::new(Schema::new(fields))
}

/// Read one MNIST part from `dir` as a record batch.
pub fn read(dir: &Path, part: Part) -> Result<RecordBatch, DataError> {
    let (ipath, ibytes) = open(dir, &format!("{}-images-idx3-ubyte", part.stem()))?;
    let (sizes, pixels) = parse(&ipath, &ibytes, 3)?;
    drop(ibytes);
    if sizes[1] != 28 || sizes[2] != 28 {
        return Err(DataError::Idx {
            path: ipath,
            reason: format!("images are {}x{}, not 28x28", sizes[1], sizes[2]),
        });
    }
    let (lpath, lbytes) = open(dir, &format!("{}-labels-idx1-ubyte", part.stem()))?;
    let (lsizes, labels) = parse(&lpath, &lbytes, 1)?;
    let n = sizes[0];
    if lsizes[0] != n {
        return Err(DataError::Idx {
            path: lpath,
            reason: format!("{} labels for {n} images", lsizes[0]),
        });
    }
    if let Some(bad) = labels.iter().find(|&&l| l > 9) {
        return Err(DataError::Idx {
            path: lpath,
            reason: format!("label {bad} is not a digit"),
        });
    }
    // Row-major images to 784 columns, a block of rows at a time: the
    // block's images stay in cache while every column takes its bytes (a
    // pass over all rows per column read each image 784 times from memory).
    const BLOCK: usize = 256;
    let mut cols: Vec<Vec<u8>> = vec![vec![0u8; n]; 784];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let block = &pixels[start * 784..end * 784];
        for (p, col) in cols.iter_mut().enumerate() {
            for (v, image) in col[start..end].iter_mut().zip(block.chunks_exact(784)) {
                *v = image[p];
            }
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(785);
    columns.extend(
        cols.into_iter()
            .map(|c| Arc::new(UInt8Array::from(c)) as ArrayRef),
    );
    columns.push(Arc::new(UInt8Array::from(labels)));
    Ok(RecordBatch::try_new(schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx1(labels: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, 1];
        b.extend((labels.len() as u32).to_be_bytes());
        b.extend(labels);
        b
    }

    #[test]
    fn parses_a_label_file() {
        let (s, d) = parse(Path::new("x"), &idx1(&[1, 2, 3]), 1).unwrap();
        assert_eq!(s, vec![3]);
        assert_eq!(d, vec![1, 2, 3]);
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let mut b = idx1(&[1, 2, 3]);
        b.pop();
        let e = parse(Path::new("x"), &b, 1).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = parse(Path::new("x"), &[0, 0, 9, 1, 0], 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element type"), "{e}");
        let e = parse(Path::new("x"), &[1, 2], 1).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
        let mut huge = vec![0, 0, 8, 3];
        for _ in 0..3 {
            huge.extend(u32::MAX.to_be_bytes());
        }
        assert!(parse(Path::new("x"), &huge, 3).is_err());
    }

    #[test]
    fn reads_the_shipped_test_set() {
        let b = read(Path::new("data/mnist"), Part::Test).unwrap();
        assert_eq!(b.num_rows(), 10_000);
        assert_eq!(b.num_columns(), 785);
    }

    #[test]
    fn a_missing_folder_names_the_file() {
        let e = read(Path::new("no/such"), Part::Test)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    }
}

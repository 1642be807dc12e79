//! Writers: a batch to Parquet, CSV or Arrow IPC, or bytes, written to a
//! temporary file in the same folder and renamed into place, so a failed run
//! never leaves half a file where a good one was.
//!
//! Temporary files are created exclusively with unpredictable names
//! (`.NAME.dagml-XXXXXX.tmp`, the tempfile crate: `O_EXCL`, so a planted file or
//! symbolic link is never opened or followed; the rename replaces a link at the
//! destination, it does not write through it) and removed on every error. A
//! write is either put in place at once ([`write_bytes`], [`write_batch`]) or
//! *staged* ([`stage_bytes`], [`stage_batch`]): left under its temporary name
//! for the run to [`commit`] with all its other outputs, or [`discard`]. Every
//! temporary and staged file of this process is listed until it is renamed or
//! removed, so an interrupted process can remove them
//! ([`remove_temporaries_from_signal_handler`]);
//! those a killed process left are found by name ([`stale_temporaries`]).
//!
//! In: a path, a batch, a format. Out: the file (or its staged twin); errors
//! say "cannot write" and name the path given, never the temporary file.
//! Must not: write anywhere but the path given (and its temporary siblings);
//! follow a link when creating a file.

use super::DataError;
use crate::frontend::pipeline::FileFormat;
use arrow::record_batch::RecordBatch;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tempfile::NamedTempFile;

/// What every temporary name has between the file's name and its random part.
const MARK: &str = ".dagml-";
const TMP_SUFFIX: &str = ".tmp";

/// Temporary and staged files of this process not yet renamed or removed,
/// each with its path as NUL-terminated bytes (made when it is listed, so a
/// signal handler can unlink it without allocating). A file is listed under
/// this lock as it is created.
static PENDING: Mutex<BTreeMap<PathBuf, Vec<u8>>> = Mutex::new(BTreeMap::new());
/// Set on SIGINT / SIGTERM: no new temporary file after it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn pending() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Vec<u8>>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

fn c_path(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    let mut b = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let mut b = p.to_string_lossy().as_bytes().to_vec();
    b.push(0);
    b
}

fn cannot_write(path: &Path, source: std::io::Error) -> DataError {
    DataError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The format a path's extension names, else `default`.
/// The name of partition `i`'s file in a dataset written in `format` (CSV,
/// Arrow, else Parquet): `part-00007.parquet`.
pub fn part_file_name(i: usize, format: FileFormat) -> String {
    let ext = match format {
        FileFormat::Csv => "csv",
        FileFormat::Arrow => "arrow",
        _ => "parquet",
    };
    format!("part-{i:05}.{ext}")
}

pub fn format_of(path: &Path, default: FileFormat) -> FileFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => FileFormat::Parquet,
        Some("csv") => FileFormat::Csv,
        Some("arrow") | Some("ipc") | Some("feather") => FileFormat::Arrow,
        _ => default,
    }
}

/// Write bytes atomically (temporary file, then rename).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    persist(write_with(path, bytes_body(path, bytes))?, path)
}

/// Write one batch atomically.
pub fn write_batch(path: &Path, batch: &RecordBatch, format: FileFormat) -> Result<(), DataError> {
    persist(write_with(path, batch_body(batch, format))?, path)
}

/// Write bytes under a temporary name next to `path`, for [`commit`] later:
/// the staged file's path.
pub fn stage_bytes(path: &Path, bytes: &[u8]) -> Result<PathBuf, DataError> {
    keep(write_with(path, bytes_body(path, bytes))?, path)
}

/// Write one batch under a temporary name next to `path`, for [`commit`].
pub fn stage_batch(
    path: &Path,
    batch: &RecordBatch,
    format: FileFormat,
) -> Result<PathBuf, DataError> {
    keep(write_with(path, batch_body(batch, format))?, path)
}

/// Put a staged file in place.
pub fn commit(staged: &Path, path: &Path) -> Result<(), DataError> {
    let r = std::fs::rename(staged, path).map_err(|e| cannot_write(path, e));
    if r.is_ok() {
        pending().remove(staged);
    }
    r
}

/// Remove a staged file (a run that failed).
pub fn discard(staged: &Path) {
    let _ = std::fs::remove_file(staged);
    pending().remove(staged);
}

/// For a SIGINT / SIGTERM handler: unlink every temporary and staged file
/// this process has not yet put in place or removed, and refuse every write
/// after it (the process is about to exit). Only async-signal-safe calls: an
/// atomic store, a lock that is tried (never waited on), `unlink(2)`. `false`
/// when the list stayed locked (a write was creating its file on the thread
/// the signal interrupted): that file is left for the next run to remove.
#[cfg(unix)]
pub fn remove_temporaries_from_signal_handler() -> bool {
    INTERRUPTED.store(true, Ordering::SeqCst);
    for _ in 0..10_000 {
        let guard = match PENDING.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                std::hint::spin_loop();
                continue;
            }
        };
        for raw in guard.values() {
            // SAFETY: `raw` is a NUL-terminated path made when it was listed.
            unsafe {
                libc::unlink(raw.as_ptr().cast());
            }
        }
        return true;
    }
    false
}

/// Whether `name` is a temporary name dagml gives `file`: `.FILE.dagml-*.tmp`,
/// or `.FILE.tmpPID` as dagml before 0.1 (predictable) named them.
fn is_temporary_of(name: &str, file: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_prefix(file)) else {
        return false;
    };
    (rest.starts_with(MARK) && rest.ends_with(TMP_SUFFIX))
        || rest
            .strip_prefix(".tmp")
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Temporary files dagml names after `file` in `folder` (`file: None`: after
/// any file there, for a dataset's folder), this process's included.
pub fn temporaries(folder: &Path, file: Option<&str>) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            match file {
                Some(f) => is_temporary_of(&n, f),
                None => n.starts_with('.') && n.contains(MARK) && n.ends_with(TMP_SUFFIX),
            }
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// [`temporaries`] that are not this process's: left by a run that was
/// killed, or that failed before it could remove them.
pub fn stale_temporaries(folder: &Path, file: Option<&str>) -> Vec<PathBuf> {
    let mine = pending();
    temporaries(folder, file)
        .into_iter()
        .filter(|p| !mine.contains_key(p))
        .collect()
}

/// Check that a file can be created in `folder` (or, if it does not exist
/// yet, in the nearest folder above it that does): a temporary file is
/// created there and removed. `shown` is the output's path as the user gave it.
pub fn check_writable(folder: &Path, shown: &Path) -> Result<(), DataError> {
    let mut dir = folder;
    loop {
        if dir.as_os_str().is_empty() {
            dir = Path::new(".");
        }
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() || (m.file_type().is_symlink() && dir.is_dir()) => break,
            Ok(_) => {
                return Err(cannot_write(
                    shown,
                    std::io::Error::other(format!("`{}` is not a folder", dir.display())),
                ));
            }
            Err(_) => match dir.parent() {
                Some(p) => dir = p,
                None => break,
            },
        }
    }
    tempfile::Builder::new()
        .prefix(&format!(".dagml-probe{MARK}"))
        .suffix(TMP_SUFFIX)
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| cannot_write(shown, e))
}

type Body<'a> = Box<dyn FnOnce(&mut std::fs::File) -> Result<(), DataError> + 'a>;

fn bytes_body<'a>(path: &'a Path, bytes: &'a [u8]) -> Body<'a> {
    Box::new(move |f| {
        use std::io::Write;
        f.write_all(bytes).map_err(|e| cannot_write(path, e))
    })
}

fn batch_body<'a>(batch: &'a RecordBatch, format: FileFormat) -> Body<'a> {
    Box::new(move |f| {
        match format {
            FileFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props))?;
                w.write(batch)?;
                w.close()?;
            }
            FileFormat::Csv => {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(f);
                w.write(batch)?;
            }
            FileFormat::Arrow => {
                let mut w = arrow::ipc::writer::FileWriter::try_new(f, &batch.schema())?;
                w.write(batch)?;
                w.finish()?;
            }
            other => {
                return Err(DataError::Unsupported(format!(
                    "data cannot be written as {other:?}; use parquet, csv or arrow"
                )));
            }
        }
        Ok(())
    })
}

/// The written temporary file (listed as pending), or an error with the
/// temporary file removed.
fn write_with(path: &Path, body: Body<'_>) -> Result<NamedTempFile, DataError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot_write(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let mut tmp = {
        let mut p = pending();
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(cannot_write(path, std::io::Error::other("interrupted")));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}{MARK}"))
            .suffix(TMP_SUFFIX)
            .tempfile_in(dir)
            .map_err(|e| cannot_write(path, e))?;
        p.insert(tmp.path().to_path_buf(), c_path(tmp.path()));
        tmp
    };
    let tmp_path = tmp.path().to_path_buf();
    let res = body(tmp.as_file_mut())
        .and_then(|_| tmp.as_file().sync_all().map_err(|e| cannot_write(path, e)));
    if let Err(e) = res {
        drop(tmp); // removes it
        pending().remove(&tmp_path);
        return Err(match e {
            // Arrow and Parquet report the file's I/O errors as their own.
            DataError::Arrow(a) => cannot_write(path, std::io::Error::other(a.to_string())),
            DataError::Parquet(p) => cannot_write(path, std::io::Error::other(p.to_string())),
            e => e,
        });
    }
    Ok(tmp)
}

fn persist(tmp: NamedTempFile, path: &Path) -> Result<(), DataError> {
    let tmp_path = tmp.path().to_path_buf();
    // On failure the temporary file comes back inside the error and is
    // removed when it drops.
    let r = tmp
        .persist(path)
        .map(drop)
        .map_err(|e| cannot_write(path, e.error));
    pending().remove(&tmp_path);
    r
}

fn keep(tmp: NamedTempFile, path: &Path) -> Result<PathBuf, DataError> {
    let tmp_path = tmp.path().to_path_buf();
    match tmp.keep() {
        Ok((_, p)) => Ok(p),
        Err(e) => {
            pending().remove(&tmp_path);
            Err(cannot_write(path, e.error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn every_format_round_trips_through_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        for (name, f) in [
            ("x.parquet", FileFormat::Parquet),
            ("x.arrow", FileFormat::Arrow),
            ("x.csv", FileFormat::Csv),
        ] {
            let p = dir.path().join("sub").join(name);
            write_batch(&p, &b, f).unwrap();
            assert!(p.is_file());
            assert_eq!(format_of(&p, FileFormat::Csv), f);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}

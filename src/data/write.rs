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
//! ([`remove_temporaries_from_signal_handler`]; a cluster worker about to exit,
//! those it is still writing: [`remove_unfinished`]);
//! those a killed process left are found by name ([`stale_temporaries`]), and
//! a worker process journals its own so the next one on the machine removes
//! them ([`journal_in`]). A dataset's staged part files are committed together,
//! as one folder swap ([`commit_folder`]). [`free_disk`] tells the space left
//! where a path would be written.
//!
//! In: a path, a batch, a format. Out: the file (or its staged twin); errors
//! say "cannot write" and name the path given, never the temporary file.
//! Must not: write anywhere but the path given (and its temporary siblings,
//! and a worker's journal in the folder it is given); follow a link when
//! creating a file; remove a file not named as dagml names temporaries.

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
static PENDING: Mutex<BTreeMap<PathBuf, Pending>> = Mutex::new(BTreeMap::new());

/// One listed file: its path for `unlink(2)`, and whether it is staged (whole,
/// waiting for its run's commit) or still being written.
struct Pending {
    c_path: Vec<u8>,
    staged: bool,
}
/// Set on SIGINT / SIGTERM: no new temporary file after it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn pending() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Pending>> {
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

/// Put a dataset's staged part files in place together, so a reader of
/// `folder` sees all its old part files or all the new ones, never a mix:
/// the parts are moved into a new folder beside it (`.NAME.dagml-XXXXXX.tmp`)
/// and that folder is swapped with the old one in one step (Linux:
/// `renameat2(RENAME_EXCHANGE)`; elsewhere, or on a file system without it,
/// two renames, between which the folder is briefly absent, never mixed).
/// Then what the old folder holds besides part files and temporaries is
/// moved into the new one, and the old one is removed. `parts` are (staged, final) paths, every
/// final one directly in `folder`. On an error the old folder is left as it
/// was and this run's staged parts are removed; `shown` is the path the
/// pipeline gives the dataset.
pub fn commit_folder(
    folder: &Path,
    parts: &[(PathBuf, PathBuf)],
    shown: &Path,
) -> Result<(), DataError> {
    // A dataset folder that is a link: swap the folder it points to.
    let folder = match std::fs::symlink_metadata(folder) {
        Ok(m) if m.file_type().is_symlink() => {
            folder.canonicalize().map_err(|e| cannot_write(shown, e))?
        }
        _ => folder.to_path_buf(),
    };
    let parent = match folder.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let give_up = |e: std::io::Error| {
        for (s, _) in parts {
            discard(s);
        }
        cannot_write(shown, e)
    };
    let fresh = tempfile::Builder::new()
        .prefix(&format!(".{name}{MARK}"))
        .suffix(TMP_SUFFIX)
        .tempdir_in(&parent)
        .map_err(give_up)?
        .keep();
    let moved = (|| -> std::io::Result<()> {
        for (staged, path) in parts {
            let file = path.file_name().ok_or_else(|| {
                std::io::Error::other(format!("`{}` names no file", path.display()))
            })?;
            std::fs::rename(staged, fresh.join(file))?;
            pending().remove(staged);
        }
        Ok(())
    })();
    if let Err(e) = moved {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(give_up(e));
    }
    let swapped = if folder.exists() {
        exchange(&fresh, &folder).or_else(|_| {
            // Two renames: the old folder aside, the new one in place.
            let aside = tempfile::Builder::new()
                .prefix(&format!(".{name}{MARK}old-"))
                .suffix(TMP_SUFFIX)
                .tempdir_in(&parent)?
                .keep();
            std::fs::remove_dir(&aside)?;
            std::fs::rename(&folder, &aside)?;
            if let Err(e) = std::fs::rename(&fresh, &folder) {
                let _ = std::fs::rename(&aside, &folder);
                return Err(e);
            }
            std::fs::rename(&aside, &fresh)
        })
    } else {
        std::fs::rename(&fresh, &folder)
    };
    match swapped {
        Ok(()) => {
            // `fresh` now holds the old folder (or nothing): what it holds
            // besides part files and temporaries stays with the dataset.
            if let Ok(rd) = std::fs::read_dir(&fresh) {
                for e in rd.filter_map(Result::ok) {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let temporary =
                        n.starts_with('.') && n.contains(MARK) && n.ends_with(TMP_SUFFIX);
                    if !n.starts_with("part-") && !temporary {
                        let _ = std::fs::rename(e.path(), folder.join(e.file_name()));
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&fresh);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&fresh);
            Err(cannot_write(shown, e))
        }
    }
}

/// Swap two paths in one step (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let (ca, cb) = (c_path(a), c_path(b));
    // SAFETY: both are NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr().cast::<libc::c_char>(),
            libc::AT_FDCWD,
            cb.as_ptr().cast::<libc::c_char>(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no atomic exchange here"))
}

/// Remove a temporary file or folder [`temporaries`] listed; whether it went.
pub fn remove_temporary(p: &Path) -> bool {
    let gone = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
        Ok(_) => std::fs::remove_file(p).is_ok(),
        Err(_) => false,
    };
    pending().remove(p);
    gone
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
        for p in guard.values() {
            // SAFETY: `c_path` is a NUL-terminated path made when it was listed.
            unsafe {
                libc::unlink(p.c_path.as_ptr().cast());
            }
        }
        return true;
    }
    false
}

/// Stop listing staged files as this process's: they are handed to another
/// (a cluster worker's staged outputs, once its run has ended there, are the
/// client's to put in place or remove), so this process's exit leaves them.
pub fn hand_over(staged: &[PathBuf]) {
    let mut p = pending();
    for s in staged {
        p.remove(s);
    }
}

/// A process about to exit (a cluster worker stopped by Ctrl-C, SIGTERM or a
/// refused token): remove the temporary files it is still writing, and
/// refuse every write after it. Its staged files are left: they may be in a
/// run's result its client is putting in place now; the client removes those
/// its run does not use (`runtime::outputs::commit`, `discard`), and a later
/// worker of this machine removes what is left of them ([`journal_in`]).
/// How many staged files are left.
pub fn remove_unfinished() -> usize {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let mut p = pending();
    let writing: Vec<PathBuf> = p
        .iter()
        .filter(|(_, f)| !f.staged)
        .map(|(k, _)| k.clone())
        .collect();
    for f in writing {
        let _ = std::fs::remove_file(&f);
        p.remove(&f);
    }
    p.len()
}

/// Where this process records the path of every temporary file it creates
/// (one a line, appended as each is created), so that a later process can
/// remove those a kill left: see [`journal_in`].
static JOURNAL: Mutex<Option<(PathBuf, std::fs::File)>> = Mutex::new(None);

fn journal() -> std::sync::MutexGuard<'static, Option<(PathBuf, std::fs::File)>> {
    JOURNAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// This machine's name, for journal names (a data root may be shared
/// between machines, where another's process ids mean nothing).
fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer outlives the call, which writes at most its length.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            let name: String = String::from_utf8_lossy(&buf[..end])
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if !name.is_empty() {
                return name;
            }
        }
    }
    "localhost".into()
}

/// Whether process `pid` of this machine is alive (unsure: alive).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(p, 0) } == 0 {
            return true;
        }
        std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

const JOURNAL_PREFIX: &str = ".dagml-temporaries-";
const JOURNAL_SUFFIX: &str = ".journal";

/// A long-lived process that writes into folders it does not own (a cluster
/// worker, into a run's shared folder): first remove the temporary files
/// that processes of this machine which are gone (killed) recorded in their
/// journals in `dir`, and those journals; then record this process's in its
/// own (`dir/.dagml-temporaries-HOST-PID.journal`, removed by
/// [`end_journal`]). How many stale temporaries were removed. Only files
/// still named as dagml names temporaries are removed.
pub fn journal_in(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let host = host_name();
    let mine = std::process::id();
    let mut removed = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = n
                .strip_prefix(JOURNAL_PREFIX)
                .and_then(|r| r.strip_suffix(JOURNAL_SUFFIX))
                .and_then(|r| r.strip_prefix(host.as_str()))
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|r| r.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == mine || alive(pid) {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines() {
                let p = Path::new(line);
                let named = p.file_name().map(|f| f.to_string_lossy()).is_some_and(|f| {
                    f.starts_with('.') && f.contains(MARK) && f.ends_with(TMP_SUFFIX)
                });
                if named && p.is_file() && std::fs::remove_file(p).is_ok() {
                    removed += 1;
                }
            }
            let _ = std::fs::remove_file(e.path());
        }
    }
    let path = dir.join(format!("{JOURNAL_PREFIX}{host}-{mine}{JOURNAL_SUFFIX}"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    *journal() = Some((path, file));
    Ok(removed)
}

/// An exit: stop recording; remove this process's journal unless `keep`
/// (it staged files it did not hand over: the next [`journal_in`] on this
/// machine removes those still there).
pub fn end_journal(keep: bool) {
    if let Some((path, _)) = journal().take()
        && !keep
    {
        let _ = std::fs::remove_file(path);
    }
}

fn record(tmp: &Path) {
    if let Some((_, f)) = journal().as_mut() {
        use std::io::Write;
        let mut line = tmp.to_string_lossy().into_owned();
        line.push('\n');
        // The journal is a help for later clean-up, never a reason to fail a write.
        let _ = f.write_all(line.as_bytes());
    }
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
/// any file there, for a dataset's folder), this process's included; and the
/// folders a dataset's commit makes ([`commit_folder`]), left if it was killed.
/// Remove either with [`remove_temporary`].
pub fn temporaries(folder: &Path, file: Option<&str>) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_dir()))
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

/// The file system that holds `path` (or, if it does not exist yet, the
/// nearest folder above it that does): an id that is the same for every path
/// on it, and the bytes an unprivileged user may still write there
/// (`statvfs`: available blocks × fragment size). `None` where it cannot tell.
pub fn free_disk(path: &Path) -> Option<(u64, u64)> {
    let mut dir = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    while std::fs::symlink_metadata(dir).is_err() {
        dir = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if dir == Path::new(".") {
            break;
        }
    }
    statvfs(dir)
}

#[cfg(unix)]
fn statvfs(dir: &Path) -> Option<(u64, u64)> {
    let c = c_path(dir);
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer of the right type, filled by the call.
    let r = unsafe { libc::statvfs(c.as_ptr().cast(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    let free = (st.f_bavail as u64).checked_mul(st.f_frsize as u64)?;
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_fsid as u64, free))
}

#[cfg(not(unix))]
fn statvfs(_: &Path) -> Option<(u64, u64)> {
    None
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
        p.insert(
            tmp.path().to_path_buf(),
            Pending {
                c_path: c_path(tmp.path()),
                staged: false,
            },
        );
        tmp
    };
    record(tmp.path());
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
        Ok((_, p)) => {
            if let Some(f) = pending().get_mut(&p) {
                f.staged = true;
            }
            Ok(p)
        }
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

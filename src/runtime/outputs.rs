//! A run's output files as a whole: checked before the first task starts,
//! committed together after the last one ends.
//!
//! Sinks stage their files (`data::write::stage_*`, recorded in each
//! [`Receipt`]); when the run succeeds [`commit`] renames every staged file into
//! place, and when it fails [`discard`] removes them, so a run's outputs are all
//! new or all as they were. The one exception is an output a later source reads
//! back (`after = "outputs.NAME"`): it must be in place before that source runs,
//! so its sink writes it at once.
//!
//! In: the plan (its sinks), the run's base folder, the run's receipts.
//! Out: before the run, every output folder checked writable (a read-only
//! folder is found before any compute) and stale temporary files of these
//! outputs removed; after it, the files in place, or the staged ones removed
//! and the list of outputs left unchanged.
//! Must not: run tasks; touch any file but the outputs' own and their
//! temporary siblings.

use super::kernels::Receipt;
use crate::compile::logical::LOp;
use crate::data::{DataError, write};
use crate::frontend::pipeline::{FileFormat, OutputKind};
use crate::plan::PhysicalPlan;
use std::path::{Path, PathBuf};

/// One output of the plan, where it goes.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedOutput {
    pub name: String,
    /// The path as the pipeline gives it.
    pub shown: String,
    /// Under the run's base folder.
    pub full: PathBuf,
    /// A folder of part files (a dataset output).
    pub dataset: Option<FileFormat>,
    /// Read back by a later source: written in place at once, not staged.
    pub read_back: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} (checked before the run: nothing was computed)")]
    NotWritable(DataError),
    #[error(
        "{error}; outputs already put in place: {}; left as they were: {}",
        list(written),
        list(unchanged)
    )]
    Commit {
        error: DataError,
        written: Vec<String>,
        unchanged: Vec<String>,
    },
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The plan's outputs, in plan order.
pub fn planned(plan: &PhysicalPlan, base: &Path) -> Vec<PlannedOutput> {
    let g = &plan.logical.graph;
    let read_back: Vec<&str> = g
        .node_indices()
        .filter_map(|n| match &g[n].op {
            LOp::Source { source, .. } => source.after.as_ref().map(|a| a.value.as_str()),
            _ => None,
        })
        .collect();
    let mut out: Vec<PlannedOutput> = g
        .node_indices()
        .filter_map(|n| match &g[n].op {
            LOp::Sink { output } => Some(PlannedOutput {
                name: output.name.value.clone(),
                shown: output.path.value.clone(),
                full: base.join(&output.path.value),
                dataset: match &output.kind {
                    OutputKind::Dataset { format, .. } => Some(format.value),
                    _ => None,
                },
                read_back: read_back.contains(&output.name.value.as_str()),
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The folder an output's files go in, and the file name its temporaries
/// carry (none for a dataset: every part file's).
fn folder_of(o: &PlannedOutput) -> (PathBuf, Option<String>) {
    if o.dataset.is_some() {
        return (o.full.clone(), None);
    }
    let folder = o
        .full
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = o.full.file_name().map(|n| n.to_string_lossy().into_owned());
    (folder, name)
}

/// Before the first task: every output's folder can be written, and no
/// temporary file of a killed run is left beside these outputs. How many stale
/// temporary files were removed.
pub fn prepare(outputs: &[PlannedOutput]) -> Result<usize, OutputError> {
    let mut removed = 0;
    for o in outputs {
        let (folder, file) = folder_of(o);
        write::check_writable(&folder, Path::new(&o.shown)).map_err(OutputError::NotWritable)?;
        for f in write::stale_temporaries(&folder, file.as_deref()) {
            if std::fs::remove_file(&f).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// After the last task: put every staged file in place. A dataset's folder
/// keeps only this run's part files. If a rename fails (the folder was
/// removed or made read-only during the run), the staged files not yet in
/// place are removed and the error says which outputs were written and which
/// were left as they were.
pub fn commit(outputs: &[PlannedOutput], receipts: &[Receipt]) -> Result<(), OutputError> {
    let mut written: Vec<String> = Vec::new();
    let shown = |name: &str| {
        outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.shown.clone())
            .unwrap_or_else(|| name.to_string())
    };
    for (i, r) in receipts.iter().enumerate() {
        for (staged, path) in r.staged.iter().zip(&r.paths) {
            if let Err(error) = write::commit(Path::new(staged), Path::new(path)) {
                for later in &receipts[i..] {
                    for s in &later.staged {
                        write::discard(Path::new(s));
                    }
                }
                let mut unchanged: Vec<String> =
                    receipts[i..].iter().map(|r| shown(&r.output)).collect();
                if r.staged.len() > 1 {
                    // Some of a dataset's files may already be in place.
                    written.push(format!("{} (in part)", shown(&r.output)));
                    unchanged.retain(|u| *u != shown(&r.output));
                }
                return Err(OutputError::Commit {
                    error,
                    written,
                    unchanged,
                });
            }
        }
        if let Some(o) = outputs.iter().find(|o| o.name == r.output)
            && o.dataset.is_some()
            && !r.staged.is_empty()
        {
            remove_old_parts(&o.full, &r.paths);
        }
        if !r.staged.is_empty() {
            written.push(shown(&r.output));
        }
    }
    Ok(())
}

/// Part files of an earlier run with more partitions than this one.
fn remove_old_parts(folder: &Path, kept: &[String]) {
    let Ok(rd) = std::fs::read_dir(folder) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if name.starts_with("part-")
            && e.file_type().is_ok_and(|t| t.is_file())
            && !kept.iter().any(|k| Path::new(k) == p)
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// A failed run: remove the staged files of its outputs (those of its sinks
/// that finished, found by name beside each output; and any still listed in
/// this process). The outputs left as they were, as the pipeline names them.
pub fn discard(outputs: &[PlannedOutput]) -> Vec<String> {
    let mut unchanged = Vec::new();
    for o in outputs {
        let (folder, file) = folder_of(o);
        for f in write::temporaries(&folder, file.as_deref()) {
            write::discard(&f);
        }
        if !o.read_back {
            unchanged.push(o.shown.clone());
        }
    }
    unchanged
}

/// The note a failed run's error ends with.
pub fn unchanged_note(unchanged: &[String]) -> String {
    if unchanged.is_empty() {
        String::new()
    } else {
        format!(
            "\n  outputs: none was changed; left as they were (or absent): {}",
            list(unchanged)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(dir: &Path, name: &str, path: &str) -> PlannedOutput {
        PlannedOutput {
            name: name.into(),
            shown: path.into(),
            full: dir.join(path),
            dataset: None,
            read_back: false,
        }
    }

    fn receipt(o: &PlannedOutput, staged: PathBuf) -> Receipt {
        Receipt {
            output: o.name.clone(),
            paths: vec![o.full.display().to_string()],
            rows: None,
            staged: vec![staged.display().to_string()],
        }
    }

    #[test]
    fn staged_outputs_appear_only_on_commit_and_vanish_on_discard() {
        let dir = tempfile::tempdir().unwrap();
        let a = out(dir.path(), "a", "out/a.json");
        let b = out(dir.path(), "b", "out/b.model");
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        std::fs::write(&b.full, b"old model").unwrap();
        // A failed run: the old model stays, no new file, no temporary.
        write::stage_bytes(&a.full, b"new").unwrap();
        write::stage_bytes(&b.full, b"new model").unwrap();
        let unchanged = discard(&[a.clone(), b.clone()]);
        assert_eq!(unchanged, vec!["out/a.json", "out/b.model"]);
        assert!(!a.full.exists());
        assert_eq!(std::fs::read(&b.full).unwrap(), b"old model");
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            1
        );
        // A run that succeeds: both new.
        let ra = receipt(&a, write::stage_bytes(&a.full, b"new").unwrap());
        let rb = receipt(&b, write::stage_bytes(&b.full, b"new model").unwrap());
        assert_eq!(std::fs::read(&b.full).unwrap(), b"old model", "staged only");
        commit(&[a.clone(), b.clone()], &[ra, rb]).unwrap();
        assert_eq!(std::fs::read(&a.full).unwrap(), b"new");
        assert_eq!(std::fs::read(&b.full).unwrap(), b"new model");
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            2
        );
    }

    #[test]
    fn stale_temporaries_of_a_killed_run_are_removed_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let a = out(dir.path(), "a", "a.csv");
        // Left by a killed run (this version's name, and the old predictable one),
        // and a file that only looks alike.
        let stale = dir.path().join(".a.csv.dagml-x1Y2z3.tmp");
        let old = dir.path().join(".a.csv.tmp4242");
        let other = dir.path().join(".a.csv.tmpnotes");
        for f in [&stale, &old, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        assert_eq!(prepare(std::slice::from_ref(&a)).unwrap(), 2);
        assert!(!stale.exists() && !old.exists() && other.exists());
    }

    #[test]
    fn an_output_folder_that_cannot_be_written_is_refused_before_the_run() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the output's folder should be.
        std::fs::write(dir.path().join("taken"), b"x").unwrap();
        let a = out(dir.path(), "a", "taken/sub/a.json");
        let e = prepare(&[a]).unwrap_err().to_string();
        assert!(e.starts_with("cannot write `taken/sub/a.json`"), "{e}");
        assert!(
            e.contains("is not a folder") && e.contains("nothing was computed"),
            "{e}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro");
            std::fs::create_dir(&ro).unwrap();
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
            // Root writes anywhere; for anyone else a read-only folder is refused.
            if tempfile::tempfile_in(&ro).is_err() {
                let e = prepare(&[out(dir.path(), "b", "ro/b.json")])
                    .unwrap_err()
                    .to_string();
                assert!(e.starts_with("cannot write `ro/b.json`"), "{e}");
            }
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

//! A run's output files as a whole: checked before the first task starts,
//! committed together after the last one ends.
//!
//! Sinks stage their files (`data::write::stage_*`, recorded in each
//! [`Receipt`]); when the run succeeds [`commit`] renames every staged file into
//! place (a dataset's part files together, as one folder swap) and removes any
//! other temporary of these outputs (a killed cluster worker's), and when it
//! fails [`discard`] removes them, so a run's outputs are all new or all as
//! they were. The one exception is an output a later source reads
//! back (`after = "outputs.NAME"`): it must be in place before that source runs,
//! so its sink writes it at once.
//!
//! In: the plan (its sinks), the run's base folder, the run's receipts.
//! Out: before the run, every output folder checked writable (a read-only
//! folder is found before any compute), the outputs' estimated sizes checked
//! against the free space of their disks, and stale temporary files of these
//! outputs removed; after it, the files in place, or the staged ones removed
//! and the list of outputs left unchanged.
//! Must not: run tasks; touch any file but the outputs' own and their
//! temporary siblings.

use super::kernels::Receipt;
use crate::compile::logical::{EdgeKind, LOp};
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
    /// The plan's estimate of its size (the data it writes: a dataset or
    /// predictions); `None` for a model, metrics or a picture, which are small.
    pub est_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} (checked before the run: nothing was computed)")]
    NotWritable(DataError),
    #[error(
        "{} (the plan's estimate), and the disk that holds `{folder}` has {} free: nothing was run; free some space, write them elsewhere, or write fewer rows",
        estimated(outputs, *need),
        human_bytes(*free)
    )]
    NoRoom {
        outputs: Vec<String>,
        folder: String,
        need: u64,
        free: u64,
    },
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
    planned_logical(&plan.logical, base)
}

/// [`planned`] from the logical plan (`check`, which cuts no tasks).
pub fn planned_logical(
    plan: &crate::compile::logical::LogicalPlan,
    base: &Path,
) -> Vec<PlannedOutput> {
    let g = &plan.graph;
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
                est_bytes: g
                    .edges_directed(n, petgraph::Direction::Incoming)
                    .filter_map(|e| match e.weight() {
                        EdgeKind::Data { schema, .. } => schema.est_bytes(),
                        _ => None,
                    })
                    .max(),
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The folders where an output's temporaries are, each with the file name
/// they carry (none: any file's, inside a dataset's folder).
fn temporary_places(o: &PlannedOutput) -> Vec<(PathBuf, Option<String>)> {
    let parent = o
        .full
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = o.full.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut places = vec![(parent, name)];
    if o.dataset.is_some() {
        // Its staged part files are inside it; beside it, the folder a
        // commit killed midway left.
        places.push((o.full.clone(), None));
    }
    places
}

/// The folder that must be writable for an output.
fn folder_of(o: &PlannedOutput) -> PathBuf {
    if o.dataset.is_some() {
        return o.full.clone();
    }
    o.full
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Remove the temporaries of `outputs` that are not this process's (left by
/// a killed run, or by a cluster worker killed after it staged a file that
/// was then written again elsewhere); how many went.
pub fn remove_stale(outputs: &[PlannedOutput]) -> usize {
    let mut removed = 0;
    for o in outputs {
        for (folder, file) in temporary_places(o) {
            for f in write::stale_temporaries(&folder, file.as_deref()) {
                if write::remove_temporary(&f) {
                    removed += 1;
                }
            }
        }
    }
    removed
}

/// The outputs whose estimated sizes, together with the others on the same
/// disk (all of a run's outputs are staged there until the commit), exceed
/// the space free on it: per disk, the outputs (as the pipeline names them),
/// the first one's folder, their total estimate and the space free.
pub fn exceeding_disk(outputs: &[PlannedOutput]) -> Vec<(Vec<String>, String, u64, u64)> {
    let mut by_disk: std::collections::BTreeMap<u64, (Vec<String>, String, u64, u64)> =
        Default::default();
    for o in outputs {
        let Some(bytes) = o.est_bytes else { continue };
        let Some((disk, free)) = write::free_disk(&folder_of(o)) else {
            continue;
        };
        let folder = Path::new(&o.shown)
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && o.dataset.is_none())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| o.shown.clone());
        let e = by_disk
            .entry(disk)
            .or_insert_with(|| (Vec::new(), folder, 0, free));
        e.0.push(o.shown.clone());
        e.2 = e.2.saturating_add(bytes);
    }
    by_disk
        .into_values()
        .filter(|(_, _, need, free)| need > free)
        .collect()
}

/// Before the first task: every output's folder can be written, the outputs'
/// estimated sizes fit on their disks, and no temporary file of a killed run
/// is left beside these outputs. How many stale temporary files were removed.
pub fn prepare(outputs: &[PlannedOutput]) -> Result<usize, OutputError> {
    for o in outputs {
        write::check_writable(&folder_of(o), Path::new(&o.shown))
            .map_err(OutputError::NotWritable)?;
    }
    if let Some((outputs, folder, need, free)) = exceeding_disk(outputs).into_iter().next() {
        return Err(OutputError::NoRoom {
            outputs,
            folder,
            need,
            free,
        });
    }
    Ok(remove_stale(outputs))
}

/// "output `a` is estimated at ~N", or "outputs `a`, `b` are … together".
pub fn estimated(outputs: &[String], bytes: u64) -> String {
    match outputs {
        [one] => format!("output `{one}` is estimated at ~{}", human_bytes(bytes)),
        many => format!(
            "outputs {} are estimated at ~{} together",
            list(many),
            human_bytes(bytes)
        ),
    }
}

/// Bytes as the plan prints them.
fn human_bytes(b: u64) -> String {
    crate::plan::dot::human_bytes(b)
}

/// After the last task: put every staged file in place, a dataset's part
/// files together (its folder then holds only this run's part files:
/// [`write::commit_folder`]). If a rename fails (the folder was removed or
/// made read-only during the run), the staged files not yet in place are
/// removed and the error says which outputs were written and which were left
/// as they were. Then no temporary of these outputs is left: those a killed
/// cluster worker staged before its task was run again elsewhere are removed
/// too.
pub fn commit(outputs: &[PlannedOutput], receipts: &[Receipt]) -> Result<(), OutputError> {
    let r = commit_receipts(outputs, receipts);
    remove_stale(outputs);
    r
}

fn commit_receipts(outputs: &[PlannedOutput], receipts: &[Receipt]) -> Result<(), OutputError> {
    let mut written: Vec<String> = Vec::new();
    let shown = |name: &str| {
        outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.shown.clone())
            .unwrap_or_else(|| name.to_string())
    };
    for (i, r) in receipts.iter().enumerate() {
        let dataset = outputs
            .iter()
            .find(|o| o.name == r.output && o.dataset.is_some());
        let res = match dataset {
            Some(o) if !r.staged.is_empty() => {
                let parts: Vec<(PathBuf, PathBuf)> = r
                    .staged
                    .iter()
                    .zip(&r.paths)
                    .map(|(s, p)| (PathBuf::from(s), PathBuf::from(p)))
                    .collect();
                write::commit_folder(&o.full, &parts, Path::new(&o.shown))
            }
            _ => r
                .staged
                .iter()
                .zip(&r.paths)
                .try_for_each(|(s, p)| write::commit(Path::new(s), Path::new(p))),
        };
        if let Err(error) = res {
            for later in &receipts[i..] {
                for s in &later.staged {
                    write::discard(Path::new(s));
                }
            }
            let unchanged: Vec<String> = receipts[i..].iter().map(|r| shown(&r.output)).collect();
            return Err(OutputError::Commit {
                error,
                written,
                unchanged,
            });
        }
        if !r.staged.is_empty() {
            written.push(shown(&r.output));
        }
    }
    Ok(())
}

/// A failed run: remove the staged files of its outputs (those of its sinks
/// that finished, found by name beside each output; and any still listed in
/// this process). The outputs left as they were, as the pipeline names them.
pub fn discard(outputs: &[PlannedOutput]) -> Vec<String> {
    let mut unchanged = Vec::new();
    for o in outputs {
        for (folder, file) in temporary_places(o) {
            for f in write::temporaries(&folder, file.as_deref()) {
                write::remove_temporary(&f);
            }
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
            est_bytes: None,
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

    fn dataset(dir: &Path) -> PlannedOutput {
        PlannedOutput {
            dataset: Some(FileFormat::Csv),
            ..out(dir, "rows", "out/rows")
        }
    }

    /// Stage `n` part files of generation `gen` of the dataset `o`.
    fn stage_parts(o: &PlannedOutput, n: usize, generation: &str) -> Receipt {
        let mut r = Receipt {
            output: o.name.clone(),
            paths: Vec::new(),
            rows: None,
            staged: Vec::new(),
        };
        for i in 0..n {
            let p = o.full.join(write::part_file_name(i, FileFormat::Csv));
            let s = write::stage_bytes(&p, format!("{generation} {i}").as_bytes()).unwrap();
            r.paths.push(p.display().to_string());
            r.staged.push(s.display().to_string());
        }
        r
    }

    /// Every entry of a folder with its bytes (folders as "<dir>").
    fn listing(dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let body = std::fs::read_to_string(e.path()).unwrap_or_else(|_| "<dir>".into());
                (e.file_name().to_string_lossy().into_owned(), body)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_datasets_part_files_are_put_in_place_together_and_the_old_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let o = dataset(dir.path());
        let old = stage_parts(&o, 3, "old");
        commit(std::slice::from_ref(&o), &[old]).unwrap();
        std::fs::write(o.full.join("NOTES.txt"), b"mine").unwrap();
        let new = stage_parts(&o, 2, "new");
        // Staged: the old dataset is still whole.
        assert_eq!(
            listing(&o.full)
                .iter()
                .filter(|(n, _)| n.starts_with("part-"))
                .count(),
            3
        );
        commit(std::slice::from_ref(&o), &[new]).unwrap();
        assert_eq!(
            listing(&o.full),
            vec![
                ("NOTES.txt".to_string(), "mine".to_string()),
                ("part-00000.csv".into(), "new 0".into()),
                ("part-00001.csv".into(), "new 1".into()),
            ]
        );
        // No staging folder, nor the old one, is left beside it.
        assert_eq!(listing(&dir.path().join("out")).len(), 1);
    }

    #[test]
    fn a_dataset_whose_commit_fails_keeps_every_old_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let o = dataset(dir.path());
        let old = stage_parts(&o, 3, "old");
        commit(std::slice::from_ref(&o), &[old]).unwrap();
        let before = listing(&o.full);
        let new = stage_parts(&o, 3, "new");
        // The last staged part vanished (a disk error, a user's rm): the
        // first two must not be put in place without it.
        std::fs::remove_file(&new.staged[2]).unwrap();
        let e = commit(std::slice::from_ref(&o), &[new])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot write `out/rows`"), "{e}");
        assert!(e.contains("left as they were: `out/rows`"), "{e}");
        assert_eq!(
            listing(&o.full),
            before,
            "all old, no new part, no temporary"
        );
        assert_eq!(listing(&dir.path().join("out")).len(), 1);
    }

    #[test]
    fn a_dataset_commit_killed_midway_leaves_a_folder_the_next_run_removes() {
        let dir = tempfile::tempdir().unwrap();
        let o = dataset(dir.path());
        std::fs::create_dir_all(&o.full).unwrap();
        let left = dir.path().join("out/.rows.dagml-Ab12Cd.tmp");
        std::fs::create_dir(&left).unwrap();
        std::fs::write(left.join("part-00000.csv"), b"x").unwrap();
        assert_eq!(prepare(std::slice::from_ref(&o)).unwrap(), 1);
        assert!(!left.exists());
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

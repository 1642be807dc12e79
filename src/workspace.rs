//! Files on disk → parsed and checked pipelines: the glue the commands share.
//!
//! In: paths given on the command line. Out: the list of pipeline files, and for
//! each its [`Parsed`] with every diagnostic of every layer that could run.
//! Must not: print, or decide exit statuses (that is `cli`).

use crate::compile;
use crate::frontend::{self, Code, Diagnostic, Parsed};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Also check data files (existence, columns).
    pub data: bool,
    /// The folder the pipeline's relative paths are read from (empty: the
    /// working folder). A cluster run sends the client's, so the scheduler and
    /// every worker list the same files for a split by file.
    pub base: PathBuf,
}

#[derive(Debug)]
pub struct Report {
    pub parsed: Parsed,
    pub checked: Option<compile::Checked>,
}

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("`{0}` does not exist")]
    Missing(PathBuf),
    #[error("no *.toml or *.dagml pipeline files under `{0}`")]
    Empty(PathBuf),
    #[error("cannot read the folder `{0}`: {1}")]
    Unreadable(PathBuf, std::io::Error),
}

/// Files given directly, plus *.toml and *.dagml found under folders (sorted).
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PathError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out, 0)?;
            out[before..].sort();
            if out.len() == before {
                return Err(PathError::Empty(p.clone()));
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(PathError::Missing(p.clone()));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), PathError> {
    if depth > 32 {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| PathError::Unreadable(dir.to_path_buf(), e))?;
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            walk(&path, out, depth + 1)?;
        } else if frontend::Syntax::of_path(name).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// Read, parse and check one file. An unreadable file is a diagnostic, not an error.
pub fn check_file(path: &Path, opts: &CheckOptions) -> Report {
    let shown = path.to_string_lossy().into_owned();
    let parsed = match std::fs::read(path) {
        Ok(bytes) => frontend::parse_bytes(&shown, &bytes),
        Err(e) => Parsed {
            file: frontend::SourceFile::new(&shown, ""),
            pipeline: None,
            diagnostics: vec![Diagnostic::new(
                Code::MissingFile,
                None,
                format!("cannot read the file: {e}"),
            )],
        },
    };
    check_parsed(parsed, opts)
}

/// Parse and check a pipeline's text (a cluster worker gets the text, not the file).
/// `shown` is the file name: its extension picks the syntax.
pub fn check_bytes(shown: &str, bytes: &[u8], opts: &CheckOptions) -> Report {
    check_parsed(frontend::parse_bytes(shown, bytes), opts)
}

fn check_parsed(mut parsed: Parsed, opts: &CheckOptions) -> Report {
    let mut schemas = std::collections::BTreeMap::new();
    if opts.data
        && !parsed.has_errors()
        && let Some(p) = &parsed.pipeline
    {
        let (s, diags) = compile::data_check::check_data(p, &base_of(opts));
        schemas = s;
        parsed.diagnostics.extend(diags);
    }
    let mut checked = compile::check_with(&mut parsed, &schemas);
    if opts.data
        && let Some(c) = &checked
    {
        // The shards of a split by file are the files: list them, as `run` will.
        let diags = compile::shard_files::list(&mut c.plan.clone(), &base_of(opts));
        if !diags.is_empty() {
            parsed.diagnostics.extend(diags);
            checked = None;
        }
    }
    Report { parsed, checked }
}

/// A planned pipeline: the plan after each optimizer rule, and the physical plan.
pub struct Planned {
    pub initial: String,
    pub steps: Vec<crate::optimize::Step>,
    pub physical: crate::plan::PhysicalPlan,
}

/// Check, optimize and cut one file into tasks. On an invalid pipeline, the
/// report with the same diagnostics `check` gives.
pub fn plan_file(path: &Path, opts: &CheckOptions) -> Result<(Report, Planned), Report> {
    plan_report(check_file(path, opts), opts)
}

/// The folder relative paths are read from.
fn base_of(opts: &CheckOptions) -> PathBuf {
    if opts.base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        opts.base.clone()
    }
}

/// [`plan_file`] on a pipeline's text.
pub fn plan_bytes(
    shown: &str,
    bytes: &[u8],
    opts: &CheckOptions,
) -> Result<(Report, Planned), Report> {
    plan_report(check_bytes(shown, bytes, opts), opts)
}

fn plan_report(mut report: Report, opts: &CheckOptions) -> Result<(Report, Planned), Report> {
    let Some(checked) = report.checked.take() else {
        return Err(report);
    };
    let mut plan = checked.plan.clone();
    // Shards by file need the file list before the plan is cut into tasks.
    let diags = compile::shard_files::list(&mut plan, &base_of(opts));
    if !diags.is_empty() {
        report.parsed.diagnostics.extend(diags);
        return Err(report);
    }
    let initial = plan.display();
    let (optimized, steps) = crate::optimize::optimize(plan);
    let physical = crate::plan::physical(optimized);
    report.checked = Some(checked);
    Ok((
        report,
        Planned {
            initial,
            steps,
            physical,
        },
    ))
}

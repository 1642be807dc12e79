//! Files on disk → parsed, checked, planned and prepared pipelines: the glue
//! the commands and the cluster share.
//!
//! In: paths given on the command line (or a pipeline's text and the folder it
//! runs in). Out: the list of pipeline files, and for each its [`Parsed`] with
//! every diagnostic of every layer that could run; its plan; and a
//! [`Prepared`] run (the plan and its kernels' context) for the in-process
//! executor and for a cluster worker alike; the size checks against this
//! machine (memory: [`refuse_what_cannot_fit`]; disks: [`disk_warnings`]).
//! Must not: print, or decide exit statuses (that is `cli`).

use crate::compile;
use crate::frontend::pipeline::{FileFormat, OutputKind};
use crate::frontend::{self, Code, Diagnostic, Parsed};
use crate::plan::{dot, render};
use crate::runtime::failure::RunError;
use crate::runtime::kernels::RunContext;
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

#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// The file did not check; the report holds the diagnostics.
    #[error("the pipeline is not valid")]
    Invalid(Box<Report>),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{0}")]
    Other(String),
    /// A run that failed after it was planned: the failure, and the outputs it
    /// left as they were (its staged files removed).
    #[error("{failure}{}", crate::runtime::outputs::unchanged_note(unchanged))]
    Outputs {
        failure: Box<RunFailure>,
        unchanged: Vec<String>,
    },
}

impl RunFailure {
    /// This failure, saying which of the run's outputs it left unchanged.
    pub fn with_unchanged(self, unchanged: Vec<String>) -> Self {
        match self {
            RunFailure::Invalid(_) => self,
            failure => RunFailure::Outputs {
                failure: Box::new(failure),
                unchanged,
            },
        }
    }
}

/// A checked and planned pipeline with everything its kernels need.
pub struct Prepared {
    pub pipeline: String,
    pub plan: crate::plan::PhysicalPlan,
    pub cx: RunContext,
    /// Every file, folder or glob the pipeline reads or writes, joined to the
    /// base folder (a worker with a data root checks them against it).
    pub files: Vec<PathBuf>,
}

/// The paths a pipeline's sources read and its outputs write, joined to `base`.
pub fn files_of(p: &crate::frontend::pipeline::Pipeline, base: &Path) -> Vec<PathBuf> {
    let sources = p.sources.iter().filter_map(|s| s.path());
    let outputs = p.outputs.iter().map(|o| &o.path);
    sources
        .chain(outputs)
        .map(|f| base.join(&f.value))
        .collect()
}

/// `path` with `.` and `..` taken out, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Check and plan a pipeline file and build its kernels' context.
pub fn prepare_file(path: &Path, base: PathBuf) -> Result<Prepared, RunFailure> {
    let opts = CheckOptions {
        base: base.clone(),
        ..Default::default()
    };
    match plan_file(path, &opts) {
        Ok((report, planned)) => prepare(&report, planned, base),
        Err(r) => Err(RunFailure::Invalid(Box::new(r))),
    }
}

/// [`prepare_file`] on a pipeline's text (a cluster gets the text, never code).
/// `shown` is the file name: its extension picks the syntax.
pub fn prepare_bytes(shown: &str, bytes: &[u8], base: PathBuf) -> Result<Prepared, RunFailure> {
    let opts = CheckOptions {
        base: base.clone(),
        ..Default::default()
    };
    match plan_bytes(shown, bytes, &opts) {
        Ok((report, planned)) => prepare(&report, planned, base),
        Err(r) => Err(RunFailure::Invalid(Box::new(r))),
    }
}

fn prepare(report: &Report, planned: Planned, base: PathBuf) -> Result<Prepared, RunFailure> {
    let checked = report
        .checked
        .as_ref()
        .ok_or_else(|| RunFailure::Other("the pipeline did not compile".into()))?;
    let plan = planned.physical;
    // The hash in model files is over the canonical form, so a .dagml file and
    // its .toml twin write the same bytes.
    let file = &report.parsed.file;
    let canonical = crate::frontend::emit::canonical(&file.path, &file.text)
        .unwrap_or_else(|| file.text.clone());
    let files = files_of(&checked.pipeline, &base);
    let mut cx = RunContext::new(&checked.pipeline, &canonical, &plan, base);
    for o in &checked.pipeline.outputs {
        if let OutputKind::Plan { format } = &o.kind {
            let f = match format.value {
                FileFormat::Dot => render::Format::Dot,
                FileFormat::Png => render::Format::Png,
                _ => render::Format::Svg,
            };
            // A picture of a very large plan is drawn collapsed by step kind.
            let text = match f {
                render::Format::Dot => dot::to_dot(&plan, dot::Level::Physical),
                _ => dot::to_dot_for_picture(&plan, dot::Level::Physical).0,
            };
            let (bytes, _) =
                render::render(&text, f).map_err(|e| RunFailure::Other(e.to_string()))?;
            cx.pictures.insert(o.name.value.clone(), bytes);
        }
    }
    Ok(Prepared {
        pipeline: checked.pipeline.name.value.clone(),
        plan,
        cx,
        files,
    })
}

/// What `check --data` warns of in the data a run is about to read (a
/// column of numbers but for a few cells, which is read as text), rendered as
/// `check` renders it; the run goes on. Errors are left to the run, which
/// reports them itself with the row and the step.
pub fn data_warnings(path: &Path, base: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let parsed = frontend::parse_bytes(&path.to_string_lossy(), &bytes);
    let Some(p) = parsed.pipeline.as_ref().filter(|_| !parsed.has_errors()) else {
        return Vec::new();
    };
    let (_, diags) = compile::data_check::check_data(p, base);
    diags
        .iter()
        .filter(|d| d.code == frontend::diag::Code::MostlyNumeric)
        .map(|d| d.render(&parsed.file))
        .collect()
}

/// What `check` and `plan` warn of on this machine's disks (the file's own
/// checks are machine-independent): outputs whose estimated sizes exceed the
/// space free where they go (`run` refuses those before the first task), and,
/// for an embedded cluster the file declares (`[cluster]` with `workers` and
/// `memory_limit`), data beyond its memory that would spill to a disk without
/// room for it. Each says what is estimated, what is free, and what to do.
pub fn disk_warnings(report: &Report, base: &Path) -> Vec<String> {
    use crate::plan::dot::human_bytes;
    let Some(checked) = &report.checked else {
        return Vec::new();
    };
    let mut out: Vec<String> = crate::runtime::outputs::exceeding_disk(
        &crate::runtime::outputs::planned_logical(&checked.plan, base),
    )
    .into_iter()
    .map(|(outputs, folder, need, free)| {
        format!(
            "{}, and the disk that holds `{folder}` has {} free: `run` will refuse to start; free some space, write them elsewhere, or write fewer rows",
            crate::runtime::outputs::estimated(&outputs, need),
            human_bytes(free)
        )
    })
    .collect();
    if let Some(crate::frontend::pipeline::Cluster::Local {
        workers: Some(w),
        memory_limit: Some(m),
        ..
    }) = &checked.pipeline.cluster
    {
        use crate::compile::logical::{EdgeKind, LOp};
        let memory = u64::from(w.value).saturating_mul(m.value);
        let g = &checked.plan.graph;
        let spill_to = std::env::temp_dir();
        let free = crate::data::write::free_disk(&spill_to).map(|(_, f)| f);
        for n in g.node_indices() {
            let LOp::Source { source, .. } = &g[n].op else {
                continue;
            };
            let est = g.edges(n).find_map(|e| match e.weight() {
                EdgeKind::Data { schema, part: None } => schema.est_bytes(),
                _ => None,
            });
            if let (Some(bytes), Some(free)) = (est, free)
                && bytes.saturating_sub(memory) > free
            {
                out.push(format!(
                    "source `{}` is estimated at ~{}: beyond the memory of the cluster this file declares ({}), ~{} would spill to its workers' data root under `{}`, whose disk has {} free; use fewer rows, more workers or a larger `memory_limit`",
                    source.name.value,
                    human_bytes(bytes),
                    human_bytes(memory),
                    human_bytes(bytes - memory),
                    spill_to.display(),
                    human_bytes(free)
                ));
            }
        }
    }
    out
}

/// Memory the kernel says this machine can still give (Linux: `MemAvailable`
/// in /proc/meminfo); `None` where it cannot tell.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Before the first task: a task whose estimated output (a data partition)
/// alone exceeds `capacity` bytes (what one process can hold: this machine's
/// available memory, or the largest worker's memory limit, as `whose` says)
/// would be killed (or abort on allocation) after whatever ran before it;
/// the run is refused instead, naming the task and the sizes.
pub fn refuse_what_cannot_fit(
    plan: &crate::plan::PhysicalPlan,
    capacity: u64,
    whose: &str,
) -> Result<(), String> {
    let Some((t, bytes)) = plan
        .tasks
        .iter()
        // Tasks that make data partitions: the estimate of an evaluation or a
        // fit is of what it reads, which may arrive (and be freed) piecewise.
        .filter(|t| t.outputs.iter().any(|o| o.dataset().is_some()))
        .filter_map(|t| t.est_bytes.map(|b| (t, b)))
        .max_by_key(|(_, b)| *b)
    else {
        return Ok(());
    };
    if bytes <= capacity {
        return Ok(());
    }
    use crate::plan::dot::human_bytes;
    Err(format!(
        "task `{}` would hold ~{} (the plan's estimate: {} rows), and {whose} {}: it cannot fit, so nothing was run; use more partitions (`partitions = N` on a synthetic source, more files for a file source), fewer rows, or workers with more memory or disk",
        t.id,
        human_bytes(bytes),
        t.est_rows
            .map_or("?".to_string(), crate::plan::dot::human_count),
        human_bytes(capacity)
    ))
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use std::path::Path;

    #[test]
    fn normalize_takes_out_dots_without_the_file_system() {
        assert_eq!(
            normalize(Path::new("/root/proj/./out/../../escaped")),
            Path::new("/root/escaped")
        );
        assert_eq!(normalize(Path::new("/a/b/c")), Path::new("/a/b/c"));
        assert_eq!(normalize(Path::new("/a/../../..")), Path::new("/"));
        assert!(!normalize(Path::new("/data/p/../../etc/passwd")).starts_with("/data"));
    }
}

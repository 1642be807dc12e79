//! `dagml run` and `dagml predict` as library calls: check and plan a pipeline,
//! execute its tasks with the pipeline kernels, and gather what the user sees.
//!
//! In: a pipeline file path and [`RunOptions`]. Out: a [`RunReport`] (evaluations,
//! written files, per-step times, peak memory) or a [`RunFailure`].
//! Must not: print (the CLI does) or decide exit codes.

use crate::ml::metrics;
use crate::plan::{dot, render};
use crate::runtime::executor::{self, Observer, Options, TaskRecord};
use crate::runtime::failure::RunError;
use crate::runtime::kernels::{EvalResult, PipelineKernels, Receipt, RunContext};
use crate::runtime::value::Value;
use crate::frontend::pipeline::{FileFormat, OutputKind};
use crate::workspace::{self, CheckOptions, Report};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct RunOptions {
    /// Threads for tasks (and inside tasks); `None`: the cluster's workers x
    /// threads from the file, else every core.
    pub threads: Option<usize>,
    pub quiet: bool,
    /// Folder relative paths are resolved against.
    pub base: PathBuf,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: None,
            quiet: true,
            base: PathBuf::from("."),
        }
    }
}

#[derive(Debug)]
pub struct RunReport {
    pub pipeline: String,
    pub evaluations: Vec<EvalResult>,
    pub receipts: Vec<Receipt>,
    pub records: Vec<TaskRecord>,
    pub wall: Duration,
    pub threads: usize,
    pub tasks: usize,
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
}

/// Threads the run uses.
pub fn threads_for(plan: &crate::plan::PhysicalPlan, opts: &RunOptions) -> usize {
    if let Some(t) = opts.threads {
        return t.max(1);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match &plan.logical.cluster {
        Some(crate::frontend::pipeline::Cluster::Local {
            workers: Some(w),
            threads,
            ..
        }) => {
            let per = threads.value;
            ((w.value * per) as usize).clamp(1, cores.max(1))
        }
        _ => cores,
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
    match workspace::plan_file(path, &CheckOptions::default()) {
        Ok((report, planned)) => prepare(&report, planned, base),
        Err(r) => Err(RunFailure::Invalid(Box::new(r))),
    }
}

/// [`prepare_file`] on a pipeline's text (a cluster gets the text, never code).
/// `shown` is the file name: its extension picks the syntax.
pub fn prepare_bytes(shown: &str, bytes: &[u8], base: PathBuf) -> Result<Prepared, RunFailure> {
    match workspace::plan_bytes(shown, bytes, &CheckOptions::default()) {
        Ok((report, planned)) => prepare(&report, planned, base),
        Err(r) => Err(RunFailure::Invalid(Box::new(r))),
    }
}

fn prepare(
    report: &Report,
    planned: workspace::Planned,
    base: PathBuf,
) -> Result<Prepared, RunFailure> {
    let checked = report
        .checked
        .as_ref()
        .ok_or_else(|| RunFailure::Other("the pipeline did not compile".into()))?;
    let plan = planned.physical;
    // The hash in model files is over the canonical form, so a .dagml file and
    // its .toml twin write the same bytes.
    let file = &report.parsed.file;
    let canonical =
        crate::frontend::emit::canonical(&file.path, &file.text).unwrap_or_else(|| file.text.clone());
    let files = files_of(&checked.pipeline, &base);
    let mut cx = RunContext::new(&checked.pipeline, &canonical, &plan, base);
    for o in &checked.pipeline.outputs {
        if let OutputKind::Plan { format } = &o.kind {
            let text = dot::to_dot(&plan, dot::Level::Physical);
            let f = match format.value {
                FileFormat::Dot => render::Format::Dot,
                FileFormat::Png => render::Format::Png,
                _ => render::Format::Svg,
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

/// Check, plan and run one pipeline file.
pub fn run_file(
    path: &Path,
    opts: &RunOptions,
    observer: &dyn Observer,
) -> Result<RunReport, RunFailure> {
    let Prepared {
        pipeline, plan, cx, ..
    } = prepare_file(path, opts.base.clone())?;
    let threads = threads_for(&plan, opts);
    let kernels = PipelineKernels { cx: Arc::new(cx) };
    // Evaluations feed the metrics sink, and a written dataset may be read back,
    // so the executor would free them; the report needs them.
    let keep = plan
        .tasks
        .iter()
        .filter(|t| {
            matches!(
                t.kind,
                crate::plan::TaskKind::Evaluate | crate::plan::TaskKind::Write
            )
        })
        .flat_map(|t| t.outputs.iter().cloned())
        .collect();
    // The executor's pool of `threads` threads runs every task and every
    // parallel loop inside one.
    let outcome = executor::run(
        &plan,
        &kernels,
        observer,
        &Options {
            threads,
            keep,
            ..Options::default()
        },
    )?;
    let (evaluations, receipts) = results_of(&plan, |id| outcome.values.get(id).map(|v| &**v));
    Ok(RunReport {
        pipeline,
        evaluations,
        receipts,
        records: outcome.records,
        wall: outcome.wall,
        threads,
        tasks: plan.tasks.len(),
    })
}

/// The evaluations and write receipts among a run's final values.
pub fn results_of<'a>(
    plan: &crate::plan::PhysicalPlan,
    value: impl Fn(&str) -> Option<&'a Value>,
) -> (Vec<EvalResult>, Vec<Receipt>) {
    let mut evaluations = Vec::new();
    let mut receipts = Vec::new();
    for t in &plan.tasks {
        for o in &t.outputs {
            let Some(Value::Bytes(b)) = value(o) else {
                continue;
            };
            match t.kind {
                crate::plan::TaskKind::Evaluate => {
                    if let Ok(e) = serde_json::from_slice::<EvalResult>(b) {
                        evaluations.push(e);
                    }
                }
                crate::plan::TaskKind::Write => {
                    let Ok(r) = serde_json::from_slice::<Receipt>(b) else {
                        continue;
                    };
                    // A dataset is written by one task per partition: one receipt.
                    match receipts
                        .iter_mut()
                        .find(|x: &&mut Receipt| x.output == r.output)
                    {
                        Some(x) => {
                            x.paths.extend(r.paths);
                            x.rows = match (x.rows, r.rows) {
                                (Some(a), Some(b)) => Some(a + b),
                                (a, b) => a.or(b),
                            };
                        }
                        None => receipts.push(r),
                    }
                }
                _ => {}
            }
        }
    }
    (evaluations, receipts)
}

/// The results as text: per evaluation and dataset, the metrics asked for.
pub fn render_results(r: &RunReport) -> String {
    let mut out = String::new();
    for e in &r.evaluations {
        for entry in &e.results {
            out.push_str(&format!(
                "== {} : {} on {} ({} rows)\n",
                e.evaluation, entry.model, entry.data, entry.scores.rows
            ));
            let s = &entry.scores;
            let has = |m: &str| e.metrics.iter().any(|x| x == m);
            // A cross-validation's mean carries the spread over its folds.
            let pm = |name: &str| {
                entry
                    .std
                    .as_ref()
                    .and_then(|m| m.get(name))
                    .map(|d| format!(" ± {d:.4}"))
                    .unwrap_or_default()
            };
            let mut line = Vec::new();
            if let Some(a) = s.accuracy.filter(|_| has("accuracy")) {
                line.push(format!("accuracy {a:.4}{}", pm("accuracy")));
            }
            for (name, avg) in [("precision", 0), ("recall", 1), ("f1", 2)] {
                if let Some(m) = s.macro_avg.as_ref().filter(|_| has(name)) {
                    let v = [m.precision, m.recall, m.f1][avg];
                    line.push(format!("{name} (macro) {v:.4}{}", pm(name)));
                }
            }
            if let Some(v) = s.log_loss.filter(|_| has("log_loss")) {
                line.push(format!("log_loss {v:.4}{}", pm("log_loss")));
            }
            for (name, v) in [("rmse", s.rmse), ("mae", s.mae), ("r2", s.r2)] {
                if let Some(v) = v.filter(|_| has(name)) {
                    line.push(format!("{name} {v:.4}{}", pm(name)));
                }
            }
            if !line.is_empty() {
                out.push_str(&line.join("  "));
                out.push('\n');
            }
            if has("classification_report") {
                out.push('\n');
                out.push_str(&metrics::classification_report(s));
            }
            if has("confusion_matrix") {
                out.push('\n');
                out.push_str(&metrics::confusion_table(s, &e.classes));
            }
            out.push('\n');
        }
    }
    for rc in &r.receipts {
        let rows = rc.rows.map(|n| format!(" ({n} rows)")).unwrap_or_default();
        match rc.paths.as_slice() {
            [one] => out.push_str(&format!("wrote {} -> {one}{rows}\n", rc.output)),
            many => out.push_str(&format!(
                "wrote {} -> {} files{rows}\n",
                rc.output,
                many.len()
            )),
        }
    }
    out
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

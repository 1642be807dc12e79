//! `dagml run` in-process as a library call: check and plan a pipeline
//! (`workspace::prepare_file`), execute its tasks with the pipeline kernels on
//! the in-process executor, and gather what the user sees.
//!
//! In: a pipeline file path and [`RunOptions`]. Out: a [`RunReport`] (evaluations,
//! written files, per-step times, peak memory) or a [`RunFailure`]. The output
//! folders are checked writable before the first task; the outputs are put in
//! place together when the last task succeeds, and a failed run leaves them all
//! as they were and says so (`runtime::outputs`). A task whose estimated
//! output alone exceeds the memory available, or outputs estimated larger
//! than the free space of their disk, are refused before anything runs.
//! Must not: print (the CLI does), decide exit codes, or be used by the
//! cluster (which shares `workspace` and `runtime` with it, not this room).

use crate::runtime::executor::{self, Observer, Options};
use crate::runtime::kernels::PipelineKernels;
use crate::runtime::outputs;
pub use crate::runtime::report::{RunReport, render_results, results_of};
pub use crate::workspace::RunFailure;
use crate::workspace::{Prepared, prepare_file};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

fn refuse_what_cannot_fit(
    plan: &crate::plan::PhysicalPlan,
    available: Option<u64>,
) -> Result<(), RunFailure> {
    match available {
        Some(a) => crate::workspace::refuse_what_cannot_fit(plan, a, "this machine has")
            .map_err(RunFailure::Other),
        None => Ok(()),
    }
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
    // Every output folder writable, before any compute; stale temporaries of
    // these outputs (a killed run's) removed.
    // The outputs' estimated sizes must fit on their disks, and each task's
    // data partition in memory (an in-process run does not spill).
    let outs = outputs::planned(&plan, &cx.base);
    outputs::prepare(&outs).map_err(|e| RunFailure::Other(e.to_string()))?;
    refuse_what_cannot_fit(&plan, crate::workspace::available_memory_bytes())?;
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
        .flat_map(|t| t.outputs.iter().map(ToString::to_string))
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
    )
    .map_err(|e| RunFailure::from(e).with_unchanged(outputs::discard(&outs)))?;
    let (evaluations, receipts) = results_of(&plan, |id| outcome.values.get(id).map(|v| &**v));
    // All the run's outputs at once, now that every task has succeeded.
    outputs::commit(&outs, &receipts).map_err(|e| RunFailure::Other(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_whose_estimate_exceeds_the_memory_available_is_refused_before_the_run() {
        let text = "[pipeline]\nname = \"big\"\n[sources.rows]\nkind = \"synthetic\"\ngenerator = \"classification\"\nrows = 1_000_000\nfeatures = 20\ninformative = 5\nclasses = 2\npartitions = 4\n[models.m]\nestimator = \"logistic_regression\"\ninput = \"rows\"\ntarget = \"y\"\n[evaluations.e]\nmodel = \"m\"\ndata = [\"rows\"]\nmetrics = [\"accuracy\"]\n";
        let (_, planned) =
            crate::workspace::plan_bytes("big.toml", text.as_bytes(), &Default::default())
                .unwrap_or_else(|r| panic!("{:?}", r.parsed.diagnostics));
        let plan = planned.physical;
        // A quarter of 1M rows × 21 columns × 8 bytes ≈ 42 MB per partition.
        let e = refuse_what_cannot_fit(&plan, Some(10_000_000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("task `source:rows/p")
                && e.contains("cannot fit")
                && e.contains("partitions"),
            "{e}"
        );
        assert!(refuse_what_cannot_fit(&plan, Some(1 << 40)).is_ok());
        assert!(refuse_what_cannot_fit(&plan, None).is_ok());
    }
}

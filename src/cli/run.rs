//! `dagml run FILE [--threads N] [--quiet]`

use dagml::run::{self, RunFailure, RunOptions};
use dagml::runtime::progress::{self, Progress};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file (.toml or .dagml).
    file: PathBuf,
    /// Threads for tasks (default: the file's cluster, else every core).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress lines, only results.
    #[arg(short, long)]
    quiet: bool,
    /// Run on the cluster whose scheduler listens at ADDR (host:port).
    #[arg(long, value_name = "ADDR", conflicts_with = "workers")]
    scheduler: Option<String>,
    /// Run on an embedded cluster of N workers in this process (over loopback).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Threads per embedded worker.
    #[arg(long, default_value_t = 1, requires = "workers")]
    threads_per_worker: usize,
    /// On a cluster: print one line per task event (started/finished, worker).
    #[arg(long)]
    events: bool,
    /// Also write the run's timings (per step: tasks, wall and busy seconds; total
    /// wall; peak memory) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    timings: Option<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    let opts = RunOptions {
        threads: a.threads,
        quiet: a.quiet,
        ..RunOptions::default()
    };
    // The plan is made twice (here for the progress bar's task count, then by the
    // run); planning takes milliseconds.
    let progress = match dagml::workspace::plan_file(&a.file, &Default::default()) {
        Ok((_, p)) => Progress::new(&p.physical, a.quiet),
        Err(report) => {
            for d in &report.parsed.diagnostics {
                eprintln!("{}", d.render(&report.parsed.file));
            }
            eprintln!(
                "error: `{}` is not a valid pipeline; nothing was run",
                a.file.display()
            );
            return ExitCode::from(1);
        }
    };
    let result = if a.scheduler.is_some() || a.workers.is_some() {
        on_cluster(&a, &progress)
    } else {
        run::run_file(&a.file, &opts, &progress)
    };
    progress.finish();
    match result {
        Ok(r) => {
            print!("{}", run::render_results(&r));
            let steps = progress::per_step(&r.records);
            let peak = progress::peak_rss_bytes();
            if let Some(path) = &a.timings {
                let json = serde_json::json!({
                    "pipeline": r.pipeline,
                    "threads": r.threads,
                    "tasks": r.tasks,
                    "wall_s": r.wall.as_secs_f64(),
                    "peak_rss_bytes": peak,
                    "steps": steps.iter().map(|s| serde_json::json!({
                        "step": s.step,
                        "tasks": s.tasks,
                        "wall_s": s.wall().as_secs_f64(),
                        "busy_s": s.busy.as_secs_f64(),
                    })).collect::<Vec<_>>(),
                });
                if let Err(e) = std::fs::write(path, format!("{json:#}\n")) {
                    eprintln!("error: cannot write `{}`: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            if !a.quiet {
                eprintln!(
                    "\n{} tasks on {} threads in {:.1}s; peak memory {}",
                    r.tasks,
                    r.threads,
                    r.wall.as_secs_f64(),
                    peak.map(|b| format!("{:.0} MB", b as f64 / 1e6))
                        .unwrap_or_else(|| "unknown".into())
                );
                eprintln!("{:<40} {:>6} {:>9} {:>9}", "step", "tasks", "wall", "busy");
                for s in &steps {
                    eprintln!(
                        "{:<40} {:>6} {:>8.2}s {:>8.2}s",
                        s.step,
                        s.tasks,
                        s.wall().as_secs_f64(),
                        s.busy.as_secs_f64()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(RunFailure::Invalid(report)) => {
            for d in &report.parsed.diagnostics {
                eprintln!("{}", d.render(&report.parsed.file));
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--scheduler ADDR` or `--workers N`: the same report, computed by a cluster.
fn on_cluster(a: &Args, progress: &Progress) -> Result<run::RunReport, RunFailure> {
    use dagml::cluster::{auth, client, embedded::Embedded};
    let rt = super::cluster::runtime().map_err(|e| RunFailure::Other(e.to_string()))?;
    let token = auth::token_from_env();
    rt.block_on(async {
        let embedded = match a.workers {
            Some(n) => Some(
                Embedded::start(n, a.threads_per_worker, token.clone())
                    .await
                    .map_err(|e| RunFailure::Other(e.to_string()))?,
            ),
            None => None,
        };
        let scheduler = match (&embedded, &a.scheduler) {
            (Some(e), _) => e.scheduler.address.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => return Err(RunFailure::Other("no cluster given".into())),
        };
        let opts = client::ClientOptions {
            scheduler,
            token,
            base: PathBuf::from("."),
            max_attempts: 0,
            log_events: a.events,
        };
        let r = client::run_file(&a.file, &opts, progress).await;
        if let Some(e) = embedded {
            e.stop().await;
        }
        r
    })
}

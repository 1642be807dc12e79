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
    let result = run::run_file(&a.file, &opts, &progress);
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

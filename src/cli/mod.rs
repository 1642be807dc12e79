//! Command-line interface: parse arguments, call the library, print, pick the exit status.
//!
//! In: `std::env::args`. Out: text on stdout/stderr and an exit status
//! (0 success, 1 invalid pipeline or failed run, 2 usage error).
//! Must not: hold logic that a library user or a test would need.

mod check;
mod cluster;
mod convert;
mod fmt;
mod health;
mod inspect;
mod plan;
mod predict;
mod report;
mod run;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dagml",
    version,
    about = "Compile and run declarative machine-learning pipelines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check pipeline files (or folders of them) and print every problem.
    Check(check::Args),
    /// Compile, optimize and draw a pipeline's task graph.
    Plan(plan::Args),
    /// Write a pipeline in the other syntax (TOML or the dagml language).
    Convert(convert::Args),
    /// Lay out a .dagml file canonically (comments kept).
    Fmt(fmt::Args),
    /// Run a pipeline: read, split, fit, evaluate, write.
    Run(run::Args),
    /// Predict with a model file on a Parquet, CSV or Arrow file.
    Predict(predict::Args),
    /// Serve model files over HTTP with the Open Inference Protocol (KServe v2).
    Serve(serve::Args),
    /// Show what a model file holds: header, features, preprocessing, learned state.
    Inspect(inspect::Args),
    /// Draw a metrics JSON (and model files) as a self-contained HTML report.
    Report(report::Args),
    /// Serve a cluster scheduler.
    Scheduler(cluster::SchedulerArgs),
    /// Serve a cluster worker and register it with a scheduler.
    Worker(cluster::WorkerArgs),
    /// Ask a scheduler or worker whether it is serving (exit 0) or not (1).
    Health(health::Args),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Fmt(a) => fmt::run(a),
        Command::Run(a) => run::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Report(a) => report::run(a),
        Command::Scheduler(a) => cluster::scheduler(a),
        Command::Worker(a) => cluster::worker(a),
        Command::Health(a) => health::run(a),
    }
}

/// A file's text; on failure the message is printed and the exit status returned.
fn read_text(path: &std::path::Path) -> Result<String, ExitCode> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            eprintln!("error: `{}` is not UTF-8 text", path.display());
            ExitCode::from(1)
        }),
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            Err(ExitCode::from(2))
        }
    }
}

/// Write `text` to `out`, or to standard output.
fn write_out(out: Option<&std::path::Path>, text: &str) -> ExitCode {
    match out {
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write `{}`: {e}", p.display());
                ExitCode::from(1)
            }
        },
        None => {
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
    }
}

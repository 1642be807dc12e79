//! Command-line interface: parse arguments, call the library, print, pick the exit status.
//!
//! In: `std::env::args`. Out: text on stdout/stderr and an exit status
//! (0 success, 1 invalid pipeline or failed run, 2 usage error).
//! Must not: hold logic that a library user or a test would need.

mod check;
mod cluster;
mod plan;
mod predict;
mod run;

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
    /// Run a pipeline: read, split, fit, evaluate, write.
    Run(run::Args),
    /// Predict with a model file on a Parquet, CSV or Arrow file.
    Predict(predict::Args),
    /// Serve a cluster scheduler.
    Scheduler(cluster::SchedulerArgs),
    /// Serve a cluster worker and register it with a scheduler.
    Worker(cluster::WorkerArgs),
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
        Command::Run(a) => run::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Scheduler(a) => cluster::scheduler(a),
        Command::Worker(a) => cluster::worker(a),
    }
}

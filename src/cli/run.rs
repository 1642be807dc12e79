//! `dagml run FILE [--in-process | --threads N | --workers N [--threads-per-worker N]
//! [--memory-limit SIZE] | --scheduler ADDR] [--quiet] [--events]`

use dagml::cluster::{self, Placement, PlacementFlags};
use dagml::run::{self, RunFailure, RunOptions};
use dagml::runtime::progress::{self, Progress};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file (.toml or .dagml).
    file: PathBuf,
    /// Run in this process on a pool of N threads, not on a cluster.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Run in this process (the executor over a thread pool), not on a cluster.
    #[arg(long, conflicts_with_all = ["scheduler", "workers"])]
    in_process: bool,
    /// No progress lines, only results.
    #[arg(short, long)]
    quiet: bool,
    /// Run on the cluster whose scheduler listens at ADDR (host:port).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["workers", "threads"])]
    scheduler: Option<String>,
    /// Run on an embedded cluster of N workers (default: the file's
    /// `[cluster] workers`, else one per core).
    #[arg(long, value_name = "N", conflicts_with = "threads")]
    workers: Option<usize>,
    /// Threads per embedded worker (default: the file's `[cluster] threads`, else 1).
    #[arg(long, value_name = "N", conflicts_with = "threads")]
    threads_per_worker: Option<usize>,
    /// Memory limit per embedded worker, e.g. 2GB: spill partitions past 70%,
    /// take no tasks past 85% (default: the file's `[cluster] memory_limit`,
    /// else none).
    #[arg(long, value_name = "SIZE", conflicts_with_all = ["threads", "in_process", "scheduler"])]
    memory_limit: Option<String>,
    /// On a cluster: print one line per task event (started/finished, worker).
    /// On the embedded cluster also its servers' addresses and its spills.
    #[arg(long)]
    events: bool,
    /// Also write the run's timings (per step: tasks, wall and busy seconds; total
    /// wall; peak memory) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    timings: Option<PathBuf>,
    /// Retrain only this shard model (MODEL.SHARD, e.g. `ensemble.A`; repeat
    /// for more) on the cluster at --scheduler, while the models served there
    /// keep answering: the new version replaces the old one when it is ready.
    #[arg(long, value_name = "MODEL.SHARD", requires = "scheduler")]
    only: Vec<String>,
    /// On the embedded cluster: serve the live dashboard (web page, /api/,
    /// /metrics) on this host:port while the run runs, and print its address.
    /// (For a remote cluster, start `dagml scheduler --dashboard`.)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = dagml::dashboard::DEFAULT_LISTEN, conflicts_with_all = ["scheduler", "in_process", "threads"])]
    dashboard: Option<String>,
}

pub fn run(a: Args) -> ExitCode {
    let memory_limit = match a.memory_limit.as_deref().map(cluster::parse_memory) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            eprintln!("error: --memory-limit: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = RunOptions {
        threads: a.threads,
        quiet: a.quiet,
        ..RunOptions::default()
    };
    // The plan is made twice (here for the progress bar's task count, then by the
    // run); planning takes milliseconds.
    let (progress, placement) = match dagml::workspace::plan_file(&a.file, &Default::default()) {
        Ok((_, p)) => {
            let flags = PlacementFlags {
                in_process: a.in_process,
                threads: a.threads,
                scheduler: a.scheduler.clone(),
                workers: a.workers,
                threads_per_worker: a.threads_per_worker,
                memory_limit,
            };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let placement = cluster::placement(p.physical.logical.cluster.as_ref(), &flags, cores);
            // What `check --data` would warn of in the files about to be read.
            for w in dagml::workspace::data_warnings(&a.file, std::path::Path::new(".")) {
                eprintln!("{w}");
            }
            let plan = if a.only.is_empty() {
                p.physical
            } else {
                match cluster::only_plan(&p.physical, &a.only) {
                    Ok(plan) => plan,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            };
            (Progress::new(&plan, a.quiet), placement)
        }
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
    let result = match placement {
        Placement::InProcess { threads } => {
            if a.dashboard.is_some() {
                eprintln!(
                    "warning: --dashboard shows a cluster, and this run is in-process (the file's [cluster] says so); give --workers N to run it on the embedded cluster"
                );
            }
            remove_temporaries_on_signal();
            run::run_file(&a.file, &RunOptions { threads, ..opts }, &progress)
        }
        p => on_cluster(&a, p, &progress),
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

/// On SIGINT or SIGTERM during an in-process run: unlink this process's
/// temporary and staged output files from the signal handler (the outputs stay
/// as they were) and exit 130 or 143. No thread is started for it, so
/// `--threads N` still bounds every thread. (A cluster run's client cancels
/// the run on Ctrl-C and removes the staged files itself.)
fn remove_temporaries_on_signal() {
    #[cfg(unix)]
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        // SAFETY: the action makes only async-signal-safe calls (an atomic
        // store, a tried lock, unlink, write, _exit) and allocates nothing.
        let _ = unsafe {
            signal_hook_registry::register(signal, move || {
                dagml::data::write::remove_temporaries_from_signal_handler();
                const MSG: &[u8] = b"\ninterrupted: the run's outputs were left as they were\n";
                libc::write(2, MSG.as_ptr().cast(), MSG.len());
                libc::_exit(code);
            })
        };
    }
}

/// An embedded or remote cluster: the same report, computed by workers.
fn on_cluster(
    a: &Args,
    placement: Placement,
    progress: &Progress,
) -> Result<run::RunReport, RunFailure> {
    use dagml::cluster::{auth, client, embedded};
    let other = |e: &dyn std::fmt::Display| RunFailure::Other(e.to_string());
    let rt = super::cluster::runtime().map_err(|e| other(&e))?;
    rt.block_on(async {
        let mut board = None;
        let (embedded, scheduler, token) = match placement {
            Placement::Embedded {
                workers,
                threads,
                memory_limit,
            } => {
                // Its own random token, not DAGML_TOKEN: nobody else needs to
                // call these servers (docs/cluster.md, Security).
                let e = embedded::Embedded::start(embedded::Options {
                    workers,
                    threads,
                    memory_limit,
                    tls: auth::Tls::from_env(),
                    fault: embedded::Fault::from_env().map_err(|e| other(&e))?,
                    log_spills: a.events,
                })
                .await
                .map_err(|e| other(&e))?;
                if let Some(listen) = &a.dashboard {
                    let d = dagml::dashboard::start(
                        dagml::dashboard::DashboardConfig {
                            listen: listen.clone(),
                            token: auth::token_from_env(),
                        },
                        e.scheduler.observe.clone(),
                    )
                    .await;
                    match d {
                        Ok(d) => {
                            eprintln!("dashboard on {}", super::cluster::dashboard_url(&d.address));
                            board = Some(d);
                        }
                        Err(err) => {
                            e.stop().await;
                            return Err(other(&err));
                        }
                    }
                }
                if a.events {
                    eprintln!("embedded scheduler listening on {}", e.scheduler.address);
                    for w in &e.workers {
                        eprintln!("embedded worker {} listening on {}", w.name, w.address);
                    }
                }
                if let Err(err) = embedded::hold_from_env().await {
                    e.stop().await;
                    return Err(other(&err));
                }
                let addr = e.scheduler.address.clone();
                let token = Some(e.token.clone());
                (Some(e), addr, token)
            }
            Placement::Remote {
                scheduler,
                token_env,
            } => {
                if a.dashboard.is_some() {
                    eprintln!(
                        "warning: --dashboard serves the embedded cluster's page; this run goes to the scheduler at {scheduler} (the file's [cluster] says so): start that scheduler with --dashboard"
                    );
                }
                let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
                (None, scheduler, token)
            }
            Placement::InProcess { .. } => return Err(other(&"not a cluster")),
        };
        // A retraining numbers its shard models past what the cluster serves.
        let serve_version = if a.only.is_empty() {
            0
        } else {
            let attach = auth::Attach::new(token.as_deref(), &auth::Tls::from_env())
                .map_err(|e| other(&e))?;
            dagml::serve::cluster::next_version_on(&scheduler, attach).await
        };
        let opts = client::ClientOptions {
            scheduler,
            token,
            tls: auth::Tls::from_env(),
            base: PathBuf::from("."),
            max_attempts: 0,
            log_events: a.events,
            same_machine: embedded.is_some(),
            serve: !a.only.is_empty(),
            only: a.only.clone(),
            serve_version,
        };
        let r = client::run_file(&a.file, &opts, progress).await;
        if let Some(d) = board {
            d.stop().await;
        }
        if let Some(e) = embedded {
            e.stop().await;
        }
        r
    })
}

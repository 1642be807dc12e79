//! `dagml scheduler --listen ADDR` and `dagml worker SCHEDULER --nthreads N ...`

use dagml::cluster::{self, ClusterError, auth, scheduler, worker};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// host:port to listen on (http:// or tcp:// accepted); port 0 picks a free one.
    #[arg(long, default_value = cluster::addr::DEFAULT_LISTEN)]
    listen: String,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The scheduler's host:port.
    scheduler: String,
    /// Tasks run at once (and threads inside them).
    #[arg(long, default_value_t = 1)]
    nthreads: usize,
    /// Memory limit, e.g. 6GB: spill partitions past 70%, take no tasks past 85%.
    #[arg(long)]
    memory_limit: Option<String>,
    /// host:port to listen on; port 0 picks a free one.
    #[arg(long, default_value = cluster::addr::DEFAULT_LISTEN)]
    listen: String,
    #[arg(long)]
    name: Option<String>,
    /// Spill files go here; a run's folder must be inside it.
    #[arg(long)]
    data_root: Option<PathBuf>,
}

pub fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Start a server on a fresh runtime, print its banner (the first stdout line,
/// which scripts and tests read for the address), then serve until it stops or
/// Ctrl-C.
fn serve<W>(start: impl Future<Output = Result<(String, W), ClusterError>>) -> ExitCode
where
    W: Future<Output = Result<(), ClusterError>>,
{
    let Ok(rt) = runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    rt.block_on(async {
        let (banner, served) = match start.await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        println!("{banner}");
        let _ = std::io::stdout().flush();
        tokio::select! {
            r = served => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => { eprintln!("error: {e}"); ExitCode::from(1) }
            },
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}

pub fn scheduler(a: SchedulerArgs) -> ExitCode {
    let cfg = scheduler::SchedulerConfig {
        listen: a.listen,
        token: auth::token_from_env(),
        tls: auth::Tls::from_env(),
        ..Default::default()
    };
    serve(async move {
        let h = scheduler::start(cfg).await?;
        Ok((
            format!("dagml scheduler listening on {}", h.address),
            h.wait(),
        ))
    })
}

pub fn worker(a: WorkerArgs) -> ExitCode {
    let memory_limit = match a.memory_limit.as_deref().map(cluster::parse_memory) {
        None => 0,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("error: --memory-limit: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = worker::WorkerConfig {
        scheduler: a.scheduler,
        listen: a.listen,
        name: a.name,
        threads: a.nthreads,
        memory_limit,
        data_root: a.data_root,
        token: auth::token_from_env(),
        tls: auth::Tls::from_env(),
        pool: None,
        fault: None,
        log_spills: true,
    };
    serve(async move {
        let h = worker::start(cfg).await?;
        let banner = format!("dagml worker {} listening on {}", h.name, h.address);
        Ok((banner, h.wait()))
    })
}

//! `dagml scheduler --listen ADDR` and `dagml worker SCHEDULER --nthreads N ...`
//!
//! In: flags and the environment (token, TLS). Out: a server serving until it
//! fails, Ctrl-C, or SIGTERM (the scheduler stops; a worker drains first, see
//! `cluster::worker::WorkerHandle::drain`). A worker process first removes
//! the temporary files dead workers of this machine journaled, journals its
//! own, and on the way out removes those it was still writing
//! (`data::write::journal_in`, `remove_unfinished`). Must not: hold cluster
//! logic.

use dagml::cluster::{self, ClusterError, auth, scheduler, worker};
use dagml::data::write;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// host:port to listen on (http:// or tcp:// accepted); port 0 picks a free one.
    #[arg(long, default_value = cluster::addr::DEFAULT_LISTEN)]
    listen: String,
    /// Also serve the gRPC health service alone on this host:port, plain TCP
    /// without a token (for probes that can send neither, such as
    /// Kubernetes' `grpc:` probe).
    #[arg(long)]
    health_listen: Option<String>,
    /// Serve the live dashboard (web page, /api/, /metrics) on this host:port,
    /// e.g. 127.0.0.1:8787; with DAGML_TOKEN set it asks for the token.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = dagml::dashboard::DEFAULT_LISTEN)]
    dashboard: Option<String>,
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
    /// host:port the scheduler and peers dial to reach this worker (default:
    /// the bound address), e.g. a StatefulSet pod's DNS name that a TLS
    /// certificate names.
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Spill files go here; a run's folder must be inside it.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Also serve the gRPC health service alone on this host:port, plain TCP
    /// without a token (for probes that can send neither, such as
    /// Kubernetes' `grpc:` probe).
    #[arg(long)]
    health_listen: Option<String>,
    /// On SIGTERM, how long to let running tasks finish before handing them
    /// back and leaving, in seconds (e.g. 20 or 20s).
    #[arg(long, default_value = "20s", value_parser = parse_seconds)]
    drain_timeout: std::time::Duration,
    /// Also answer inference requests (Open Inference Protocol over HTTP) on
    /// this host:port: each is broadcast to the workers holding the shard
    /// models of the cluster's serving runs, and their answers combined.
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
    /// Refit a served shard model of this worker's own rows (a split by
    /// worker, under --data-root) when those rows change, by content; the old
    /// version answers until the new one replaces it.
    #[arg(long, requires = "data_root")]
    watch: bool,
    /// With --serve: answer only when at least N shard models do.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "serve")]
    min_shards: usize,
}

/// The inference front door of a worker: what the cluster serves, over HTTP.
async fn front_door(
    listen: &str,
    scheduler: &str,
    min_shards: usize,
) -> Result<dagml::serve::http::Running, String> {
    use dagml::serve::cluster::{ClusterModels, Shared};
    let token = auth::token_from_env();
    let attach =
        auth::Attach::new(token.as_deref(), &auth::Tls::from_env()).map_err(|e| e.to_string())?;
    let models = ClusterModels::new(scheduler, attach, min_shards);
    // The scheduler may not be up yet: the view fills in at the next refresh.
    if let Err(e) = models.start_refreshing().await {
        eprintln!("dagml worker: serving: {e} (trying again)");
    }
    let tls = auth::Tls::from_env();
    let cfg = dagml::serve::http::ServerConfig {
        listen: listen.to_string(),
        token,
        max_body: 64 << 20,
        max_concurrency: 64,
        tls: tls.cert.zip(tls.key),
        batch: Default::default(),
    };
    dagml::serve::http::start(cfg, Arc::new(Shared(models)))
        .await
        .map_err(|e| e.to_string())
}

/// `20`, `20s`, `1.5s` → a duration (at most a day).
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let n = s.trim().strip_suffix('s').unwrap_or(s.trim());
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => {
            Ok(std::time::Duration::from_secs_f64(v))
        }
        _ => Err(format!("`{s}` is not a number of seconds like 20 or 20s")),
    }
}

/// The first SIGTERM (never, where there are no Unix signals).
async fn sigterm() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut s) = signal(SignalKind::terminate()) {
            s.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await
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
            _ = sigterm() => ExitCode::SUCCESS,
        }
    })
}

pub fn scheduler(a: SchedulerArgs) -> ExitCode {
    let token = auth::token_from_env();
    let cfg = scheduler::SchedulerConfig {
        listen: a.listen,
        token: token.clone(),
        tls: auth::Tls::from_env(),
        health_listen: a.health_listen,
        ..Default::default()
    };
    let dashboard = a.dashboard;
    serve(async move {
        let h = scheduler::start(cfg).await?;
        if let Some(hl) = &h.health_address {
            eprintln!("dagml scheduler: health service (plain, no token) on {hl}");
        }
        // Kept running as long as the scheduler serves (the process's end
        // stops it).
        let mut board = None;
        if let Some(listen) = dashboard {
            let d = dagml::dashboard::start(
                dagml::dashboard::DashboardConfig { listen, token },
                h.observe.clone(),
            )
            .await
            .map_err(|e| ClusterError::Other(e.to_string()))?;
            eprintln!(
                "dagml scheduler: dashboard on {}",
                dashboard_url(&d.address)
            );
            board = Some(d);
        }
        let address = h.address.clone();
        Ok((
            format!("dagml scheduler listening on {address}"),
            async move {
                let r = h.wait().await;
                if let Some(d) = board {
                    d.stop().await;
                }
                r
            },
        ))
    })
}

/// The address a person opens (the token is not in it: with DAGML_TOKEN set,
/// open `/?token=...` once or type it in the page).
pub fn dashboard_url(address: &str) -> String {
    format!("http://{address}/")
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
        advertise: a.advertise,
        name: a.name,
        threads: a.nthreads,
        memory_limit,
        data_root: a.data_root,
        token: auth::token_from_env(),
        tls: auth::Tls::from_env(),
        pool: None,
        fault: None,
        log_spills: true,
        health_listen: a.health_listen,
        watch: a.watch,
    };
    let drain_timeout = a.drain_timeout;
    // Temporaries a killed worker of this machine left (in its data root and
    // in the runs' folders it wrote) go now; this one's are recorded, and
    // removed when it stops (`data::write::journal_in`).
    let journals = cfg
        .data_root
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("dagml-worker-journals"));
    match write::journal_in(&journals) {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "dagml worker: removed {n} temporary output file{} a killed worker left",
            if n == 1 { "" } else { "s" }
        ),
        Err(e) => eprintln!(
            "warning: cannot keep a journal of temporary files in `{}` ({e}): a kill of this worker may leave some until the next run",
            journals.display()
        ),
    }
    let front = FrontDoor {
        listen: a.serve,
        scheduler: cfg.scheduler.clone(),
        min_shards: a.min_shards,
    };
    let code = serve_worker(cfg, drain_timeout, front);
    // Ctrl-C, SIGTERM (after the drain), or a refused token: no file it was
    // still writing is left. Staged files of runs that ended here were handed
    // to their clients; those of runs still going on are removed by their
    // client, or else by the next worker started on this machine (its
    // journal stays for that).
    let staged = write::remove_unfinished();
    write::end_journal(staged > 0);
    code
}

/// A worker's `--serve`: where, and what it asks.
struct FrontDoor {
    listen: Option<String>,
    scheduler: String,
    min_shards: usize,
}

fn serve_worker(
    cfg: worker::WorkerConfig,
    drain_timeout: std::time::Duration,
    front: FrontDoor,
) -> ExitCode {
    let FrontDoor {
        listen: serve,
        scheduler,
        min_shards,
    } = front;
    let Ok(rt) = runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    rt.block_on(async move {
        let mut h = match worker::start(cfg).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        println!("dagml worker {} listening on {}", h.name, h.address);
        let _ = std::io::stdout().flush();
        let _front = match &serve {
            Some(listen) => match front_door(listen, &scheduler, min_shards).await {
                Ok(s) => {
                    // Not println!: whoever read the first line may have
                    // closed our stdout.
                    let mut out = std::io::stdout();
                    let _ = writeln!(out, "dagml worker {} serving on {}", h.name, s.address);
                    let _ = out.flush();
                    eprintln!("dagml worker {}: serving on {}", h.name, s.address);
                    Some(s)
                }
                Err(e) => {
                    eprintln!("error: --serve: {e}");
                    h.stop().await;
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        if let Some(hl) = &h.health_address {
            eprintln!(
                "dagml worker {}: health service (plain, no token) on {hl}",
                h.name
            );
        }
        tokio::select! {
            r = h.finished() => return match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => { eprintln!("error: {e}"); ExitCode::from(1) }
            },
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            _ = sigterm() => {}
        }
        // SIGTERM: drain (a second SIGTERM or Ctrl-C stops at once).
        tokio::select! {
            _ = h.drain(drain_timeout) => ExitCode::SUCCESS,
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
            _ = sigterm() => ExitCode::SUCCESS,
        }
    })
}
